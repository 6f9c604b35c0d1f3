"""Rendering /metrics: otel-rl's ``metrics_text()`` vs prometheus_client's ``generate_latest`` on the same series.

Two sets of rows: the suite's workload (:func:`workloads.populate`, against :class:`baselines.OriginalPrometheus`,
with the text's size), and one row per series kind (gauge, histogram, mixed: :func:`workloads.fill_series`) against
the direct rebuild of the original module (:mod:`direct_prometheus`), timed by the thread's CPU so that preemption by
other processes does not count. :func:`kind_render_times` also gives :mod:`bench_scaling` its render curve.
"""

from __future__ import annotations

import time
from functools import partial

import baselines
import direct_prometheus
import harness
from harness import Report, median, mmm, ratios, timed
from workloads import fill_series, populate, telemetry_for

#: render time of a kind's series set against generate_latest on the same series
KIND_TARGET = 0.25


def kind_render_times(kind: str, size: int, reps: int) -> dict[str, list[float]]:
    """Thread CPU seconds of ``metrics_text()`` ("otel_rl") and ``generate_latest`` on ``size`` series of ``kind``."""
    from prometheus_client import generate_latest

    handle = telemetry_for(size)
    try:
        fill_series(kind, size)
        prom = direct_prometheus.build()
        fill_series(kind, size, prom)
        handle.metrics_text()
        return harness.interleave({"otel_rl": timed(handle.metrics_text, time.thread_time),
                                   "generate_latest": timed(partial(generate_latest, prom.registry),
                                                            time.thread_time)}, reps)
    finally:
        handle.shutdown()


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

    reps = harness.size("heavy_reps", quick)
    for size in harness.size("render_kind_sizes", quick):
        for kind in ("gauge", "histogram", "mixed"):
            times = kind_render_times(kind, size, reps)
            kind_ratios = ratios(times, "otel_rl", "generate_latest")
            report.details[f"exposition_{kind}_{size}"] = times
            report.add("exposition", f"/metrics render, {size // 1000}k {kind} series vs generate_latest",
                       median(times["otel_rl"]) * 1e3, "ms", median(kind_ratios), "direct generate_latest",
                       f"<= {KIND_TARGET}x", median(kind_ratios) <= KIND_TARGET,
                       note=f"ratio {mmm(kind_ratios)}; generate_latest "
                            f"{median(times['generate_latest']) * 1e3:.0f} ms")
    reset()
