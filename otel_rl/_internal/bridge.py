"""Hands the in-process state to the OpenTelemetry SDK.

Counters and gauges are declared through the Meter API as observable instruments (so the SDK registers and
validates their names, units and descriptions). The points of every catalog metric are built from
:mod:`otel_rl._internal.store` as the SDK's own ``NumberDataPoint`` and ``HistogramDataPoint`` types, which the
readers below add to each collection through the SDK's documented ``MetricReader._receive_metrics`` hook. Every
reader therefore sees the same data, in catalog order.

Why not observable callbacks: the SDK turns each ``Observation`` into a measurement, cleans and hashes its
attributes, aggregates it and samples exemplars before it makes the same point, which made an export cost
1.2-1.7x the plain SDK's with synchronous instruments (issue 13); the store already holds exact cumulative values.
Histograms could never go that way: the API has no observable histogram, and the SDK's synchronous
``Histogram.record`` drops negative values (rewards, PPO losses and differential entropies are negative).

Only public or documented SDK APIs are used, so any ``opentelemetry-sdk`` from 1.39 to the newest 1.x works.
The SDK skips ``_receive_metrics`` when no instrument has a point; a marker gauge that always reports one keeps
every collection flowing, and is removed again before anything is exported.
What older SDKs lack is detected, not assumed: ``cardinality_limits=`` (from 1.45.2) is passed only when the
reader accepts it; older SDKs apply no cardinality limit of their own, so the store's limit is the only one.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rl._internal import batching
from otel_rl._internal.catalog import ALL_METRICS, MetricSpec
from otel_rl._internal.config import sdk_disabled
from otel_rl._internal.held_back import flush_held_back
from otel_rl._internal.store import Registry

SCOPE_NAME = "otel_rl"
#: An observable gauge that always has one point, so that the SDK hands every collection to ``_receive_metrics``
#: (it skips the call when no instrument has points). :meth:`Bridge.complete` removes it again.
MARKER_NAME = "otel_rl.collection"

_local = threading.local()


@contextmanager
def without_store() -> Iterator[None]:
    """Collections in this thread leave out otel-rl's own metrics (the scrape renders those from the store)."""
    _local.skip = True
    try:
        yield
    finally:
        _local.skip = False


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


class Bridge:
    """Owns the MeterProvider that declares otel-rl's instruments, and completes each of its collections with
    the points of ``registry``."""

    def __init__(self, registry: Registry, resource: Resource, readers: Iterable[MetricReader],
                 version: str) -> None:
        self.registry = registry
        self.resource = resource
        self.scope = InstrumentationScope(SCOPE_NAME, version)
        # The SDK turns its own instruments off under OTEL_SDK_DISABLED=true; otel-rl's points follow.
        self.disabled = sdk_disabled()
        readers = list(readers)
        for reader in readers:
            if isinstance(reader, CatalogReaderMixin):
                reader._bridge = self
        # No exemplars: observable instruments carry no trace context, and sampling them costs export CPU.
        self.provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False,
                                      exemplar_filter=AlwaysOffExemplarFilter())
        meter = self.provider.get_meter(SCOPE_NAME, version)
        meter.create_observable_gauge(MARKER_NAME, [_marker], "1", "internal to otel-rl; never exported")
        for spec in ALL_METRICS:
            # Declared without callbacks: their points come from catalog_metrics(), not from Observations.
            if spec.type == "counter":
                meter.create_observable_counter(spec.name, None, spec.unit, spec.help)
            elif spec.type == "gauge":
                meter.create_observable_gauge(spec.name, None, spec.unit, spec.help)
        self._builders: list[tuple[MetricSpec, Callable[[Any, int], Any]]] = [
            (spec, {"counter": _sum, "gauge": _gauge, "histogram": _histogram}[spec.type]) for spec in ALL_METRICS]

    def catalog_metrics(self) -> list[Metric]:
        """otel-rl's metrics as the SDK's point types, in catalog order, one Metric per metric that has series.

        A metric whose points cannot be built (an unexpected error) is left out of this collection and logged
        once; the others still go out."""
        metrics: list[Metric] = []
        if self.disabled:
            return metrics
        now = time.time_ns()
        registry = self.registry
        for spec, build in self._builders:
            try:
                data = build(registry[spec.name], now)
            except Exception:  # noqa: BLE001 (an error here would kill the SDK's export thread for the whole run)
                registry.warn_once(
                    (spec.name, "collect_failed"),
                    "otel-rl could not build the points of %s; it is left out of this collection (later ones try "
                    "again). Please report this.", spec.name, exc_info=True)
                continue
            if data is not None:
                metrics.append(Metric(spec.name, spec.help, spec.unit, data))
        return metrics

    def complete(self, data: MetricsData | None) -> MetricsData:
        """Add otel-rl's metrics to a collection, first and in catalog order."""
        ours: list[Metric] = [] if getattr(_local, "skip", False) else self.catalog_metrics()
        resource_metrics: list[ResourceMetrics] = []
        schema_url = ""
        # Other scopes of this resource (the resource metrics, a user's instruments) join otel-rl's entry: the OTLP
        # encoder keeps one entry per resource, so a second entry for the same resource replaced the first.
        beside: list[ScopeMetrics] = []
        for rm in (data.resource_metrics if data is not None else ()):
            others = []
            for sm in rm.scope_metrics:
                if sm.scope.name == SCOPE_NAME:  # the marker, and any instrument made on otel-rl's meter
                    ours.extend(m for m in sm.metrics if m.name != MARKER_NAME)  # after the catalog, in order
                    schema_url = sm.schema_url
                else:
                    others.append(sm)
            if others and rm.resource == self.resource:
                beside.extend(others)
            elif others:
                resource_metrics.append(ResourceMetrics(rm.resource, others, rm.schema_url))
        resource_metrics.insert(0, ResourceMetrics(
            self.resource, [ScopeMetrics(self.scope, ours, schema_url), *beside], self.resource.schema_url))
        return MetricsData(resource_metrics)


