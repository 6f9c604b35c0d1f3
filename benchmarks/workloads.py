"""What the benchmarks record: the original module's per-iteration call sequence, and series sets of a given size.

Every function takes ``api``: otel-rl itself, or a baseline with the same helpers (:mod:`baselines`,
:mod:`direct_prometheus`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

AGENTS = [f"agent_{i}" for i in range(5)]
PERF = [{"sharpe_ratio": 1.2 + i / 100, "max_drawdown": 0.1, "win_rate": 0.55, "total_return": 0.12}
        for i in range(5)]


def iteration_loop(api: Any, clock: Callable[[], float] = time.perf_counter) -> Callable[[int], float]:
    """The original per-iteration call sequence (31 metric updates) on ``api``; ``run(n)`` returns seconds per
    iteration by ``clock`` (``time.thread_time`` ignores preemption on a loaded machine)."""
    rti, rem = api.record_training_iteration, api.record_episode_metrics
    rpm, rlm = api.record_performance_metrics, api.record_loss_metrics
    res, rep = api.record_environment_steps, api.record_episode
    work = list(zip(AGENTS, PERF))

    def run(n: int) -> float:
        started = clock()
        for i in range(n):
            rti("PPO", i, "run-0")
            rem("PPO", "run-0", 150.0 + (i & 63), 200.0)
            for agent, figures in work:
                rpm("PPO", agent, figures)
            rlm("PPO", 0.02 + (i & 7) / 100, 0.5, 1.1)
            res("PPO", 4000)
            rep("PPO", "agent_0", 180.0 + (i & 31), 200)
        return (clock() - started) / n

    return run


def populate(api: Any, series: int) -> int:
    """About ``series`` label sets: 3/4 gauges keyed by run_id, 1/4 per-agent counter + two histograms."""
    runs, agents = series // 4, series // 12
    for i in range(runs):
        run_id = f"run-{i:05d}"
        api.record_training_iteration("PPO", i, run_id)
        api.record_episode_metrics("PPO", run_id, 100.0 + i % 300, 200.0)
    for i in range(agents):
        api.record_episode("PPO", f"agent-{i:05d}", 10.0 * (i % 100), 20 + i % 900)  # >= 0: the SDK drops negatives
    return runs * 3 + agents * 3 + 1
