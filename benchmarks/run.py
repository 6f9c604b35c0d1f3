"""otel-rl performance suite: python benchmarks/run.py [--quick] [--only NAME ...] [--output PATH | --stdout].

Every figure is a median over several repetitions, and every ratio is taken against a baseline measured in the
same process and run, with baseline and candidate interleaved (ABBA order) so that a noisy machine affects both.
Prints a table and writes a JSON summary (default ``benchmarks/results/latest.json``). Not part of the test suite:
the exit status is 0 whether targets pass or miss (``--strict`` makes a miss exit 1).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import baselines  # noqa: E402
import results_dicts  # noqa: E402

# The memory bench drops values on purpose and the export bench takes the collector down: keep the table readable.
for _name in ("otel_rl", "opentelemetry"):
    __import__("logging").getLogger(_name).setLevel(60)

BENCHES = ("recording", "train_step", "gymnasium", "exposition", "memory", "export", "resources")

# name: (quick, full)
SIZES = {
    "reps": (5, 9),
    "recording_iters": (2000, 5000),
    "train_step_calls": (100, 300),
    "gym_steps": (10000, 20000),
    "vec_steps": (1000, 4000),
    "expo_reps": (3, 7),
    "expo_sizes": ((1000, 10000), (1000, 10000)),
    "memory_checkpoints": ((2000, 10000, 100000), (2000, 10000, 100000)),
    "export_reps": (3, 7),
    "throughput_s": (1.0, 2.0),
    "throughput_reps": (4, 8),
}


# -- measurement helpers -----------------------------------------------------------------------------------------


def interleave(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run each variant once per repetition, alternating the order (ABBA); returns the times per variant."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            times[name].append(variants[name]())
    return times


def ratios(times: dict[str, list[float]], candidate: str, baseline: str) -> list[float]:
    """Per-repetition ratios (same repetition, so the same machine state)."""
    return [c / b for c, b in zip(times[candidate], times[baseline])]


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.3g}..{max(values):.3g}"


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}

    def add(self, bench: str, measure: str, value: float, unit: str, ratio: float | None = None,
            baseline: str = "", target: str = "", passed: bool | None = None, note: str = "") -> None:
        row = {"bench": bench, "measure": measure, "value": round(value, 4), "unit": unit,
               "ratio": None if ratio is None else round(ratio, 4), "baseline": baseline, "target": target,
               "status": "" if passed is None else ("PASS" if passed else "MISS"), "note": note}
        self.rows.append(row)
        ratio_text = "" if ratio is None else f"{ratio:.3f}x {baseline}"
        print(f"  {measure:<52} {value:>12.4g} {unit:<8} {ratio_text:<34} {target:<14} {row['status']}", flush=True)


# -- 1. per-iteration recording ----------------------------------------------------------------------------------

AGENTS = [f"agent_{i}" for i in range(5)]
PERF = [{"sharpe_ratio": 1.2 + i / 100, "max_drawdown": 0.1, "win_rate": 0.55, "total_return": 0.12}
        for i in range(5)]


def iteration_loop(api: Any) -> Callable[[int], float]:
    """The seed's per-iteration call sequence on ``api`` (a module or an object with the seed helpers)."""
    rti, rem = api.record_training_iteration, api.record_episode_metrics
    rpm, rlm = api.record_performance_metrics, api.record_loss_metrics
    res, rep = api.record_environment_steps, api.record_episode
    work = list(zip(AGENTS, PERF))

    def run(n: int) -> float:
        started = time.perf_counter()
        for i in range(n):
            rti("PPO", i, "run-0")
            rem("PPO", "run-0", 150.0 + (i & 63), 200.0)
            for agent, figures in work:
                rpm("PPO", agent, figures)
            rlm("PPO", 0.02 + (i & 7) / 100, 0.5, 1.1)
            res("PPO", 4000)
            rep("PPO", "agent_0", 180.0 + (i & 31), 200)
        return (time.perf_counter() - started) / n

    return run


