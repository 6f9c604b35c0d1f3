"""Recording: one original iteration (31 metric updates) on otel-rl vs prometheus_client and the plain OTel SDK.

prometheus_client appears twice: :class:`baselines.OriginalPrometheus` (the original module's helpers, the suite's
baseline) and :mod:`direct_prometheus` (the same module rebuilt the direct way, the fastest honest one), each with
its own target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import baselines
import direct_prometheus
import harness
from harness import Report, median, mmm, ratios
from workloads import iteration_loop


def iteration_times(apis: dict[str, Any], n: int, reps: int,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per iteration of each api's loop of ``n`` iterations, interleaved over ``reps`` repetitions."""
    loops = {name: iteration_loop(api, clock) for name, api in apis.items()}
    for loop in loops.values():
        loop(200)  # warm up: series exist, code paths are hot
    return harness.interleave({name: partial(loop, n) for name, loop in loops.items()}, reps)


def bench(report: Report, quick: bool) -> None:
    import otel_rl
    from otel_rl.testing import reset

    reset()
    plain = baselines.PlainOtel()
    apis = {"otel_rl": otel_rl, "prometheus_client": baselines.OriginalPrometheus(),
            "prometheus_client (keyword labels)": baselines.OriginalPrometheus(keyword_labels=True),
            "plain OTel SDK": plain, "direct prometheus_client": direct_prometheus.build()}
    times = iteration_times(apis, harness.size("recording_iters", quick), harness.size("reps", quick))
    plain.shutdown()
    r = median(ratios(times, "otel_rl", "prometheus_client"))
    report.details["recording"] = {k: [t * 1e6 for t in v] for k, v in times.items()}
    report.add("recording", "one iteration (31 metric updates), otel_rl", median(times["otel_rl"]) * 1e6, "us",
               r, "prometheus_client", "<= 0.5x", r <= 0.5)
    for other in ("prometheus_client", "prometheus_client (keyword labels)", "plain OTel SDK"):
        report.add("recording", f"one iteration, {other}", median(times[other]) * 1e6, "us",
                   median(ratios(times, other, "prometheus_client")), "prometheus_client")
    report.add("recording", "otel_rl vs plain OTel SDK", median(ratios(times, "otel_rl", "plain OTel SDK")), "x")
    direct = ratios(times, "otel_rl", "direct prometheus_client")
    report.add("recording", "one iteration, otel_rl vs direct prometheus_client", median(direct), "x",
               median(direct), "direct prometheus_client", "<= 0.2x", median(direct) <= 0.2,
               note=f"{mmm(direct)}; direct prometheus_client "
                    f"{median(times['direct prometheus_client']) * 1e6:.1f} us; the suite's baseline is "
                    f"{mmm(ratios(times, 'prometheus_client', 'direct prometheus_client'))}x the direct one")
