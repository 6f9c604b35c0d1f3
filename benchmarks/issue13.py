"""Scrape, lock, flush, export and wrapper costs against honest baselines: python benchmarks/issue13.py

    python benchmarks/issue13.py                 # the table (every row: median [min-max] of per-repetition ratios)
    python benchmarks/issue13.py --curves        # the table, then the scaling curves
    python benchmarks/issue13.py --only render pause --reps 3
    python benchmarks/issue13.py --quick         # small sizes, 2 repetitions: a smoke run, not figures

Every ratio is candidate / baseline measured in the same process and repetition, the two interleaved in ABBA
order, so load from other processes on a shared machine affects both sides. Baselines:

* **direct prometheus_client**: the original module rebuilt the direct way (module-level metric objects, helper
  functions calling ``metric.labels(a, b).inc()``; :mod:`direct_prometheus`), and its ``generate_latest``.
* **plain OTel SDK**: synchronous instruments, a ``PeriodicExportingMetricReader`` with the OTLP/HTTP exporter and
  a cardinality limit above the series count, so both sides export the same series.
* **bare env**: ``gymnasium.vector.SyncVectorEnv`` of 8 ``CartPole-v1``.

The pause rows are what a scrape costs the training thread: a tight recording loop runs while the process serves
one ``GET /metrics`` (gzip accepted, as Prometheus asks) to a client in another process, on otel-rl's endpoint and,
for the baseline, on prometheus_client's own ``start_http_server`` holding the same series.

Writes a JSON summary to ``benchmarks/results/issue13.json`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import baselines
import bench_gymnasium
import bench_recording
import direct_prometheus
import harness
from harness import interleave, mmm, ratios, timed
from otlp_sink import otlp_config, plain_sdk, start_sink, stop

ROWS: list[dict[str, Any]] = []
CURVES: dict[str, Any] = {}

#: name: (quick, full) sizes; quick is a smoke run that says the script works, not a figure to report
SIZES: dict[str, tuple[Any, Any]] = {
    "render": ((1_000,), (10_000, 50_000)),
    "pause": ((2_000,), (50_000,)),
    "memory": (2_000, 50_000),
    "threads": (5_000, 100_000),
    "export": ((1_000,), (10_000, 50_000)),
    "vector": (300, 3000),
    "iteration": (500, 5000),
    "curve_record": (((100, 1_000), 20_000), ((100, 1_000, 10_000, 50_000), 200_000)),
    "curve_render": ((500, 1_000), (1_000, 5_000, 20_000)),
    "curve_pause": ((500, 1_000), (1_000, 10_000, 20_000)),
}


def size(name: str, quick: bool) -> Any:
    return SIZES[name][0 if quick else 1]


def row(what: str, values: list[float], target: float | None, unit: str = "×", note: str = "") -> None:
    med = statistics.median(values)
    status = "" if target is None else ("PASS" if med <= target else "MISS")
    entry = {"what": what, "median": med, "min": min(values), "max": max(values), "unit": unit,
             "target": target, "status": status, "note": note, "values": values}
    ROWS.append(entry)
    limit = "" if target is None else f"≤ {target:g}"
    print(f"  {what:<64} {mmm(values):<26} {unit:<5} {limit:<7} {status:<5} {note}", flush=True)


# -- series sets -------------------------------------------------------------------------------------------------

def fill(kind: str, size: int, ours: bool, target: Any) -> None:
    """``size`` label sets of ``kind`` (gauge, histogram, mixed) in otel-rl's registry or a direct module."""
    if ours:
        from otel_rl._internal.store import REGISTRY as reg  # noqa: N811  (a local alias, like m below)

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
    if exporters and "prometheus" in exporters:
        config["prometheus"] = {"host": "127.0.0.1", "port": 0, "linger": 0}
    if port is not None:
        config.update(otlp_config(port, 3600.0, limit=max(2000, size + 10)))
    return otel_rl.init_telemetry(config)


