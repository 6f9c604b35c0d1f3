"""otel-rl's readers plug into the OpenTelemetry SDK through public or documented hooks only, on every supported
SDK, take the producer at construction and date each export by when it read the store."""

from __future__ import annotations

import inspect
import re
import threading
import time

import pytest
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricReader

import otel_rl
from otel_rl._internal import producer, readers
from otel_rl._internal.config import Settings
from otel_rl._internal.producer import StoreProducer
from otel_rl._internal.readers import PeriodicReader, PullReader, ResultKeepingExporter
from otel_rl._internal.store import REGISTRY
from otel_rl._internal.telemetry import _resource


def _sdk_finals(cls: type) -> set[str]:
    """Names that a base class of ``cls`` from the SDK marks ``@typing.final``."""
    names = set()
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("opentelemetry."):
            for name, member in vars(base).items():
                if getattr(member, "__final__", False):
                    names.add(name)
    return names


@pytest.mark.parametrize("cls", [PullReader, PeriodicReader, ResultKeepingExporter])
def test_no_sdk_final_method_is_overridden(cls):
    """otel-rl's readers and exporter override nothing the SDK marks final (such as _set_collect_callback)."""
    finals = _sdk_finals(cls)
    assert "collect" in finals or cls is ResultKeepingExporter  # the check itself sees the SDK's markers
    ours = {name for klass in cls.__mro__ if klass.__module__.startswith("otel_rl") for name in vars(klass)}
    assert not ours & finals


@pytest.mark.parametrize("cls", [PullReader, PeriodicReader])
def test_no_sdk_attribute_is_overridden(cls):
    """otel-rl's readers define no name that an SDK base class defines or sets, other than the documented
    ``_receive_metrics`` hook and the public methods they mean to replace (an attribute such as the SDK's
    ``_collect`` callback, shadowed by a method of the same name, would break every collection)."""
    sdk_source = "".join(inspect.getsource(base) for base in cls.__mro__[1:]
                         if base.__module__.startswith("opentelemetry."))
    ours = {name for klass in cls.__mro__ if klass.__module__.startswith("otel_rl") for name in vars(klass)
            if name.startswith("_") and not name.startswith("__")} - {"_receive_metrics"}
    assert ours  # the check itself sees the readers' own names
    assert not {name for name in ours if re.search(rf"(self\.|def ){name}\b", sdk_source)}


def test_no_private_sdk_attribute_is_read():
    """The producer and the readers read no private attribute of an SDK object (``obj._x``), other than their own."""
    for module in (producer, readers):
        source = inspect.getsource(module)
        assert "_preferred_temporality" not in source and "_preferred_aggregation" not in source
        assert "_set_collect_callback" not in source and "_export_lock" not in source


def test_reader_limits_follow_what_the_sdk_accepts():
    """``cardinality_limits=`` is passed exactly when this SDK's readers accept it, and never below the store's."""
    accepts = "cardinality_limits" in inspect.signature(MetricReader.__init__).parameters
    limits = readers.reader_limits(5000)
    assert ("cardinality_limits" in limits) == accepts
    if accepts:
        assert min(limits["cardinality_limits"].values()) > 5000
        PullReader(StoreProducer(REGISTRY, _resource(Settings()), "test"), 5000)  # the SDK takes the values
        # A small store limit never lowers the SDK's default for your own observable gauges.
        assert min(readers.reader_limits(3)["cardinality_limits"].values()) >= 2000


def test_a_store_limit_above_the_sdk_default_keeps_every_scalar_label_set():
    """record_scalar's gauges are SDK observable gauges that apply ``cardinality_limit`` themselves: with a limit
    of 2600, 2500 label sets all reach the exposition, also on SDKs whose readers have a limit of their own."""
    handle = otel_rl.init_telemetry({"exporters": ["none"], "cardinality_limit": 2600})
    for i in range(2500):
        otel_rl.record_scalar("limit_check", 1.0, worker=str(i))
    text = handle.metrics_text().decode()
    assert text.count("rl_training_custom_limit_check{") == 2500
    assert "otel_metric_overflow" not in text
    handle.shutdown(timeout=1)


