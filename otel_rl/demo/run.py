"""The demo: a real CartPole training run, instrumented the way a user would instrument theirs.

``init_telemetry`` once, the environment wrapped with :class:`~otel_rl.integrations.gymnasium.RecordEpisodeMetrics`,
the iteration function decorated with ``@train_step`` inside a ``training_run`` block, and the environment set-up
timed with ``@data_load``. CartPole has no trading figures; the demo reports stand-ins per agent so that every
dashboard panel has data: win rate (episodes reaching 195 steps), Sharpe ratio of episode returns, drawdown of
the reward curve from its peak, and total return as the improvement over the first iteration.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import otel_rl

ALGORITHM = "PG"
AGENT_ID = "agent_0"
SOLVED = 195.0


@dataclass
class DemoResult:
    """What the run did: per-iteration mean rewards, wall time and the telemetry's endpoint port."""

    reward_means: list[float] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0
    failures_injected: int = 0
    prometheus_port: int | None = None


class _InjectedFailure(RuntimeError):
    """The error ``--inject-failure`` raises once, so error panels and alerts have data."""


def run_demo(iterations: int = 60, episodes_per_iter: int = 10, seed: int = 0,
             config: Mapping[str, Any] | str | None = None, run_id: str | None = None,
             inject_failure: bool = False, progress: bool = True,
             on_iteration: Callable[[int, Mapping[str, Any]], None] | None = None,
             shutdown: bool = True) -> DemoResult:
    """Train a NumPy policy-gradient agent on CartPole for ``iterations`` iterations, exporting metrics.

    ``config`` goes to :func:`otel_rl.init_telemetry`; None uses the running telemetry if there is one.
    """
    import gymnasium as gym

    from otel_rl.demo.agent import PolicyGradientAgent, train_iteration
    from otel_rl.integrations.gymnasium import RecordEpisodeMetrics

    running = otel_rl.current()
    telemetry = running if config is None and running is not None else otel_rl.init_telemetry(config)
    run_id = run_id or f"cartpole-seed{seed}"
    result = DemoResult(prometheus_port=telemetry.prometheus_port)

    @otel_rl.data_load
    def make_environment():
        env = gym.make("CartPole-v1")
        env.reset(seed=seed)
        return RecordEpisodeMetrics(env, algorithm=ALGORITHM, agent_id=AGENT_ID)

    agent = PolicyGradientAgent(seed=seed)
    performance = _Performance()
    fail_at = max(1, iterations // 2) if inject_failure else -1

    @otel_rl.train_step
    def train(iteration: int) -> dict[str, Any]:
        if iteration == fail_at and not result.failures_injected:
            result.failures_injected += 1
            raise _InjectedFailure("injected by --inject-failure: the step is retried")
        outcome: dict[str, Any] = train_iteration(env, agent, episodes_per_iter)
        outcome["training_iteration"] = iteration
        outcome["custom_metrics"] = {AGENT_ID: performance.update(outcome["episode_returns"])}
        return outcome

    bar = _progress(iterations, progress)
    started = time.monotonic()
    with otel_rl.training_run(algorithm=ALGORITHM, run_id=run_id):
        env = make_environment()
        iteration = 1
        while iteration <= iterations:
            try:
                outcome = train(iteration)
            except _InjectedFailure:
                continue  # counted in rl_training_errors_total; retry the iteration
            result.reward_means.append(outcome["episode_reward_mean"])
            bar(outcome)
            if on_iteration is not None:
                on_iteration(iteration, outcome)
            iteration += 1
        env.close()
    result.seconds = time.monotonic() - started
    result.iterations = len(result.reward_means)
    bar(None)
    if shutdown:
        telemetry.shutdown()
    return result


class _Performance:
    """Trading-style stand-ins computed from CartPole episode returns (fractions, as RLlib users report them)."""

    def __init__(self) -> None:
        self.first_mean: float | None = None
        self.peak = -math.inf
        self.worst_drawdown = 0.0

    def update(self, returns: list[float]) -> dict[str, float]:
        mean = sum(returns) / len(returns)
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))
        self.first_mean = mean if self.first_mean is None else self.first_mean
        self.peak = max(self.peak, mean)
        self.worst_drawdown = max(self.worst_drawdown, (self.peak - mean) / self.peak * 100.0)
        return {
            "sharpe_ratio": mean / std if std > 0 else 0.0,
            "max_drawdown": self.worst_drawdown,  # percent, as the original module's gauge
            "win_rate": sum(r >= SOLVED for r in returns) / len(returns),  # fraction: stored as percent
            "total_return": mean / self.first_mean - 1.0,  # fraction: stored as percent
        }


def _progress(total: int, enabled: bool) -> Callable[[Mapping[str, Any] | None], None]:
    """A progress bar (tqdm when installed, a plain line otherwise); called with None at the end."""
    if not enabled:
        return lambda outcome: None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, unit="iter", desc="CartPole", file=sys.stderr, dynamic_ncols=True)

        def update(outcome):
            if outcome is None:
                bar.close()
                return
            bar.set_postfix(reward=f"{outcome['episode_reward_mean']:.1f}",
                            loss=f"{outcome['policy_loss']:.3f}")
            bar.update(1)

        return update
    count = [0]

    def plain(outcome):
        if outcome is None:
            print(file=sys.stderr)
            return
        count[0] += 1
        print(f"\rCartPole {count[0]}/{total} reward={outcome['episode_reward_mean']:.1f}", end="",
              file=sys.stderr, flush=True)

    return plain
