"""Decorators and context managers that instrument a training loop: runs, steps and data loading.

Each works on sync and async functions and methods (``functools.wraps`` semantics) and re-raises whatever the
wrapped code raises, unchanged, after recording it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import numbers
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from otel_rl._internal import identity, lifecycle
from otel_rl._internal import recording as rec
from otel_rl._internal.errors import StrictModeError
from otel_rl._internal.results import RECORDED_KEY, parse_result
from otel_rl._internal.scalars import record_extra_result
from otel_rl._internal.store import BAD_LABELS, REGISTRY, UNREADABLE, number

_logger = logging.getLogger("otel_rl")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RunContext:
    """The run a :class:`training_run` block is recording; ``train_step`` without arguments uses it."""

    algorithm: str
    run_id: str


_current_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("otel_rl_run", default=None)


def current_run() -> RunContext | None:
    """The innermost active :class:`training_run`, if any."""
    return _current_run.get()


def run_labels(algorithm: Any = None, run_id: Any = None, default_algorithm: str = "default") -> tuple[str, str]:
    """An adapter's ``(algorithm, run_id)``: its own arguments, else the enclosing :class:`training_run`'s, else
    ``default_algorithm`` and ``"default"``."""
    run = _current_run.get()
    return (str(algorithm or (run.algorithm if run else default_algorithm)),
            str(run_id or (run.run_id if run else "default")))


def _label(value: Any, metric: str) -> str:
    """``str(value)``; when that raises, ``"<unprintable TYPE>"``, counted as bad_labels of ``metric`` and logged
    once: building a decorator or a ``with`` block inside the loop is recording, which never raises."""
    if type(value) is str:
        return value
    try:
        return str(value)
    except Exception:  # noqa: BLE001 (recording never raises)
        REGISTRY.drop(metric, BAD_LABELS, value)
        return f"<unprintable {type(value).__qualname__}>"


class training_run:  # noqa: N801 (a decorator and context manager, named like one)
    """Records a training run: started, then completed (with its duration) or failed.

    Use as ``@training_run(algorithm="PPO", run_id="exp-1")`` or ``with training_run(...):`` (or ``async with``).
    On an exception the run counts as failed with ``error_type`` and the exception propagates unchanged. An
    ``algorithm`` or ``run_id`` whose ``str()`` raises never raises here: it is counted as bad_labels (one warning)
    and the run is recorded as ``"<unprintable TYPE>"``.
    """

    def __init__(self, algorithm: str, run_id: str = "default", error_type: str = "training_error") -> None:
        self.algorithm = _label(algorithm, rec._runs.name)
        self.run_id = _label(run_id, rec._runs.name)
        self.error_type = error_type
        self._local = threading.local()

    def _start(self) -> tuple[float, contextvars.Token, str]:
        # Inside a Ray Tune trial the default run_id is the trial id, so trials never share series.
        run_id = self.run_id if self.run_id != "default" else (identity.ray_trial() or ("default",))[0]
        token = _current_run.set(RunContext(self.algorithm, run_id))
        rec.record_training_start(self.algorithm, run_id)
        return time.monotonic(), token, run_id

    def _finish(self, state: tuple[float, contextvars.Token, str], exc_type: Any, exc: Any = None) -> None:
        started, token, run_id = state
        try:
            _current_run.reset(token)
        except ValueError:  # finished in another context than it started: nothing to restore
            pass
        if exc_type is None or _clean_exit(exc_type, exc):
            rec.record_training_complete(self.algorithm, time.monotonic() - started, run_id)
        elif issubclass(exc_type, Exception):
            rec.record_training_failed(self.algorithm, self.error_type)
        else:  # KeyboardInterrupt, sys.exit(1), task cancellation: the run did not complete
            rec.record_training_failed(self.algorithm, "interrupted")
        _flush_worker()  # a worker (Ray trial, rank) may be stopped before its next export

    def __enter__(self) -> RunContext:
        state = self._start()
        self._stack().append(state)
        return RunContext(self.algorithm, state[2])

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._finish(self._stack().pop(), exc_type, exc)

    async def __aenter__(self) -> RunContext:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)

    def _stack(self) -> list[tuple[float, contextvars.Token, str]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def __call__(self, func: F) -> F:
        # Each call keeps its own start state, so concurrent calls (threads, async tasks) never mix.
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # The run is the iteration, not the call that creates the generator.
            return _around_iteration(func, self._start, self._finish)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                state = self._start()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    self._finish(state, type(exc), exc)
                    raise
                self._finish(state, None)
                return result

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            state = self._start()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._finish(state, type(exc), exc)
                raise
            self._finish(state, None)
            return result

        return run  # type: ignore[return-value]


class _FlushOnReturn:
    """The context manager and decorator :func:`flush_on_return` returns when called without a function."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _flush_on_return()

    def __call__(self, func: F) -> F:
        # A generator (a streaming Ray task) ends when it is exhausted or closed, not when it is created.
        if inspect.isasyncgenfunction(func):
            @functools.wraps(func)
            async def run_async_gen(*args: Any, **kwargs: Any) -> Any:
                try:
                    async for item in func(*args, **kwargs):
                        yield item
                finally:
                    _flush_on_return()

            return run_async_gen  # type: ignore[return-value]

        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def run_gen(*args: Any, **kwargs: Any) -> Any:
                try:
                    return (yield from func(*args, **kwargs))
                finally:
                    _flush_on_return()

            return run_gen  # type: ignore[return-value]

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                finally:
                    _flush_on_return()

            return run_async  # type: ignore[return-value]

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            finally:
                _flush_on_return()

        return run  # type: ignore[return-value]