def test_result_keeping_exporter_takes_preferences_as_arguments():
    """The wrapper's temporality is the one given to it, whatever the inner exporter prefers."""
    from opentelemetry.sdk.metrics import ObservableCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, ConsoleMetricExporter

    inner = ConsoleMetricExporter(preferred_temporality={ObservableCounter: AggregationTemporality.DELTA})
    wrapper = ResultKeepingExporter(inner, readers.cumulative_temporality())
    # The SDK's reader reads the exporter's preferences from these attributes.
    assert wrapper._preferred_temporality[ObservableCounter] is AggregationTemporality.CUMULATIVE
    assert isinstance(wrapper, MetricExporter)


class _Keeping(MetricExporter):
    """An exporter that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.exported: list = []

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


def test_an_export_is_dated_by_when_the_producer_read_the_store():
    """The date an export counts as (``exported_since``) is taken in the reader's collection, after the SDK began
    it and before the producer read the store: not earlier, and not after the store was read."""
    store_producer = StoreProducer(REGISTRY, _resource(Settings()), "test")
    inner = _Keeping()
    reader = PeriodicReader(store_producer, inner, 3600, 5, REGISTRY.cardinality_limit)
    provider = store_producer.meter_provider([reader])
    read_at: list[int] = []
    original = store_producer.catalog_metrics

    def reading():
        read_at.append(time.monotonic_ns())
        return original()

    store_producer.catalog_metrics = reading  # type: ignore[method-assign]
    otel_rl.record_environment_steps("PPO", 3)
    try:
        mark = time.monotonic_ns()
        assert not reader.exported_since(mark)
        reader.collect()
        [read] = read_at
        assert mark <= reader.exporter.exported_ns <= read
        assert reader.exported_since(mark) and not reader.exported_since(read + 1)
        names = [m.name for rm in inner.exported[0].resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
        assert "rl_training_environment_steps_total" in names and producer.MARKER_NAME not in names
    finally:
        provider.shutdown(timeout_millis=1000)


def test_concurrent_collections_of_the_pull_reader_each_get_what_they_asked_for():
    """A scrape's collect_others() and another thread's collect_all() at the same time: the first never gets the
    store's metrics, the second always does (a slow callback of another instrument widens the overlap)."""
    from opentelemetry.metrics import Observation

    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    handle.meter_provider.get_meter("test.slow").create_observable_gauge(
        "test_slow", [lambda options: time.sleep(0.002) or [Observation(1.0)]])
    otel_rl.record_environment_steps("PPO", 3)
    ours = "rl_training_environment_steps_total"
    wrong: list[str] = []

    def names(data) -> list[str]:
        return [m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]

    def loop(with_store: bool) -> None:
        for _ in range(40):
            if with_store:
                if ours not in names(handle.pull_reader.collect_all()):
                    wrong.append("collect_all without the store's metrics")
            elif ours in names(handle.pull_reader.collect_others()):
                wrong.append("collect_others with the store's metrics")

    threads = [threading.Thread(target=loop, args=(flag,)) for flag in (True, False, True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong, wrong[:3]
    handle.shutdown(timeout=1)


def test_a_scrape_s_collection_never_reads_the_store_and_a_plain_collect_is_complete(monkeypatch):
    """collect_others() (every scrape) builds no catalog points: the renderer writes those, and building them
    would cost an export's CPU per scrape. The SDK's plain collect() still leaves a complete :attr:`latest`."""
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_environment_steps("PPO", 3)
    built: list[int] = []
    catalog_metrics = handle.producer.catalog_metrics
    monkeypatch.setattr(handle.producer, "catalog_metrics", lambda: built.append(1) or catalog_metrics())
    handle.pull_reader.collect_others()
    handle.metrics_text()
    assert built == []
    handle.pull_reader.collect()
    names = [m.name for rm in handle.pull_reader.latest.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics]
    assert "rl_training_environment_steps_total" in names and built == [1]
    handle.shutdown(timeout=1)
