"""One catalog metric's state: the :class:`Metric` base with its read API, and the :class:`Counter` and
:class:`Gauge` kinds (histograms are in :mod:`otel_rl._internal.histogram`).

Record calls update a metric's ``series`` under its ``lock``; readers outside the store (the renderer, the
producer) use only the read API documented on :class:`Metric`. Imports the catalog, the value checks and the
errors, nothing above them: the registry that holds the metrics (:mod:`otel_rl._internal.store`) imports this.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from otel_rl._internal.catalog import OVERFLOW_LABEL, MetricSpec
from otel_rl._internal.errors import describe
from otel_rl._internal.values import (
    INF,
    LABEL_TOO_LONG,
    NEGATIVE,
    OVER_LIMIT,
    Reason,
    clean_key,
    to_number,
    utf8,
)

#: The key of the series that collects every label set past the cardinality limit.
OVERFLOW_KEY: tuple[str, ...] = ("\x00overflow",)
_OVERFLOW_ATTRIBUTES = {OVERFLOW_LABEL: "true"}
_INF = math.inf


class Owner(Protocol):
    """What a metric uses of the registry that holds it (:class:`otel_rl._internal.store.Registry`)."""

    cardinality_limit: int
    label_value_limit: int
    strict: bool
    per_run: bool
    run_of: Callable[[str | None], str] | None
    dropped: Counter

    def drop(self, metric: str, reason: Reason, value: Any = None) -> None: ...

    def check_running(self, metric: str) -> None: ...

    def run_new_series_hook(self) -> None: ...

    def warn_once(self, key: tuple[str, str], message: str, *args: Any,
                  exc_info: bool | BaseException = False) -> bool: ...


class Metric:
    """State of one catalog metric: its series keyed by the tuple of label values in catalog order.

    The read API, for readers outside the store (the renderer, the producer):

    * ``series``: the dict of series, label-value tuple -> value (a float for counters and gauges, a
      :class:`~otel_rl._internal.histogram.HistogramSeries` for histograms). Read it under ``lock``: copy it there
      (``series.copy()``, one C call), or read a chunk of keys at a time. :meth:`clear`, :meth:`rekey` and
      ``Histogram.rebucket`` replace the dict: a reader that caches something per series compares it by identity.
    * ``lock``: taken by every write of a series (``Gauge.set`` replaces the value of an existing key without it).
    * ``spec``, ``name``, ``label_keys``: the catalog entry, its name, and the label keys in series-key order.
    * :meth:`attributes` (cached, for the export), :meth:`label_dict` (not cached, for the scrape's text),
      :meth:`snapshot`, :meth:`series_count`.

    Plain attributes rather than properties or accessor methods: the readers touch them once per series.
    """

    __slots__ = ("spec", "name", "label_keys", "_registry", "lock", "series", "_attributes")

    def __init__(self, spec: MetricSpec, registry: Owner) -> None:
        self.spec = spec
        self.name = spec.name
        self.label_keys = spec.labels
        self._registry = registry
        self.lock = threading.Lock()
        self.series: dict[tuple[str, ...], Any] = {}
        self._attributes: dict[tuple[str, ...], dict[str, str]] = {}
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.series = {}
            self._attributes = {}
            if not self.label_keys:  # an unlabelled metric exists from the start, as in prometheus_client
                self.series[()] = self._new_series()

    def _new_series(self) -> Any:
        raise NotImplementedError

    def rekey(self, label_keys: tuple[str, ...]) -> None:
        """Change the label keys by one trailing key (see :meth:`Registry.set_per_run`), keeping the values."""
        with self.lock:
            grow = len(label_keys) > len(self.label_keys)
            old, self.series, self._attributes = self.series, {}, {}
            self.label_keys = label_keys
            for key, value in old.items():
                if key == () and self._holds_nothing(value):
                    continue  # an unlabelled series exists from the start; empty, it belongs to no run
                new = key if key == OVERFLOW_KEY else (key + ("default",) if grow else key[:-1])
                self.series[new] = self._merge(self.series[new], value) if new in self.series else value
            if not label_keys and () not in self.series:  # unlabelled again: its series exists from the start
                self.series[()] = self._new_series()
            self._rekeyed(grow)

    def _holds_nothing(self, value: Any) -> bool:
        """Whether a series' value holds nothing recorded yet."""
        return not value

    def _merge(self, a: Any, b: Any) -> Any:
        return b

    def _rekeyed(self, grow: bool) -> None:
        """Called under the lock after :meth:`rekey` for what a kind keeps beside the values."""

    def remove(self, key: tuple[str, ...]) -> None:
        """Forget one labelled series (prometheus_client's ``remove``); an unknown key is ignored."""
        if self.label_keys:
            with self.lock:
                if self.series.pop(key, None) is None and type(key) is tuple:
                    # A key with lone surrogates or a long label was stored under its sanitised form (see _admit).
                    limit = self._registry.label_value_limit
                    key = tuple(value[:limit] for value in clean_key(key))
                    self.series.pop(key, None)
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
        result = to_number(value)
        if type(result) is Reason:
            self._registry.drop(self.name, result, value)
            return None
        return result  # type: ignore[return-value]

    def _admit(self, key: tuple[str, ...]) -> tuple[str, ...]:
        """Called under the lock for a key not yet seen: the key itself, or the overflow key past the limit.

        The caller runs :meth:`Registry.run_new_series_hook` first, with no lock held, and reads ``series`` again
        under the lock afterwards: the hook may start telemetry, which re-keys this metric under its lock.

        With ``per_run_series`` on, a key one label short (recorded without ``run_id``) gets the current run's."""
        registry = self._registry
        if len(key) + 1 == len(self.label_keys) and self._run_implied():
            run_of = registry.run_of
            algorithm = key[0] if self.label_keys[0] == "algorithm" else None
            key = key + (run_of(algorithm) if run_of is not None else "default",)
            if key in self.series:
                return key
        if self._registry.strict and self is not self._registry.dropped:
            self._registry.check_running(self.name)
        clean = clean_key(key)
        if clean is not key:
            # Lone surrogates are stored backslash-escaped, so os.fsdecode(b"run-\xff") and the text
            # "run-\\udcff" are one series rather than two with the same labels. Such keys stay on this slow path.
            if any(utf8(value) is not value for value in key):  # not only carriage returns
                self._registry.warn_once(
                    (self.name, "label_not_utf8"),
                    "otel-rl: a label value of %s is not valid UTF-8 (%s); it is recorded with its lone surrogates "
                    "backslash-escaped. Decode bytes with a real encoding (bytes.decode('utf-8', 'replace')) "
                    "rather than os.fsdecode to avoid this.", self.name, describe(key))
            key = clean
            if key in self.series:
                return key
        key = self._cut(key)
        if key in self.series:
            return key
        # The dropped-values counter is exempt: its label sets are bounded (metrics x reasons) and must stay exact.
        if len(self.series) >= self._registry.cardinality_limit and self.label_keys \
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
                attrs = dict(zip(self.label_keys, clean_key(key)))
            cache = self._attributes
            if len(cache) > 2 * len(self.series) + 64:
                series = self.series
                # list() copies in one C call, so a concurrent insert cannot break the iteration.
                self._attributes = cache = {k: v for k, v in list(cache.items()) if k in series}
            cache[key] = attrs
        return attrs

    def label_dict(self, key: tuple[str, ...]) -> dict[str, str]:
        """The same labels as :meth:`attributes`, without caching them: a scrape keeps only the text it makes."""
        attrs = self._attributes.get(key)
        if attrs is not None:
            return attrs
        if key is OVERFLOW_KEY or key == OVERFLOW_KEY:
            return _OVERFLOW_ATTRIBUTES
        return dict(zip(self.label_keys, clean_key(key)))

    def snapshot(self) -> list[tuple[tuple[str, ...], Any]]:
        raise NotImplementedError

    def series_count(self) -> int:
        return len(self.series)


class Counter(Metric):
    """A monotonic sum per label set, and when each series began (the start time of its cumulative points)."""

    __slots__ = ("created_ns",)

    def clear(self) -> None:
        super().clear()
        with self.lock:
            now = time.time_ns()
            #: ``time.time_ns()`` when each series was created; written under the lock, read without it.
            self.created_ns: dict[tuple[str, ...], int] = dict.fromkeys(self.series, now)

    def _new_series(self) -> float:
        return 0.0

    def _merge(self, a: Any, b: Any) -> Any:
        return a + b

    def _rekeyed(self, grow: bool) -> None:
        created: dict[tuple[str, ...], int] = {}
        for key, ns in self.created_ns.items():
            new = key if key == OVERFLOW_KEY else (key + ("default",) if grow else key[:-1])
            created[new] = min(ns, created.get(new, ns))
        self.created_ns = {key: created.get(key, time.time_ns()) for key in self.series}

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
        with self.lock:
            series = self.series  # read under the lock: an add racing clear() lands in the new dict
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
        with self.lock:
            series = self.series
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
        with self.lock:
            return list(self.series.items())


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
        series = self.series
        if key in series:  # replacing a value of an existing key is one atomic dict store under the GIL
            # Racing remove(key) this may bring the series back without _admit: as if the set came after the
            # remove, past the cardinality limit by at most one series per racing thread. Racing clear() it lands
            # in the old dict, as if it came before. Neither is worth a lock on every set.
            series[key] = value
            return
        self._registry.run_new_series_hook()
        with self.lock:
            series = self.series  # again: the hook may have re-keyed the metric
            if key not in series:
                key = self._admit(key)
            series[key] = value

    def add(self, key: tuple[str, ...], amount: Any) -> None:
        """Add ``amount`` (negative to decrease), as prometheus_client's ``Gauge.inc``/``dec``."""
        if type(amount) is not float or amount - amount != 0.0:
            amount = self._checked(amount)
            if amount is None:
                return
        if key not in self.series:
            self._registry.run_new_series_hook()
        with self.lock:
            if key not in self.series:
                key = self._admit(key)
            self.series[key] = self.series.get(key, 0.0) + amount

    def snapshot(self) -> list[tuple[tuple[str, ...], float]]:
        with self.lock:
            return list(self.series.items())


def set_gauges(key: tuple[str, ...], values: Mapping[str, Any], gauges: Mapping[str, tuple[Gauge, float]]) -> None:
    """For each name in ``values`` that ``gauges`` maps to ``(gauge, scale)``, set that gauge's series ``key`` to
    the value times ``scale``; other names are ignored.

    One call for a helper's several gauges (the trading figures, the training signals) instead of one method call
    each: the calls would be most of such a helper's cost. Bad values are counted and dropped per gauge."""
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
        series = gauge.series
        if key in series:  # as Gauge.set: one atomic dict store for a series that exists
            series[key] = value
        else:
            gauge.set(key, value)

