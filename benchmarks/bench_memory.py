"""Memory: RSS growth with the number of distinct run_ids, otel-rl (cardinality-limited) vs prometheus_client.

Each side is measured in a fresh process: ``python benchmarks/bench_memory.py KIND CHECKPOINTS`` prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

import baselines
import harness
from harness import Report


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


def bench(report: Report, quick: bool) -> None:
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
    print(json.dumps(child(sys.argv[1], [int(c) for c in sys.argv[2].split(",")])))