@overload
def flush_on_return(func: F) -> F: ...


@overload
def flush_on_return(func: None = None) -> _FlushOnReturn: ...


def flush_on_return(func: Callable[..., Any] | None = None) -> Any:
    """Exports what a worker process recorded as soon as the function (or ``with`` block) ends, also on error.

    For Ray tasks and other work in a process that its framework may end without an interpreter exit: Ray ends
    its task workers at ``ray.shutdown()`` before their next periodic export. Use bare (``@otel_rl.flush_on_return``
    under ``@ray.remote``), called, or as ``with otel_rl.flush_on_return():``; on a coroutine function it flushes
    when the coroutine ends, on a generator function (a streaming Ray task) when the generator ends. The flush
    waits up to ``shutdown_timeout`` and logs a warning when the values did not go out; after such a failure this
    process stops flushing on return (one more warning) and relies on the periodic export, so an unreachable
    collector holds up one task, not every task. In the process that called ``init_telemetry`` itself it does
    nothing: the periodic export and the exit flush cover that one.
    """
    return _FlushOnReturn()(func) if func is not None else _FlushOnReturn()


def _flush_worker() -> bool:
    try:
        return lifecycle.flush_worker()
    except Exception:  # noqa: BLE001 (never raises into the task)
        _logger.exception("otel-rl: could not flush the worker's values")
        return False


_flush_on_return_off = False  #: a flush on return failed in this process: the periodic export alone goes on


def _flush_on_return() -> None:
    """Each flush waits up to ``shutdown_timeout``: with a dead collector that would hold up every task, so after
    one failure the process stops flushing on return, as the RLlib callback does per result."""
    global _flush_on_return_off
    if _flush_on_return_off or _flush_worker():
        return
    _flush_on_return_off = True
    _logger.warning("otel-rl: process %d no longer exports when a flush_on_return function returns; its values go "
                    "out with the periodic export only (otlp.export_interval)", os.getpid())


_RECORDERS: weakref.WeakSet[_StepRecorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_RECORDERS):
        recorder.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _StepRecorder:
    """Turns each result dict into records; keeps the lifetime counters to turn them into increments."""

    def __init__(self, algorithm: str | None, run_id: str | None, agent_id: str, error_type: str) -> None:
        # Label values are strings, as the record_* helpers make them (the store's keys are used directly below).
        self.algorithm = None if algorithm is None else _label(algorithm, rec._iterations.name)
        self.run_id = None if run_id is None else _label(run_id, rec._iterations.name)
        self.agent_id = _label(agent_id, rec._iterations.name)
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
            REGISTRY.drop(rec._iterations.name, UNREADABLE, exc)

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
        if parsed.reward_mean is not None:
            rec._reward_mean.set(key, parsed.reward_mean)
        if parsed.length_mean is not None:
            rec._length_mean.set(key, parsed.length_mean)
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
        episode = (algorithm, self.agent_id)
        if count:
            rec._episodes.add(episode, float(count))
        for i, reward in enumerate(rewards):
            rec._episode_reward.observe(episode, reward)
            if i < len(lengths):
                rec._episode_length.observe(episode, lengths[i])
        for agent, (agent_rewards, agent_lengths) in parsed.agent_episodes.items():
            # Each agent's part of the multi-agent episodes, beside the team's (summed over agents) above.
            per_agent = (algorithm, agent)
            rec._episodes.add(per_agent, float(len(agent_rewards)))
            for reward, length in zip(agent_rewards, agent_lengths):
                rec._episode_reward.observe(per_agent, reward)
                rec._episode_length.observe(per_agent, length)
        for agent_id, figures in parsed.performance.items():
            rec.record_performance_metrics(algorithm, agent_id or self.agent_id, figures)


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0


