"""otel-rl's OpenTelemetry SDK readers: each completes the SDK's collections with the producer's catalog metrics.

:class:`PeriodicReader` pushes (OTLP, the console) through a :class:`ResultKeepingExporter`; :class:`PullReader`
collects when asked (a scrape's other instruments, ``metrics_text`` with an encoder the renderer does not write).
Both receive the :class:`~otel_rl._internal.producer.StoreProducer` at construction; build the producer, then the
readers, then the MeterProvider (``StoreProducer.meter_provider``). See :mod:`otel_rl._internal.producer` for the
call path of an export. Imports the producer and the batching, nothing above them.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)

from otel_rl._internal import batching
from otel_rl._internal.producer import StoreProducer


def cumulative_temporality() -> dict[type, AggregationTemporality]:
    """Cumulative for every instrument kind: remote write drops delta sums, and cumulative survives outages."""
    from opentelemetry.sdk.metrics import (
        Counter,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics import (
        Histogram as SdkHistogram,
    )

    kinds = (Counter, UpDownCounter, SdkHistogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
    return {kind: AggregationTemporality.CUMULATIVE for kind in kinds}


def reader_limits(cardinality_limit: int) -> Mapping[str, Any]:
    """Keyword arguments for a reader: the SDK must not cut an observable gauge below the store's limit.

    ``record_scalar``'s gauges and the synchronous gauges of :func:`otel_rl.meter_provider` are SDK observable
    gauges that keep ``cardinality_limit`` label sets and an overflow series themselves; SDK 1.45.2 added a
    per-reader limit (``cardinality_limits=``, 2000 by default) that would cut them first. The limit is per
    instrument kind, so your own observable gauges get it too: it never goes below the SDK's default. Older SDKs
    have no limit of their own: nothing to pass. (The catalog's points never pass through the SDK's aggregation.)
    """
    if "cardinality_limits" not in inspect.signature(MetricReader.__init__).parameters:
        return {}
    from opentelemetry.sdk.metrics import ObservableGauge

    return {"cardinality_limits": {ObservableGauge: max(cardinality_limit + 1, _SDK_DEFAULT_LIMIT)}}


#: The SDK's default per-reader cardinality limit (``cardinality_limits=``, opentelemetry-sdk 1.45.2).
_SDK_DEFAULT_LIMIT = 2000


@dataclass(frozen=True)
class DatedCollection(MetricsData):
    """A completed collection and ``time.monotonic_ns()`` just before the producer read the store for it.

    The SDK's reader hands its collection to the exporter with no other argument, so the time travels in it."""

    started_ns: int = 0