# -- 1. render ---------------------------------------------------------------------------------------------------

def bench_render(reps: int, quick: bool = False, sizes: tuple[int, ...] | None = None,
                 kinds: tuple[str, ...] = ("gauge", "histogram", "mixed"), curve: bool = False) -> None:
    from prometheus_client import generate_latest

    for size in sizes or SIZES["render"][0 if quick else 1]:
        for kind in kinds:
            handle = our_handle(size)
            try:
                fill(kind, size, True, None)
                prom = direct_prometheus.build()
                fill(kind, size, False, prom)
                handle.metrics_text()
                times = interleave({"otel_rl": timed(handle.metrics_text, time.thread_time),
                                    "generate_latest": timed(partial(generate_latest, prom.registry),
                                                             time.thread_time)}, reps)
            finally:
                handle.shutdown()
            r = ratios(times, "otel_rl", "generate_latest")
            ours_ms = statistics.median(times["otel_rl"]) * 1e3
            theirs_ms = statistics.median(times["generate_latest"]) * 1e3
            if curve:
                CURVES.setdefault("scrape", []).append(
                    {"series": size, "kind": kind, "otel_rl_ms": ours_ms, "generate_latest_ms": theirs_ms,
                     "ratio": statistics.median(r)})
                print(f"    scrape {kind:>9} {size:>7}: otel_rl {ours_ms:8.1f} ms,"
                      f" generate_latest {theirs_ms:8.1f} ms, {statistics.median(r):.3f}x", flush=True)
            else:
                row(f"/metrics render, {size // 1000}k {kind} series vs generate_latest", r, 0.25,
                    note=f"otel_rl {ours_ms:.0f} ms, generate_latest {theirs_ms:.0f} ms")


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


