"""The ``record_*`` helpers of the original ``prometheus_metrics`` module (prometheus_client) that otel-rl
replaces, with the same signatures and semantics, on otel-rl's metric state.

Each helper never raises: bad values are dropped and counted (see :mod:`otel_rl._internal.store`), and anything
unexpected is logged. Values recorded before :func:`otel_rl.init_telemetry` are kept and exported once it runs.

Finished episodes are recorded in one place, whoever reports them (``record_episode``, ``train_step`` and the RLlib
callback through :mod:`otel_rl._internal.steps`, the Gymnasium wrappers, SB3, TorchRL): :func:`add_episode` and
:func:`add_episodes`; the means an iteration reports go through :func:`set_episode_means`, and the environment steps
the Gymnasium wrappers hold back through :func:`add_env_steps`. Imports the catalog,
errors, runs and the store; never decorators or an integration.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from otel_rl._internal import runs
from otel_rl._internal.catalog import CATALOG, SIGNAL_NAMES
from otel_rl._internal.errors import StrictModeError
from otel_rl._internal.store import BAD_LABELS, NONE, REGISTRY, WRONG_TYPE, set_gauges

_logger = logging.getLogger("otel_rl")
F = TypeVar("F", bound=Callable[..., Any])

_runs_total = REGISTRY.counter("rl_training_runs_total")
_duration = REGISTRY.histogram("rl_training_duration_seconds")
_iterations = REGISTRY.counter("rl_training_iterations_total")
_episodes = REGISTRY.counter("rl_training_episodes_total")
_episode_reward = REGISTRY.histogram("rl_training_episode_reward")
_episode_length = REGISTRY.histogram("rl_training_episode_length")
_performance = {
    "sharpe_ratio": (REGISTRY.gauge("rl_training_sharpe_ratio"), 1.0),
    "max_drawdown": (REGISTRY.gauge("rl_training_max_drawdown"), 1.0),
    "win_rate": (REGISTRY.gauge("rl_training_win_rate"), 100.0),
    "total_return": (REGISTRY.gauge("rl_training_total_return"), 100.0),
}
_current_iteration = REGISTRY.gauge("rl_training_current_iteration")
_reward_mean = REGISTRY.gauge("rl_training_episode_reward_mean")
_length_mean = REGISTRY.gauge("rl_training_episode_length_mean")
_policy_loss = REGISTRY.histogram("rl_training_policy_loss")
_value_loss = REGISTRY.histogram("rl_training_value_loss")
_entropy = REGISTRY.histogram("rl_training_entropy")
_data_load = REGISTRY.histogram("rl_training_data_load_time_seconds")
_env_steps = REGISTRY.counter("rl_training_environment_steps_total")
_errors = REGISTRY.counter("rl_training_errors_total")
_active = REGISTRY.gauge("rl_training_active")
_start_timestamp = REGISTRY.gauge("rl_training_start_timestamp")
_signals = {name: (REGISTRY.gauge("rl_training_" + name), 1.0) for name in SIGNAL_NAMES}
_module_loss = REGISTRY.gauge("rl_training_module_loss")
#: The ``loss`` label of ``rl_training_module_loss`` for (policy loss, value loss, entropy).
MODULE_LOSS_NAMES = ("policy", "value", "entropy")


class _BadLabel(Exception):
    """A label value whose ``str()`` raised."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


def _never_raises(func: F) -> F:
    # The metrics this helper records: a label that cannot be a string drops the call's value for each of them.
    metrics = [spec.name for spec in CATALOG if func.__name__ in spec.recorded_by]

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except _BadLabel as bad:  # counted and logged once per metric, never a traceback per call
            for name in metrics:
                REGISTRY.drop(name, BAD_LABELS, bad.value)  # raises StrictModeError in strict mode
        except StrictModeError:
            raise
        except Exception as exc:  # noqa: BLE001 (a recording problem must never stop a training run)
            if REGISTRY.strict:  # a wrong call (missing or unexpected argument): raised where it is made
                raise
            warn_failure(func.__name__, exc)

    return guarded  # type: ignore[return-value]


def warn_failure(where: str, exc: BaseException) -> None:
    """Log that ``where`` could not record: one traceback per place and kind of error, later ones at debug level
    (a wrong call in a training loop must not flood the log)."""
    if not REGISTRY.warn_once((where, "failed:" + type(exc).__name__),
                              "otel-rl: %s failed (%s); the value was not recorded. Logged once; later failures of "
                              "this kind are logged at debug level.", where, type(exc).__name__, exc_info=exc):
        _logger.debug("otel-rl: %s failed; the value was not recorded", where, exc_info=exc)


REGISTRY.run_of = runs.run_of