_NO_EXEMPLARS = ()  # observable instruments have no trace context, and a shared empty tuple costs nothing


def _sum(state: Any, now: int) -> Sum | None:
    """A counter's cumulative points; each starts when its series was created."""
    created = state.created_ns
    attributes = state.attributes
    points = [NumberDataPoint(attributes(key), created.get(key, now), now, value, _NO_EXEMPLARS)
              for key, value in state.snapshot()]
    return Sum(points, AggregationTemporality.CUMULATIVE, True) if points else None


def _gauge(state: Any, now: int) -> Gauge | None:
    """A gauge's last values (a gauge point has no start time, as the SDK's own)."""
    attributes = state.attributes
    points = [NumberDataPoint(attributes(key), None, now, value, _NO_EXEMPLARS)  # type: ignore[arg-type]
              for key, value in state.snapshot()]
    return Gauge(points) if points else None


def _histogram(state: Any, now: int) -> Histogram | None:
    """A histogram's cumulative points; each starts when its series was created."""
    attributes, bounds = state.attributes, state.bounds
    points = []
    for key, series in state.snapshot():
        count = series.count
        points.append(HistogramDataPoint(
            attributes=attributes(key),
            start_time_unix_nano=series.created_ns,
            time_unix_nano=now,
            count=count,
            sum=series.sum,
            bucket_counts=series.counts,
            explicit_bounds=bounds,
            min=series.min if count else 0.0,
            max=series.max if count else 0.0,
        ))
    return Histogram(points, AggregationTemporality.CUMULATIVE) if points else None


class CatalogReaderMixin:
    """Adds otel-rl's metrics to every collection before the reader passes it on."""

    _bridge: Bridge | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        if self._bridge is not None:
            try:
                metrics_data = self._bridge.complete(metrics_data)
            except Exception:  # noqa: BLE001 (an error here would kill the SDK's export thread for the whole run)
                self._bridge.registry.warn_once(
                    ("otel_rl", "complete_failed"),
                    "otel-rl could not add its metrics to a collection; this collection is passed on without "
                    "them (later ones try again). Please report this.", exc_info=True)
                metrics_data = _without_marker(metrics_data)
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)  # type: ignore[misc]


