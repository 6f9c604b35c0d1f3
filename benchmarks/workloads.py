"""What the benchmarks record: the original module's per-iteration call sequence, and series sets of a given size.

:func:`iteration_loop` and :func:`populate` take ``api``: otel-rl itself, or a baseline with the same helpers
(:mod:`baselines`, :mod:`direct_prometheus`). :func:`fill_series` writes series sets of one kind straight into
otel-rl's store or a :mod:`direct_prometheus` registry, and :func:`telemetry_for` gives a fresh handle sized for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from otlp_sink import otlp_config

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


def telemetry_for(series: int, exporters: list[str] | None = None, port: int | None = None) -> Any:
    """A fresh otel-rl handle whose cardinality limit holds ``series`` label sets: exporters ``none`` unless given,
    a Prometheus endpoint on a free port when ``"prometheus"`` is one, OTLP/HTTP to ``port`` when it is given."""
    import otel_rl
    from otel_rl.testing import reset

    reset()
    limit = max(2000, series + 10)
    config: dict[str, Any] = {"exporters": exporters or ["none"], "cardinality_limit": limit}
    if exporters and "prometheus" in exporters:
        config["prometheus"] = {"host": "127.0.0.1", "port": 0, "linger": 0}
    if port is not None:
        config.update(otlp_config(port, 3600.0, limit=limit))
    return otel_rl.init_telemetry(config)


def fill_series(kind: str, size: int, direct: Any = None) -> None:
    """``size`` label sets of ``kind`` in otel-rl's store, or in ``direct`` (a :func:`direct_prometheus.build`).

    *gauge*: label sets of ``current_iteration`` / ``episode_reward_mean``; *histogram*: label sets of
    ``episode_reward`` / ``episode_length``, two observations each; *mixed*: a third each of a gauge, a counter and
    a histogram."""
    if direct is None:
        from otel_rl._internal.store import REGISTRY as reg  # noqa: N811  (a local alias, like m below)

        def gauge(name: str, labels: tuple[str, ...], v: float) -> None:
            reg[name].set(labels, v)

        def counter(name: str, labels: tuple[str, ...], v: float) -> None:
            reg[name].add(labels, v)

        def hist(name: str, labels: tuple[str, ...], v: float) -> None:
            reg[name].observe(labels, v)
    else:
        m = direct.metrics

        def gauge(name: str, labels: tuple[str, ...], v: float) -> None:
            m[name].labels(*labels).set(v)

        def counter(name: str, labels: tuple[str, ...], v: float) -> None:
            m[name].labels(*labels).inc(v)

        def hist(name: str, labels: tuple[str, ...], v: float) -> None:
            m[name].labels(*labels).observe(v)

    if kind == "gauge":
        for i in range(size):
            gauge("rl_training_current_iteration" if i % 2 else "rl_training_episode_reward_mean",
                  ("PPO", f"run-{i:06d}"), float(i))
    elif kind == "histogram":
        for i in range(size):
            name = "rl_training_episode_reward" if i % 2 else "rl_training_episode_length"
            for v in (float(i % 500), float(i % 37)):
                hist(name, ("PPO", f"agent-{i:06d}"), v)
    else:
        for i in range(size):
            r = i % 3
            if r == 0:
                gauge("rl_training_current_iteration", ("PPO", f"run-{i:06d}"), float(i))
            elif r == 1:
                counter("rl_training_episodes_total", ("PPO", f"agent-{i:06d}"), 3.0)
            else:
                hist("rl_training_episode_reward", ("PPO", f"agent-{i:06d}"), float(i % 700))
