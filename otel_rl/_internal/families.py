"""The SDK's collection as prometheus_client families: the instruments that are not otel-rl's catalog metrics.

A scrape renders the catalog metrics straight from the store (:mod:`otel_rl._internal.render`); what else the
MeterProvider holds (your own instruments, the resource metrics) comes through an OpenTelemetry collection and is
converted here by :func:`families`, named and labelled as the collector's Prometheus exporters write it, so the
pull and the push path show the same series. :func:`all_families` converts a whole collection, catalog metrics
included, for the formats the store renderer does not write.

Families are built with no ``otel_scope_*`` labels and no ``target_info``, as the collector path shows them.
Imports only the catalogs (:mod:`otel_rl._internal.catalog`, :mod:`otel_rl._internal.resource_catalog`).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.utils import floatToGoString

from otel_rl._internal.catalog import ALL_METRICS, BY_NAME
from otel_rl._internal.resource_catalog import (
    RESOURCE_BY_OTEL_NAME,
    RESOURCE_METRICS,
    prometheus_label,
    prometheus_name,
)

#: Family names of the catalog metrics: an instrument of yours that converts to one of them is left out, since the
#: scrape shows the store's family under that name.
_CATALOG_FAMILIES = frozenset(spec.family for spec in ALL_METRICS)


def label_value(value: Any) -> Any:
    """A label value as the pull path exposes it: a carriage return as the two characters ``\\r``.

    The exposition formats escape only backslash, double quote and line feed; a raw carriage return is allowed by
    them but ends the line for any reader with universal newlines, and ``\\r`` is an invalid escape for promtool
    and Go's parser. The text ``\\r`` (its backslash escaped by the encoder) parses everywhere."""
    return value.replace("\r", "\\r") if isinstance(value, str) and "\r" in value else value


def _by_name(data: MetricsData | None) -> dict[str, Any]:
    """Each metric of the collection by its OpenTelemetry name (the first one of a name, as the SDK orders them)."""
    found: dict[str, Any] = {}
    if data is not None:
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for otel_metric in sm.metrics:
                    found.setdefault(otel_metric.name, otel_metric)
    return found


def families(data: MetricsData | None) -> list[PromMetric]:
    """The resource metrics and your instruments in ``data``; catalog metrics are left out (the store has them)."""
    return _non_catalog(_by_name(data))


def all_families(data: MetricsData | None) -> list[PromMetric]:
    """One family per catalog metric from ``data`` (empty ones too, as prometheus_client shows them), then those
    of :func:`families`: a whole scrape from a collection, for the formats the store renderer does not write."""
    found = _by_name(data)
    result = []
    for spec in ALL_METRICS:
        family = PromMetric(spec.family, spec.help, spec.type)
        metric = found.get(spec.name)
        if metric is not None:
            _add_samples(family, spec.name, metric.data)
        result.append(family)
    return result + _non_catalog(found)


def _non_catalog(found: dict[str, Any]) -> list[PromMetric]:
    result = _resource_families(found)
    for name, metric in found.items():
        if name not in BY_NAME and name not in RESOURCE_BY_OTEL_NAME:
            family = _other_family(name, metric)
            if family.name not in _CATALOG_FAMILIES:
                result.append(family)
    return result


def _other_family(otel_name: str, metric: Any) -> PromMetric:
    """A metric of your own instruments, named as the collector's ``UnderscoreEscapingWithoutSuffixes`` names it
    (``my.updates`` -> ``my_updates``; no unit or ``_total`` suffix added), so both paths show one series.

    A monotonic sum is a counter when its name ends in ``_total``; otherwise its type is left unknown, since a
    Prometheus counter's sample must end in ``_total`` and the push path would not add it."""
    name = prometheus_name(otel_name)
    data = metric.data
    if isinstance(data, Histogram):
        kind = "histogram"
    elif isinstance(data, Sum) and data.is_monotonic:
        kind = "counter" if name.endswith("_total") else "unknown"
    else:
        kind = "gauge"
    family = PromMetric(name[:-6] if kind == "counter" else name, metric.description or "", kind)
    _add_samples(family, name, data, escape_labels=True)
    return family