@overload
def train_step(func: F) -> F: ...


@overload
def train_step(*, algorithm: str | None = None, run_id: str | None = None, agent_id: str = "default",
               error_type: str = "training_error") -> Callable[[F], F]: ...


def train_step(func: Callable[..., Any] | None = None, *, algorithm: str | None = None, run_id: str | None = None,
               agent_id: str = "default", error_type: str = "training_error") -> Any:
    """Records one training iteration per call from the result dict the function returns.

    Counts the iteration, sets the current iteration, and records reward and length means, losses, environment
    steps (lifetime counters become increments), per-episode values from ``hist_stats`` (the new RLlib API stack's
    ``env_runners/num_episodes`` counts the episodes), the training signals and per-agent trading figures. A result
    that ``otel_rl.integrations.rllib``'s callback recorded already is skipped. ``algorithm`` and ``run_id``
    default to the enclosing :class:`training_run`. An exception counts in ``rl_training_errors_total{error_type}``
    and propagates unchanged. Works bare (``@train_step``) or with
    arguments, on sync and async functions.
    """

    def decorate(fn: F) -> F:
        recorder = _StepRecorder(algorithm, run_id, agent_id, error_type)
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def step_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = await fn(*args, **kwargs)
                except Exception:
                    recorder.error()
                    raise
                recorder.record(result)
                return result

            return step_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def step(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
            except Exception:
                recorder.error()
                raise
            recorder.record(result)
            return result

        return step  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def data_load(func: F | None = None) -> Any:
    """Times each call into ``rl_training_data_load_time_seconds`` (also when it raises). Bare or called."""

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # A loader that yields batches loads while it is iterated: time the iteration, not the call.
            def finish(started: float, exc_type: Any, exc: Any = None) -> None:
                rec.record_data_load_time(time.perf_counter() - started)

            return _around_iteration(fn, time.perf_counter, finish)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def load_async(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    rec.record_data_load_time(time.perf_counter() - started)

            return load_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def load(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                rec.record_data_load_time(time.perf_counter() - started)

        return load  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _clean_exit(exc_type: Any, exc: Any) -> bool:
    """``sys.exit()``, ``sys.exit(0)``, and a generator closed by its consumer, end a run as completed."""
    if exc_type is GeneratorExit:
        return True
    if exc_type is not None and issubclass(exc_type, SystemExit):
        code = getattr(exc, "code", 1)
        return code is None or (isinstance(code, int) and code == 0)
    return False


def _around_iteration(fn: Callable[..., Any], start: Callable[[], Any],
                      finish: Callable[[Any, Any, Any], None]) -> Callable[..., Any]:
    """Wrap a generator function (sync or async) so ``start`` runs at the first ``next`` and ``finish`` when the
    iteration ends: exhausted (``None``), closed by the consumer (``GeneratorExit``) or raising."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def agen(*args: Any, **kwargs: Any) -> Any:
            inner = fn(*args, **kwargs)
            state = start()
            try:
                async for item in inner:
                    yield item
            except BaseException as exc:
                finish(state, type(exc), exc)
                raise
            finally:
                await inner.aclose()
            finish(state, None, None)

        return agen

    @functools.wraps(fn)
    def gen(*args: Any, **kwargs: Any) -> Any:
        state = start()
        try:
            result = yield from fn(*args, **kwargs)
        except BaseException as exc:
            finish(state, type(exc), exc)
            raise
        finish(state, None, None)
        return result

    return gen


class _Recent(dict):
    """A dict that keeps the most recently written keys, at most the cardinality limit of them.

    ``train_step`` keeps a counter per (algorithm, run id); thousands of run ids must not grow it without bound
    (the metric series themselves are bounded by the same limit). A forgotten key starts from zero again.
    """

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in self:
            del self[key]  # re-inserted at the end: the least recently written key comes first
        super().__setitem__(key, value)
        limit = max(int(rec.REGISTRY.cardinality_limit), 1)
        while len(self) > limit:
            del self[next(iter(self))]
