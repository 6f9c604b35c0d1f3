"""Turns the result dict of a training iteration into records: the recorder behind :func:`otel_rl.train_step` and
the RLlib callback (:mod:`otel_rl.integrations.rllib`).

:mod:`otel_rl._internal.results` reads the figures out of a result; this module keeps what one result cannot say
(the iteration number when it is absent, the lifetime step counter to turn into increments) and records through
:mod:`otel_rl._internal.recording`. It imports runs, results, recording, scalars and the store, never decorators
or an integration.
"""

from __future__ import annotations

import logging
import numbers
import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from otel_rl._internal import recording as rec
from otel_rl._internal.errors import StrictModeError
from otel_rl._internal.results import RECORDED_KEY, parse_result
from otel_rl._internal.runs import run_labels
from otel_rl._internal.scalars import record_extra_result
from otel_rl._internal.store import REGISTRY, UNREADABLE, number

_logger = logging.getLogger("otel_rl")
_ITERATIONS = "rl_training_iterations_total"  #: where a result that cannot be read is counted as dropped


_RECORDERS: weakref.WeakSet[StepRecorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_RECORDERS):
        recorder.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class StepRecorder:
    """Turns each result dict into records; keeps the lifetime counters to turn them into increments."""

    def __init__(self, algorithm: str | None, run_id: str | None, agent_id: str, error_type: str) -> None:
        # Label values are strings, as the record_* helpers make them (the store's keys are used directly below).
        self.algorithm = None if algorithm is None else rec.printable_label(algorithm, _ITERATIONS)
        self.run_id = None if run_id is None else rec.printable_label(run_id, _ITERATIONS)
        self.agent_id = rec.printable_label(agent_id, _ITERATIONS)
        self.error_type = error_type
        self._lock = threading.Lock()
        self._failed = False
        self._iterations: dict[tuple[str, str], int] = _Recent()
        self._lifetime_steps: dict[tuple[str, str], float] = _Recent()
        _RECORDERS.add(self)

    def after_fork_in_child(self) -> None:
        """A forked child gets a new lock and keeps the parent's baselines (copied under no lock: the parent may
        have held it at fork).

        The child's store starts empty, so its step counter must count only the child's own steps: with the
        parent's lifetime baseline kept, the child's first result adds just the steps made since, not the whole
        lifetime count again; the iteration number goes on from the parent's.
        """
        self._lock = threading.Lock()
        self._iterations = _Recent(self._iterations)
        self._lifetime_steps = _Recent(self._lifetime_steps)

    def names(self) -> tuple[str, str]:
        return run_labels(self.algorithm, self.run_id)

    def error(self) -> None:
        rec.record_training_error(self.error_type)

    def record(self, result: Any) -> None:
        try:
            self._record(result)
        except StrictModeError:  # strict mode (tests, notebooks): misuse is raised where it happens
            raise
        except Exception as exc:  # parsing must never break the training loop; one traceback, not one per step
            if not self._failed:
                self._failed = True
                _logger.exception("otel-rl: could not record the train step's result (logged once; each failure "
                                  "counts in otel_rl_dropped_values_total{reason=\"unreadable_result\"})")
            else:
                _logger.debug("otel-rl: could not record the train step's result", exc_info=True)
            REGISTRY.drop(_ITERATIONS, UNREADABLE, exc)

    def _record(self, result: Any) -> None:
        if isinstance(result, Mapping) and result.get(RECORDED_KEY) is True:
            return  # otel_rl.integrations.rllib's callback recorded this result already
        algorithm, run_id = self.names()
        key = (algorithm, run_id)
        parsed = parse_result(result) if isinstance(result, Mapping) else None
        with self._lock:
            iteration = self._iterations.get(key, 0) + 1
            if parsed is not None and isinstance(parsed.iteration, numbers.Integral) \
                    and not isinstance(parsed.iteration, bool):
                iteration = int(parsed.iteration)  # also numpy integers
            self._iterations[key] = iteration
            steps = None
            if parsed is not None:
                steps = parsed.env_steps_this_iter
                lifetime = parsed.env_steps_lifetime
                if isinstance(lifetime, numbers.Real) and not isinstance(lifetime, bool):
                    lifetime = number(lifetime)  # a float, or why not (10**400 would overflow math.isfinite)
                if type(lifetime) is not float:
                    lifetime = None  # a NaN must not become the baseline of the next increment
                if steps is None and lifetime is not None:
                    previous = self._lifetime_steps.get(key, 0.0)
                    steps = lifetime - previous if lifetime >= previous else lifetime  # a restart resets it
                if lifetime is not None:
                    self._lifetime_steps[key] = lifetime
        rec.record_training_iteration(algorithm, iteration, run_id)
        if parsed is None:
            return
        record_extra_result(result, algorithm=algorithm, run_id=run_id)  # the extra_keys setting (if any)
        rec.set_episode_means(key, parsed.reward_mean, parsed.length_mean)
        for policy_loss, value_loss, entropy in parsed.losses:
            rec.record_loss_metrics(algorithm, policy_loss, value_loss, entropy)
        for module, losses in parsed.module_losses.items():  # the same, kept apart per module
            rec.set_module_losses((algorithm, run_id, module), losses)
        rec.set_signals(key, parsed.signals)
        if steps is not None and (type(steps) not in (int, float) or steps != 0):  # an array is counted as a drop
            rec.record_environment_steps(algorithm, steps)
        rewards, lengths = parsed.episode_rewards, parsed.episode_lengths
        count = len(rewards)
        new = parsed.episodes_this_iter
        if rewards and _is_count(new):
            # RLlib's hist_stats is a window over the last 100 episodes: only the newest are this iteration's. With
            # more episodes than the window holds, all count and the window's are observed.
            if new < len(rewards):
                rewards, lengths = rewards[len(rewards) - new:], lengths[max(len(lengths) - new, 0):]
            count = int(new)
        elif not rewards and _is_count(parsed.episodes_without_values):
            count = int(parsed.episodes_without_values)  # the new API stack counts episodes without their values
        # A length without its reward is not observed: the lengths pair with the rewards by position.
        rec.add_episodes((algorithm, self.agent_id), count, rewards, lengths[:len(rewards)])
        for agent, (agent_rewards, agent_lengths) in parsed.agent_episodes.items():
            # Each agent's part of the multi-agent episodes, beside the team's (summed over agents) above.
            rec.add_episodes((algorithm, agent), len(agent_rewards), agent_rewards, agent_lengths)
        for agent_id, figures in parsed.performance.items():
            rec.record_performance_metrics(algorithm, agent_id or self.agent_id, figures)


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0


class _Recent(dict):
    """A dict that keeps the most recently written keys, at most the cardinality limit of them.

    ``train_step`` keeps a counter per (algorithm, run id); thousands of run ids must not grow it without bound
    (the metric series themselves are bounded by the same limit). A forgotten key starts from zero again.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in self:
            del self[key]  # re-inserted at the end: the least recently written key comes first
        super().__setitem__(key, value)
        limit = max(int(REGISTRY.cardinality_limit), 1)
        while len(self) > limit:
            del self[next(iter(self))]
