"""Helpers for tests of code instrumented with otel-rl: read what was recorded, reset between tests.

In your own tests, use the ``otel_rl_metrics`` pytest fixture (installed with otel-rl, like logfire's
``capfire``) or the :func:`capture_metrics` context manager::

    def test_my_training_step(otel_rl_metrics):
        my_training_step()
        otel_rl_metrics.assert_recorded("rl_training_iterations_total", 1, algorithm="PPO")
        otel_rl_metrics.assert_nothing_dropped()

Both read this process's state, with or without a running :func:`otel_rl.init_telemetry`: values recorded in
child processes (fork/spawn) or Ray workers live in those processes and are not seen here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from otel_rl._internal import scalars
from otel_rl._internal.catalog import DROPPED_VALUES
from otel_rl._internal.held_back import flush_held_back
from otel_rl._internal.runs import forget_runs
from otel_rl._internal.store import REGISTRY, HistogramSeries


def reset() -> None:
    """Forget every recorded value (the catalog's unlabelled series come back at zero), including steps that live
    Gymnasium wrappers still hold back, so they do not show up after the reset, and which runs were started."""
    flush_held_back()
    REGISTRY.reset()
    forget_runs()
    scalars.reset()


def _key(name: str, labels: dict[str, Any]) -> tuple[str, ...]:
    keys = REGISTRY[name].label_keys
    if set(labels) != set(keys):
        raise KeyError(f"{name} has the label keys {list(keys)}, not {sorted(labels)}")
    return tuple(str(labels[k]) for k in keys)


def value(name: str, **labels: Any) -> float | None:
    """The current value of a counter or gauge series (a histogram's count), or None when it was not recorded."""
    key = _key(name, labels)
    for series_key, current in REGISTRY[name].snapshot():
        if series_key == key:
            return current if not isinstance(current, HistogramSeries) else float(current.count)
    return None


def histogram(name: str, **labels: Any) -> HistogramSeries | None:
    """A copy of a histogram series (``counts`` per bucket, ``sum``, ``count``, ``min``, ``max``), or None."""
    key = _key(name, labels)
    for series_key, current in REGISTRY[name].snapshot():
        if series_key == key:
            return current
    return None


def dropped(metric: str, reason: str) -> float:
    """How many values otel-rl dropped for ``metric`` with ``reason``."""
    return value(DROPPED_VALUES.name, metric=metric, reason=reason) or 0.0


class CapturedMetrics:
    """What the code under test recorded, with assertion helpers whose messages show what was recorded instead."""

    value = staticmethod(value)
    histogram = staticmethod(histogram)
    dropped = staticmethod(dropped)

    @staticmethod
    def series(name: str) -> dict[tuple[tuple[str, str], ...], Any]:
        """Every series of ``name``: ``{((label, value), ...): value or HistogramSeries}``."""
        metric = REGISTRY[name]
        return {tuple(metric.attributes(key).items()): current for key, current in metric.snapshot()}

    @staticmethod
    def drops() -> dict[tuple[str, str], float]:
        """Every dropped-value count: ``{(metric, reason): count}``."""
        return {(k[0], k[1]): v for k, v in REGISTRY.dropped.snapshot() if len(k) == 2}

    def assert_recorded(self, name: str, expected: float | None = None, **labels: Any) -> None:
        """Assert that the series of ``name`` with ``labels`` was recorded (with value or count ``expected``)."""
        current = value(name, **labels)
        if current is None or (expected is not None and current != expected):
            want = "recorded" if expected is None else f"= {expected!r}"
            raise AssertionError(f"{name}{labels} {want}, but it is {current!r}; recorded series: "
                                 f"{self.series(name)}")

    def assert_nothing_dropped(self) -> None:
        """Assert that no value was dropped (None, NaN, a string, a tensor, bad labels...)."""
        drops = self.drops()
        if drops:
            raise AssertionError(f"otel-rl dropped values: {drops}")


@contextlib.contextmanager
def capture_metrics() -> Iterator[CapturedMetrics]:
    """Start from empty metric state for the block and forget what it recorded at the end."""
    reset()
    try:
        yield CapturedMetrics()
    finally:
        reset()


__all__ = ["CapturedMetrics", "capture_metrics", "dropped", "histogram", "reset", "value"]