def bench_recording(report: Report, quick: bool) -> None:
    import otel_rl
    from otel_rl.testing import reset

    reset()
    n, reps = _size("recording_iters", quick), _size("reps", quick)
    prom, prom_kw, plain = baselines.SeedPrometheus(), baselines.SeedPrometheus(keyword_labels=True), \
        baselines.PlainOtel()
    loops = {"otel_rl": iteration_loop(otel_rl), "prometheus_client": iteration_loop(prom),
             "prometheus_client (keyword labels)": iteration_loop(prom_kw), "plain OTel SDK": iteration_loop(plain)}
    for loop in loops.values():
        loop(200)  # warm up: series exist, code paths are hot
    times = interleave({k: (lambda f=f: f(n)) for k, f in loops.items()}, reps)
    plain.shutdown()
    r = median(ratios(times, "otel_rl", "prometheus_client"))
    report.details["recording"] = {k: [t * 1e6 for t in v] for k, v in times.items()}
    report.add("recording", "one iteration (31 metric updates), otel_rl", median(times["otel_rl"]) * 1e6, "us",
               r, "prometheus_client", "<= 0.5x", r <= 0.5)
    for other in ("prometheus_client", "prometheus_client (keyword labels)", "plain OTel SDK"):
        report.add("recording", f"one iteration, {other}", median(times[other]) * 1e6, "us",
                   median(ratios(times, other, "prometheus_client")), "prometheus_client")
    report.add("recording", "otel_rl vs plain OTel SDK", median(ratios(times, "otel_rl", "plain OTel SDK")), "x")


# -- 2. decorated train step -------------------------------------------------------------------------------------


def bench_train_step(report: Report, quick: bool) -> None:
    import otel_rl
    from otel_rl.testing import reset

    reset()
    n, reps = _size("train_step_calls", quick), _size("reps", quick)
    forms = {"old API stack, nested": results_dicts.old_api_nested(),
             "old API stack, flattened": results_dicts.old_api_flat(),
             "new API stack": results_dicts.new_api()}
    realistic_step_us = 10_000.0
    for label, result in forms.items():
        def bare(result: dict[str, Any] = result) -> dict[str, Any]:
            return result

        decorated = otel_rl.train_step(algorithm="PPO", run_id="bench")(bare)

        def timed(func: Callable[[], Any]) -> Callable[[], float]:
            def run() -> float:
                started = time.perf_counter()
                for _ in range(n):
                    func()
                return (time.perf_counter() - started) / n
            return run

        for _ in range(20):
            decorated()
        times = interleave({"bare": timed(bare), "decorated": timed(decorated)}, reps)
        overhead = [(d - b) * 1e6 for d, b in zip(times["decorated"], times["bare"])]
        over = median(overhead)
        ratio = (realistic_step_us + over) / realistic_step_us
        leaves = results_dicts.leaf_count(result)
        report.details.setdefault("train_step", {})[label] = {"overhead_us": overhead, "leaves": leaves}
        report.add("train_step", f"@train_step overhead, {label} ({leaves} leaves)", over, "us/call",
                   ratio, "a 10 ms train step", "<= 1.01x", ratio <= 1.01,
                   note="hist_stats window of 100 episodes" if "old" in label else "")


# -- 3. gymnasium wrappers ---------------------------------------------------------------------------------------


