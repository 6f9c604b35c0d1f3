"""``force_flush()`` on an OTLP exporter: how many times it collects the store, and its CPU against one export.

A flush that collected more than once would pay for every series more than once; the CPU of a whole
``force_flush()`` is compared with one ``reader.collect()`` (collect, encode, send) in the same run.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import harness
from harness import Report, median, mmm, ratios, timed
from otlp_sink import start_sink, stop
from workloads import fill_series, telemetry_for


def bench(report: Report, quick: bool) -> None:
    from otel_rl.testing import reset

    reps, size = harness.size("heavy_reps", quick), harness.size("flush_series", quick)
    sink, port = start_sink()
    try:
        handle = telemetry_for(size, port=port)
        fill_series("mixed", size)
        producer = handle.producer
        calls = [0]
        original = producer.catalog_metrics

        def counting() -> Any:
            calls[0] += 1
            return original()

        producer.catalog_metrics = counting  # type: ignore[method-assign]
        counts = []
        reader = handle.readers[-1]
        for _ in range(reps):
            calls[0] = 0
            handle.force_flush(30.0)
            counts.append(float(calls[0]))
        times = harness.interleave({"flush": timed(partial(handle.force_flush, 30.0), time.process_time),
                                    "export": timed(reader.collect, time.process_time)}, reps)
        cost = ratios(times, "flush", "export")
        producer.catalog_metrics = original  # type: ignore[method-assign]
        handle.shutdown()
    finally:
        stop(sink)
        reset()
    report.details["flush"] = {"collections": counts, "cpu_s": times}
    report.add("flush", f"collections per force_flush(), {size} mixed series", median(counts), "", None, "",
               "1", median(counts) <= 1.0, note=f"flush CPU vs one export: {mmm(cost)}")
