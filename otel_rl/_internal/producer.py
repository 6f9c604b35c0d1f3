"""The producer: otel-rl's catalog metrics, read from the store, as the OpenTelemetry SDK's own points.

The call path of an OTLP export, for a newcomer:

1. the SDK's periodic reader thread ticks and calls ``MetricReader.collect()``;
2. the SDK collects the instruments of the MeterProvider (the marker gauge below, your instruments, the resource
   metrics) and hands that collection to ``PeriodicReader._receive_metrics`` (:mod:`otel_rl._internal.readers`);
3. the reader notes the time (the date of this export) and asks :meth:`StoreProducer.complete` to add otel-rl's
   metrics: it flushes the held-back step counts into the store and builds a ``Sum``, ``Gauge`` or ``Histogram``
   per catalog metric straight from the store's series (:meth:`StoreProducer.catalog_metrics`);
4. the reader passes the completed collection to its exporter (``ResultKeepingExporter``, which splits it in
   parts a collector accepts and hands them to the OTLP exporter).

A scrape takes the same readers' path only for instruments other than the catalog's (``PullReader``); the catalog is
rendered from the store by :mod:`otel_rl._internal.render`.

Why not observable callbacks: the SDK turns each ``Observation`` into a measurement, cleans and hashes its
attributes, aggregates it and samples exemplars before it makes the same point, which would make an export cost
1.2-1.7x the plain SDK's with synchronous instruments; the store already holds exact cumulative values. Histograms
could never go that way: the API has no observable histogram, and the SDK's synchronous ``Histogram.record`` drops
negative values (rewards, PPO losses and differential entropies are negative). The catalog's points never pass
through the SDK's aggregation, so the SDK knows no instrument of theirs: only the marker below.

Only public or documented SDK APIs are used, so any ``opentelemetry-sdk`` from 1.39 to the newest 1.x works.
Imports the store, the catalog and the held-back counts, nothing above them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_rl._internal.catalog import ALL_METRICS, MetricSpec
from otel_rl._internal.held_back import flush_held_back
from otel_rl._internal.store import Registry

SCOPE_NAME = "otel_rl"
#: An observable gauge that always has one point. Every supported SDK (1.39 to 1.45.2) skips ``_receive_metrics``
#: when no instrument has a point, and the catalog's points are not the SDK's: without it a process that records
#: only catalog metrics would never export. :meth:`StoreProducer.complete` removes it again.
MARKER_NAME = "otel_rl.collection"


class StoreProducer:
    """Builds the catalog metrics of ``registry`` as SDK points, and completes each collection of a reader with
    them (:meth:`complete`). The readers receive it at construction.

    ``disabled`` (OTEL_SDK_DISABLED=true, which turns the SDK's own instruments off): otel-rl's points follow, and
    none is built."""

    def __init__(self, registry: Registry, resource: Resource, version: str, *, disabled: bool = False) -> None:
        self.registry = registry
        self.resource = resource
        self.version = version
        self.scope = InstrumentationScope(SCOPE_NAME, version)
        self.disabled = disabled
        self._builders: list[tuple[MetricSpec, Callable[[Any, int], Any]]] = [
            (spec, {"counter": _sum, "gauge": _gauge, "histogram": _histogram}[spec.type]) for spec in ALL_METRICS]

    def meter_provider(self, readers: Iterable[MetricReader]) -> MeterProvider:
        """The SDK MeterProvider that collects for ``readers`` (built with this producer), with the marker gauge."""
        # No exemplars: otel-rl's points carry no trace context, and sampling them costs export CPU.
        provider = MeterProvider(resource=self.resource, metric_readers=list(readers), shutdown_on_exit=False,
                                 exemplar_filter=AlwaysOffExemplarFilter())
        provider.get_meter(SCOPE_NAME, self.version).create_observable_gauge(
            MARKER_NAME, [_marker], "1", "internal to otel-rl; never exported")
        return provider

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

    def complete(self, data: MetricsData | None, with_store: bool = True) -> MetricsData:
        """``data`` (an SDK collection) with otel-rl's metrics first, in catalog order, and without the marker.

        ``with_store=False`` leaves the catalog out (a scrape renders it from the store). Never raises: should
        completing fail, the collection is passed on without otel-rl's metrics, logged once."""
        try:
            if not with_store:
                return self._joined([], data)
            flush_held_back()  # the Gymnasium wrappers' step counts, before any value is read
            return self._joined(self.catalog_metrics(), data)
        except Exception:  # noqa: BLE001 (an error here would kill the SDK's export thread for the whole run)
            self.registry.warn_once(
                ("otel_rl", "complete_failed"),
                "otel-rl could not add its metrics to a collection; this collection is passed on without "
                "them (later ones try again). Please report this.", exc_info=True)
            return _without_marker(data)

    def _joined(self, ours: list[Metric], data: MetricsData | None) -> MetricsData:
        resource_metrics: list[ResourceMetrics] = []
        schema_url = ""
        # Other scopes of this resource (the resource metrics, a user's instruments) join otel-rl's entry: the OTLP
        # encoder keeps one entry per resource, so a second entry for the same resource would replace the first.
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


_NO_EXEMPLARS = ()  # otel-rl's points have no trace context, and a shared empty tuple costs nothing


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


def _without_marker(data: MetricsData | None) -> MetricsData:
    """``data`` without the internal marker gauge (and without a scope left empty by its removal)."""
    resource_metrics = []
    for rm in (data.resource_metrics if data is not None else ()):
        scopes = [ScopeMetrics(sm.scope, [m for m in sm.metrics if m.name != MARKER_NAME], sm.schema_url)
                  if sm.scope.name == SCOPE_NAME else sm for sm in rm.scope_metrics]
        scopes = [sm for sm in scopes if sm.metrics]
        if scopes:
            resource_metrics.append(ResourceMetrics(rm.resource, scopes, rm.schema_url))
    return MetricsData(resource_metrics)


def _marker(options: CallbackOptions) -> list[Observation]:
    return [Observation(1)]