def bench_gymnasium(report: Report, quick: bool) -> None:
    import gymnasium as gym
    import numpy as np

    from otel_rl.integrations.gymnasium import RecordEpisodeMetrics, RecordVectorEpisodeMetrics
    from otel_rl.testing import reset

    reset()
    reps = max(_size("reps", quick), 7)
    steps = _size("gym_steps", quick)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=steps).tolist()

    def single(env: Any) -> Callable[[], float]:
        env.reset(seed=0)
        step, reset_ = env.step, env.reset

        def run() -> float:
            started = time.perf_counter()
            for action in actions:
                _, _, terminated, truncated, _ = step(action)
                if terminated or truncated:
                    reset_()
            return (time.perf_counter() - started) / steps
        return run

    envs = {"bare": gym.make("CartPole-v1"),
            "RecordEpisodeMetrics": RecordEpisodeMetrics(gym.make("CartPole-v1"), "PPO", "bench"),
            "gymnasium RecordEpisodeStatistics": gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))}
    loops = {k: single(v) for k, v in envs.items()}
    for loop in loops.values():
        loop()
    times = interleave(loops, reps)
    r = median(ratios(times, "RecordEpisodeMetrics", "bare"))
    report.details["gymnasium_single"] = {k: [t * 1e6 for t in v] for k, v in times.items()}
    report.add("gymnasium", "CartPole-v1 step, bare", median(times["bare"]) * 1e6, "us")
    report.add("gymnasium", "CartPole-v1 step, RecordEpisodeMetrics", median(times["RecordEpisodeMetrics"]) * 1e6,
               "us", r, "bare step", "<= 1.02x", r <= 1.02)
    report.add("gymnasium", "CartPole-v1 step, gymnasium RecordEpisodeStatistics (reference)",
               median(times["gymnasium RecordEpisodeStatistics"]) * 1e6, "us",
               median(ratios(times, "gymnasium RecordEpisodeStatistics", "bare")), "bare step")

    vsteps = _size("vec_steps", quick)
    vactions = rng.integers(0, 2, size=(vsteps, 8))

    def vector(env: Any) -> Callable[[], float]:
        env.reset(seed=0)
        step = env.step

        def run() -> float:
            started = time.perf_counter()
            for row in vactions:
                step(row)
            return (time.perf_counter() - started) / vsteps
        return run

    venvs = {"bare": gym.make_vec("CartPole-v1", num_envs=8),
             "RecordVectorEpisodeMetrics": RecordVectorEpisodeMetrics(gym.make_vec("CartPole-v1", num_envs=8),
                                                                      "PPO", "bench")}
    vloops = {k: vector(v) for k, v in venvs.items()}
    for loop in vloops.values():
        loop()
    vtimes = interleave(vloops, reps)
    vr = median(ratios(vtimes, "RecordVectorEpisodeMetrics", "bare"))
    report.details["gymnasium_vector"] = {k: [t * 1e6 for t in v] for k, v in vtimes.items()}
    report.add("gymnasium", "make_vec CartPole-v1 x8 step, bare", median(vtimes["bare"]) * 1e6, "us")
    report.add("gymnasium", "make_vec CartPole-v1 x8 step, RecordVectorEpisodeMetrics",
               median(vtimes["RecordVectorEpisodeMetrics"]) * 1e6, "us", vr, "bare step", "<= 1.02x", vr <= 1.02)
    for env in list(envs.values()) + list(venvs.values()):
        env.close()


# -- 4. exposition -----------------------------------------------------------------------------------------------


def populate(api: Any, series: int) -> int:
    """About ``series`` label sets: 3/4 gauges keyed by run_id, 1/4 per-agent counter + two histograms."""
    runs, agents = series // 4, series // 12
    for i in range(runs):
        run_id = f"run-{i:05d}"
        api.record_training_iteration("PPO", i, run_id)
        api.record_episode_metrics("PPO", run_id, 100.0 + i % 300, 200.0)
    for i in range(agents):
        api.record_episode("PPO", f"agent-{i:05d}", 10.0 * (i % 100), 20 + i % 900)  # >= 0: the SDK drops negatives
    return runs * 3 + agents * 3 + 1


def bench_exposition(report: Report, quick: bool) -> None:
    import otel_rl
    from otel_rl.testing import reset

    reps = _size("expo_reps", quick)
    for size in _size("expo_sizes", quick):
        reset()
        handle = otel_rl.init_telemetry({"exporters": ["none"], "cardinality_limit": max(2000, size)})
        try:
            label_sets = populate(otel_rl, size)
            prom = baselines.SeedPrometheus()
            populate(prom, size)
            ours, theirs = handle.metrics_text(), prom.render()

            def timed(render: Callable[[], bytes]) -> Callable[[], float]:
                def run() -> float:
                    started = time.perf_counter()
                    render()
                    return time.perf_counter() - started
                return run

            times = interleave({"otel_rl": timed(handle.metrics_text), "prometheus_client": timed(prom.render)},
                               reps)
        finally:
            handle.shutdown()
        r = median(ratios(times, "otel_rl", "prometheus_client"))
        report.details[f"exposition_{size}"] = {"seconds": times, "bytes_otel_rl": len(ours),
                                                "bytes_prometheus_client": len(theirs),
                                                "lines_otel_rl": ours.count(b"\n"),
                                                "lines_prometheus_client": theirs.count(b"\n")}
        report.add("exposition", f"/metrics render, {label_sets} series, otel_rl", median(times["otel_rl"]) * 1e3,
                   "ms", r, "generate_latest", "<= 1.5x", r <= 1.5,
                   note=f"{len(ours)} bytes vs {len(theirs)} bytes")
        report.add("exposition", f"/metrics render, {label_sets} series, prometheus_client",
                   median(times["prometheus_client"]) * 1e3, "ms")
        report.add("exposition", f"/metrics size, {label_sets} series, otel_rl / prometheus_client",
                   len(ours) / 1024, "KiB", len(ours) / len(theirs), "prometheus_client bytes")
    reset()


