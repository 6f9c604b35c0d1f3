"""Rendering /metrics: otel-rl's ``metrics_text()`` vs prometheus_client's ``generate_latest`` on the same series."""

from __future__ import annotations

import baselines
import harness
from harness import Report, median, ratios
from workloads import populate


def bench(report: Report, quick: bool) -> None:
    import otel_rl
    from otel_rl.testing import reset

    reps = harness.size("expo_reps", quick)
    for size in harness.size("expo_sizes", quick):
        reset()
        handle = otel_rl.init_telemetry({"exporters": ["none"], "cardinality_limit": max(2000, size)})
        try:
            label_sets = populate(otel_rl, size)
            prom = baselines.OriginalPrometheus()
            populate(prom, size)
            ours, theirs = handle.metrics_text(), prom.render()
            times = harness.interleave({"otel_rl": harness.timed(handle.metrics_text),
                                        "prometheus_client": harness.timed(prom.render)}, reps)
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
