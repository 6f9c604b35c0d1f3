"""The original ``prometheus_metrics`` module rebuilt the direct way, as the baseline for "one original iteration".

Metric objects are plain local references and each helper calls ``metric.labels(a, b).inc()`` (prometheus_client's
positional fast path) with nothing in between: no wrapper method, no keyword-to-positional conversion. This is the
fastest honest rendering of the original module; :class:`baselines.OriginalPrometheus` adds one indirection per call.
Every call to :func:`build` makes a fresh, private ``CollectorRegistry``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from baselines import seed_metrics


def build() -> SimpleNamespace:
    """A namespace with ``registry``, ``metrics`` (name -> metric) and the original helpers."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry(auto_describe=True)
    m: dict[str, Any] = {}
    for spec in seed_metrics():
        name, labels, doc = spec["name"], spec["labels"], spec["help"]
        if spec["type"] == "counter":
            m[name] = Counter(name, doc, labels, registry=registry)
        elif spec["type"] == "gauge":
            m[name] = Gauge(name, doc, labels, registry=registry)
        else:
            m[name] = Histogram(name, doc, labels, registry=registry, buckets=spec["buckets"])

    runs, active, start_ts = m["rl_training_runs_total"], m["rl_training_active"], m["rl_training_start_timestamp"]
    iterations, current = m["rl_training_iterations_total"], m["rl_training_current_iteration"]
    episodes, reward, length = (m["rl_training_episodes_total"], m["rl_training_episode_reward"],
                                m["rl_training_episode_length"])
    reward_mean, length_mean = m["rl_training_episode_reward_mean"], m["rl_training_episode_length_mean"]
    sharpe, drawdown, win_rate, total_return = (m["rl_training_sharpe_ratio"], m["rl_training_max_drawdown"],
                                                m["rl_training_win_rate"], m["rl_training_total_return"])
    policy_loss, value_loss, entropy = (m["rl_training_policy_loss"], m["rl_training_value_loss"],
                                        m["rl_training_entropy"])
    env_steps = m["rl_training_environment_steps_total"]

    def record_training_start(algorithm: str, run_id: str = "default") -> None:
        runs.labels(algorithm, "started").inc()
        active.labels(algorithm).set(1)
        start_ts.labels(algorithm, run_id).set(time.time())

    def record_training_iteration(algorithm: str, iteration: int, run_id: str = "default") -> None:
        iterations.labels(algorithm).inc()
        current.labels(algorithm, run_id).set(iteration)

    def record_episode(algorithm: str, agent_id: str, reward_: float, length_: float) -> None:
        episodes.labels(algorithm, agent_id).inc()
        reward.labels(algorithm, agent_id).observe(reward_)
        length.labels(algorithm, agent_id).observe(length_)

    def record_episode_metrics(algorithm: str, run_id: str, reward_mean_: float, length_mean_: float) -> None:
        reward_mean.labels(algorithm, run_id).set(reward_mean_)
        length_mean.labels(algorithm, run_id).set(length_mean_)

    def record_performance_metrics(algorithm: str, agent_id: str, metrics: dict[str, float]) -> None:
        if "sharpe_ratio" in metrics:
            sharpe.labels(algorithm, agent_id).set(metrics["sharpe_ratio"])
        if "max_drawdown" in metrics:
            drawdown.labels(algorithm, agent_id).set(metrics["max_drawdown"])
        if "win_rate" in metrics:
            win_rate.labels(algorithm, agent_id).set(metrics["win_rate"] * 100)
        if "total_return" in metrics:
            total_return.labels(algorithm, agent_id).set(metrics["total_return"] * 100)

    def record_loss_metrics(algorithm: str, policy_loss_: float | None = None, value_loss_: float | None = None,
                            entropy_: float | None = None) -> None:
        if policy_loss_ is not None:
            policy_loss.labels(algorithm).observe(policy_loss_)
        if value_loss_ is not None:
            value_loss.labels(algorithm).observe(value_loss_)
        if entropy_ is not None:
            entropy.labels(algorithm).observe(entropy_)

    def record_environment_steps(algorithm: str, steps: int) -> None:
        env_steps.labels(algorithm).inc(steps)

    return SimpleNamespace(registry=registry, metrics=m, record_training_start=record_training_start,
                           record_training_iteration=record_training_iteration, record_episode=record_episode,
                           record_episode_metrics=record_episode_metrics,
                           record_performance_metrics=record_performance_metrics,
                           record_loss_metrics=record_loss_metrics, record_environment_steps=record_environment_steps)
