"""The hot path: in-process metric state that record calls update.

A record call costs a type check, a tuple and a dict update under a lock. Nothing here calls the OpenTelemetry
SDK: the SDK reads this state when a reader collects (see :mod:`otel_rl._internal.bridge`). Values are exact
(no sampling); bad values are dropped, counted in ``otel_rl_dropped_values_total`` and logged once per metric and
reason. Nothing in this module raises into the caller.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from otel_rl._internal.catalog import ALL_METRICS, CATALOG, DROPPED_VALUES, OVERFLOW_LABEL, MetricSpec
from otel_rl._internal.errors import StrictModeError, describe
from otel_rl._internal.values import (  # noqa: F401 (re-exported: the record helpers and readers import them here)
    _HINTS,
    BAD_LABELS,
    BAD_NAME,
    INF,
    LABEL_TOO_LONG,
    NAN,
    NEGATIVE,
    NONE,
    OVER_LIMIT,
    TENSOR,
    UNREADABLE,
    WRONG_TYPE,
    _clean_key,
    _Reason,
    _to_number,
    _utf8,
    label_strings,
    number,
    strict_from_environment,
)

_logger = logging.getLogger("otel_rl")

DEFAULT_CARDINALITY_LIMIT = 2000
#: Characters a label value keeps (``label_value_limit``); the rest is cut. One label value of a megabyte made
#: every OTLP export larger than a collector accepts (4 MiB over gRPC), for the rest of the run.
DEFAULT_LABEL_VALUE_LIMIT = 2048

#: The key of the series that collects every label set past the cardinality limit.
OVERFLOW_KEY: tuple[str, ...] = ("\x00overflow",)
_OVERFLOW_ATTRIBUTES = {OVERFLOW_LABEL: "true"}
_INF = math.inf


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

    def drop(self, metric: str, reason: _Reason, value: Any = None) -> None:
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
            metric, reason, describe(value), _HINTS.get(reason, ""), metric, str(reason))

    def _strict_drop(self, metric: str, reason: _Reason, value: Any) -> None:
        raise StrictModeError(f"otel-rl (strict mode) refused a value for {metric} (reason: {reason}, value: "
                              f"{describe(value)}): {_HINTS.get(reason, '')}")

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
            metric._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every value (for tests and for :func:`otel_rl.testing.reset`)."""
        for metric in self.metrics.values():
            metric.clear()
        with self._warn_lock:
            self._warned.clear()


