"""Scrape, lock, flush, export and wrapper costs against honest baselines: python benchmarks/issue13.py

    python benchmarks/issue13.py                 # the table (every row: median [min-max] of per-repetition ratios)
    python benchmarks/issue13.py --curves        # the table, then the scaling curves
    python benchmarks/issue13.py --only render pause --reps 3

Every ratio is candidate / baseline measured in the same process and repetition, the two interleaved in ABBA
order, so load from other processes on a shared machine affects both sides. Baselines:

* **direct prometheus_client**: the original module rebuilt the direct way (module-level metric objects, helper
  functions calling ``metric.labels(a, b).inc()``; :mod:`direct_prometheus`), and its ``generate_latest``.
* **plain OTel SDK**: synchronous instruments, a ``PeriodicExportingMetricReader`` with the OTLP/HTTP exporter and
  a cardinality limit above the series count, so both sides export the same series.
* **bare env**: ``gymnasium.vector.SyncVectorEnv`` of 8 ``CartPole-v1``.

Writes a JSON summary to ``benchmarks/results/issue13.json`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
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

import direct_prometheus  # noqa: E402

import run as suite  # noqa: E402  (interleave, machine, start_sink, iteration_loop)

for _name in ("otel_rl", "opentelemetry"):
    __import__("logging").getLogger(_name).setLevel(60)

ROWS: list[dict[str, Any]] = []
CURVES: dict[str, Any] = {}


def mmm(values: list[float], fmt: str = "{:.3g}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def row(what: str, values: list[float], target: float | None, unit: str = "×", note: str = "") -> None:
    med = statistics.median(values)
    status = "" if target is None else ("PASS" if med <= target else "MISS")
    entry = {"what": what, "median": med, "min": min(values), "max": max(values), "unit": unit,
             "target": target, "status": status, "note": note, "values": values}
    ROWS.append(entry)
    print(f"  {what:<64} {mmm(values):<26} {unit:<5} {'' if target is None else '≤ %g' % target:<7} {status:<5} "
          f"{note}", flush=True)


def ratios(times: dict[str, list[float]], a: str, b: str) -> list[float]:
    return [x / y for x, y in zip(times[a], times[b])]


# -- series sets -------------------------------------------------------------------------------------------------

def fill(kind: str, size: int, ours: bool, target: Any) -> None:
    """``size`` label sets of ``kind`` (gauge, histogram, mixed) in otel-rl's registry or a direct module."""
    if ours:
        from otel_rl._internal.store import REGISTRY as reg

        def gauge(name: str, labels: tuple[str, ...], v: float) -> None:
            reg[name].set(labels, v)

        def counter(name: str, labels: tuple[str, ...], v: float) -> None:
            reg[name].add(labels, v)

        def hist(name: str, labels: tuple[str, ...], v: float) -> None:
            reg[name].observe(labels, v)
    else:
        m = target.metrics

        def gauge(name: str, labels: tuple[str, ...], v: float) -> None:
            m[name].labels(*labels).set(v)

        def counter(name: str, labels: tuple[str, ...], v: float) -> None:
            m[name].labels(*labels).inc(v)

        def hist(name: str, labels: tuple[str, ...], v: float) -> None:
            m[name].labels(*labels).observe(v)

    if kind == "gauge":
        for i in range(size):
            gauge("rl_training_current_iteration" if i % 2 else "rl_training_episode_reward_mean",
                  ("PPO", f"run-{i:06d}"), float(i))
    elif kind == "histogram":
        for i in range(size):
            name = "rl_training_episode_reward" if i % 2 else "rl_training_episode_length"
            for v in (float(i % 500), float(i % 37)):
                hist(name, ("PPO", f"agent-{i:06d}"), v)
    else:
        for i in range(size):
            r = i % 3
            if r == 0:
                gauge("rl_training_current_iteration", ("PPO", f"run-{i:06d}"), float(i))
            elif r == 1:
                counter("rl_training_episodes_total", ("PPO", f"agent-{i:06d}"), 3.0)
            else:
                hist("rl_training_episode_reward", ("PPO", f"agent-{i:06d}"), float(i % 700))


