"""Telemetry lifecycle: bounded shutdown, the final OTLP export of short runs, the /metrics and /health endpoint."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

import otel_rl

from procs import free_port, http_get, wait_until


def closed_port() -> int:
    """A loopback port that nothing listens on."""
    return free_port()


class OtlpReceiver:
    """A tiny OTLP/HTTP metrics receiver on 127.0.0.1 that keeps every decoded export request."""

    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                payload = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def last_metrics(self) -> dict:
        """name -> proto Metric from the last request."""
        assert self.requests, "the receiver got no export"
        out = {}
        for rm in self.requests[-1].resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out


def _attrs(point) -> dict:
    return {kv.key: kv.value.string_value for kv in point.attributes}


# -- bounded shutdown --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_shutdown_with_an_unreachable_collector_returns_in_time(protocol):
    """Shutdown with an unreachable OTLP endpoint returns within its timeout, without raising."""
    handle = otel_rl.init_telemetry({
        "exporters": ["otlp"],
        "otlp": {"endpoint": f"http://127.0.0.1:{closed_port()}", "protocol": protocol, "timeout": 10,
                 "export_interval": 60},
    })
    otel_rl.record_episode("PPO", "a", -600.0, 10)
    started = time.monotonic()
    ok = handle.shutdown(timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert ok in (True, False)
    assert otel_rl.current() is None
    assert handle.shutdown(timeout=2) is ok  # a second shutdown reports what the first one did


def test_force_flush_with_an_unreachable_collector_is_bounded():
    """force_flush() against an unreachable collector returns within its timeout."""
    handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
        "endpoint": f"http://127.0.0.1:{closed_port()}", "protocol": "http/protobuf", "export_interval": 60}})
    otel_rl.record_environment_steps("PPO", 1)
    started = time.monotonic()
    assert handle.force_flush(timeout=1) in (True, False)
    assert time.monotonic() - started < 2.0
    handle.shutdown(timeout=1)


def test_force_flush_collects_once():
    """force_flush() collects the state once, for the push reader: the pull reader has nothing to flush."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
            "endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 3600}})
        otel_rl.record_episode("PPO", "a", 1.0, 10)
        collections = []
        original = handle.producer.catalog_metrics
        handle.producer.catalog_metrics = lambda: collections.append(1) or original()
        assert handle.force_flush(timeout=5) is True
        assert len(collections) == 1
        assert len(receiver.requests) == 1
        assert "rl_training_episode_reward" in receiver.last_metrics()
        handle.shutdown(timeout=2)


# -- a run shorter than one export interval ----------------------------------------------------------------------------


