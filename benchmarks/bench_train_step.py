"""The ``@train_step`` decorator's overhead on RLlib-sized result dicts, against the same function undecorated."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import harness
import results_dicts
from harness import Report, median

#: The step the overhead is compared with: a realistic training step takes at least this long.
REALISTIC_STEP_US = 10_000.0


def per_call(func: Callable[[], Any], n: int) -> Callable[[], float]:
    """A variant for :func:`harness.interleave`: seconds per call over ``n`` calls."""
    def run() -> float:
        started = time.perf_counter()
        for _ in range(n):
            func()
        return (time.perf_counter() - started) / n
    return run


def bench(report: Report, quick: bool) -> None:
    import otel_rl
    from otel_rl.testing import reset

    reset()
    n, reps = harness.size("train_step_calls", quick), harness.size("reps", quick)
    forms = {"old API stack, nested": results_dicts.old_api_nested(),
             "old API stack, flattened": results_dicts.old_api_flat(),
             "new API stack": results_dicts.new_api()}
    for label, result in forms.items():
        def bare(result: dict[str, Any] = result) -> dict[str, Any]:
            return result

        decorated = otel_rl.train_step(algorithm="PPO", run_id="bench")(bare)
        for _ in range(20):
            decorated()
        times = harness.interleave({"bare": per_call(bare, n), "decorated": per_call(decorated, n)}, reps)
        overhead = [(d - b) * 1e6 for d, b in zip(times["decorated"], times["bare"])]
        over = median(overhead)
        ratio = (REALISTIC_STEP_US + over) / REALISTIC_STEP_US
        leaves = results_dicts.leaf_count(result)
        report.details.setdefault("train_step", {})[label] = {"overhead_us": overhead, "leaves": leaves}
        report.add("train_step", f"@train_step overhead, {label} ({leaves} leaves)", over, "us/call",
                   ratio, "a 10 ms train step", "<= 1.01x", ratio <= 1.01,
                   note="hist_stats window of 100 episodes" if "old" in label else "")