class ScrapeClient:
    """Scrapes a URL when told to, as Prometheus does (``GET``, gzip accepted), from another process: its CPU and
    its GIL are not the benchmark's, so what is measured is what the scraped process pays."""

    _CODE = r"""
import sys, urllib.request
for line in sys.stdin:
    request = urllib.request.Request(line.strip(), headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=120) as response:
        size = len(response.read())
    print(size, flush=True)
"""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self._CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def scrape(self, url: str) -> int:
        """The size of the (compressed) response."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(url + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def bench_pause(reps: int, quick: bool = False, sizes: tuple[int, ...] | None = None,
                kinds: tuple[str, ...] = ("mixed", "histogram"), curve: bool = False) -> None:
    """The longest pause of a recording loop while its process serves one HTTP scrape of ``/metrics``."""
    client = ScrapeClient()
    try:
        for size in sizes or SIZES["pause"][0 if quick else 1]:
            for kind in kinds:
                _pause_row(client, reps, size, kind, curve)
    finally:
        client.close()


def _pause_row(client: ScrapeClient, reps: int, size: int, kind: str, curve: bool) -> None:
    from prometheus_client import start_http_server

    from otel_rl._internal.store import REGISTRY

    handle = our_handle(size, exporters=["prometheus"])
    prom_server = None
    try:
        fill(kind, size, True, None)
        prom = direct_prometheus.build()
        fill(kind, size, False, prom)
        prom_server, _ = start_http_server(0, addr="127.0.0.1", registry=prom.registry)
        ours_url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
        prom_url = f"http://127.0.0.1:{prom_server.server_port}/metrics"
        ours = partial(REGISTRY["rl_training_active"].set, ("PPO",))
        client.scrape(ours_url)
        client.scrape(prom_url)
        started = time.perf_counter()
        client.scrape(ours_url)
        window = time.perf_counter() - started
        # name: (what the process does meanwhile, the record call of the measured loop)
        variants: dict[str, tuple[Callable[[], Any], Callable[[float], Any]]] = {
            "otel_rl": (partial(client.scrape, ours_url), ours),
            "prometheus_client": (partial(client.scrape, prom_url),
                                  prom.metrics["rl_training_active"].labels("PPO").set),
            # the same loop for as long as a scrape takes, without one
            "idle": (partial(time.sleep, window), ours),
            # any pure-Python work in another thread: the GIL hand-over floor
            "busy": (partial(_busy, window), ours),
        }
        pauses: dict[str, list[float]] = {name: [] for name in variants}
        for rep in range(reps):
            for name in list(variants) if rep % 2 == 0 else list(variants)[::-1]:
                gc.collect()
                pauses[name].append(longest_pause(*variants[name]))
    finally:
        if prom_server is not None:
            prom_server.shutdown()
            prom_server.server_close()
        handle.shutdown()
    ms = {name: [p * 1e3 for p in values] for name, values in pauses.items()}
    if curve:
        CURVES.setdefault("pause", []).append(
            {"series": size, "kind": kind, "otel_rl_ms": statistics.median(ms["otel_rl"]),
             "idle_ms": statistics.median(ms["idle"]), "busy_ms": statistics.median(ms["busy"]),
             "prometheus_client_ms": statistics.median(ms["prometheus_client"])})
        print(f"    pause {kind:>9} {size:>7}: otel_rl {statistics.median(ms['otel_rl']):7.1f} ms, "
              f"prometheus_client {statistics.median(ms['prometheus_client']):7.1f} ms", flush=True)
    else:
        row(f"longest recording-thread pause, {size // 1000}k-series {kind} HTTP scrape", ms["otel_rl"], 20.0, "ms",
            note=f"HTTP scrape {window * 1e3:.0f} ms; prometheus_client's own endpoint: "
                 f"{mmm(ms['prometheus_client'])} ms; no scrape (machine noise): {mmm(ms['idle'])} ms; a busy "
                 f"pure-Python thread instead of the scrape (GIL hand-over floor): {mmm(ms['busy'])} ms")


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
    base = harness.rss_bytes()
    if kind == "otel_rl":
        fill("mixed", size, True, None)
        for _ in range(3):
            handle.metrics_text()
    else:
        fill("mixed", size, False, prom)
        for _ in range(3):
            generate_latest(prom.registry)
    gc.collect()
    return {"per_series": (harness.rss_bytes() - base) / size}


def bench_memory(reps: int, quick: bool = False) -> None:
    size = SIZES["memory"][0 if quick else 1]
    per: dict[str, list[float]] = {"otel_rl": [], "prometheus_client": []}
    for rep in range(max(2, reps // 2)):
        for kind in (("otel_rl", "prometheus_client") if rep % 2 == 0 else ("prometheus_client", "otel_rl")):
            per[kind].append(harness.run_child(__file__, "--memory-child", kind, str(size))["per_series"])
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


def bench_threads(reps: int, quick: bool = False) -> None:
    from otel_rl._internal.store import REGISTRY
    from otel_rl.testing import reset

    n = SIZES["threads"][0 if quick else 1]
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

    times = interleave({"otel_rl 1": partial(per_record, 1, ours, n), "otel_rl 4": partial(per_record, 4, ours, n),
                        "prom 1": partial(per_record, 1, theirs, n), "prom 4": partial(per_record, 4, theirs, n)},
                       reps)
    row("histogram record, 4 threads vs 1 thread (per record)", ratios(times, "otel_rl 4", "otel_rl 1"), 1.2,
        note=f"{statistics.median(times['otel_rl 1']) * 1e9:.0f} ns/record alone; prometheus_client "
             f"{mmm(ratios(times, 'prom 4', 'prom 1'))}")
    reset()


# -- 5. collections per force_flush, export CPU vs the plain SDK --------------------------------------------------

def bench_flush(reps: int, quick: bool = False) -> None:
    sink, port = start_sink()
    try:
        handle = our_handle(1000, port=port)
        fill("mixed", 1000, True, None)
        producer = handle.producer
        calls = [0]
        original = producer.catalog_metrics

        def counting() -> Any:
            calls[0] += 1
            return original()

        producer.catalog_metrics = counting  # type: ignore[method-assign]
        counts, cost = [], []
        reader = handle.readers[-1]
        for _ in range(reps):
            calls[0] = 0
            handle.force_flush(30.0)
            counts.append(float(calls[0]))
        times = interleave({"flush": timed(partial(handle.force_flush, 30.0), time.process_time),
                            "export": timed(reader.collect, time.process_time)}, reps)
        cost = ratios(times, "flush", "export")
        producer.catalog_metrics = original  # type: ignore[method-assign]
        handle.shutdown()
    finally:
        stop(sink)
    row("collections per force_flush()", counts, 1.0, "", note=f"flush CPU vs one export: {mmm(cost)}")


def bench_export(reps: int, quick: bool = False, sizes: tuple[int, ...] | None = None,
                 curve: bool = False) -> None:
    sink, port = start_sink()
    try:
        for size in sizes or SIZES["export"][0 if quick else 1]:
            handle = our_handle(size, port=port)
            fill("mixed", size, True, None)
            ours = handle.readers[-1]
            plain, plain_reader = plain_sdk(port, size)  # uncapped: it exports every series otel-rl does
            _fill_plain(plain, size)
            try:
                # What the export thread does each interval: reader.collect() -> exporter.export().
                times = interleave({"otel_rl": timed(ours.collect, time.process_time),
                                    "plain": timed(plain_reader.collect, time.process_time)}, reps)
            finally:
                handle.shutdown()
                plain.shutdown()
            r = ratios(times, "otel_rl", "plain")
            ours_ms, plain_ms = statistics.median(times["otel_rl"]) * 1e3, statistics.median(times["plain"]) * 1e3
            if curve:
                CURVES.setdefault("export", []).append({"series": size, "otel_rl_ms": ours_ms, "plain_ms": plain_ms,
                                                        "ratio": statistics.median(r)})
                print(f"    export {size:>7}: otel_rl {ours_ms:8.1f} ms CPU, plain SDK {plain_ms:8.1f} ms, "
                      f"{statistics.median(r):.3f}x", flush=True)
            else:
                row(f"export CPU per OTLP/HTTP export, {size // 1000}k mixed series vs plain SDK", r, 1.0,
                    note=f"otel_rl {ours_ms:.0f} ms, plain {plain_ms:.0f} ms")
    finally:
        stop(sink)


def _fill_plain(plain: Any, size: int) -> None:
    m = plain.m
    for i in range(size):
        r = i % 3
        if r == 0:
            m["rl_training_current_iteration"].set(float(i), {"algorithm": "PPO", "run_id": f"run-{i:06d}"})
        elif r == 1:
            m["rl_training_episodes_total"].add(3.0, {"algorithm": "PPO", "agent_id": f"agent-{i:06d}"})
        else:
            m["rl_training_episode_reward"].record(float(i % 700),
                                                   {"algorithm": "PPO", "agent_id": f"agent-{i:06d}"})


# -- 6. vector wrapper on a real SyncVectorEnv -------------------------------------------------------------------

def bench_vector(reps: int, quick: bool = False) -> None:
    import gymnasium as gym
    import numpy as np

    from otel_rl.integrations.gymnasium import RecordVectorEpisodeMetrics
    from otel_rl.testing import reset

    reset()

    def make() -> Any:  # a real SyncVectorEnv: make_vec would give CartPole's own numpy-vectorised env
        return gym.vector.SyncVectorEnv([partial(gym.make, "CartPole-v1") for _ in range(8)])

    actions = np.random.default_rng(0).integers(0, 2, size=(SIZES["vector"][0 if quick else 1], 8))
    bare, wrapped = make(), RecordVectorEpisodeMetrics(make(), "PPO", "bench")
    times = bench_gymnasium.vector_times({"bare": bare, "wrapped": wrapped}, actions, reps, time.thread_time)
    row("RecordVectorEpisodeMetrics on SyncVectorEnv x8 CartPole-v1 step", ratios(times, "wrapped", "bare"), 1.03,
        note=f"bare {statistics.median(times['bare']) * 1e6:.1f} us, wrapped "
             f"{statistics.median(times['wrapped']) * 1e6:.1f} us")
    bare.close()
    wrapped.close()


# -- 7. one original iteration -----------------------------------------------------------------------------------

def bench_iteration(reps: int, quick: bool = False) -> None:
    import otel_rl
    from otel_rl.testing import reset

    reset()
    apis = {"otel_rl": otel_rl, "direct": direct_prometheus.build(), "suite baseline": baselines.OriginalPrometheus()}
    # This thread's CPU time: immune to preemption on a loaded machine.
    times = bench_recording.iteration_times(apis, SIZES["iteration"][0 if quick else 1], reps, time.thread_time)
    row("one original iteration (31 updates) vs direct prometheus_client", ratios(times, "otel_rl", "direct"), 0.2,
        note=f"otel_rl {statistics.median(times['otel_rl']) * 1e6:.1f} us, direct "
             f"{statistics.median(times['direct']) * 1e6:.1f} us; run.py's baseline is "
             f"{mmm(ratios(times, 'suite baseline', 'direct'))}x the direct one")
    reset()


# -- curves ------------------------------------------------------------------------------------------------------

def _set_all(gauge: Any, keys: list[tuple[str, str]]) -> None:
    s = gauge.set
    for k in keys:
        s(k, 1.5)


def _observe_all(hist: Any, keys: list[tuple[str, str]]) -> None:
    o = hist.observe
    for k in keys:
        o(k, 1.5)


def curve_record(reps: int, quick: bool = False) -> None:
    from otel_rl._internal.store import REGISTRY
    from otel_rl.testing import reset

    sizes, n = SIZES["curve_record"][0 if quick else 1]
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
        times = interleave({"gauge": timed(partial(_set_all, gauge, gkeys), time.thread_time),
                            "histogram": timed(partial(_observe_all, hist, hkeys), time.thread_time)}, reps)
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
    parser.add_argument("--reps", type=int, help="repetitions (default 5, or 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 2 repetitions: a smoke run that shows the script works, not figures")
    parser.add_argument("--curves", action="store_true", help="also measure the scaling curves")
    parser.add_argument("--output", help="JSON summary path (default benchmarks/results/issue13.json, "
                                         "issue13-quick.json with --quick)")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    harness.quiet_logs()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]))))
        return 0
    harness.clean_environment()
    quick = args.quick
    reps = args.reps or (2 if quick else 5)
    info = harness.machine()
    print(f"otel-rl issue-13 table{' (quick)' if quick else ''}: {info['nproc']} CPUs, {info['cpu']}, "
          f"Python {info['python']}, load {info['loadavg_start']}; median [min–max] of {reps} interleaved repetitions")
    started = time.perf_counter()
    for name in args.only or BENCHES:
        BENCHES[name](reps, quick)
    if args.curves:
        print("scaling curves")
        curve_reps = 2 if quick else 3
        curve_record(curve_reps, quick)
        bench_render(curve_reps, sizes=size("curve_render", quick), kinds=("mixed",), curve=True)
        bench_export(curve_reps, sizes=size("curve_render", quick), curve=True)
        bench_pause(curve_reps, sizes=size("curve_pause", quick), kinds=("mixed",), curve=True)
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": info,
               "mode": "quick" if quick else "full", "seconds": round(time.perf_counter() - started, 1),
               "reps": reps, "rows": ROWS, "curves": CURVES}
    path = Path(args.output or harness.RESULTS / ("issue13-quick.json" if quick else "issue13.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(f"done in {summary['seconds']:.0f} s; summary: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