def test_short_run_lands_its_final_values_over_otlp_http():
    """A run shorter than the export interval exports its final cumulative values at shutdown, histograms included."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({
            "exporters": ["otlp"],
            "otlp": {"endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 60},
        })
        otel_rl.record_training_start("PPO", run_id="short")
        otel_rl.record_environment_steps("PPO", 100)
        otel_rl.record_environment_steps("PPO", 50)
        otel_rl.record_episode("PPO", "agent_0", -600.0, 120)
        otel_rl.record_episode("PPO", "agent_0", 40.0, 20)
        otel_rl.record_loss_metrics("PPO", policy_loss=-0.05)
        otel_rl.record_training_complete("PPO", 12.0, run_id="short")
        assert receiver.requests == []  # nothing exported yet: the interval is a minute
        assert handle.shutdown(timeout=5) is True
    assert receiver.paths and set(receiver.paths) == {"/v1/metrics"}
    metrics = receiver.last_metrics()

    steps = metrics["rl_training_environment_steps_total"].sum
    assert steps.is_monotonic and steps.aggregation_temporality == 2
    assert [(_attrs(p), p.as_double) for p in steps.data_points] == [({"algorithm": "PPO"}, 150.0)]

    active = metrics["rl_training_active"].gauge
    assert [(_attrs(p), p.as_double) for p in active.data_points] == [({"algorithm": "PPO"}, 0.0)]

    reward = metrics["rl_training_episode_reward"].histogram
    assert reward.aggregation_temporality == 2
    (point,) = reward.data_points
    assert _attrs(point) == {"algorithm": "PPO", "agent_id": "agent_0"}
    assert list(point.explicit_bounds) == [-1000.0, -500.0, -100.0, 0.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0]
    assert list(point.bucket_counts) == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert point.count == 2 and point.sum == -560.0
    assert point.min == -600.0 and point.max == 40.0

    (loss,) = metrics["rl_training_policy_loss"].histogram.data_points
    assert loss.sum == -0.05 and loss.bucket_counts[0] == 1
    assert metrics["rl_training_duration_seconds"].histogram.data_points[0].sum == 12.0
    assert metrics["rl_training_episode_reward"].description == "Episode reward distribution"

    for metric in metrics.values():
        data = getattr(metric, metric.WhichOneof("data"))
        for p in data.data_points:
            assert not any("otel_scope" in k or "otel.scope" in k for k in _attrs(p)), (metric.name, _attrs(p))


def test_otlp_resource_carries_the_service_name():
    """Exported resource attributes include service.name and the configured resource attributes."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({
            "service_name": "trainer-x", "exporters": ["otlp"],
            "resource_attributes": {"deployment.environment": "test"},
            "otlp": {"endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 60},
        })
        otel_rl.record_environment_steps("PPO", 1)
        handle.shutdown(timeout=5)
    resource = {kv.key: kv.value.string_value for kv in receiver.requests[-1].resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "trainer-x"
    assert resource["deployment.environment"] == "test"


def test_histogram_only_run_is_exported():
    """A run that only observed histograms (data load times) still exports them at shutdown."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
            "endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 60}})
        otel_rl.record_data_load_time(0.7)
        handle.shutdown(timeout=5)
    metrics = receiver.last_metrics()
    (point,) = metrics["rl_training_data_load_time_seconds"].histogram.data_points
    assert point.count == 1 and point.sum == 0.7


# -- the endpoint ------------------------------------------------------------------------------------------------------


def _get(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    return urllib.request.urlopen(request, timeout=5)


def test_health_returns_healthy_json(telemetry):
    """GET /health returns JSON with status healthy."""
    with _get(f"http://127.0.0.1:{telemetry.prometheus_port}/health") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        body = json.loads(response.read())
    assert body["status"] == "healthy"


def test_metrics_text_format(telemetry):
    """GET /metrics returns the Prometheus text format with the recorded series."""
    otel_rl.record_environment_steps("PPO", 5)
    with _get(f"http://127.0.0.1:{telemetry.prometheus_port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    assert 'rl_training_environment_steps_total{algorithm="PPO"} 5.0' in text
    assert "# EOF" not in text
    assert "target_info" not in text and "otel_scope" not in text


def test_metrics_openmetrics_when_asked(telemetry):
    """GET /metrics with Accept: application/openmetrics-text returns OpenMetrics ending in '# EOF'."""
    otel_rl.record_episode("PPO", "a", -600.0, 10)
    with _get(f"http://127.0.0.1:{telemetry.prometheus_port}/metrics",
              {"Accept": "application/openmetrics-text; version=1.0.0"}) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    assert text.endswith("# EOF\n")
    assert 'rl_training_episodes_total{agent_id="a",algorithm="PPO"} 1.0' in text
    assert 'rl_training_episode_reward_bucket{agent_id="a",algorithm="PPO",le="-500.0"} 1.0' in text


def test_metrics_gzip_when_asked(telemetry):
    """GET /metrics with Accept-Encoding: gzip returns a gzip body of the same exposition."""
    otel_rl.record_environment_steps("PPO", 5)
    with _get(f"http://127.0.0.1:{telemetry.prometheus_port}/metrics", {"Accept-Encoding": "gzip"}) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(response.read()).decode()
    assert 'rl_training_environment_steps_total{algorithm="PPO"} 5.0' in text
    with _get(f"http://127.0.0.1:{telemetry.prometheus_port}/metrics") as response:
        assert response.headers.get("Content-Encoding") is None


@pytest.mark.parametrize("path", ["/", "/metric", "/metrics/x", "/healthz"])
def test_other_paths_are_404(telemetry, path):
    """Any path other than /metrics and /health answers 404."""
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(f"http://127.0.0.1:{telemetry.prometheus_port}{path}")
    assert info.value.code == 404


def test_metrics_query_string_is_ignored(telemetry):
    """/metrics?name[]=x is served like /metrics."""
    with _get(f"http://127.0.0.1:{telemetry.prometheus_port}/metrics?name[]=rl_training_active") as response:
        assert response.status == 200


def test_metrics_text_without_a_server_matches_the_endpoint(telemetry):
    """Telemetry.metrics_text() renders what /metrics serves."""
    otel_rl.record_training_error("data_error")
    with _get(f"http://127.0.0.1:{telemetry.prometheus_port}/metrics") as response:
        served = response.read()
    assert served == telemetry.metrics_text()


def test_shutdown_stops_the_endpoint(telemetry):
    """After shutdown the port no longer answers and current() is None."""
    port = telemetry.prometheus_port
    assert telemetry.shutdown(timeout=2) is True
    assert otel_rl.current() is None
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/health")


def _until_lingering(caplog) -> None:
    """Wait until shutdown() waits for its last scrape: it logs so (at INFO) once it has counted the scrapes so far,
    so a scrape after this is the one it waits for."""
    wait_until(lambda: any("for a last scrape" in r.getMessage() for r in caplog.records), 10, interval=0.01,
               what="shutdown() to wait for a last scrape")


def test_linger_waits_for_one_more_scrape(caplog):
    """With prometheus.linger, shutdown waits for the next scrape and returns right after it, not at the limit."""
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"],
                                     "prometheus": {"host": "127.0.0.1", "port": 0, "linger": 10}})
    otel_rl.record_environment_steps("PPO", 42)
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    scraped: list[str] = []

    def scrape_later():
        _until_lingering(caplog)
        time.sleep(0.5)  # the scrape comes 0.5 s into the linger: shutdown must wait at least that long for it
        with _get(url) as response:
            scraped.append(response.read().decode())

    scraper = threading.Thread(target=scrape_later)
    started = time.monotonic()
    scraper.start()
    with caplog.at_level("INFO", logger="otel_rl"):
        assert handle.shutdown(timeout=15) is True
    elapsed = time.monotonic() - started
    scraper.join(5)
    assert 0.5 <= elapsed < 4.0
    assert scraped and 'rl_training_environment_steps_total{algorithm="PPO"} 42.0' in scraped[0]


def test_linger_gives_up_at_its_limit():
    """With no scrape coming, shutdown waits about the linger time, then returns False."""
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"],
                                     "prometheus": {"host": "127.0.0.1", "port": 0, "linger": 0.5}})
    started = time.monotonic()
    assert handle.shutdown(timeout=5) is False
    assert 0.5 <= time.monotonic() - started < 3.0


def test_health_reports_shutting_down_once_shutdown_began(caplog):
    """The health document says shutting_down while a linger shutdown waits for its last scrape."""
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"],
                                     "prometheus": {"host": "127.0.0.1", "port": 0, "linger": 5}})
    url = f"http://127.0.0.1:{handle.prometheus_port}"
    statuses = []

    def probe():
        _until_lingering(caplog)
        with _get(url + "/health") as response:
            statuses.append(json.loads(response.read())["status"])
        with _get(url + "/metrics"):
            pass

    thread = threading.Thread(target=probe)
    thread.start()
    with caplog.at_level("INFO", logger="otel_rl"):
        handle.shutdown(timeout=10)
    thread.join(5)
    assert statuses == ["shutting_down"]


def test_scrape_after_reset_shows_no_stale_values(telemetry):
    """After testing.reset() a scrape no longer shows values recorded before the reset."""
    from otel_rl import testing

    otel_rl.record_environment_steps("PPO", 3)
    assert b'rl_training_environment_steps_total{algorithm="PPO"} 3.0' in telemetry.metrics_text()
    testing.reset()
    assert b"rl_training_environment_steps_total{" not in telemetry.metrics_text()


# -- settings and resource ---------------------------------------------------------------------------------------------


def test_init_telemetry_accepts_a_settings_instance():
    """A public Settings works as the config, is validated like a mapping, and reading the environment is skipped."""
    import dataclasses

    settings = otel_rl.Settings(service_name="from-settings", exporters=("prometheus",),
                                prometheus=dataclasses.replace(otel_rl.Settings().prometheus, host="127.0.0.1", port=0))
    handle = otel_rl.init_telemetry(settings)
    assert handle.settings == settings and handle.prometheus_port
    assert otel_rl.init_telemetry(settings) is handle
    handle.shutdown()
    with pytest.raises(otel_rl.ConfigError, match="cardinality_limit.*-3"):
        otel_rl.init_telemetry(otel_rl.Settings(exporters=("none",), cardinality_limit=-3))


def test_resource_comes_from_the_sdk_with_the_service_on_top(monkeypatch):
    """Resource.create: the SDK names itself in telemetry.sdk.*, otel-rl adds service.name and service.instance.id."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=rl,service.name=from-env-attrs")
    handle = otel_rl.init_telemetry({"service_name": "trainer-y", "exporters": ["none"]})
    attributes = dict(handle.resource.attributes)
    assert attributes["telemetry.sdk.name"] == "opentelemetry"
    assert attributes["telemetry.sdk.language"] == "python"
    assert attributes["service.name"] == "trainer-y"
    assert attributes["team"] == "rl"
    assert attributes["service.instance.id"].endswith(f"-{os.getpid()}")