class Metric:
    """State of one catalog metric: its series keyed by the tuple of label values in catalog order."""

    __slots__ = ("spec", "name", "label_keys", "_registry", "_lock", "_series", "_attributes")

    def __init__(self, spec: MetricSpec, registry: Registry) -> None:
        self.spec = spec
        self.name = spec.name
        self.label_keys = spec.labels
        self._registry = registry
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], Any] = {}
        self._attributes: dict[tuple[str, ...], dict[str, str]] = {}
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._series = {}
            self._attributes = {}
            if not self.label_keys:  # an unlabelled metric exists from the start, as in prometheus_client
                self._series[()] = self._new_series()

    def _new_series(self) -> Any:
        raise NotImplementedError

    def rekey(self, label_keys: tuple[str, ...]) -> None:
        """Change the label keys by one trailing key (see :meth:`Registry.set_per_run`), keeping the values."""
        with self._lock:
            grow = len(label_keys) > len(self.label_keys)
            old, self._series, self._attributes = self._series, {}, {}
            self.label_keys = label_keys
            for key, value in old.items():
                if key == () and not (value.count if isinstance(value, HistogramSeries) else value):
                    continue  # an unlabelled series exists from the start; empty, it belongs to no run
                new = key if key == OVERFLOW_KEY else (key + ("default",) if grow else key[:-1])
                self._series[new] = self._merge(self._series[new], value) if new in self._series else value
            if not label_keys and () not in self._series:  # unlabelled again: its series exists from the start
                self._series[()] = self._new_series()
            self._rekeyed(grow)

    def _merge(self, a: Any, b: Any) -> Any:
        return b

    def _rekeyed(self, grow: bool) -> None:
        """Called under the lock after :meth:`rekey` for what a kind keeps beside the values."""

    def remove(self, key: tuple[str, ...]) -> None:
        """Forget one labelled series (prometheus_client's ``remove``); an unknown key is ignored."""
        if self.label_keys:
            with self._lock:
                if self._series.pop(key, None) is None and type(key) is tuple:
                    # A key with lone surrogates or a long label was stored under its sanitised form (see _admit).
                    limit = self._registry.label_value_limit
                    key = tuple(value[:limit] for value in _clean_key(key))
                    self._series.pop(key, None)
                self._forget(key)

    def _forget(self, key: tuple[str, ...]) -> None:
        """Drop what is kept beside the value of a removed series (called under the lock)."""
        self._attributes.pop(key, None)

    def _run_implied(self) -> bool:
        """Whether a key may leave out ``run_id``, which the current run fills in (``per_run_series``)."""
        return self._registry.per_run and self.label_keys[-1:] == ("run_id",) and "run_id" not in self.spec.labels

    def _checked(self, value: Any) -> float | None:
        """The slow path of a record call: ``value`` as a finite float, or None after counting the drop."""
        if type(value) is int:  # an iteration or a step count: the common case of this path
            try:
                return float(value)
            except OverflowError:  # 10**400
                self._registry.drop(self.name, INF, value)
                return None
        result = _to_number(value)
        if type(result) is _Reason:
            self._registry.drop(self.name, result, value)
            return None
        return result  # type: ignore[return-value]

    def _admit(self, key: tuple[str, ...]) -> tuple[str, ...]:
        """Called under the lock for a key not yet seen: the key itself, or the overflow key past the limit.

        The caller runs :meth:`Registry.run_new_series_hook` first, with no lock held, and reads ``_series`` again
        under the lock afterwards: the hook may start telemetry, which re-keys this metric under its lock.

        With ``per_run_series`` on, a key one label short (recorded without ``run_id``) gets the current run's."""
        registry = self._registry
        if len(key) + 1 == len(self.label_keys) and self._run_implied():
            run_of = registry.run_of
            algorithm = key[0] if self.label_keys[0] == "algorithm" else None
            key = key + (run_of(algorithm) if run_of is not None else "default",)
            if key in self._series:
                return key
        if self._registry.strict and self is not self._registry.dropped:
            self._registry.check_running(self.name)
        clean = _clean_key(key)
        if clean is not key:
            # Lone surrogates are stored backslash-escaped, so os.fsdecode(b"run-\xff") and the text
            # "run-\\udcff" are one series rather than two with the same labels. Such keys stay on this slow path.
            if any(_utf8(value) is not value for value in key):  # not only carriage returns
                self._registry.warn_once(
                    (self.name, "label_not_utf8"),
                    "otel-rl: a label value of %s is not valid UTF-8 (%s); it is recorded with its lone surrogates "
                    "backslash-escaped. Decode bytes with a real encoding (bytes.decode('utf-8', 'replace')) "
                    "rather than os.fsdecode to avoid this.", self.name, describe(key))
            key = clean
            if key in self._series:
                return key
        key = self._cut(key)
        if key in self._series:
            return key
        # The dropped-values counter is exempt: its label sets are bounded (metrics x reasons) and must stay exact.
        if len(self._series) >= self._registry.cardinality_limit and self.label_keys \
                and self is not self._registry.dropped:
            self._registry.drop(self.name, OVER_LIMIT, key)
            return OVERFLOW_KEY
        return key

    def _cut(self, key: tuple[str, ...]) -> tuple[str, ...]:
        """``key`` with every label value cut to ``label_value_limit`` characters (counted as ``label_too_long``).

        Only new keys come here (:meth:`_admit`), so it costs nothing on the record path; a record call with a
        label that is too long takes this path every time and is counted every time."""
        limit = self._registry.label_value_limit
        # The dropped-values counter is exempt: its labels are metric names (longer than the smallest limit, 16)
        # and reasons, bounded and needed whole to say which metric dropped what.
        if self is self._registry.dropped or all(len(value) <= limit for value in key):
            return key
        self._registry.drop(self.name, LABEL_TOO_LONG, key)
        return tuple(value[:limit] for value in key)

    def attributes(self, key: tuple[str, ...]) -> dict[str, str]:
        """The OpenTelemetry attributes of a series, cached per key.

        Keys are valid UTF-8: :meth:`_admit` stores a label value with lone surrogates (which would break the
        Prometheus text and the OTLP protobuf encoding) backslash-escaped. The cache follows the series: entries
        of removed series are dropped by :meth:`remove` and :meth:`clear`, and pruned here when the cache has
        grown well past the live series (a collection racing a ``remove`` may cache a removed key once more).
        """
        attrs = self._attributes.get(key)
        if attrs is None:
            if key is OVERFLOW_KEY or key == OVERFLOW_KEY:
                attrs = _OVERFLOW_ATTRIBUTES
            else:
                attrs = dict(zip(self.label_keys, _clean_key(key)))
            cache = self._attributes
            if len(cache) > 2 * len(self._series) + 64:
                series = self._series
                # list() copies in one C call, so a concurrent insert cannot break the iteration.
                self._attributes = cache = {k: v for k, v in list(cache.items()) if k in series}
            cache[key] = attrs
        return attrs

    def snapshot(self) -> list[tuple[tuple[str, ...], Any]]:
        raise NotImplementedError

    def series_count(self) -> int:
        return len(self._series)