# -- 5. memory ---------------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(kind: str, checkpoints: list[int]) -> dict[str, Any]:
    """In a fresh process: RSS after recording for 0, c1, c2, ... distinct run_ids."""
    if kind == "otel_rl":
        import otel_rl as api

        handle = api.init_telemetry({"exporters": ["none"]})  # default cardinality limit
    else:
        api = baselines.SeedPrometheus()
        handle = None
    api.record_training_iteration("PPO", 0, "warm")  # import and first-call costs are not growth
    api.record_episode_metrics("PPO", "warm", 1.0, 1.0)
    gc.collect()
    base = rss_bytes()
    out: dict[str, Any] = {"base_rss": base, "growth": {}, "seconds": {}}
    done = 0
    started = time.perf_counter()
    for checkpoint in checkpoints:
        for i in range(done, checkpoint):
            run_id = f"run-{i:06d}"
            api.record_training_iteration("PPO", i, run_id)
            api.record_episode_metrics("PPO", run_id, 100.0, 200.0)
        done = checkpoint
        gc.collect()
        out["growth"][checkpoint] = rss_bytes() - base
        out["seconds"][checkpoint] = time.perf_counter() - started
    if handle is not None:
        text = handle.metrics_text()
        out["exposition_bytes"] = len(text)
        out["overflow_series_present"] = b'otel_metric_overflow="true"' in text
        out["after_render_growth"] = rss_bytes() - base
        from otel_rl._internal.store import REGISTRY

        out["series_per_metric"] = REGISTRY["rl_training_current_iteration"].series_count()
        handle.shutdown()
    else:
        text = api.render()
        out["exposition_bytes"] = len(text)
        out["series_per_metric"] = checkpoints[-1] + 1
    return out