# -- lifecycle edge cases ---------------------------------------------------------------------------------------------


def test_second_shutdown_after_a_failed_first_returns_false():
    """A second shutdown() returns the first one's failure: having nothing left to do is not a success."""
    handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
        "endpoint": f"http://127.0.0.1:{closed_port()}", "protocol": "http/protobuf", "timeout": 5,
        "export_interval": 60}})
    otel_rl.record_episode("PPO", "a", 1.0, 10)
    assert handle.shutdown(timeout=0.5) is False
    assert handle.shutdown(timeout=0.5) is False
    assert handle.shutdown() is False


def test_pull_path_shutdown_does_not_overshoot_a_small_timeout():
    """Stopping the endpoint does not wait out the HTTP server's poll: shutdown(0.05) returns in well under 0.5 s."""
    for _ in range(3):
        handle = otel_rl.init_telemetry({"exporters": ["prometheus"],
                                         "prometheus": {"host": "127.0.0.1", "port": 0}})
        # Once the endpoint has answered, its serve loop is back in its poll wait, which shutdown must not wait out.
        health = f"http://127.0.0.1:{handle.prometheus_port}/health"
        wait_until(lambda url=health: http_get(url, 2), 10, interval=0.01, what="the endpoint to answer")
        started = time.monotonic()
        assert handle.shutdown(timeout=0.05) is True
        assert time.monotonic() - started < 0.35