def _without_marker(data: MetricsData) -> MetricsData:
    """``data`` without the internal marker gauge (and without a scope left empty by its removal)."""
    resource_metrics = []
    for rm in data.resource_metrics:
        scopes = [ScopeMetrics(sm.scope, [m for m in sm.metrics if m.name != MARKER_NAME], sm.schema_url)
                  if sm.scope.name == SCOPE_NAME else sm for sm in rm.scope_metrics]
        scopes = [sm for sm in scopes if sm.metrics]
        if scopes:
            resource_metrics.append(ResourceMetrics(rm.resource, scopes, rm.schema_url))
    return MetricsData(resource_metrics)


#: When the collection running in this thread began (``time.monotonic_ns()``): the marker is the first instrument,
#: so its callback runs before any value is read. The exporter uses it to date what it exported.
_collection = threading.local()


def _marker(options: CallbackOptions) -> list[Observation]:
    _collection.started_ns = time.monotonic_ns()
    flush_held_back()  # the Gymnasium wrappers' step counts, before any value is read
    return [Observation(1)]


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
        #: ``time.monotonic_ns()`` at the start of the newest collection whose export succeeded (0: none yet).
        self.exported_ns = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        started_ns = _collection.__dict__.pop("started_ns", None) or time.monotonic_ns()
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


class PeriodicReader(CatalogReaderMixin, PeriodicExportingMetricReader):
    """The SDK's periodic reader, completed with otel-rl's histograms; used for OTLP and the console."""

    def __init__(self, exporter: MetricExporter, interval_s: float, timeout_s: float,
                 cardinality_limit: int) -> None:
        self.exporter = ResultKeepingExporter(exporter, cumulative_temporality())
        #: The thread of :meth:`export_final`; once set, collections made by other threads are not exported.
        self._final_thread: int | None = None
        super().__init__(self.exporter, export_interval_millis=interval_s * 1000.0,
                         export_timeout_millis=timeout_s * 1000.0, **reader_limits(cardinality_limit))

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        if self.exporter.pid != os.getpid():
            # The parent's reader in a forked child (the SDK restarts its thread there): exporting would send the
            # child's values under the parent's service.instance.id. The child exports through its own telemetry.
            _collection.__dict__.pop("started_ns", None)
            return
        final = self._final_thread
        if final is not None and final != threading.get_ident():
            # The SDK's own last collection at shutdown (or a tick racing with it): export_final has the newer values.
            _collection.__dict__.pop("started_ns", None)
            return
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

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
        """Whether a collection begun at or after ``mark_ns`` (``time.monotonic_ns()``) was exported successfully."""
        return self.exporter.exported_ns >= mark_ns


class _LatestCollection(MetricReader):
    """Keeps the latest collection instead of exporting it."""

    latest: MetricsData | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        self.latest = metrics_data

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        # Nothing to push: a scrape collects when it comes. The inherited flush would collect every series once
        # more on each force_flush(), doubling its cost for nothing.
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


class PullReader(CatalogReaderMixin, _LatestCollection):
    """A reader that collects on demand (a scrape) and keeps the latest, completed collection."""

    def __init__(self, cardinality_limit: int) -> None:
        super().__init__(preferred_temporality=cumulative_temporality(), **reader_limits(cardinality_limit))

    def collect_all(self) -> MetricsData | None:
        """Collect now: otel-rl's metrics from the store first, then every other instrument of the provider."""
        self.collect()
        return self.latest

    def collect_others(self) -> MetricsData | None:
        """Collect now, leaving out otel-rl's own metrics (a scrape renders those straight from the store)."""
        with without_store():
            self.collect()
        return self.latest


def sdk_has_cardinality_limits() -> bool:
    """Whether this SDK's readers take ``cardinality_limits=`` (opentelemetry-sdk 1.45.2 and later)."""
    return "cardinality_limits" in inspect.signature(MetricReader.__init__).parameters


def reader_limits(cardinality_limit: int) -> Mapping[str, Any]:
    """Keyword arguments for a reader: the SDK must never cut a stream below the store's limit.

    The store applies the limit (and its overflow series). The dropped-values counter is exempt from it, so
    leave room for its metric x reason label sets too. SDKs before 1.45.2 have no limit of their own: nothing to pass.
    """
    if not sdk_has_cardinality_limits():
        return {}
    from opentelemetry.sdk.metrics import ObservableCounter, ObservableGauge

    limit = cardinality_limit + 1 + 16 * len(ALL_METRICS)
    return {"cardinality_limits": {ObservableCounter: limit, ObservableGauge: limit}}
