"""Which training run a value belongs to: the innermost ``training_run`` of the current context (thread or async
task), else the run this process started last for the value's algorithm.

A plain module: it imports nothing of ours. ``decorators`` enters and leaves runs, ``recording`` notes the runs it
starts and answers the store's ``per_run_series`` question through :func:`run_of`, the integrations read their
labels through :func:`run_labels`. The state needs no fork handler: a forked child goes on in the run its parent
was in.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunContext:
    """The run a :class:`training_run` block is recording; ``train_step`` without arguments uses it."""

    algorithm: str
    run_id: str


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("otel_rl_run", default=None)
#: algorithm -> the run_id ``record_training_start`` saw last for it in this process; "" -> the last of any.
_latest: dict[str, str] = {}


def current_run() -> RunContext | None:
    """The innermost active :class:`training_run`, if any."""
    return _current.get()


def enter(run: RunContext) -> contextvars.Token[RunContext | None]:
    """Make ``run`` the current run of this context; :func:`leave` with the token restores the one before."""
    return _current.set(run)


def leave(token: contextvars.Token[RunContext | None]) -> None:
    """Restore the run that was current before :func:`enter` gave ``token``."""
    try:
        _current.reset(token)
    except ValueError:  # left in another context than it was entered in: nothing to restore
        pass


def run_labels(algorithm: Any = None, run_id: Any = None, default_algorithm: str = "default") -> tuple[str, str]:
    """An adapter's ``(algorithm, run_id)``: its own arguments, else the enclosing :class:`training_run`'s, else
    ``default_algorithm`` and ``"default"``."""
    run = _current.get()
    return (str(algorithm or (run.algorithm if run else default_algorithm)),
            str(run_id or (run.run_id if run else "default")))


def started(algorithm: str, run_id: str) -> None:
    """Note that this process started ``run_id`` of ``algorithm`` (the latest run of it, and of any)."""
    _latest[algorithm] = _latest[""] = run_id


def run_of(algorithm: str | None) -> str:
    """The run a value of ``algorithm`` belongs to, for the ``per_run_series`` setting (the store appends it to
    keys that lack it): the innermost ``training_run`` of that algorithm (or of any, for ``algorithm=None``), else
    the run this process started last for it, else "default"."""
    run = _current.get()
    if run is not None and (algorithm is None or run.algorithm == algorithm):
        return run.run_id
    return _latest.get("" if algorithm is None else algorithm, "default")


def forget_runs() -> None:
    """Forget which runs were started (for :func:`otel_rl.testing.reset`)."""
    _latest.clear()
