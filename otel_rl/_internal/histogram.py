"""The histogram kind of metric: explicit buckets, and unlike the OpenTelemetry SDK's, negative values kept.

Imports the metric base (:mod:`otel_rl._internal.metric`) and the catalog, nothing above them.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from typing import Any

from otel_rl._internal.catalog import MetricSpec
from otel_rl._internal.metric import Metric, Owner
from otel_rl._internal.values import INF


class HistogramSeries:
    """Bucket counts (not cumulative; the last one is +Inf), sum, min, max and creation time.

    The count is not kept: it is the sum of the bucket counts, so a record costs one update less."""

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

    def __init__(self, spec: MetricSpec, registry: Owner) -> None:
        self.bounds = tuple(float(b) for b in spec.buckets)
        super().__init__(spec, registry)

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(len(self.bounds))

    def _holds_nothing(self, value: Any) -> bool:
        return not value.count

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
        with self.lock:
            lost = sum(series.count for series in self.series.values())
            self.bounds = bounds
            self.series = {} if self.label_keys else {(): HistogramSeries(len(bounds))}
            self._attributes = {}
        return lost

    def observe(self, key: tuple[str, ...], value: Any) -> None:
        if type(value) is not float or value - value != 0.0:
            value = self._checked(value)
            if value is None:
                return
        series = self.series.get(key)  # outside the lock: a dict read is atomic
        if series is None:
            series, index = self._series_for(key, value)
        else:
            index = bisect_left(self.bounds, value)  # upper bounds are inclusive, as Prometheus' `le`
        # Nothing inside the lock calls a function: a call lets the interpreter switch threads while the lock is
        # held, and every other recording thread then queues on it (a lock convoy).
        with self.lock:
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

    def _series_for(self, key: tuple[str, ...], value: float) -> tuple[HistogramSeries, int]:
        """The series of a key not seen yet (or the overflow series past the cardinality limit), and the bucket of
        ``value`` in it.

        The bucket is found under the lock, after the new-series hook: the hook may start this worker's telemetry,
        whose ``buckets`` setting changes the bounds (and the number of buckets of every new series)."""
        self._registry.run_new_series_hook()
        with self.lock:
            series = self.series.get(key)
            if series is None:
                key = self._admit(key)
                series = self.series.get(key)
                if series is None:
                    series = self.series[key] = HistogramSeries(len(self.bounds))
            return series, bisect_left(self.bounds, value)

    def snapshot(self) -> list[tuple[tuple[str, ...], HistogramSeries]]:
        """Consistent copies of every series, read a chunk at a time so recorders never wait for all of them."""
        series = self.series
        keys = list(series)
        copies: list[tuple[tuple[str, ...], HistogramSeries]] = []
        append = copies.append
        new = HistogramSeries.__new__
        for start in range(0, len(keys), _SNAPSHOT_CHUNK):
            with self.lock:
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