class Counter(Metric):
    """A monotonic sum per label set, and when each series began (the start time of its cumulative points)."""

    __slots__ = ("created_ns",)

    def clear(self) -> None:
        super().clear()
        with self._lock:
            now = time.time_ns()
            #: ``time.time_ns()`` when each series was created; written under the lock, read without it.
            self.created_ns: dict[tuple[str, ...], int] = dict.fromkeys(self._series, now)

    def _new_series(self) -> float:
        return 0.0

    def _merge(self, a: Any, b: Any) -> Any:
        return a + b

    def _rekeyed(self, grow: bool) -> None:
        created: dict[tuple[str, ...], int] = {}
        for key, ns in self.created_ns.items():
            new = key if key == OVERFLOW_KEY else (key + ("default",) if grow else key[:-1])
            created[new] = min(ns, created.get(new, ns))
        self.created_ns = {key: created.get(key, time.time_ns()) for key in self._series}

    def _forget(self, key: tuple[str, ...]) -> None:
        super()._forget(key)
        self.created_ns.pop(key, None)

    def add(self, key: tuple[str, ...], amount: Any) -> None:
        if type(amount) is not float or not amount >= 0.0 or amount == _INF:
            value = self._checked(amount)
            if value is None:
                return
            if value < 0.0:
                self._registry.drop(self.name, NEGATIVE, amount)
                return
            amount = value
        with self._lock:
            series = self._series  # read under the lock: an add racing clear() lands in the new dict
            if key in series:
                total = series[key] + amount
                if total != _INF:
                    series[key] = total
                    return
            else:
                total = 0.0  # a key not seen yet: admitted by _add_new, outside this lock
        if total != _INF:
            self._add_new(key, amount)
            return
        # Past the largest float the total would be +Inf for good: the increment is dropped instead, so the
        # counter keeps its last finite value and stays a usable (monotonic) series.
        self._registry.drop(self.name, INF, amount)

    def _add_new(self, key: tuple[str, ...], amount: float) -> None:
        """The slow path of :meth:`add` for a key not seen yet: the hook first, with no lock held."""
        self._registry.run_new_series_hook()
        with self._lock:
            series = self._series
            if key not in series:
                key = self._admit(key)
                if key not in series:
                    self.created_ns[key] = time.time_ns()
            total = series.get(key, 0.0) + amount
            if total != _INF:
                series[key] = total
                return
        self._registry.drop(self.name, INF, amount)

    def snapshot(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self._series.items())


class Gauge(Metric):
    """The last value set per label set."""

    __slots__ = ()

    def _new_series(self) -> float:
        return 0.0

    def set(self, key: tuple[str, ...], value: Any) -> None:
        if type(value) is not float or value - value != 0.0:
            value = self._checked(value)
            if value is None:
                return
        series = self._series
        if key in series:  # replacing a value of an existing key is one atomic dict store under the GIL
            # Racing remove(key) this may bring the series back without _admit: as if the set came after the
            # remove, past the cardinality limit by at most one series per racing thread. Racing clear() it lands
            # in the old dict, as if it came before. Neither is worth a lock on every set.
            series[key] = value
            return
        self._registry.run_new_series_hook()
        with self._lock:
            series = self._series  # again: the hook may have re-keyed the metric
            if key not in series:
                key = self._admit(key)
            series[key] = value

    def add(self, key: tuple[str, ...], amount: Any) -> None:
        """Add ``amount`` (negative to decrease), as prometheus_client's ``Gauge.inc``/``dec``."""
        if type(amount) is not float or amount - amount != 0.0:
            amount = self._checked(amount)
            if amount is None:
                return
        if key not in self._series:
            self._registry.run_new_series_hook()
        with self._lock:
            if key not in self._series:
                key = self._admit(key)
            self._series[key] = self._series.get(key, 0.0) + amount

    def snapshot(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self._series.items())


