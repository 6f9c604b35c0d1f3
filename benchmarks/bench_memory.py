"""Memory: RSS growth with the number of distinct run_ids, otel-rl (cardinality-limited) vs prometheus_client, and
RSS per series after three scrapes with a limit above the series count, otel-rl vs the direct prometheus_client.

Each side is measured in a fresh process, which prints one JSON line:
``python benchmarks/bench_memory.py KIND CHECKPOINTS`` or ``python benchmarks/bench_memory.py --per-series KIND SIZE``.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from typing import Any

import baselines
import direct_prometheus
import harness
from harness import Report, mmm
from workloads import fill_series, telemetry_for

#: RSS per series after three scrapes, KiB
PER_SERIES_TARGET_KIB = 1.0


def child(kind: str, checkpoints: list[int]) -> dict[str, Any]:
    """In a fresh process: RSS after recording for 0, c1, c2, ... distinct run_ids."""
    handle = None
    if kind == "otel_rl":
        import otel_rl as api

        handle = api.init_telemetry({"exporters": ["none"]})  # default cardinality limit
    else:
        api = baselines.OriginalPrometheus()  # type: ignore[assignment]
    api.record_training_iteration("PPO", 0, "warm")  # import and first-call costs are not growth
    api.record_episode_metrics("PPO", "warm", 1.0, 1.0)
    gc.collect()
    base = harness.rss_bytes()
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
        out["growth"][checkpoint] = harness.rss_bytes() - base
        out["seconds"][checkpoint] = time.perf_counter() - started
    if handle is not None:
        text = handle.metrics_text()
        out["exposition_bytes"] = len(text)
        out["overflow_series_present"] = b'otel_metric_overflow="true"' in text
        out["after_render_growth"] = harness.rss_bytes() - base
        from otel_rl._internal.store import REGISTRY

        out["series_per_metric"] = REGISTRY["rl_training_current_iteration"].series_count()
        handle.shutdown()
    else:
        out["exposition_bytes"] = len(api.render())
        out["series_per_metric"] = checkpoints[-1] + 1
    return out


def per_series_child(kind: str, size: int) -> dict[str, Any]:
    """In a fresh process: RSS growth per series after ``size`` mixed series and three scrapes."""
    from prometheus_client import generate_latest

    if kind == "otel_rl":
        handle = telemetry_for(size)
        fill_series("gauge", 2)
        handle.metrics_text()
    else:
        prom = direct_prometheus.build()
        fill_series("gauge", 2, prom)
        generate_latest(prom.registry)
    gc.collect()
    base = harness.rss_bytes()
    if kind == "otel_rl":
        fill_series("mixed", size)
        for _ in range(3):
            handle.metrics_text()
    else:
        fill_series("mixed", size, prom)
        for _ in range(3):
            generate_latest(prom.registry)
    gc.collect()
    return {"per_series": (harness.rss_bytes() - base) / size}


def per_series(report: Report, quick: bool) -> None:
    """RSS per series after three scrapes, each side in fresh processes, alternating which runs first."""
    size = harness.size("memory_per_series", quick)
    per: dict[str, list[float]] = {"otel_rl": [], "prometheus_client": []}
    for rep in range(harness.size("heavy_reps", quick)):
        for kind in (("otel_rl", "prometheus_client") if rep % 2 == 0 else ("prometheus_client", "otel_rl")):
            per[kind].append(harness.run_child(__file__, "--per-series", kind, str(size))["per_series"] / 1024)
    ours, theirs = per["otel_rl"], per["prometheus_client"]
    report.details["memory_per_series_kib"] = per
    report.add("memory", f"RSS per series after 3 scrapes, {size // 1000}k mixed series, otel_rl",
               statistics.median(ours), "KiB", statistics.median(ours) / statistics.median(theirs),
               "direct prometheus_client", f"<= {PER_SERIES_TARGET_KIB:g} KiB",
               statistics.median(ours) <= PER_SERIES_TARGET_KIB,
               note=f"otel_rl {mmm(ours)} KiB; direct prometheus_client: {mmm(theirs)} KiB")


def bench(report: Report, quick: bool) -> None:
    per_series(report, quick)
    checkpoints = list(harness.size("memory_checkpoints", quick))
    results = {kind: harness.run_child(__file__, kind, ",".join(map(str, checkpoints)), timeout=300)
               for kind in ("otel_rl", "prometheus_client")}
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


if __name__ == "__main__":
    harness.clean_environment()
    harness.quiet_logs()
    if sys.argv[1] == "--per-series":
        print(json.dumps(per_series_child(sys.argv[2], int(sys.argv[3]))))
    else:
        print(json.dumps(child(sys.argv[1], [int(c) for c in sys.argv[2].split(",")])))
