"""Recording from several threads: the cost per histogram record with 4 threads against 1 thread.

The GIL serialises the threads, so with no lock convoy a record costs about the same whichever number of threads
records; prometheus_client's ratio on the same workload is shown for reference.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import direct_prometheus
import harness
from harness import Report, median, mmm, ratios

#: per-record cost with 4 threads against 1 thread
TARGET = 1.2


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


def bench(report: Report, quick: bool) -> None:
    from otel_rl._internal.store import REGISTRY
    from otel_rl.testing import reset

    n = harness.size("contention_records", quick)
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

    times = harness.interleave({"otel_rl 1": partial(per_record, 1, ours, n),
                                "otel_rl 4": partial(per_record, 4, ours, n),
                                "prom 1": partial(per_record, 1, theirs, n),
                                "prom 4": partial(per_record, 4, theirs, n)}, harness.size("heavy_reps", quick))
    r = ratios(times, "otel_rl 4", "otel_rl 1")
    report.details["thread_contention_s"] = times
    report.add("thread_contention", "histogram record, 4 threads (per record)", median(times["otel_rl 4"]) * 1e9,
               "ns", median(r), "1 thread", f"<= {TARGET}x", median(r) <= TARGET,
               note=f"ratio {mmm(r)}; {median(times['otel_rl 1']) * 1e9:.0f} ns/record alone; prometheus_client "
                    f"4 vs 1: {mmm(ratios(times, 'prom 4', 'prom 1'))}")
    reset()