def test_otel_sdk_disabled_exports_nothing(monkeypatch):
    """OTEL_SDK_DISABLED=true: no endpoint, no OTLP export, and no histograms in the exposition either."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({
            "exporters": ["prometheus", "otlp"], "prometheus": {"host": "127.0.0.1", "port": 0},
            "otlp": {"endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 60}})
        otel_rl.record_episode("PPO", "a", -5.0, 10)
        otel_rl.record_loss_metrics("PPO", 0.5)
        otel_rl.record_environment_steps("PPO", 10)
        assert handle.prometheus_port is None
        assert handle.health()["exporters"] == []
        text = handle.metrics_text().decode()
        assert not [s for f in text_string_to_metric_families(text) for s in f.samples]
        assert handle.shutdown(timeout=2) is True
    assert receiver.requests == []


# -- the final export at shutdown is otel-rl's own ---------------------------------------------------------------------


def _slow_reading(handle: otel_rl.Telemetry, seconds: float) -> None:
    """A user's instrument on the telemetry's MeterProvider whose reading takes ``seconds`` (a slow device query)."""
    from opentelemetry.metrics import Observation

    def read(options):
        time.sleep(seconds)  # the slow reading the tests are about
        return [Observation(1.0)]

    meter = handle.meter_provider.get_meter("test.slow")
    meter.create_observable_gauge("test_slow_reading", [read])
    # The SDK checks its collection deadline after *starting* each instrument's callbacks (a lazy generator), so the
    # time of one instrument's reading counts only when another instrument follows it.
    meter.create_observable_gauge("test_fast_reading", [lambda options: [Observation(2.0)]])


def _steps_exported(receiver: OtlpReceiver) -> list[float]:
    """The environment-steps total of every export the receiver got, in order."""
    values = []
    for request in list(receiver.requests):
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "rl_training_environment_steps_total":
                        values += [p.as_double for p in metric.sum.data_points]
    return values


def test_final_values_go_out_when_the_sdks_last_collection_overruns_the_interval():
    """The SDK's own last collection at shutdown is bounded by the export *interval* (0.2 s here) and only logs when
    it times out, so a reading that takes 0.4 s would make it drop the final values while shutdown() returns True.
    otel-rl makes the final export itself, within shutdown_timeout: the final total arrives."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({"exporters": ["otlp"], "shutdown_timeout": 5, "otlp": {
            "endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 0.2, "timeout": 10}})
        _slow_reading(handle, 0.4)
        otel_rl.record_environment_steps("PPO", 100)
        wait_until(lambda: 100.0 in _steps_exported(receiver), 10, interval=0.05, what="a periodic export")
        otel_rl.record_environment_steps("PPO", 50)
        started = time.monotonic()
        ok = handle.shutdown()
        elapsed = time.monotonic() - started
    assert 150.0 in _steps_exported(receiver), f"the final total never arrived: {_steps_exported(receiver)}"
    assert ok is True
    assert elapsed < 5.0 + 1.0


