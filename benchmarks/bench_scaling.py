"""Scaling curves: per-record cost against live series, and the render, export and scrape-pause costs against series.

Not run by default (``run.py --only scaling``): every point is informative, no target. Per-record cost is the thread's
CPU over a cycle of (up to) 1,024 live series spread over the whole dict; the render, export and pause points are
the measurements of :mod:`bench_exposition` (mixed series), :mod:`bench_export` and :mod:`bench_scrape_pause` at
each size, with their baselines in the same run.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import harness
from bench_export import export_times
from bench_exposition import kind_render_times
from bench_scrape_pause import ScrapeClient, scrape_pauses
from harness import Report, median, ratios, timed
from otlp_sink import start_sink, stop
from workloads import fill_series

#: repetitions of every point (quick, full)
REPS = (2, 3)


def _set_all(gauge: Any, keys: list[tuple[str, str]]) -> None:
    s = gauge.set
    for k in keys:
        s(k, 1.5)


def _observe_all(hist: Any, keys: list[tuple[str, str]]) -> None:
    o = hist.observe
    for k in keys:
        o(k, 1.5)


def record_curve(report: Report, quick: bool, reps: int) -> None:
    """ns per ``Gauge.set`` and ``Histogram.observe`` with more and more live series."""
    from otel_rl._internal.store import REGISTRY
    from otel_rl.testing import reset

    sizes, n = harness.size("curve_record", quick)
    for size in sizes:
        reset()
        fill_series("gauge", size)
        fill_series("histogram", size)
        gauge, hist = REGISTRY["rl_training_current_iteration"], REGISTRY["rl_training_episode_reward"]
        step = max(1, size // 2 // 1024)
        gkeys = [("PPO", f"run-{i:06d}") for i in range(1, size, 2)][::step][:1024]
        hkeys = [("PPO", f"agent-{i:06d}") for i in range(1, size, 2)][::step][:1024]
        gkeys = (gkeys * (n // len(gkeys) + 1))[:n]
        hkeys = (hkeys * (n // len(hkeys) + 1))[:n]
        times = harness.interleave({"gauge": timed(partial(_set_all, gauge, gkeys), time.thread_time),
                                    "histogram": timed(partial(_observe_all, hist, hkeys), time.thread_time)}, reps)
        report.details.setdefault("curve_record", []).append({"series": size, "seconds": times, "records": n})
        report.add("scaling", f"Gauge.set, {size} live series", median(times["gauge"]) / n * 1e9, "ns")
        report.add("scaling", f"Histogram.observe, {size} live series", median(times["histogram"]) / n * 1e9, "ns")
    reset()


def render_curve(report: Report, quick: bool, reps: int) -> None:
    for size in harness.size("curve_render", quick):
        times = kind_render_times("mixed", size, reps)
        report.details.setdefault("curve_render", []).append({"series": size, "seconds": times})
        report.add("scaling", f"/metrics render, {size} mixed series", median(times["otel_rl"]) * 1e3, "ms",
                   median(ratios(times, "otel_rl", "generate_latest")), "direct generate_latest",
                   note=f"generate_latest {median(times['generate_latest']) * 1e3:.1f} ms")


def export_curve(report: Report, quick: bool, reps: int) -> None:
    sink, port = start_sink()
    try:
        for size in harness.size("curve_render", quick):
            times, label_sets = export_times(port, size, reps)
            report.details.setdefault("curve_export", []).append({"series": label_sets, "seconds": times})
            report.add("scaling", f"CPU per OTLP/HTTP export, {label_sets} series", median(times["otel_rl"]) * 1e3,
                       "ms", median(ratios(times, "otel_rl", "plain OTel SDK")), "plain OTel SDK",
                       note=f"plain OTel SDK {median(times['plain OTel SDK']) * 1e3:.1f} ms")
    finally:
        stop(sink)


def pause_curve(report: Report, quick: bool, reps: int) -> None:
    client = ScrapeClient()
    try:
        for size in harness.size("curve_pause", quick):
            ms, window = scrape_pauses(client, size, "mixed", reps)
            report.details.setdefault("curve_pause", []).append({"series": size, "ms": ms, "scrape_s": window})
            report.add("scaling", f"longest recording-thread pause, {size}-series mixed HTTP scrape",
                       median(ms["otel_rl"]), "ms",
                       note=f"prometheus_client's endpoint {median(ms['prometheus_client']):.1f} ms; no scrape "
                            f"{median(ms['idle']):.1f} ms; busy thread {median(ms['busy']):.1f} ms")
    finally:
        client.close()


def bench(report: Report, quick: bool) -> None:
    from otel_rl.testing import reset

    reps = REPS[0 if quick else 1]
    try:
        record_curve(report, quick, reps)
        render_curve(report, quick, reps)
        export_curve(report, quick, reps)
        pause_curve(report, quick, reps)
    finally:
        reset()