def bench_memory(report: Report, quick: bool) -> None:
    checkpoints = list(_size("memory_checkpoints", quick))
    results = {}
    for kind in ("otel_rl", "prometheus_client"):
        proc = subprocess.run([sys.executable, str(Path(__file__)), "--memory-child", kind,
                               ",".join(map(str, checkpoints))], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {kind} failed: {proc.stderr[-2000:]}")
        results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    report.details["memory"] = results
    ours, theirs = results["otel_rl"], results["prometheus_client"]
    for c in checkpoints:
        g_ours, g_theirs = ours["growth"][str(c)] / 2**20, theirs["growth"][str(c)] / 2**20
        report.add("memory", f"RSS growth after {c} run_ids (x3 series), otel_rl", g_ours, "MiB",
                   None, "", "", None, note=f"prometheus_client: {g_theirs:.1f} MiB")
        report.add("memory", f"RSS growth after {c} run_ids, prometheus_client", g_theirs, "MiB")
    first, last = checkpoints[0], checkpoints[-1]
    beyond = (ours["growth"][str(last)] - ours["growth"][str(first)]) / 2**20
    report.add("memory", f"otel_rl RSS growth from {first} to {last} run_ids (limit 2000)", beyond, "MiB",
               None, "", "flat (< 2 MiB)", beyond < 2.0,
               note=f"series kept per metric: {ours.get('series_per_metric')}, overflow series present: "
                    f"{ours.get('overflow_series_present')}, /metrics {ours.get('exposition_bytes')} bytes vs "
                    f"{theirs.get('exposition_bytes')} bytes")


# -- 6. export cost and throughput -------------------------------------------------------------------------------

_SINK = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
ThreadingHTTPServer.allow_reuse_address = True
s = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def start_sink(port: int = 0) -> tuple[subprocess.Popen, int]:
    """A tiny OTLP/HTTP sink in its own process (so its CPU is not counted here), answering 200."""
    proc = subprocess.Popen([sys.executable, "-c", _SINK, str(port)], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def otlp_config(port: int, interval: float, limit: int = 2000) -> dict[str, Any]:
    return {"exporters": ["otlp"], "cardinality_limit": limit, "shutdown_timeout": 2.0,
            "otlp": {"protocol": "http/protobuf", "endpoint": f"http://127.0.0.1:{port}/v1/metrics",
                     "export_interval": interval, "timeout": 1.0}}


def bench_export(report: Report, quick: bool) -> None:
    import gymnasium as gym

    import otel_rl
    from otel_rl.testing import reset

    sink, port = start_sink()
    try:
        # CPU per export of 10k series: otel_rl vs the plain OTel SDK with the same exporter and series.
        reps = _size("export_reps", quick)
        size = 10000
        reset()
        handle = otel_rl.init_telemetry(otlp_config(port, 3600.0, limit=size))
        label_sets = populate(otel_rl, size)
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        from otel_rl._internal.bridge import cumulative_temporality

        plain_reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics",
                               preferred_temporality=cumulative_temporality()),
            export_interval_millis=3_600_000)
        plain = baselines.PlainOtel(readers=[plain_reader])
        populate(plain, size)

        def cpu(flush: Callable[[], Any]) -> Callable[[], float]:
            def run() -> float:
                started = time.process_time()
                flush()
                return time.process_time() - started
            return run

        times = interleave({"otel_rl": cpu(lambda: handle.force_flush(30.0)),
                            "plain OTel SDK": cpu(lambda: plain.provider.force_flush(30_000))}, reps)
        handle.shutdown()
        plain.shutdown()
        per_export = median(times["otel_rl"])
        report.details["export_cpu_s"] = times
        report.add("export", f"CPU per OTLP/HTTP export, {label_sets} series, otel_rl", per_export * 1e3, "ms",
                   median(ratios(times, "otel_rl", "plain OTel SDK")), "plain OTel SDK",
                   note=f"= {per_export / 10 * 100:.2f}% of a core at the 10 s default interval")
        report.add("export", f"CPU per OTLP/HTTP export, {label_sets} series, plain OTel SDK",
                   median(times["plain OTel SDK"]) * 1e3, "ms")

        # Training throughput with the collector down vs up (and with no telemetry at all).
        reset()
        window, treps = _size("throughput_s", quick), _size("throughput_reps", quick)
        env = gym.make("CartPole-v1")
        env.reset(seed=0)
        import random

        rng = random.Random(0)
        actions = [rng.randint(0, 1) for _ in range(4096)]

        def training(seconds: float) -> tuple[float, float]:
            """(iterations per wall second, process CPU seconds per iteration) of a small training loop: a CartPole
            step and its record calls. Process CPU includes the exporter's thread, which holds the GIL while it
            encodes, so it is what the loop loses to exporting, and unlike wall time it ignores other processes."""
            n, i, deadline = 0, 0, time.perf_counter() + seconds
            started, cpu = time.perf_counter(), time.process_time()
            while True:
                for _ in range(256):
                    _, reward, terminated, truncated, _ = env.step(actions[i & 4095])
                    i += 1
                    otel_rl.record_environment_steps("PPO", 1)
                    if terminated or truncated:
                        otel_rl.record_episode("PPO", "agent_0", 100.0, 100)
                        env.reset()
                    if i % 64 == 0:
                        otel_rl.record_training_iteration("PPO", i, "run-0")
                        otel_rl.record_loss_metrics("PPO", 0.01, 0.5, 1.1)
                n += 256
                if time.perf_counter() >= deadline:
                    return n / (time.perf_counter() - started), (time.process_time() - cpu) / n

        # One telemetry handle exporting every second to a fixed port; the sink behind it is stopped ("collector
        # down": connection refused, the exporter retries and gives up) and started again ("collector up") between
        # windows, so both states are measured alternately in the same process.
        interval = 1.0  # ten times the default rate, so every window holds exports
        sink.terminate()
        sink.wait(5)
        sink = None
        training(0.3)
        runs: dict[str, list[tuple[float, float]]] = {"no telemetry": [], "collector down": [], "collector up": []}
        for _ in range(treps):
            gc.collect()
            runs["no telemetry"].append(training(window))
        handle = otel_rl.init_telemetry(otlp_config(port, interval))
        try:
            for rep in range(2 * treps):
                order = ("collector down", "collector up") if rep % 2 == 0 else ("collector up", "collector down")
                for state in order:
                    if state == "collector up":
                        sink, _ = start_sink(port)
                    gc.collect()
                    time.sleep(0.05)
                    runs[state].append(training(window))
                    if sink is not None:
                        sink.terminate()
                        sink.wait(5)
                        sink = None
            sink, _ = start_sink(port)
            time.sleep(0.1)
            flush_cpu = []
            for _ in range(5):
                t0 = time.process_time()
                handle.force_flush(10.0)
                flush_cpu.append(time.process_time() - t0)
            sink.terminate()
            sink.wait(5)
            sink = None
        finally:
            handle.shutdown(2.0)
        env.close()
        loop_export = median(flush_cpu)
        report.add("export", "CPU per export of the training loop's own series", loop_export * 1e3, "ms",
                   loop_export / interval + 1.0, f"loop time (1 export per {interval:g} s)", "within 2 %",
                   loop_export / interval <= 0.02,
                   note="the export thread's share of a core, which it takes from the loop through the GIL")
        rates = {k: [r for r, _ in v] for k, v in runs.items()}
        cpu = {k: [c for _, c in v] for k, v in runs.items()}
        # CPU per iteration decides (robust on a shared machine); wall throughput is shown too.
        up_vs_down = median(cpu["collector up"]) / median(cpu["collector down"])
        down_vs_none = median(cpu["collector down"]) / median(cpu["no telemetry"])
        wall_up_vs_down = median([d / u for u, d in zip(rates["collector up"], rates["collector down"])])
        report.details["throughput_it_per_s"] = rates
        report.details["throughput_cpu_us_per_it"] = {k: [c * 1e6 for c in v] for k, v in cpu.items()}
        report.add("export", "training loop, no telemetry (before init)", median(rates["no telemetry"]), "it/s",
                   note=f"{median(cpu['no telemetry']) * 1e6:.2f} us CPU/it")
        report.add("export", "training loop, collector down (port closed)", median(rates["collector down"]),
                   "it/s", down_vs_none, "no telemetry (CPU/it)",
                   note=f"{median(cpu['collector down']) * 1e6:.2f} us CPU/it")
        report.add("export", "training loop, collector up (local sink)", median(rates["collector up"]), "it/s",
                   up_vs_down, "collector down (CPU/it)", "(informative)", None,
                   note=f"{median(cpu['collector up']) * 1e6:.2f} us CPU/it; wall-time ratio {wall_up_vs_down:.3f} "
                        f"(noisy); spread up {spread(cpu['collector up'])} s, down {spread(cpu['collector down'])} s; "
                        f"export every {interval:g} s; {2 * treps} windows of {window:g} s each")
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(5)
        reset()