class ResultKeepingExporter(MetricExporter):
    """Passes every call to ``inner`` and keeps when the newest successfully exported collection began.

    The SDK's reader discards export results, so without this a flush or shutdown could not tell the caller
    that the final values never reached the collector, nor its own export from an earlier one.
    """

    def __init__(self, inner: MetricExporter,
                 preferred_temporality: dict[type, AggregationTemporality] | None = None,
                 preferred_aggregation: dict[type, Any] | None = None) -> None:
        # The preferences are given, not read from ``inner``'s private attributes: the reader asks this object.
        super().__init__(preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation)
        self.inner = inner
        #: The process that made it: in a forked child the inherited exporter (a gRPC channel, a session, a
        #: stream) is the parent's and is never used (see :meth:`PeriodicReader._receive_metrics`).
        self.pid = os.getpid()
        #: ``started_ns`` of the newest collection whose export succeeded (0: none yet); see
        #: :meth:`PeriodicReader.exported_since`.
        self.exported_ns = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        """Export ``metrics_data`` in parts; a :class:`DatedCollection` is dated by its ``started_ns``, anything
        else by the time of this call."""
        started_ns = metrics_data.started_ns if isinstance(metrics_data, DatedCollection) else time.monotonic_ns()
        if self.pid != os.getpid():
            return MetricExportResult.FAILURE
        # In parts a collector accepts (batching.py); the collection counts as exported when every part was.
        deadline = time.monotonic() + timeout_millis / 1000.0
        result = MetricExportResult.SUCCESS
        for part in batching.split(metrics_data):
            remaining_ms = (deadline - time.monotonic()) * 1000.0
            if remaining_ms <= 0 or self.inner.export(part, timeout_millis=remaining_ms, **kwargs) \
                    is not MetricExportResult.SUCCESS:
                result = MetricExportResult.FAILURE  # the other parts still go: each holds cumulative values
        if result is MetricExportResult.SUCCESS:
            self.exported_ns = max(self.exported_ns, started_ns)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.pid != os.getpid() or self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        if self.pid == os.getpid():
            self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class PeriodicReader(PeriodicExportingMetricReader):
    """The SDK's periodic reader, completed with otel-rl's metrics; used for OTLP and the console."""

    def __init__(self, producer: StoreProducer, exporter: MetricExporter, interval_s: float, timeout_s: float,
                 cardinality_limit: int) -> None:
        self.producer = producer
        self.exporter = ResultKeepingExporter(exporter, cumulative_temporality())
        #: The thread of :meth:`export_final`; once set, collections made by other threads are not exported.
        self._final_thread: int | None = None
        super().__init__(self.exporter, export_interval_millis=interval_s * 1000.0,
                         export_timeout_millis=timeout_s * 1000.0, **reader_limits(cardinality_limit))

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        """Complete the SDK's collection with the store's metrics and export it, dated by when the store was read.

        The date (``time.monotonic_ns()``) is taken before the producer flushes the held-back counts and reads the
        store, so every value recorded in the store before it is in this export. That is what
        :meth:`exported_since` needs: a flush or a shutdown takes a mark, then asks for a collection, and succeeds
        when an export dated at or after its mark went out. (The SDK read the other instruments just before this
        call: for them the date is late by the time that took.)
        """
        if self.exporter.pid != os.getpid():
            # The parent's reader in a forked child (the SDK restarts its thread there): exporting would send the
            # child's values under the parent's service.instance.id. The child exports through its own telemetry.
            return
        final = self._final_thread
        if final is not None and final != threading.get_ident():
            # The SDK's own last collection at shutdown (or a tick racing with it): export_final has the newer values.
            return
        started_ns = time.monotonic_ns()
        completed = self.producer.complete(metrics_data)
        # The SDK's export call (its export lock, instrumentation suppressed) hands this to ResultKeepingExporter.
        super()._receive_metrics(DatedCollection(completed.resource_metrics, started_ns),
                                 timeout_millis=timeout_millis, **kwargs)

    def export_final(self, timeout_millis: float) -> None:
        """Collect and export now, in this thread, with the whole budget; then stop exporting.

        The SDK's shutdown makes one more collection too, but bounds it by the export *interval* and only logs
        when it times out, so a shutdown could succeed without exporting the final values. otel-rl exports them
        itself and judges that export (:meth:`exported_since`); the SDK's collection that follows is not exported.
        Raises what the SDK's ``collect`` raises (``MetricsTimeoutError`` when the callbacks overrun the budget).
        """
        self._final_thread = threading.get_ident()
        self.collect(timeout_millis=timeout_millis)

    def exported_since(self, mark_ns: int) -> bool:
        """Whether a collection that read the store at or after ``mark_ns`` (``time.monotonic_ns()``) was exported
        successfully."""
        return self.exporter.exported_ns >= mark_ns


class PullReader(MetricReader):
    """A reader that collects on demand: :meth:`collect_all` or :meth:`collect_others`, and keeps the latest
    collection (:attr:`latest`).

    The SDK's ``collect()`` (final: not to be overridden) hands its collection to :meth:`_receive_metrics` and returns
    nothing, so that method only keeps it as it came. Whoever asked for it completes it with the producer:
    :meth:`_collect_now` at once, with or without the store's metrics, one collection at a time; after a plain
    ``collect()`` (tests, debugging) :attr:`latest` adds the store's metrics when it is first read.
    """

    def __init__(self, producer: StoreProducer, cardinality_limit: int) -> None:
        self.producer = producer
        self._received: MetricsData | None = None  #: the SDK's latest collection, as it came
        self._completed: MetricsData | None = None  #: ``_received`` completed (None: not yet)
        # One collection at a time, so that two scrapes never see each other's collection.
        self._collecting = threading.Lock()
        super().__init__(preferred_temporality=cumulative_temporality(), **reader_limits(cardinality_limit))

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        self._received, self._completed = metrics_data, None

    @property
    def latest(self) -> MetricsData | None:
        """The latest collection, completed: as :meth:`collect_all` or :meth:`collect_others` returned it, or,
        after a plain ``collect()``, with the store's metrics read now. None before the first collection."""
        if self._completed is None and self._received is not None:
            self._completed = self.producer.complete(self._received)
        return self._completed

    def collect_all(self) -> MetricsData | None:
        """Collect now: otel-rl's metrics from the store first, then every other instrument of the provider."""
        return self._collect_now(with_store=True)

    def collect_others(self) -> MetricsData | None:
        """Collect now, leaving out otel-rl's own metrics (a scrape renders those straight from the store)."""
        return self._collect_now(with_store=False)

    def _collect_now(self, with_store: bool) -> MetricsData | None:
        """The SDK's collection of now, completed (None when the SDK collected nothing: OTEL_SDK_DISABLED)."""
        with self._collecting:
            self._received = None
            self.collect()
            received = self._received
            completed = None if received is None else self.producer.complete(received, with_store=with_store)
            self._completed = completed
            return completed

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        # Nothing to push: a scrape collects when it comes. The inherited flush would collect every series once
        # more on each force_flush(), doubling its cost for nothing.
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass
