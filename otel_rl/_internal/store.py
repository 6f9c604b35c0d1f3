"""The hot path: in-process metric state that record calls update, held by the :class:`Registry`.

A record call costs a type check, a tuple and a dict update under a lock. Nothing here calls the OpenTelemetry
SDK: the producer (:mod:`otel_rl._internal.producer`) and the renderer (:mod:`otel_rl._internal.render`) read
this state through the read API of :class:`~otel_rl._internal.metric.Metric`. Values are exact (no sampling); bad
values are dropped, counted in ``otel_rl_dropped_values_total`` and logged once per metric and reason. Nothing in
this module raises into the caller.

The kinds of metric live in :mod:`otel_rl._internal.metric` (counters, gauges) and
:mod:`otel_rl._internal.histogram`; this module re-exports them and the value checks of
:mod:`otel_rl._internal.values`, so callers import everything about the store from here. Imports those, the
catalog and the errors, nothing above them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from otel_rl._internal.catalog import ALL_METRICS, CATALOG, DROPPED_VALUES, MetricSpec
from otel_rl._internal.errors import StrictModeError, describe
from otel_rl._internal.histogram import Histogram, HistogramSeries  # noqa: F401 (re-exported)
from otel_rl._internal.metric import OVERFLOW_KEY, Counter, Gauge, Metric, set_gauges  # noqa: F401 (re-exported)
from otel_rl._internal.values import (  # noqa: F401 (re-exported: the record helpers and readers import them here)
    BAD_LABELS,
    BAD_NAME,
    HINTS,
    INF,
    LABEL_TOO_LONG,
    NAN,
    NEGATIVE,
    NONE,
    OVER_LIMIT,
    TENSOR,
    UNREADABLE,
    WRONG_TYPE,
    Reason,
    label_strings,
    number,
    strict_from_environment,
)

_logger = logging.getLogger("otel_rl")

DEFAULT_CARDINALITY_LIMIT = 2000
#: Characters a label value keeps (``label_value_limit``); the rest is cut. One label value of a megabyte made
#: every OTLP export larger than a collector accepts (4 MiB over gRPC), for the rest of the run.
DEFAULT_LABEL_VALUE_LIMIT = 2048


class Registry:
    """All metric state of a process, keyed by metric name."""

    #: Called with no metric lock held before a series is created (:meth:`run_new_series_hook`); see
    #: :mod:`otel_rl._internal.lifecycle`, which uses it once per process to find out that it records.
    new_series_hook: Callable[[], None] | None = None
    #: Whether the original series without ``run_id`` carry one (the ``per_run_series`` setting, off by default so
    #: the original module's label sets stay exact); see :meth:`set_per_run`.
    per_run: bool = False
    #: The run_id a value belongs to, given its algorithm (None for series without one); set by recording.
    run_of: Callable[[str | None], str] | None = None
    #: Whether telemetry runs in this process (set by :mod:`otel_rl._internal.lifecycle`); strict mode asks it.
    running: Callable[[], bool] | None = None

    def __init__(self, specs: Iterable[MetricSpec] = ALL_METRICS,
                 cardinality_limit: int = DEFAULT_CARDINALITY_LIMIT,
                 label_value_limit: int = DEFAULT_LABEL_VALUE_LIMIT) -> None:
        self._warned: set[tuple[str, str]] = set()
        self._warn_lock = threading.Lock()
        self.cardinality_limit = cardinality_limit
        #: Raise :class:`StrictModeError` on misuse instead of dropping (tests and notebooks; see docs).
        self.strict = strict_from_environment()
        self.label_value_limit = label_value_limit
        self.metrics: dict[str, Metric] = {}
        for spec in specs:
            cls = _KINDS[spec.type]
            self.metrics[spec.name] = cls(spec, self)
        self.dropped: Counter = self.counter(DROPPED_VALUES.name)

    def __getitem__(self, name: str) -> Metric:
        return self.metrics[name]

    def counter(self, name: str) -> Counter:
        """The counter ``name``; TypeError when the catalog declares it as another type (a programming error)."""
        return _typed(self.metrics[name], Counter)

    def gauge(self, name: str) -> Gauge:
        """The gauge ``name`` (see :meth:`counter`)."""
        return _typed(self.metrics[name], Gauge)

    def histogram(self, name: str) -> Histogram:
        """The histogram ``name`` (see :meth:`counter`)."""
        return _typed(self.metrics[name], Histogram)

    def drop(self, metric: str, reason: Reason, value: Any = None) -> None:
        """Count a dropped value and log it the first time this metric drops for this reason."""
        if metric != DROPPED_VALUES.name:
            self.dropped.add((metric, str(reason)), 1.0)
        if self.strict:
            self._strict_drop(metric, reason, value)
        key = (metric, str(reason))
        if key in self._warned:
            return
        with self._warn_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        _logger.warning(
            "otel-rl dropped a value for %s (reason: %s, value: %s): %s. Further drops of this kind are only "
            "counted, in otel_rl_dropped_values_total{metric=%r,reason=%r}.",
            metric, reason, describe(value), HINTS.get(reason, ""), metric, str(reason))

    def _strict_drop(self, metric: str, reason: Reason, value: Any) -> None:
        raise StrictModeError(f"otel-rl (strict mode) refused a value for {metric} (reason: {reason}, value: "
                              f"{describe(value)}): {HINTS.get(reason, '')}")

    def check_running(self, metric: str) -> None:
        """In strict mode, raise when a value is recorded in a process without telemetry (it would go nowhere)."""
        running = self.running
        if self.strict and running is not None and not running():
            raise StrictModeError(f"otel-rl (strict mode): {metric} was recorded but init_telemetry() has not been "
                                  f"called in this process (pid {os.getpid()}); call it first")

    def run_new_series_hook(self) -> None:
        """Run :attr:`new_series_hook` (starting a worker's telemetry) on the slow path of a record with a new key.

        Callers run it before taking a metric lock, because the hook may call ``init_telemetry``, which re-keys the
        store under the metric locks; a failing hook is logged once and the value is still recorded."""
        hook = self.new_series_hook
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001 (a record call never raises)
                self.warn_once(("otel_rl", "new_series_hook"), "otel-rl: starting this process' telemetry on its "
                               "first record failed; the value is recorded", exc_info=True)

    def warn_once(self, key: tuple[str, str], message: str, *args: Any,
                  exc_info: bool | BaseException = False) -> bool:
        """Log ``message`` the first time ``key`` is seen (for fixes that keep a value, unlike :meth:`drop`).

        Returns whether it logged."""
        if key in self._warned:
            return False
        with self._warn_lock:
            if key in self._warned:
                return False
            self._warned.add(key)
        _logger.warning(message, *args, exc_info=exc_info)
        return True

    def set_per_run(self, on: bool) -> None:
        """Add ``run_id`` as the last label of the original series that lack it, or take it off again.

        Values recorded before are kept: switched on, their series get ``run_id="default"``; switched off, the
        series of several runs are merged (counters and histograms summed, a gauge keeps one run's value).
        """
        if on == self.per_run:
            return
        self.per_run = on
        for spec in CATALOG:
            if "run_id" not in spec.labels:
                self.metrics[spec.name].rekey(spec.labels + ("run_id",) if on else spec.labels)

    def after_fork_in_child(self) -> None:
        """In a forked child: new locks (the parent may have held any of them at fork) and no values.

        The child's series then hold only what the child records, so its own export never repeats the parent's.
        """
        self._warn_lock = threading.Lock()
        for metric in self.metrics.values():
            metric.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every value (for tests and for :func:`otel_rl.testing.reset`)."""
        for metric in self.metrics.values():
            metric.clear()
        with self._warn_lock:
            self._warned.clear()


_M = TypeVar("_M", bound="Metric")


def _typed(metric: Metric, kind: type[_M]) -> _M:
    if not isinstance(metric, kind):
        raise TypeError(f"{metric.name} is a {metric.spec.type}, not a {kind.__name__.lower()}")
    return metric


_KINDS: dict[str, type[Metric]] = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}

#: The process-wide registry that the record helpers, decorators and readers share.
REGISTRY = Registry()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=REGISTRY.after_fork_in_child)