# -- driver ------------------------------------------------------------------------------------------------------


def _size(name: str, quick: bool) -> Any:
    return SIZES[name][0 if quick else 1]


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    import opentelemetry.sdk.version as otel_version
    import prometheus_client

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "opentelemetry_sdk": otel_version.__version__,
            "prometheus_client": getattr(prometheus_client, "__version__", "0.26.x"), "loadavg_start": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (< 2 minutes)")
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these benchmarks")
    parser.add_argument("--output", default=str(HERE / "results" / "latest.json"), help="JSON summary path")
    parser.add_argument("--stdout", action="store_true", help="print the JSON summary instead of writing it")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--memory-child", nargs=2, metavar=("KIND", "CHECKPOINTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        kind, checkpoints = args.memory_child
        print(json.dumps(memory_child(kind, [int(c) for c in checkpoints.split(",")])))
        return 0

    os.environ.pop("OTEL_RL_EXPORTERS", None)
    os.environ.pop("OTEL_METRICS_EXPORTER", None)
    report = Report()
    info = machine()
    print(f"otel-rl benchmarks ({'quick' if args.quick else 'full'}): {info['nproc']} CPUs, {info['cpu']}, "
          f"Python {info['python']}, load {info['loadavg_start']}")
    print(f"  {'measure':<52} {'median':>12} {'unit':<8} {'ratio':<34} {'target':<14} status")
    started = time.perf_counter()
    bench_funcs = {"recording": bench_recording, "train_step": bench_train_step, "gymnasium": bench_gymnasium,
                   "exposition": bench_exposition, "memory": bench_memory, "export": bench_export,
                   "resources": __import__("resource_metrics").bench_resources}
    for name in args.only or BENCHES:
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        bench_funcs[name](report, args.quick)
        report.details.setdefault("bench_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    elapsed = time.perf_counter() - started
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "mode": "quick" if args.quick else "full", "seconds": round(elapsed, 1), "machine": info,
               "results": report.rows, "details": report.details}
    misses = [r for r in report.rows if r["status"] == "MISS"]
    print(f"done in {elapsed:.0f} s: {sum(r['status'] == 'PASS' for r in report.rows)} PASS, {len(misses)} MISS")
    text = json.dumps(summary, indent=1, default=str)
    if args.stdout:
        print(text)
    else:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        print(f"summary: {path}")
    return 1 if args.strict and misses else 0


if __name__ == "__main__":
    sys.exit(main())