def set_gauges(key: tuple[str, ...], values: Mapping[str, Any], gauges: Mapping[str, tuple[Gauge, float]]) -> None:
    """For each name in ``values`` that ``gauges`` maps to ``(gauge, scale)``, set that gauge's series ``key`` to
    the value times ``scale``; other names are ignored.

    One call for a helper's several gauges (the trading figures, the training signals) instead of one method call
    each: the calls were most of such a helper's cost (issue 13). Bad values are counted and dropped per gauge."""
    for name, value in values.items():
        target = gauges.get(name)
        if target is None:
            continue
        gauge, scale = target
        if type(value) is not float or value - value != 0.0:
            value = gauge._checked(value)
            if value is None:
                continue
        if scale != 1.0:
            value *= scale
            if value - value != 0.0:  # finite, but not once scaled (1e307 as a percentage)
                gauge._registry.drop(gauge.name, INF, value)
                continue
        series = gauge._series
        if key in series:  # as Gauge.set: one atomic dict store for a series that exists
            series[key] = value
        else:
            gauge.set(key, value)


class HistogramSeries:
    """Bucket counts (not cumulative; the last one is +Inf), sum, min, max and creation time.

    The count is not kept: it is the sum of the bucket counts, so a record costs one update less (issue 13)."""

    __slots__ = ("counts", "sum", "min", "max", "created_ns")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.created_ns = time.time_ns()

    @property
    def count(self) -> int:
        """How many values were observed."""
        return sum(self.counts)


class Histogram(Metric):
    """Explicit-bucket histogram that, unlike the OTel SDK's, keeps negative observations."""

    __slots__ = ("bounds",)

    def __init__(self, spec: MetricSpec, registry: Registry) -> None:
        self.bounds = tuple(float(b) for b in spec.buckets)
        super().__init__(spec, registry)

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(len(self.bounds))

    def _merge(self, a: Any, b: Any) -> Any:
        a.counts = [x + y for x, y in zip(a.counts, b.counts)]
        a.sum += b.sum
        a.min, a.max = min(a.min, b.min), max(a.max, b.max)
        a.created_ns = min(a.created_ns, b.created_ns)
        return a
    def rebucket(self, bounds: tuple[float, ...]) -> int:
        """Use ``bounds`` from now on (the ``buckets`` setting); returns how many observations were discarded.

        Observations already made cannot be split into other buckets: their series are forgotten (the caller
        says so). Called by ``init_telemetry``, before training records.
        """
        if bounds == self.bounds:
            return 0
        with self._lock:
            lost = sum(series.count for series in self._series.values())
            self.bounds = bounds
            self._series = {} if self.label_keys else {(): HistogramSeries(len(bounds))}
            self._attributes = {}
        return lost

    def observe(self, key: tuple[str, ...], value: Any) -> None:
        if type(value) is not float or value - value != 0.0:
            value = self._checked(value)
            if value is None:
                return
        index = bisect_left(self.bounds, value)  # upper bounds are inclusive, as Prometheus' `le`
        series = self._series.get(key)  # outside the lock: a dict read is atomic
        if series is None:
            series = self._series_for(key)
        # Nothing inside the lock calls a function: a call lets the interpreter switch threads while the lock is
        # held, and every other recording thread then queues on it (a lock convoy).
        with self._lock:
            total = series.sum + value
            if total - total == 0.0:
                series.counts[index] += 1
                series.sum = total
                if value < series.min:
                    series.min = value
                if value > series.max:
                    series.max = value
                return
        # An observation that would make the sum infinite (1e308 twice) is dropped whole, so _sum, _count and
        # the buckets stay consistent and finite.
        self._registry.drop(self.name, INF, value)

    def _series_for(self, key: tuple[str, ...]) -> HistogramSeries:
        """The series of a key not seen yet (or the overflow series past the cardinality limit)."""
        self._registry.run_new_series_hook()
        with self._lock:
            series = self._series.get(key)
            if series is None:
                key = self._admit(key)
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = HistogramSeries(len(self.bounds))
            return series

    def snapshot(self) -> list[tuple[tuple[str, ...], HistogramSeries]]:
        """Consistent copies of every series, read a chunk at a time so recorders never wait for all of them."""
        series = self._series
        keys = list(series)
        copies: list[tuple[tuple[str, ...], HistogramSeries]] = []
        append = copies.append
        new = HistogramSeries.__new__
        for start in range(0, len(keys), _SNAPSHOT_CHUNK):
            with self._lock:
                for key in keys[start:start + _SNAPSHOT_CHUNK]:
                    state = series.get(key)
                    if state is None:  # removed since the keys were listed
                        continue
                    clone = new(HistogramSeries)
                    clone.counts, clone.sum = state.counts[:], state.sum
                    clone.min, clone.max, clone.created_ns = state.min, state.max, state.created_ns
                    append((key, clone))
        return copies


_SNAPSHOT_CHUNK = 256


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