def our_handle(size: int, exporters: list[str] | None = None, port: int | None = None):
    import otel_rl
    from otel_rl.testing import reset

    reset()
    config: dict[str, Any] = {"exporters": exporters or ["none"], "cardinality_limit": max(2000, size + 10)}
    if port is not None:
        config.update(suite.otlp_config(port, 3600.0, limit=max(2000, size + 10)))
    return otel_rl.init_telemetry(config)


def timed(func: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
    def go() -> float:
        started = clock()
        func()
        return clock() - started
    return go


# -- 1. render ---------------------------------------------------------------------------------------------------

def bench_render(reps: int, sizes: tuple[int, ...] = (10_000, 50_000),
                 kinds: tuple[str, ...] = ("gauge", "histogram", "mixed"), curve: bool = False) -> None:
    from prometheus_client import generate_latest

    for size in sizes:
        for kind in kinds:
            handle = our_handle(size)
            try:
                fill(kind, size, True, None)
                prom = direct_prometheus.build()
                fill(kind, size, False, prom)
                handle.metrics_text()
                times = suite.interleave({"otel_rl": timed(handle.metrics_text, time.thread_time),
                                          "generate_latest": timed(lambda: generate_latest(prom.registry),
                                                                   time.thread_time)}, reps)
            finally:
                handle.shutdown()
            r = ratios(times, "otel_rl", "generate_latest")
            label = f"/metrics render, {size // 1000}k {kind} series vs generate_latest"
            if curve:
                CURVES.setdefault("scrape", []).append(
                    {"series": size, "kind": kind, "otel_rl_ms": statistics.median(times["otel_rl"]) * 1e3,
                     "generate_latest_ms": statistics.median(times["generate_latest"]) * 1e3,
                     "ratio": statistics.median(r)})
                print(f"    scrape {kind:>9} {size:>7}: otel_rl {statistics.median(times['otel_rl']) * 1e3:8.1f} ms,"
                      f" generate_latest {statistics.median(times['generate_latest']) * 1e3:8.1f} ms,"
                      f" {statistics.median(r):.3f}x", flush=True)
            else:
                row(label, r, 0.25, note=f"otel_rl {statistics.median(times['otel_rl']) * 1e3:.0f} ms, "
                                         f"generate_latest {statistics.median(times['generate_latest']) * 1e3:.0f} ms")


# -- 2. pause of a recording thread during a scrape --------------------------------------------------------------

def longest_pause(scrape: Callable[[], Any], record: Callable[[float], Any]) -> float:
    """The longest gap between two record calls of a tight loop while ``scrape`` runs in another thread."""
    stop = threading.Event()
    worst = [0.0]

    def loop() -> None:
        clock = time.perf_counter
        last = clock()
        high = 0.0
        i = 0.0
        while not stop.is_set():
            record(i)
            i += 1.0
            now = clock()
            if now - last > high:
                high = now - last
            last = now
        worst[0] = high

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.05)
    scrape()
    stop.set()
    thread.join()
    return worst[0]


