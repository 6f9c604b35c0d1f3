"""The cost of ``resource_metrics``: the record path with the setting on vs off, and what a collection costs.

The record path must not change: resource instruments are only read when a reader collects. Both variants run in
the same process, interleaved (ABBA), each with its own telemetry (exporters none, so nothing collects during
the loop). A collection (``metrics_text()``, what a scrape does) is measured too: it does get dearer, by the
psutil/NVML readings. Run alone with ``python benchmarks/resource_metrics.py [--quick]`` or in the suite
(``benchmarks/run.py --only resources``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import harness
from harness import Report, median, ratios
from workloads import iteration_loop

#: Allowed slowdown of one recorded iteration with the setting on (noise on a loaded 2-CPU machine is ~5 %).
TARGET_RATIO = 1.05


def bench(report: Report, quick: bool) -> None:
    import otel_rl
    from otel_rl.testing import reset

    n, reps = harness.size("recording_iters", quick), harness.size("reps", quick) * 2 - 1
    loop = iteration_loop(otel_rl)

    def variant(on: bool) -> Callable[[], float]:
        def run() -> float:
            reset()
            handle = otel_rl.init_telemetry({"exporters": ["none"], "resource_metrics": on})
            try:
                loop(200)  # warm: series exist
                return loop(n)
            finally:
                handle.shutdown()

        return run

    times = harness.interleave({"off": variant(False), "on": variant(True)}, reps)
    r = median(ratios(times, "on", "off"))
    report.details["resources"] = {k: [t * 1e6 for t in v] for k, v in times.items()}
    report.add("resources", "one iteration, resource_metrics on", median(times["on"]) * 1e6, "us", r,
               "resource_metrics off", f"<= {TARGET_RATIO}x", r <= TARGET_RATIO)
    report.add("resources", "one iteration, resource_metrics off", median(times["off"]) * 1e6, "us")

    def collection(on: bool) -> Callable[[], float]:
        def run() -> float:
            reset()
            handle = otel_rl.init_telemetry({"exporters": ["none"], "resource_metrics": on})
            try:
                loop(50)
                handle.metrics_text()
                started = time.perf_counter()
                for _ in range(20):
                    handle.metrics_text()
                return (time.perf_counter() - started) / 20
            finally:
                handle.shutdown()

        return run

    scrapes = harness.interleave({"off": collection(False), "on": collection(True)}, harness.size("reps", quick))
    report.add("resources", "one scrape (metrics_text), resource_metrics on", median(scrapes["on"]) * 1e3, "ms",
               median(ratios(scrapes, "on", "off")), "resource_metrics off",
               note="collection reads psutil (and NVML where a GPU exists); not on the record path")
    report.add("resources", "one scrape (metrics_text), resource_metrics off", median(scrapes["off"]) * 1e3, "ms")
    reset()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    harness.clean_environment()
    harness.quiet_logs()
    print(Report.HEADER)
    bench(Report(), args.quick)