def test_shutdown_is_false_and_warns_when_the_final_values_cannot_be_exported_in_time(caplog):
    """Earlier exports succeeded, but reading the final values takes longer than shutdown_timeout: shutdown returns
    False in time and says so: an earlier export's success says nothing about the final values."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({"exporters": ["otlp"], "shutdown_timeout": 0.5, "otlp": {
            "endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 0.2, "timeout": 10}})
        _slow_reading(handle, 1.5)
        otel_rl.record_environment_steps("PPO", 100)
        wait_until(lambda: 100.0 in _steps_exported(receiver), 10, interval=0.05, what="a periodic export")
        otel_rl.record_environment_steps("PPO", 50)
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="otel_rl"):
            ok = handle.shutdown()
        elapsed = time.monotonic() - started
    assert 150.0 not in _steps_exported(receiver)
    assert ok is False
    assert elapsed < 0.5 + 1.0
    assert any("final export did not succeed" in r.getMessage() for r in caplog.records), caplog.text


def test_force_flush_is_judged_by_its_own_export():
    """force_flush() is True only when values collected after the call went out: an earlier success does not count."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
            "endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 60, "timeout": 1}})
        otel_rl.record_environment_steps("PPO", 100)
        assert handle.force_flush(timeout=5) is True
        assert _steps_exported(receiver) == [100.0]
    # The receiver is gone: the next flush's own export fails although the previous one succeeded.
    otel_rl.record_environment_steps("PPO", 50)
    assert handle.force_flush(timeout=5) is False
    assert handle.shutdown(timeout=2) is False


def test_otlp_export_keeps_training_and_resource_metrics_together():
    """With resource_metrics on, the process metrics (another scope, same resource) and the training metrics go out
    in one resource entry: of two entries for one resource, the OTLP encoder keeps only the second."""
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({"exporters": ["otlp"], "resource_metrics": True, "otlp": {
            "endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 60}})
        otel_rl.record_environment_steps("PPO", 7)
        assert handle.shutdown(timeout=5) is True
    (request,) = receiver.requests
    (resource,) = request.resource_metrics
    scopes = {sm.scope.name: [m.name for m in sm.metrics] for sm in resource.scope_metrics}
    assert "rl_training_environment_steps_total" in scopes.get("otel_rl", []), scopes
    assert any(name.startswith("process.") for name in scopes.get("otel_rl.resources", [])), scopes
    assert _steps_exported(receiver) == [7.0]


def test_bucket_overrides_apply_to_both_paths_and_revert_with_the_next_init(caplog):
    """The buckets setting gives a histogram its bounds on /metrics and in the points the OTLP path exports; an
    init without it brings the catalog's back; observations made before the override are discarded, with a
    warning that says how many."""
    from prometheus_client.parser import text_string_to_metric_families

    def les(handle):
        text = handle.metrics_text().decode()
        return [s.labels["le"] for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "rl_training_value_loss_bucket"]

    otel_rl.record_loss_metrics("PPO", value_loss=3.0)  # before init: cannot be re-bucketed
    config = {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0},
              "buckets": {"rl_training_value_loss": [1, 10, 100, 1000]}}
    handle = otel_rl.init_telemetry(config)
    assert "rl_training_value_loss has new bucket bounds" in caplog.text and "the 1 observations" in caplog.text
    for value in (0.5, 42.0, 420.0, 4200.0):
        otel_rl.record_loss_metrics("PPO", value_loss=value)
    assert les(handle) == ["1.0", "10.0", "100.0", "1000.0", "+Inf"]
    [point] = next(m for m in handle.producer.catalog_metrics() if m.name == "rl_training_value_loss").data.data_points
    assert list(point.explicit_bounds) == [1.0, 10.0, 100.0, 1000.0]
    assert list(point.bucket_counts) == [1, 0, 1, 1, 1] and point.count == 4
    handle.shutdown(timeout=2)
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
    otel_rl.record_loss_metrics("PPO", value_loss=0.2)
    assert les(handle) == ["0.001", "0.01", "0.1", "0.5", "1.0", "2.0", "5.0", "10.0", "+Inf"]