def bench_pause(reps: int, sizes: tuple[int, ...] = (50_000,), kinds: tuple[str, ...] = ("mixed", "histogram"),
                curve: bool = False) -> None:
    from prometheus_client import generate_latest

    from otel_rl._internal.store import REGISTRY

    for size in sizes:
        for kind in kinds:
            handle = our_handle(size)
            try:
                fill(kind, size, True, None)
                prom = direct_prometheus.build()
                fill(kind, size, False, prom)
                gauge = REGISTRY["rl_training_active"]
                child = prom.metrics["rl_training_active"].labels("PPO")
                handle.metrics_text()
                started = time.perf_counter()
                handle.metrics_text()
                window = time.perf_counter() - started
                pauses: dict[str, list[float]] = {"otel_rl": [], "prometheus_client": [], "idle": [], "busy": []}
                for rep in range(reps):
                    order = ("otel_rl", "prometheus_client", "idle", "busy") if rep % 2 == 0 else \
                        ("busy", "idle", "prometheus_client", "otel_rl")
                    for name in order:
                        gc.collect()
                        if name == "idle":  # the same loop for as long as a scrape takes, without one
                            pauses[name].append(longest_pause(lambda: time.sleep(window),
                                                              lambda v: gauge.set(("PPO",), v)))
                        elif name == "busy":  # any pure-Python work in another thread: the GIL hand-over floor
                            pauses[name].append(longest_pause(lambda: _busy(window),
                                                              lambda v: gauge.set(("PPO",), v)))
                        elif name == "otel_rl":
                            pauses[name].append(longest_pause(handle.metrics_text,
                                                              lambda v: gauge.set(("PPO",), v)))
                        else:
                            pauses[name].append(longest_pause(lambda: generate_latest(prom.registry), child.set))
            finally:
                handle.shutdown()
            ms = [p * 1e3 for p in pauses["otel_rl"]]
            if curve:
                CURVES.setdefault("pause", []).append({"series": size, "kind": kind, "otel_rl_ms": statistics.median(ms),
                                                       "idle_ms": statistics.median(pauses["idle"]) * 1e3,
                                                       "busy_ms": statistics.median(pauses["busy"]) * 1e3,
                                                       "prometheus_client_ms": statistics.median(pauses["prometheus_client"]) * 1e3})
                print(f"    pause {kind:>9} {size:>7}: otel_rl {statistics.median(ms):7.1f} ms, prometheus_client "
                      f"{statistics.median(pauses['prometheus_client']) * 1e3:7.1f} ms", flush=True)
            else:
                row(f"longest recording-thread pause, {size // 1000}k-series {kind} scrape", ms, 20.0, "ms",
                    note=f"prometheus_client generate_latest: {mmm([p * 1e3 for p in pauses['prometheus_client']])} "
                         f"ms; no scrape (machine noise): {mmm([p * 1e3 for p in pauses['idle']])} ms; a busy pure-Python "
                         f"thread instead of the scrape (GIL hand-over floor): {mmm([p * 1e3 for p in pauses['busy']])} ms")