def _as_label(value: Any) -> str:
    """A label value as a string; raises :class:`_BadLabel` when ``str()`` fails (the hot helpers test
    ``type(value) is str`` inline first, to save the call)."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 (recording never raises)
        raise _BadLabel(value) from None


def printable_label(value: Any, metric: str) -> str:
    """``str(value)``; when that raises, ``"<unprintable TYPE>"``, counted as bad_labels of ``metric`` and logged
    once: building a decorator or a ``with`` block inside the loop is recording, which never raises."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 (recording never raises)
        REGISTRY.drop(metric, BAD_LABELS, value)
        return f"<unprintable {type(value).__qualname__}>"


@_never_raises
def record_training_start(algorithm: str, run_id: str = "default") -> None:
    """A run started: ``runs_total{status="started"}`` +1, ``active`` = 1, ``start_timestamp`` = now."""
    algorithm, run_id = _as_label(algorithm), _as_label(run_id)
    runs.started(algorithm, run_id)
    if REGISTRY.per_run:
        _runs_total.add((algorithm, "started", run_id), 1.0)
        _active.set((algorithm, run_id), 1.0)
    else:
        _runs_total.add((algorithm, "started"), 1.0)
        _active.set((algorithm,), 1.0)
    _start_timestamp.set((algorithm, run_id), time.time())


@_never_raises
def record_training_complete(algorithm: str, duration: float, run_id: str = "default") -> None:
    """A run completed: ``runs_total{status="completed"}`` +1, ``duration_seconds`` observes, ``active`` = 0."""
    algorithm = _as_label(algorithm)
    run = (_as_label(run_id),) if REGISTRY.per_run else ()
    _runs_total.add((algorithm, "completed", *run), 1.0)
    _duration.observe((algorithm, *run), duration)
    _active.set((algorithm, *run), 0.0)


@_never_raises
def record_training_failed(algorithm: str, error_type: str = "unknown") -> None:
    """A run failed: ``runs_total{status="failed"}`` +1, ``errors_total{error_type}`` +1, ``active`` = 0."""
    algorithm, error_type = _as_label(algorithm), _as_label(error_type)
    _runs_total.add((algorithm, "failed"), 1.0)
    # errors_total has no algorithm: with per_run_series its run_id is this algorithm's run, not the latest of any.
    _errors.add((error_type, runs.run_of(algorithm)) if REGISTRY.per_run else (error_type,), 1.0)
    _active.set((algorithm,), 0.0)


@_never_raises
def record_training_iteration(algorithm: str, iteration: int, run_id: str = "default") -> None:
    """An iteration finished: ``iterations_total`` +1, ``current_iteration`` = iteration."""
    if type(algorithm) is not str or type(run_id) is not str:
        algorithm, run_id = _as_label(algorithm), _as_label(run_id)
    _iterations.add((algorithm, run_id) if REGISTRY.per_run else (algorithm,), 1.0)
    _current_iteration.set((algorithm, run_id), iteration)


@_never_raises
def record_episode(algorithm: str, agent_id: str, reward: float, length: float) -> None:
    """An episode finished: ``episodes_total`` +1, ``episode_reward`` and ``episode_length`` observe."""
    key = (algorithm, agent_id)
    if type(algorithm) is not str or type(agent_id) is not str:
        key = (_as_label(algorithm), _as_label(agent_id))
    add_episode(key, reward, length)


def add_episode(key: tuple[str, str], reward: Any, length: Any) -> None:
    """One finished episode of ``(algorithm, agent_id)``: ``episodes_total`` +1, ``episode_reward`` and
    ``episode_length`` observe. Every caller that records episodes comes here or to :func:`add_episodes`.

    The label values must be strings already (the callers make them once, not per episode); a value that is no
    number is dropped and counted by the store. Raises only in strict mode: callers in a training loop guard it.
    """
    _episodes.add(key, 1.0)
    _episode_reward.observe(key, reward)
    _episode_length.observe(key, length)


def add_episodes(key: tuple[str, str], count: int, rewards: Iterable[Any] = (), lengths: Iterable[Any] = ()) -> None:
    """``count`` finished episodes of ``(algorithm, agent_id)`` at once, as :func:`add_episode`, with the rewards
    and lengths known of them: fewer than ``count`` when a return was unknown (a reward that was no number) or a
    result counted episodes without their values."""
    if count:
        _episodes.add(key, float(count))
    observe = _episode_reward.observe  # bound once: a vector environment ends several episodes per call
    for reward in rewards:
        observe(key, reward)
    observe = _episode_length.observe
    for length in lengths:
        observe(key, length)


def set_episode_means(key: tuple[str, str], reward_mean: Any, length_mean: Any) -> None:
    """The means a training iteration reported for ``(algorithm, run_id)``: ``episode_reward_mean`` and
    ``episode_length_mean``; a mean that is None was not reported and is left as it is.

    Unlike :func:`record_episode_metrics`, which counts a None as dropped: the integrations that call this pass what
    a result or a logger reported, where a None is a mean not reported (before the first episode ends, or only one
    of the two), which is no bad value."""
    if reward_mean is not None:
        _reward_mean.set(key, reward_mean)
    if length_mean is not None:
        _length_mean.set(key, length_mean)


