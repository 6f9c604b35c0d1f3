"""Splitting one collection into exports a collector accepts (``otel_rl._internal.batching``)."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

import otel_rl
from otel_rl import testing
from otel_rl._internal import batching
from otel_rl._internal.config import Settings
from otel_rl._internal.producer import StoreProducer
from otel_rl._internal.readers import PullReader, ResultKeepingExporter
from otel_rl._internal.store import REGISTRY
from otel_rl._internal.telemetry import _resource


def _collection():
    """One completed collection of the store, as an OTLP exporter receives it."""
    producer = StoreProducer(REGISTRY, _resource(Settings()), "test")
    reader = PullReader(producer, REGISTRY.cardinality_limit)
    producer.meter_provider([reader])
    reader.collect()
    assert reader.latest is not None
    return reader.latest


def _points(data) -> list[tuple[str, tuple, float]]:
    out = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    out.append((m.name, tuple(sorted(p.attributes.items())), getattr(p, "value", None)
                                or getattr(p, "count", None)))
    return out


def test_a_small_collection_goes_as_it_is():
    otel_rl.record_episode("PPO", "a", 1.0, 2.0)
    data = _collection()
    assert batching.split(data) == [data]


def test_a_big_collection_is_split_in_order_and_every_part_encodes_within_the_budget():
    """100k-ish bytes of series in 16 kB parts: nothing lost, nothing repeated, every encoded part within budget."""
    REGISTRY.cardinality_limit = 10_000
    try:
        for i in range(3000):
            otel_rl.record_episode("PPO", f"agent-{i:05d}", float(i), 3.0)
        data = _collection()
        budget = 16_384
        parts = batching.split(data, budget)
        assert len(parts) > 10
        assert [p for part in parts for p in _points(part)] == _points(data)
        sizes = [len(encode_metrics(part).SerializeToString()) for part in parts]
        assert max(sizes) <= budget, sizes
        whole = len(encode_metrics(data).SerializeToString())
        assert batching.estimated_size(data) >= whole  # the estimate errs on the large side
    finally:
        testing.reset()
        REGISTRY.cardinality_limit = 2000


class _Recorder(MetricExporter):
    def __init__(self, fail_first: bool = False) -> None:
        super().__init__()
        self.parts: list = []
        self.fail_first = fail_first

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.parts.append(metrics_data)
        if self.fail_first and len(self.parts) == 1:
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def test_the_exporter_sends_every_part_and_fails_when_one_fails():
    """One failed part fails the export (the flush reports it), and the other parts are still sent."""
    REGISTRY.cardinality_limit = 10_000
    try:
        for i in range(5000):
            otel_rl.record_training_error(f"e{i}" + "y" * 200)
        data = _collection()
        ok, failing = _Recorder(), _Recorder(fail_first=True)
        assert ResultKeepingExporter(ok).export(data) is MetricExportResult.SUCCESS
        assert len(ok.parts) > 1
        assert ResultKeepingExporter(failing).export(data) is MetricExportResult.FAILURE
        assert len(failing.parts) == len(ok.parts)
    finally:
        testing.reset()
        REGISTRY.cardinality_limit = 2000


def test_labels_outside_ascii_are_measured_in_bytes():
    """A character outside ASCII takes up to 4 bytes on the wire: counted in characters, parts of emoji labels
    encoded to about 3.5 times the budget (a 1 MiB budget came within 3 % of the gRPC receiver's 4 MiB)."""
    REGISTRY.cardinality_limit = 10_000
    try:
        for i in range(300):
            otel_rl.record_training_error(f"{i:05d}" + "\U0001F600" * 500)
        data = _collection()
        budget = 16_384
        parts = batching.split(data, budget)
        assert [p for part in parts for p in _points(part)] == _points(data)
        sizes = [len(encode_metrics(part).SerializeToString()) for part in parts]
        assert max(sizes) <= budget, sizes
        assert batching.estimated_size(data) >= len(encode_metrics(data).SerializeToString())
    finally:
        testing.reset()
        REGISTRY.cardinality_limit = 2000
