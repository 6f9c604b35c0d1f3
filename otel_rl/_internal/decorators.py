"""Decorators and context managers that instrument a training loop: runs, steps and data loading.

Each works on sync and async functions and methods (``functools.wraps`` semantics) and re-raises whatever the
wrapped code raises, unchanged, after recording it. Which run is current lives in :mod:`otel_rl._internal.runs`;
what a train step's result records, in :mod:`otel_rl._internal.steps`. Imports those two, recording, identity and
lifecycle (the worker flush at a run's end); no integration imports it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

from otel_rl._internal import identity, lifecycle, runs
from otel_rl._internal import recording as rec
from otel_rl._internal.runs import RunContext, current_run
from otel_rl._internal.steps import StepRecorder

__all__ = ["RunContext", "current_run", "data_load", "flush_on_return", "train_step", "training_run"]

_logger = logging.getLogger("otel_rl")
F = TypeVar("F", bound=Callable[..., Any])
_RUNS = "rl_training_runs_total"  #: where a run label whose str() raises is counted as dropped


class training_run:  # noqa: N801 (a decorator and context manager, named like one)
    """Records a training run: started, then completed (with its duration) or failed.

    Use as ``@training_run(algorithm="PPO", run_id="exp-1")`` or ``with training_run(...):`` (or ``async with``).
    On an exception the run counts as failed with ``error_type`` and the exception propagates unchanged. An
    ``algorithm`` or ``run_id`` whose ``str()`` raises never raises here: it is counted as bad_labels (one warning)
    and the run is recorded as ``"<unprintable TYPE>"``.
    """

    def __init__(self, algorithm: str, run_id: str = "default", error_type: str = "training_error") -> None:
        self.algorithm = rec.printable_label(algorithm, _RUNS)
        self.run_id = rec.printable_label(run_id, _RUNS)
        self.error_type = error_type
        self._local = threading.local()

    def _start(self) -> tuple[float, contextvars.Token, str]:
        # Inside a Ray Tune trial the default run_id is the trial id, so trials never share series.
        run_id = self.run_id if self.run_id != "default" else (identity.ray_trial() or ("default",))[0]
        token = runs.enter(RunContext(self.algorithm, run_id))
        rec.record_training_start(self.algorithm, run_id)
        return time.monotonic(), token, run_id

    def _finish(self, state: tuple[float, contextvars.Token, str], exc_type: Any, exc: Any = None) -> None:
        started, token, run_id = state
        runs.leave(token)
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
        recorder = StepRecorder(algorithm, run_id, agent_id, error_type)
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
