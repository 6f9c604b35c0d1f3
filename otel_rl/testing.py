"""Helpers for tests of code instrumented with otel-rl: read what was recorded, reset between tests."""

from __future__ import annotations

from otel_rl._internal.store import REGISTRY, HistogramSeries


def reset() -> None:
    """Forget every recorded value (the catalog's unlabelled series come back at zero)."""
    REGISTRY.reset()


def value(name: str, **labels: str) -> float | None:
    """The current value of a counter or gauge series, or None when it has not been recorded."""
    metric = REGISTRY[name]
    key = tuple(str(labels[k]) for k in metric.label_keys)
    for series_key, current in metric.snapshot():
        if series_key == key:
            return current if not isinstance(current, HistogramSeries) else float(current.count)
    return None


def histogram(name: str, **labels: str) -> HistogramSeries | None:
    """A copy of a histogram series (``counts`` per bucket, ``sum``, ``count``), or None."""
    metric = REGISTRY[name]
    key = tuple(str(labels[k]) for k in metric.label_keys)
    for series_key, current in metric.snapshot():
        if series_key == key:
            return current
    return None


def dropped(metric: str, reason: str) -> float:
    """How many values otel-rl dropped for ``metric`` with ``reason``."""
    return value("otel_rl_dropped_values_total", metric=metric, reason=reason) or 0.0


__all__ = ["dropped", "histogram", "reset", "value"]
