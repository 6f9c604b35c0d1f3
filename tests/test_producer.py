"""The producer: the store's catalog metrics as the SDK's point types, completing every reader's collection."""

from __future__ import annotations

import logging
import time

import otel_rl
from otel_rl._internal import catalog, store
from otel_rl._internal.producer import MARKER_NAME


def test_histogram_only_state_reaches_the_reader_and_the_marker_does_not():
    """With only a histogram observed, a collection still carries it, and the internal marker gauge never shows."""
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_data_load_time(1.5)
    handle.pull_reader.collect()
    names = [m.name for rm in handle.pull_reader.latest.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics]
    assert names == ["rl_training_data_load_time_seconds"]
    assert MARKER_NAME.encode() not in handle.metrics_text()
    assert b"otel_rl_collection" not in handle.metrics_text()


def test_a_store_limit_above_the_sdk_default_exports_every_series():
    """With cardinality_limit 2600, 2500 label sets all reach the exposition, on SDKs with and without limits."""
    handle = otel_rl.init_telemetry({"exporters": ["none"], "cardinality_limit": 2600})
    for i in range(2500):
        otel_rl.record_episode_metrics("PPO", f"run-{i}", 1.0, 2.0)
    text = handle.metrics_text().decode()
    assert text.count("rl_training_episode_reward_mean{") == 2500
    assert "otel_metric_overflow" not in text


def _names(reader) -> list[str]:
    return [m.name for rm in reader.latest.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


def test_a_metric_whose_points_fail_is_left_out_once_logged_and_the_others_go_on(caplog, monkeypatch):
    """An unexpected error while building one metric's points never escapes the reader (where it would kill the
    SDK's export thread for the rest of the run): that metric is left out, the others get through, and it is
    logged once per metric however many collections fail."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_environment_steps("PPO", 3)
    otel_rl.record_episode("PPO", "a", 1.0, 10)

    def broken(self):
        raise KeyError("boom")

    monkeypatch.setattr(store.Histogram, "snapshot", broken)
    for _ in range(3):
        handle.pull_reader.collect()
        names = _names(handle.pull_reader)
        assert "rl_training_environment_steps_total" in names and "rl_training_episodes_total" in names
        assert "rl_training_episode_reward" not in names
    warned = [r.getMessage() for r in caplog.records if "could not build the points" in r.getMessage()]
    histograms = [spec.name for spec in catalog.ALL_METRICS if spec.type == "histogram"]
    assert sorted(warned) == sorted(f"otel-rl could not build the points of {name}; it is left out of this "
                                    "collection (later ones try again). Please report this." for name in histograms)
    monkeypatch.undo()
    handle.pull_reader.collect()
    assert "rl_training_episode_reward" in _names(handle.pull_reader)
    handle.shutdown(timeout=1)


def test_a_failing_completion_passes_the_collection_on_with_one_warning(caplog, monkeypatch):
    """Should completing a collection fail as a whole, the reader still passes it on (without the internal marker
    gauge), logs once, and the next collection after the cause is gone carries otel-rl's metrics again."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_environment_steps("PPO", 3)

    def broken():
        raise KeyError("boom")

    monkeypatch.setattr(handle.producer, "catalog_metrics", broken)
    for _ in range(3):
        handle.pull_reader.collect()
        assert handle.pull_reader.latest is not None
        assert MARKER_NAME not in _names(handle.pull_reader)  # the internal marker is never passed on
    warned = [r for r in caplog.records if "could not add its metrics" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_info is not None
    monkeypatch.undo()
    handle.pull_reader.collect()
    assert "rl_training_environment_steps_total" in _names(handle.pull_reader)
    handle.shutdown(timeout=1)


def _points(reader, name):
    for rm in reader.latest.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == name:
                    return m.data
    raise AssertionError(f"{name} not collected")


def test_counter_and_gauge_points_are_the_sdks_types_with_stable_start_times():
    """Counters are monotonic cumulative sums whose points start when their series was created, and keep that
    start over collections; gauges are gauge points; values and attributes are the store's."""
    from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Sum

    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    before = time.time_ns()
    otel_rl.record_episode("PPO", "a", 1.0, 10)
    created = time.time_ns()
    time.sleep(0.01)
    otel_rl.record_episode("PPO", "b", 1.0, 10)
    otel_rl.record_training_iteration("PPO", 7, "run-1")
    handle.pull_reader.collect()
    episodes = _points(handle.pull_reader, "rl_training_episodes_total")
    assert isinstance(episodes, Sum) and episodes.is_monotonic
    assert episodes.aggregation_temporality is AggregationTemporality.CUMULATIVE
    by_agent = {p.attributes["agent_id"]: p for p in episodes.data_points}
    assert before <= by_agent["a"].start_time_unix_nano <= created < by_agent["b"].start_time_unix_nano
    assert by_agent["a"].time_unix_nano >= by_agent["b"].start_time_unix_nano
    assert by_agent["a"].value == 1.0 and by_agent["a"].attributes == {"algorithm": "PPO", "agent_id": "a"}
    iteration = _points(handle.pull_reader, "rl_training_current_iteration")
    assert isinstance(iteration, Gauge)
    assert [(p.attributes, p.value) for p in iteration.data_points] == [
        ({"algorithm": "PPO", "run_id": "run-1"}, 7.0)]
    otel_rl.record_episode("PPO", "a", 1.0, 10)
    handle.pull_reader.collect()
    again = {p.attributes["agent_id"]: p
             for p in _points(handle.pull_reader, "rl_training_episodes_total").data_points}
    assert again["a"].start_time_unix_nano == by_agent["a"].start_time_unix_nano and again["a"].value == 2.0
    # A removed series starts afresh when it comes back.
    episodes_state = store.REGISTRY.counter("rl_training_episodes_total")
    episodes_state.remove(("PPO", "a"))
    assert ("PPO", "a") not in episodes_state.created_ns
    otel_rl.record_episode("PPO", "a", 1.0, 10)
    handle.pull_reader.collect()
    back = {p.attributes["agent_id"]: p
            for p in _points(handle.pull_reader, "rl_training_episodes_total").data_points}
    assert back["a"].value == 1.0 and back["a"].start_time_unix_nano > again["a"].time_unix_nano
    handle.shutdown(timeout=1)


def test_a_disabled_producer_builds_no_points():
    """The producer is told at construction whether the SDK is disabled (OTEL_SDK_DISABLED, read by telemetry)."""
    from otel_rl._internal.config import Settings
    from otel_rl._internal.producer import StoreProducer
    from otel_rl._internal.telemetry import _resource

    otel_rl.record_environment_steps("PPO", 3)
    resource = _resource(Settings())
    assert StoreProducer(store.REGISTRY, resource, "test", disabled=True).catalog_metrics() == []
    assert "rl_training_environment_steps_total" in [
        m.name for m in StoreProducer(store.REGISTRY, resource, "test").catalog_metrics()]
