"""Splits one collection into OTLP exports that a collector accepts.

A collector's gRPC receiver refuses a message over 4 MiB (``RESOURCE_EXHAUSTED``), and its HTTP receiver a body over
20 MiB. otel-rl's series are cumulative, so a collection that large once is that large on every later export: one
refused export stopped the push path for the rest of the run (100k series, or a label value of a megabyte). The
OTLP exporters' own ``max_export_batch_size`` counts data points, not bytes, and the HTTP exporter lacks it before
SDK 1.4x; splitting here works the same on every SDK and both protocols.

The size of each point is estimated from what dominates its protobuf encoding (attribute strings, bucket arrays,
fixed fields) rather than encoded twice; :data:`EXPORT_BYTES` leaves room for the estimate to be off several-fold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, cast

from opentelemetry.sdk.metrics.export import (
    ExponentialHistogram,
    Histogram,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)

#: Estimated bytes of one export: a quarter of the gRPC receiver's default limit (4 MiB).
EXPORT_BYTES = 1 << 20

_POINT_FIXED = 48  #: timestamps, value, field tags and lengths of one point
_ATTRIBUTE_FIXED = 8  #: tags and lengths of one key-value attribute


def _text_size(text: str) -> int:
    """The UTF-8 length of ``text``: a character outside ASCII takes 2 to 4 bytes on the wire."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _attributes_size(attributes: Any) -> int:
    if not attributes:
        return 0
    return sum(_text_size(key) + _text_size(value if type(value) is str else str(value)) + _ATTRIBUTE_FIXED
               for key, value in attributes.items())


def _point_sizes(metric: Metric) -> list[int]:
    """The estimated encoded size of each point of ``metric``."""
    points: Any = metric.data.data_points  # the point type follows metric.data's type, checked below
    if not points:
        return []
    first = points[0]
    if isinstance(metric.data, ExponentialHistogram):
        return [_POINT_FIXED + 32 + _attributes_size(p.attributes)
                + 8 * (len(p.positive.bucket_counts) + len(p.negative.bucket_counts)) for p in points]
    fixed = _POINT_FIXED
    if isinstance(metric.data, Histogram):  # counts and bounds, 8 bytes each (packed); the same for every point
        fixed += 8 * (len(first.bucket_counts) + len(first.explicit_bounds)) + 32
    return [fixed + _attributes_size(p.attributes) for p in points]


def _metric_size(metric: Metric) -> int:
    return _text_size(metric.name) + _text_size(metric.description or "") + _text_size(metric.unit or "") + 16


def split(data: MetricsData, budget: int = EXPORT_BYTES) -> list[MetricsData]:
    """``data`` as one or more MetricsData of about ``budget`` bytes each (estimated), in the same order.

    A metric whose points do not fit in one part is continued in the next, with the same name, type and
    temporality; every part repeats its resource and scope. A single point larger than ``budget`` goes alone."""
    sizes = {id(m): _point_sizes(m) for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    if sum(map(sum, sizes.values())) + 256 * len(sizes) <= budget:
        return [data]
    parts: list[MetricsData] = []
    current: list[ResourceMetrics] = []
    used = 0

    def flush() -> None:
        nonlocal current, used
        if current:
            parts.append(MetricsData(current))
        current, used = [], 0

    for rm in data.resource_metrics:
        rm_fixed = _attributes_size(rm.resource.attributes) + 16
        for sm in rm.scope_metrics:
            sm_fixed = _text_size(sm.scope.name) + _text_size(sm.scope.version or "") + 16
            for metric in sm.metrics:
                points: list[Any] = []
                fixed = rm_fixed + sm_fixed + _metric_size(metric)
                for point, size in zip(metric.data.data_points, sizes[id(metric)]):
                    if points and used + fixed + size > budget:
                        _add(current, rm, sm, metric, points)
                        flush()
                        points = []
                    if not points:
                        used += fixed
                    points.append(point)
                    used += size
                if points:
                    _add(current, rm, sm, metric, points)
    flush()
    return parts


def _add(current: list[ResourceMetrics], rm: ResourceMetrics, sm: ScopeMetrics, metric: Metric,
         points: Iterable[Any]) -> None:
    """Append ``metric`` with only ``points`` to ``current``, under (a copy of) its resource and scope entries."""
    data: Any = metric.data  # Sum, Gauge, Histogram or ExponentialHistogram: each has data_points
    part = dataclasses.replace(metric, data=dataclasses.replace(data, data_points=list(points)))
    if not current or current[-1].resource is not rm.resource:
        current.append(ResourceMetrics(rm.resource, [], rm.schema_url))
    scopes = cast(list[ScopeMetrics], current[-1].scope_metrics)  # the list made just above
    if not scopes or scopes[-1].scope is not sm.scope:
        scopes.append(ScopeMetrics(sm.scope, [], sm.schema_url))
    cast(list[Metric], scopes[-1].metrics).append(part)


def estimated_size(data: MetricsData) -> int:
    """The estimated encoded size of ``data`` (what :func:`split` measures), for tests and docs."""
    return sum(_metric_size(m) + sum(_point_sizes(m))
               for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