@_never_raises
def record_episode_metrics(algorithm: str, run_id: str, reward_mean: float, length_mean: float) -> None:
    """The iteration's means: ``episode_reward_mean`` and ``episode_length_mean``, as given: a None is dropped and
    counted, as any value that is no number.

    Unlike :func:`set_episode_means`, which skips a None: here the caller passes both means itself, so a None is a
    bad value to be seen in the dropped-values counter, not a mean that was not reported."""
    key = (algorithm, run_id)
    if type(algorithm) is not str or type(run_id) is not str:
        key = (_as_label(algorithm), _as_label(run_id))
    _reward_mean.set(key, reward_mean)
    _length_mean.set(key, length_mean)


@_never_raises
def record_performance_metrics(algorithm: str, agent_id: str, metrics: Mapping[str, Any]) -> None:
    """Trading figures present in ``metrics``: sharpe_ratio and max_drawdown as given, win_rate and total_return
    given as fractions and stored as percentages (x100), as the original module did."""
    key = (algorithm, agent_id)
    if type(algorithm) is not str or type(agent_id) is not str:
        key = (_as_label(algorithm), _as_label(agent_id))
    # None, a list, ...: each figure it could have held is dropped (a dict is checked first: ABCs are slow)
    if type(metrics) is not dict and not isinstance(metrics, Mapping):
        for gauge, _ in _performance.values():
            REGISTRY.drop(gauge.name, NONE if metrics is None else WRONG_TYPE, metrics)
        return
    set_gauges(key, metrics, _performance)


@_never_raises
def record_loss_metrics(algorithm: str, policy_loss: float | None = None, value_loss: float | None = None,
                        entropy: float | None = None) -> None:
    """Observe each loss that is not None (negative values land in their buckets)."""
    key = (algorithm if type(algorithm) is str else _as_label(algorithm),)
    if policy_loss is not None:
        _policy_loss.observe(key, policy_loss)
    if value_loss is not None:
        _value_loss.observe(key, value_loss)
    if entropy is not None:
        _entropy.observe(key, entropy)


@_never_raises
def record_data_load_time(duration: float) -> None:
    """``data_load_time_seconds`` observes ``duration``."""
    _data_load.observe((), duration)


@_never_raises
def record_environment_steps(algorithm: str, steps: int) -> None:
    """``environment_steps_total`` += steps."""
    _env_steps.add((algorithm if type(algorithm) is str else _as_label(algorithm),), steps)


def add_env_steps(key: tuple[str], steps: float) -> None:
    """``environment_steps_total`` of ``(algorithm,)`` += steps: the steps a Gymnasium wrapper held back, handed
    over in its ``flush()``.

    The label value must be a string already (the wrappers make the key once, not per flush). Raises only in strict
    mode, like :func:`add_episode`."""
    _env_steps.add(key, steps)


@_never_raises
def record_training_error(error_type: str) -> None:
    """``errors_total{error_type}`` +1."""
    _errors.add((_as_label(error_type),), 1.0)


@_never_raises
def record_training_signals(algorithm: str, run_id: str = "default", *, learning_rate: float | None = None,
                            kl_divergence: float | None = None, clip_fraction: float | None = None,
                            explained_variance: float | None = None, grad_norm: float | None = None,
                            env_steps_per_second: float | None = None, entropy_coefficient: float | None = None,
                            exploration_rate: float | None = None, tokens_per_second: float | None = None) -> None:
    """Set each training signal that is not None (``rl_training_learning_rate``, ``..._kl_divergence``, ...)."""
    set_signals((_as_label(algorithm), _as_label(run_id)), {
        "learning_rate": learning_rate, "kl_divergence": kl_divergence, "clip_fraction": clip_fraction,
        "explained_variance": explained_variance, "grad_norm": grad_norm,
        "env_steps_per_second": env_steps_per_second, "entropy_coefficient": entropy_coefficient,
        "exploration_rate": exploration_rate, "tokens_per_second": tokens_per_second})


def set_signals(key: tuple[str, str], signals: Mapping[str, Any]) -> None:
    """Set the signal gauges named in ``signals`` (keys of :data:`SIGNAL_NAMES`) for ``(algorithm, run_id)``;
    None values are skipped."""
    set_gauges(key, {name: value for name, value in signals.items() if value is not None}, _signals)


def set_module_losses(key: tuple[str, str, str], losses: tuple[Any, Any, Any]) -> None:
    """Set ``rl_training_module_loss`` for ``(algorithm, run_id, module)`` from (policy, value, entropy); None
    values are skipped."""
    for name, value in zip(MODULE_LOSS_NAMES, losses):
        if value is not None:
            _module_loss.set((*key, name), value)