def _busy(seconds: float) -> None:
    """Pure-Python work (no allocation, no C call of note) for ``seconds``."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        for i in range(100):
            x += i


# -- 3. memory per series after scrapes --------------------------------------------------------------------------

def memory_child(kind: str, size: int) -> dict[str, Any]:
    from prometheus_client import generate_latest

    if kind == "otel_rl":
        handle = our_handle(size)
        fill("gauge", 2, True, None)
        handle.metrics_text()
    else:
        prom = direct_prometheus.build()
        fill("gauge", 2, False, prom)
        generate_latest(prom.registry)
    gc.collect()
    base = suite.rss_bytes()
    if kind == "otel_rl":
        fill("mixed", size, True, None)
        for _ in range(3):
            handle.metrics_text()
    else:
        fill("mixed", size, False, prom)
        for _ in range(3):
            generate_latest(prom.registry)
    gc.collect()
    return {"per_series": (suite.rss_bytes() - base) / size}


def bench_memory(reps: int, size: int = 50_000) -> None:
    per: dict[str, list[float]] = {"otel_rl": [], "prometheus_client": []}
    for rep in range(max(2, reps // 2)):
        for kind in (("otel_rl", "prometheus_client") if rep % 2 == 0 else ("prometheus_client", "otel_rl")):
            out = subprocess.run([sys.executable, __file__, "--memory-child", kind, str(size)], capture_output=True,
                                 text=True, timeout=600, check=True)
            per[kind].append(json.loads(out.stdout.strip().splitlines()[-1])["per_series"])
    row(f"RSS per series after 3 scrapes, {size // 1000}k mixed series", [b / 1024 for b in per["otel_rl"]], 1.0,
        "KiB", note=f"direct prometheus_client: {mmm([b / 1024 for b in per['prometheus_client']])} KiB")


# -- 4. histogram record, 4 threads vs 1 -------------------------------------------------------------------------

def per_record(threads: int, observe_for: Callable[[int], Callable[[float], Any]], n: int) -> float:
    """Wall seconds per record with ``threads`` threads each doing ``n`` records (the GIL serialises them)."""
    barrier = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        observe = observe_for(t)
        barrier.wait()
        for i in range(n):
            observe(float(i & 1023))

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    barrier.wait()
    started = time.perf_counter()
    for th in pool:
        th.join()
    return (time.perf_counter() - started) / (threads * n)


def bench_threads(reps: int, n: int = 100_000) -> None:
    from otel_rl._internal.store import REGISTRY
    from otel_rl.testing import reset

    reset()
    hist = REGISTRY["rl_training_episode_reward"]
    prom = direct_prometheus.build()
    ph = prom.metrics["rl_training_episode_reward"]

    def ours(t: int) -> Callable[[float], Any]:
        key = ("PPO", f"agent_{t}")
        observe = hist.observe
        return lambda v: observe(key, v)

    def theirs(t: int) -> Callable[[float], Any]:
        return ph.labels("PPO", f"agent_{t}").observe

    times = suite.interleave({"otel_rl 1": lambda: per_record(1, ours, n), "otel_rl 4": lambda: per_record(4, ours, n),
                              "prom 1": lambda: per_record(1, theirs, n), "prom 4": lambda: per_record(4, theirs, n)},
                             reps)
    row("histogram record, 4 threads vs 1 thread (per record)", ratios(times, "otel_rl 4", "otel_rl 1"), 1.2,
        note=f"{statistics.median(times['otel_rl 1']) * 1e9:.0f} ns/record alone; prometheus_client "
             f"{mmm(ratios(times, 'prom 4', 'prom 1'))}")
    reset()


# -- 5. collections per force_flush, export CPU vs the plain SDK --------------------------------------------------

def bench_flush(reps: int) -> None:
    sink, port = suite.start_sink()
    try:
        handle = our_handle(1000, port=port)
        fill("mixed", 1000, True, None)
        bridge = handle.bridge
        calls = [0]
        original = bridge.histogram_metrics

        def counting() -> Any:
            calls[0] += 1
            return original()

        bridge.histogram_metrics = counting  # type: ignore[method-assign]
        counts, cost = [], []
        reader = handle.readers[-1]
        for _ in range(reps):
            calls[0] = 0
            handle.force_flush(30.0)
            counts.append(float(calls[0]))
        times = suite.interleave({"flush": timed(lambda: handle.force_flush(30.0), time.process_time),
                                  "export": timed(lambda: reader.collect(), time.process_time)}, reps)
        cost = ratios(times, "flush", "export")
        bridge.histogram_metrics = original  # type: ignore[method-assign]
        handle.shutdown()
    finally:
        sink.terminate()
        sink.wait(5)
    row("collections per force_flush()", counts, 1.0, "", note=f"flush CPU vs one export: {mmm(cost)}")


def bench_export(reps: int, sizes: tuple[int, ...] = (10_000, 50_000), curve: bool = False) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, Histogram
    from opentelemetry.sdk.metrics import _Gauge as Gauge  # the SDK's synchronous gauge
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from otel_rl._internal.bridge import cumulative_temporality

    import baselines

    sink, port = suite.start_sink()
    try:
        for size in sizes:
            handle = our_handle(size, port=port)
            fill("mixed", size, True, None)
            ours = handle.readers[-1]
            plain_reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics",
                                   preferred_temporality=cumulative_temporality()),
                export_interval_millis=3_600_000,
                cardinality_limits={k: size + 10 for k in (Counter, Gauge, Histogram)})
            plain = baselines.PlainOtel(readers=[plain_reader])
            _fill_plain(plain, size)
            try:
                # What the export thread does each interval: reader.collect() -> exporter.export().
                times = suite.interleave({"otel_rl": timed(ours.collect, time.process_time),
                                          "plain": timed(plain_reader.collect, time.process_time)}, reps)
            finally:
                handle.shutdown()
                plain.shutdown()
            r = ratios(times, "otel_rl", "plain")
            if curve:
                CURVES.setdefault("export", []).append({"series": size, "otel_rl_ms": statistics.median(times["otel_rl"]) * 1e3,
                                                        "plain_ms": statistics.median(times["plain"]) * 1e3,
                                                        "ratio": statistics.median(r)})
                print(f"    export {size:>7}: otel_rl {statistics.median(times['otel_rl']) * 1e3:8.1f} ms CPU, plain SDK "
                      f"{statistics.median(times['plain']) * 1e3:8.1f} ms, {statistics.median(r):.3f}x", flush=True)
            else:
                row(f"export CPU per OTLP/HTTP export, {size // 1000}k mixed series vs plain SDK", r, 1.0,
                    note=f"otel_rl {statistics.median(times['otel_rl']) * 1e3:.0f} ms, plain "
                         f"{statistics.median(times['plain']) * 1e3:.0f} ms")
    finally:
        sink.terminate()
        sink.wait(5)


def _fill_plain(plain: Any, size: int) -> None:
    m = plain.m
    for i in range(size):
        r = i % 3
        if r == 0:
            m["rl_training_current_iteration"].set(float(i), {"algorithm": "PPO", "run_id": f"run-{i:06d}"})
        elif r == 1:
            m["rl_training_episodes_total"].add(3.0, {"algorithm": "PPO", "agent_id": f"agent-{i:06d}"})
        else:
            m["rl_training_episode_reward"].record(float(i % 700), {"algorithm": "PPO", "agent_id": f"agent-{i:06d}"})


# -- 6. vector wrapper on a real SyncVectorEnv -------------------------------------------------------------------

def bench_vector(reps: int, steps: int = 3000) -> None:
    import gymnasium as gym
    import numpy as np

    from otel_rl.integrations.gymnasium import RecordVectorEpisodeMetrics
    from otel_rl.testing import reset

    reset()

    def make() -> Any:
        return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(8)])

    actions = np.random.default_rng(0).integers(0, 2, size=(steps, 8))

    def loop(env: Any) -> Callable[[], float]:
        env.reset(seed=0)
        step = env.step

        def go() -> float:
            started = time.thread_time()
            for a in actions:
                step(a)
            return (time.thread_time() - started) / steps
        return go

    bare, wrapped = make(), RecordVectorEpisodeMetrics(make(), "PPO", "bench")
    loops = {"bare": loop(bare), "wrapped": loop(wrapped)}
    for f in loops.values():
        f()
    times = suite.interleave(loops, reps)
    row("RecordVectorEpisodeMetrics on SyncVectorEnv x8 CartPole-v1 step", ratios(times, "wrapped", "bare"), 1.03,
        note=f"bare {statistics.median(times['bare']) * 1e6:.1f} us, wrapped "
             f"{statistics.median(times['wrapped']) * 1e6:.1f} us")
    bare.close()
    wrapped.close()


# -- 7. one original iteration -----------------------------------------------------------------------------------

def bench_iteration(reps: int, n: int = 5000) -> None:
    import otel_rl
    from otel_rl.testing import reset

    import baselines

    reset()
    loops = {"otel_rl": _cpu_loop(otel_rl), "direct": _cpu_loop(direct_prometheus.build()),
             "suite baseline": _cpu_loop(baselines.SeedPrometheus())}
    for f in loops.values():
        f(300)
    times = suite.interleave({k: (lambda f=f: f(n)) for k, f in loops.items()}, reps)
    row("one original iteration (31 updates) vs direct prometheus_client", ratios(times, "otel_rl", "direct"), 0.2,
        note=f"otel_rl {statistics.median(times['otel_rl']) * 1e6:.1f} us, direct "
             f"{statistics.median(times['direct']) * 1e6:.1f} us; run.py's baseline is "
             f"{mmm(ratios(times, 'suite baseline', 'direct'))}x the direct one")
    reset()


def _cpu_loop(api: Any) -> Callable[[int], float]:
    """run.py's iteration loop, timed with this thread's CPU time (immune to preemption on a loaded machine)."""
    loop = suite.iteration_loop(api)
    clock = time.thread_time

    def go(n: int) -> float:
        started = clock()
        loop(n)
        return (clock() - started) / n
    return go


# -- curves ------------------------------------------------------------------------------------------------------

def curve_record(reps: int, sizes: tuple[int, ...] = (100, 1_000, 10_000, 50_000), n: int = 200_000) -> None:
    from otel_rl._internal.store import REGISTRY
    from otel_rl.testing import reset

    for size in sizes:
        reset()
        fill("gauge", size, True, None)
        fill("histogram", size, True, None)
        gauge, hist = REGISTRY["rl_training_current_iteration"], REGISTRY["rl_training_episode_reward"]
        # Cycle through (up to) 1024 of the live series, spread over the whole dict.
        step = max(1, size // 2 // 1024)
        gkeys = [("PPO", f"run-{i:06d}") for i in range(1, size, 2)][::step][:1024]
        hkeys = [("PPO", f"agent-{i:06d}") for i in range(1, size, 2)][::step][:1024]
        gkeys = (gkeys * (n // len(gkeys) + 1))[:n]
        hkeys = (hkeys * (n // len(hkeys) + 1))[:n]

        def g() -> None:
            s = gauge.set
            for k in gkeys:
                s(k, 1.5)

        def h() -> None:
            o = hist.observe
            for k in hkeys:
                o(k, 1.5)

        times = suite.interleave({"gauge": timed(g, time.thread_time), "histogram": timed(h, time.thread_time)}, reps)
        entry = {"series": size, "gauge_set_ns": statistics.median(times["gauge"]) / n * 1e9,
                 "histogram_observe_ns": statistics.median(times["histogram"]) / n * 1e9}
        CURVES.setdefault("record", []).append(entry)
        print(f"    record {size:>7} live series: gauge.set {entry['gauge_set_ns']:.0f} ns, histogram.observe "
              f"{entry['histogram_observe_ns']:.0f} ns", flush=True)
    reset()


BENCHES = {"render": bench_render, "pause": bench_pause, "memory": bench_memory, "threads": bench_threads,
           "flush": bench_flush, "export": bench_export, "vector": bench_vector, "iteration": bench_iteration}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--curves", action="store_true", help="also measure the scaling curves")
    parser.add_argument("--output", default=str(HERE / "results" / "issue13.json"))
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]))))
        return 0
    os.environ.pop("OTEL_RL_EXPORTERS", None)
    os.environ.pop("OTEL_METRICS_EXPORTER", None)
    info = suite.machine()
    print(f"otel-rl issue-13 table: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
          f"load {info['loadavg_start']}; median [min–max] of {args.reps} interleaved repetitions")
    started = time.perf_counter()
    for name in args.only or BENCHES:
        BENCHES[name](args.reps)
    if args.curves:
        print("scaling curves")
        curve_record(3)
        bench_render(3, sizes=(1_000, 5_000, 20_000), kinds=("mixed",), curve=True)
        bench_export(3, sizes=(1_000, 5_000, 20_000), curve=True)
        bench_pause(3, sizes=(1_000, 10_000, 20_000), kinds=("mixed",), curve=True)
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": info,
               "seconds": round(time.perf_counter() - started, 1), "reps": args.reps, "rows": ROWS, "curves": CURVES}
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"done in {summary['seconds']:.0f} s; summary: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