def _resource_families(found: dict[str, Any]) -> list[PromMetric]:
    """The resource metrics present, named and labelled as the collector's underscore escaping writes them."""
    result = []
    for spec in RESOURCE_METRICS:
        metric = found.get(spec.otel_name)
        if metric is None:
            continue
        family = PromMetric(spec.name, spec.help, spec.type)
        for point in metric.data.data_points:
            family.add_sample(spec.name, {prometheus_label(k): label_value(str(v))
                                          for k, v in point.attributes.items()},
                              point.value)
        result.append(family)
    return result


def _add_samples(family: PromMetric, name: str, data: Any, escape_labels: bool = False) -> None:
    point: Any
    if isinstance(data, Histogram):
        for point in data.data_points:
            labels = _labels(point.attributes, escape_labels)
            cumulative = 0
            for bound, count in zip(point.explicit_bounds, point.bucket_counts):
                cumulative += count
                family.add_sample(name + "_bucket", {**labels, "le": floatToGoString(bound)}, cumulative)
            family.add_sample(name + "_bucket", {**labels, "le": "+Inf"}, point.count)
            # prometheus_client omits _sum when a bound is negative (an OpenMetrics rule); dashboards need it for
            # mean rewards, and the collector path carries it, so it is always exposed.
            family.add_sample(name + "_count", labels, point.count)
            family.add_sample(name + "_sum", labels, point.sum)
    elif isinstance(data, (Sum, Gauge)):
        for point in data.data_points:
            family.add_sample(name, _labels(point.attributes, escape_labels), point.value)


def _labels(attributes: Any, escape: bool) -> dict[str, str]:
    """A point's attributes as labels; for your instruments, keys escaped (``gpu.id`` -> ``gpu_id``) and values
    written as the collector writes them."""
    if not escape:
        return {k: label_value(v) for k, v in attributes.items()}
    # SDKs before 1.4x pass an observation's attributes on uncleaned: a key that is not text, or a None value, is
    # what the OTLP encoder leaves out (or sends empty, which the collector writes as no label), so it is left out;
    # so is one that is not valid UTF-8 (lone surrogates), which the encoder refuses and the scrape could not write.
    labels = {}
    for key, value in attributes.items():
        if type(key) is str and value is not None:
            text = attribute_text(value)
            if text and _is_utf8(key) and _is_utf8(text):
                labels[prometheus_label(key)] = label_value(text)
    return labels


def _is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates, as ``os.fsdecode`` makes of undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def attribute_text(value: Any) -> str:
    """An attribute value as the collector's remote-write exporter writes it as a label (pdata's ``AsString``):
    ``true``, ``3``, ``0.5``, ``1e-7``, ``NaN``, ``-Infinity``, and a sequence as compact JSON (``[1,2]``,
    ``["é"]``); a sequence holding NaN or an infinity, which JSON cannot write, as "" (no label)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, float) and v - v != 0.0 for v in value):
            return ""
        # Text in a sequence as the collector's JSON writes it: non-ASCII kept as it is (``["é"]``, not ``\u00e9``)
        return "[" + ",".join(json.dumps(v, ensure_ascii=False) if isinstance(v, str) else attribute_text(v)
                              for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_text(value)
    return str(value)


_SHORT_EXPONENT = re.compile(r"e-0(\d)$")


def _float_text(value: float) -> str:
    """A float as pdata writes it, which is how JavaScript and Go's encoding/json write numbers: plain digits,
    except below 1e-6 and from 1e21 on, where the shortest digits take an exponent (``1.5e-7``, ``1e+21``)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "Infinity" if value > 0 else "-Infinity"
    size = abs(value)
    if size != 0.0 and (size < 1e-6 or size >= 1e21):
        return _SHORT_EXPONENT.sub(r"e-\1", repr(value))  # Python's repr pads the exponent to two digits
    text = format(Decimal(repr(value)), "f")  # no exponent, as Go's FormatFloat(v, 'f', -1, 64)
    return text[:-2] if text.endswith(".0") else text
