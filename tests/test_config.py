"""Configuration: every setting from a mapping, a YAML file and the environment; precedence; errors; init rules."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
import yaml

import otel_rl
from otel_rl import ConfigError, Settings, load_settings
from otel_rl._internal.config import OtlpSettings, PrometheusSettings


@pytest.fixture
def pem(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return str(path)


def full_mapping(pem: str) -> dict:
    return {
        "service_name": "trainer",
        "exporters": ["prometheus", "otlp", "console"],
        "resource_attributes": {"deployment.environment": "test", "team": "rl"},
        "cardinality_limit": 50,
        "shutdown_timeout": 3.5,
        "prometheus": {"host": "127.0.0.1", "port": 9100, "strict": True, "linger": 2.5},
        "otlp": {
            "endpoint": "http://collector:4318/v1/metrics",
            "protocol": "http/protobuf",
            "headers": {"authorization": "Bearer x"},
            "insecure": True,
            "timeout": 4.0,
            "export_interval": 15,
            "compression": "gzip",
            "certificate": pem,
        },
    }


def expected_settings(pem: str) -> Settings:
    return Settings(
        service_name="trainer",
        exporters=("prometheus", "otlp", "console"),
        prometheus=PrometheusSettings(host="127.0.0.1", port=9100, strict=True, linger=2.5),
        otlp=OtlpSettings(endpoint="http://collector:4318/v1/metrics", protocol="http/protobuf",
                          headers=(("authorization", "Bearer x"),), insecure=True, timeout=4.0,
                          export_interval=15.0, compression="gzip", certificate=pem),
        resource_attributes=(("deployment.environment", "test"), ("team", "rl")),
        cardinality_limit=50,
        shutdown_timeout=3.5,
    )


def full_environ(pem: str) -> dict[str, str]:
    return {
        "OTEL_SERVICE_NAME": "trainer",
        "OTEL_RL_EXPORTERS": "prometheus,otlp,console",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=rl",
        "OTEL_RL_CARDINALITY_LIMIT": "50",
        "OTEL_RL_SHUTDOWN_TIMEOUT": "3.5",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": "9100",
        "OTEL_RL_PROMETHEUS_STRICT": "true",
        "OTEL_RL_PROMETHEUS_LINGER": "2.5",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318/v1/metrics",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "authorization=Bearer%20x",
        "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "4000",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE": pem,
    }


# -- sources ----------------------------------------------------------------------------------------------------------


def test_defaults_without_config_or_environment():
    """With no config and an empty environment every setting has its documented default."""
    settings = load_settings(None, environ={})
    assert settings == Settings()
    assert settings.exporters == ("prometheus",)
    assert settings.prometheus.port == 8011
    assert settings.prometheus.host == "0.0.0.0"
    assert settings.prometheus.strict is False
    assert settings.otlp.protocol == "grpc"
    assert settings.otlp.export_interval == 10.0
    assert settings.otlp.resolved_endpoint() == "http://localhost:4317"


def test_every_setting_from_a_mapping(pem):
    """Every setting in the table is read from a nested mapping."""
    assert load_settings(full_mapping(pem), environ={}) == expected_settings(pem)


def test_every_setting_from_a_yaml_file(tmp_path, pem):
    """Every setting is read from a YAML file given by path (str or Path)."""
    path = tmp_path / "otel-rl.yaml"
    path.write_text(yaml.safe_dump(full_mapping(pem)))
    assert load_settings(path, environ={}) == expected_settings(pem)
    assert load_settings(str(path), environ={}) == expected_settings(pem)


def test_every_setting_from_the_environment(pem):
    """Every setting is read from its environment variable (OTEL_* durations in milliseconds)."""
    assert load_settings(None, environ=full_environ(pem)) == expected_settings(pem)


def test_original_module_layout_yaml_reads_the_monitoring_section(tmp_path):
    """A production_config.yaml laid out for the original ``prometheus_metrics`` module, with
    ``monitoring: {prometheus_port: 8011}`` beside the application's sections, works."""
    path = tmp_path / "production_config.yaml"
    path.write_text(yaml.safe_dump({
        "training": {"algorithm": "PPO", "max_iterations": 100},
        "data": {"symbols": ["AAPL", "MSFT"], "start": "2020-01-01"},
        "monitoring": {"prometheus_port": 8123},
        "experiment_name": "wealtharena",
    }))
    settings = load_settings(path, environ={})
    assert settings.prometheus.port == 8123
    assert settings.exporters == ("prometheus",)


def test_original_module_layout_monitoring_section_in_a_mapping():
    """The ``monitoring:`` section of an application config mapping is what is read."""
    settings = load_settings({"training": {"algorithm": "PPO"}, "monitoring": {"prometheus_port": 9200}}, environ={})
    assert settings.prometheus.port == 9200


def test_empty_yaml_file_gives_defaults(tmp_path):
    """An empty YAML file means no explicit settings."""
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_settings(path, environ={}) == Settings()


def test_exporters_from_otel_metrics_exporter_and_lists():
    """Exporters come from a list, a comma string, OTEL_METRICS_EXPORTER; duplicates collapse, 'none' alone is none."""
    assert load_settings({"exporters": "otlp, prometheus"}, environ={}).exporters == ("otlp", "prometheus")
    assert load_settings({"exporters": ["OTLP", "otlp"]}, environ={}).exporters == ("otlp",)
    assert load_settings(None, environ={"OTEL_METRICS_EXPORTER": "otlp"}).exporters == ("otlp",)
    assert load_settings({"exporters": ["none"]}, environ={}).exporters == ()
    assert load_settings(None, environ={"OTEL_RL_EXPORTERS": "console", "OTEL_METRICS_EXPORTER": "otlp"}
                         ).exporters == ("console",)


# -- precedence -------------------------------------------------------------------------------------------------------


def test_explicit_config_beats_environment_beats_default():
    """An explicit value wins over the environment variable, which wins over the default."""
    environ = {"OTEL_EXPORTER_PROMETHEUS_PORT": "9300", "OTEL_SERVICE_NAME": "from-env"}
    settings = load_settings({"prometheus": {"port": 9400}}, environ=environ)
    assert settings.prometheus.port == 9400
    assert settings.service_name == "from-env"
    assert settings.shutdown_timeout == Settings().shutdown_timeout
    assert load_settings(None, environ=environ).prometheus.port == 9300
    assert load_settings(None, environ={}).prometheus.port == 8011


def test_original_module_port_key_beats_environment():
    """The original ``prometheus_metrics`` module's ``monitoring.prometheus_port`` is explicit config and wins over
    OTEL_EXPORTER_PROMETHEUS_PORT."""
    settings = load_settings({"monitoring": {"prometheus_port": 8999}},
                             environ={"OTEL_EXPORTER_PROMETHEUS_PORT": "9300"})
    assert settings.prometheus.port == 8999


def test_signal_specific_environment_variable_beats_generic():
    """OTEL_EXPORTER_OTLP_METRICS_* wins over OTEL_EXPORTER_OTLP_*."""
    settings = load_settings(None, environ={"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
                                            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "1000",
                                            "OTEL_EXPORTER_OTLP_TIMEOUT": "9000"})
    assert settings.otlp.protocol == "grpc"
    assert settings.otlp.timeout == 1.0


def test_blank_environment_variable_is_ignored():
    """An empty or blank environment variable is treated as unset."""
    settings = load_settings(None, environ={"OTEL_EXPORTER_PROMETHEUS_PORT": "  ", "OTEL_SERVICE_NAME": ""})
    assert settings.prometheus.port == 8011
    assert settings.service_name == "otel-rl"


def test_explicit_none_falls_back_to_default():
    """An explicit None (an empty YAML value) leaves the setting at its default."""
    assert load_settings({"service_name": None, "prometheus": None}, environ={}) == Settings()


def test_otel_durations_are_milliseconds():
    """OTEL_METRIC_EXPORT_INTERVAL=5000 means 5 s and OTEL_EXPORTER_OTLP_TIMEOUT=2500 means 2.5 s."""
    settings = load_settings(None, environ={"OTEL_METRIC_EXPORT_INTERVAL": "5000",
                                            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"})
    assert settings.otlp.export_interval == 5.0
    assert settings.otlp.timeout == 2.5


def test_config_durations_are_seconds():
    """In the config mapping durations are seconds, not milliseconds."""
    assert load_settings({"otlp": {"export_interval": 5}}, environ={}).otlp.export_interval == 5.0


def test_generic_otlp_endpoint_is_a_base_url_for_http():
    """OTEL_EXPORTER_OTLP_ENDPOINT is a base URL: http/protobuf appends /v1/metrics, grpc keeps it."""
    http = load_settings(None, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
                                        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert http.otlp.endpoint == "http://collector:4318/v1/metrics"
    assert http.otlp.resolved_endpoint() == "http://collector:4318/v1/metrics"
    grpc = load_settings(None, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert grpc.otlp.resolved_endpoint() == "http://collector:4317"


def test_generic_otlp_endpoint_with_a_path_still_gets_the_signal_path():
    """A base URL with a path prefix gets /v1/metrics appended for http/protobuf, as the OTLP spec says."""
    settings = load_settings(None, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "https://gw.example/otlp",
                                            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert settings.otlp.endpoint == "https://gw.example/otlp/v1/metrics"


def test_signal_specific_endpoint_is_used_as_is():
    """OTEL_EXPORTER_OTLP_METRICS_ENDPOINT with a path is used unchanged."""
    settings = load_settings(None, environ={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/custom",
                                            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert settings.otlp.resolved_endpoint() == "http://c:4318/custom"


def test_explicit_http_endpoint_without_path_resolves_to_v1_metrics():
    """An explicit http/protobuf endpoint with no path resolves to <endpoint>/v1/metrics; the default is :4318."""
    settings = load_settings({"otlp": {"protocol": "http/protobuf", "endpoint": "http://c:4318"}}, environ={})
    assert settings.otlp.resolved_endpoint() == "http://c:4318/v1/metrics"
    default = load_settings({"otlp": {"protocol": "http/protobuf"}}, environ={})
    assert default.otlp.resolved_endpoint() == "http://localhost:4318/v1/metrics"


# -- errors -----------------------------------------------------------------------------------------------------------


def _error(config, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ=environ or {})
    return str(info.value)


def test_config_error_is_a_value_error():
    """ConfigError subclasses ValueError, so existing ``except ValueError`` blocks catch it."""
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        load_settings({"nope": 1}, environ={})


def test_unknown_key():
    """An unknown key names the key, its value and the allowed keys."""
    message = _error({"prometheus_prot": 8011})
    assert "prometheus_prot" in message and "8011" in message
    assert "prometheus.port" in message and "service_name" in message


def test_unknown_nested_key():
    """An unknown key inside a section is reported with its dotted name."""
    message = _error({"otlp": {"endpiont": "http://x"}})
    # The value of an unknown key is not shown (it may be a misspelled secret); its name and the allowed keys are.
    assert "otlp.endpiont" in message and "http://x" not in message and "otlp.endpoint" in message


def test_section_that_is_not_a_mapping():
    """A section given as a scalar names the section, the value and the keys allowed in it."""
    message = _error({"prometheus": 8011})
    assert "'prometheus'" in message and "8011" in message and "prometheus.port" in message


def test_wrong_type():
    """A value of the wrong type names the key, the value and what is allowed."""
    message = _error({"cardinality_limit": "many"})
    assert "cardinality_limit" in message and "'many'" in message and "positive integer" in message
    message = _error({"service_name": 42})
    assert "service_name" in message and "42" in message and "non-empty string" in message


def test_unknown_exporter():
    """An unknown exporter names the key, the value and the allowed exporters."""
    message = _error({"exporters": ["prometheus", "jaeger"]})
    assert "exporters" in message and "jaeger" in message
    for name in ("prometheus", "otlp", "console", "none"):
        assert name in message.split("allowed")[1]


def test_unknown_exporter_from_environment():
    """An unknown exporter in the environment names the variable, the value and the allowed exporters."""
    message = _error(None, {"OTEL_METRICS_EXPORTER": "zipkin"})
    assert "OTEL_METRICS_EXPORTER" in message and "zipkin" in message and "otlp" in message


@pytest.mark.parametrize("port", [70000, -1, 65536, "http", 80.5, True])
def test_port_out_of_range_or_not_an_integer(port):
    """A port outside 0..65535 or not an integer names the key, the value and the allowed range."""
    message = _error({"prometheus": {"port": port}})
    assert "prometheus.port" in message and repr(port) in message and "0 to 65535" in message


def test_port_from_environment_out_of_range():
    """An out-of-range port in the environment names the variable, the value and the range."""
    message = _error(None, {"OTEL_EXPORTER_PROMETHEUS_PORT": "99999"})
    assert "OTEL_EXPORTER_PROMETHEUS_PORT" in message and "99999" in message and "0 to 65535" in message


@pytest.mark.parametrize("value", ["maybe", 2, "enabled"])
def test_bad_bool(value):
    """A boolean that is neither true nor false names the key, the value and 'true or false'."""
    message = _error({"prometheus": {"strict": value}})
    assert "prometheus.strict" in message and repr(value) in message and "true or false" in message


@pytest.mark.parametrize("text,expected", [("TRUE", True), ("1", True), ("yes", True), ("off", False), ("0", False)])
def test_bool_texts_from_environment(text, expected):
    """Boolean environment variables accept true/false, 1/0, yes/no, on/off in any case."""
    assert load_settings(None, environ={"OTEL_RL_PROMETHEUS_STRICT": text}).prometheus.strict is expected


def test_negative_interval():
    """A negative export interval names the key, the value and the allowed range."""
    message = _error({"otlp": {"export_interval": -1}})
    assert "otlp.export_interval" in message and "-1" in message and "from 0.1 to 86400" in message


def test_zero_interval_and_zero_linger():
    """An export interval of 0 is refused while a linger of 0 (off) is allowed."""
    assert "otlp.export_interval" in _error({"otlp": {"export_interval": 0}})
    assert load_settings({"prometheus": {"linger": 0}}, environ={}).prometheus.linger == 0.0
    message = _error({"prometheus": {"linger": -0.5}})
    assert "prometheus.linger" in message and "-0.5" in message and "from 0 to 3600 (0: off)" in message


def test_bad_millisecond_interval_from_environment():
    """A non-numeric OTEL_METRIC_EXPORT_INTERVAL names the variable, the value and 'milliseconds'."""
    message = _error(None, {"OTEL_METRIC_EXPORT_INTERVAL": "soon"})
    assert "OTEL_METRIC_EXPORT_INTERVAL" in message and "soon" in message and "milliseconds" in message
    message = _error(None, {"OTEL_METRIC_EXPORT_INTERVAL": "-5000"})
    assert "-5000" in message and "milliseconds from 100 to 86400000" in message


def test_none_with_other_exporters():
    """'none' combined with another exporter names the key, the value and that 'none' must stand alone."""
    message = _error({"exporters": ["none", "otlp"]})
    assert "exporters" in message and "none" in message and "otlp" in message and "'none' alone" in message


def test_unknown_protocol_and_compression():
    """An unknown protocol or compression names the key, the value and the allowed choices."""
    message = _error({"otlp": {"protocol": "http/json"}})
    assert "otlp.protocol" in message and "http/json" in message and "grpc" in message and "http/protobuf" in message
    message = _error({"otlp": {"compression": "zstd"}})
    assert "otlp.compression" in message and "zstd" in message and "gzip" in message


def test_http_endpoint_must_be_a_url():
    """With http/protobuf an endpoint without http(s):// is refused, naming key and value."""
    message = _error({"otlp": {"protocol": "http/protobuf", "endpoint": "collector:4318"}})
    assert "otlp.endpoint" in message and "collector:4318" in message and "http://" in message


def test_missing_certificate_file(tmp_path):
    """A certificate path that is not a file names the key, the value and what is allowed."""
    missing = str(tmp_path / "missing.pem")
    message = _error({"otlp": {"certificate": missing}})
    assert "otlp.certificate" in message and missing in message and "PEM file" in message


def test_bad_resource_attributes():
    """Resource attributes must be a mapping or 'k=v,...' text; anything else names key, value and the forms."""
    message = _error({"resource_attributes": ["a", "b"]})
    assert "resource_attributes" in message and "['a', 'b']" in message and "key=value" in message
    message = _error(None, {"OTEL_RESOURCE_ATTRIBUTES": "novalue"})
    assert "OTEL_RESOURCE_ATTRIBUTES" in message and "novalue" in message


def test_non_mapping_file(tmp_path):
    """A YAML file whose top level is not a mapping names the file, what it holds and that a mapping is allowed."""
    path = tmp_path / "list.yaml"
    path.write_text("- prometheus\n- otlp\n")
    message = _error(path)
    assert str(path) in message and "list" in message and "mapping" in message


def test_unreadable_and_invalid_yaml_files(tmp_path):
    """A missing file or invalid YAML raises ConfigError naming the file."""
    missing = tmp_path / "missing.yaml"
    assert str(missing) in _error(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("prometheus: {port: [\n")
    message = _error(broken)
    assert str(broken) in message and "YAML" in message


def test_non_mapping_config_object():
    """A config that is neither a mapping, a path nor None is refused, naming the value and what is allowed."""
    message = _error(12345)
    assert "12345" in message and "mapping" in message


def test_monitoring_section_not_a_mapping():
    """A ``monitoring:`` section that is not a mapping names the key and value."""
    message = _error({"monitoring": 8011})
    assert "monitoring" in message and "8011" in message and "mapping" in message


# -- init_telemetry ---------------------------------------------------------------------------------------------------


def _local(port: int = 0, **prometheus) -> dict:
    return {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": port, **prometheus}}


def test_init_twice_with_the_same_config_returns_the_same_handle():
    """A second init_telemetry() with equal settings returns the running handle."""
    first = otel_rl.init_telemetry(_local())
    assert otel_rl.init_telemetry(_local()) is first
    assert otel_rl.current() is first


def test_init_twice_with_different_config_raises():
    """A second init_telemetry() with different settings raises ConfigError until the first is shut down."""
    first = otel_rl.init_telemetry(_local())
    with pytest.raises(ConfigError) as info:
        otel_rl.init_telemetry({**_local(), "service_name": "other"})
    assert "already" in str(info.value)
    assert otel_rl.current() is first
    first.shutdown(timeout=2)
    second = otel_rl.init_telemetry({**_local(), "service_name": "other"})
    assert second is not first


def test_init_with_bad_config_starts_nothing():
    """init_telemetry() with an invalid config raises ConfigError and leaves no running telemetry."""
    before = threading.active_count()
    with pytest.raises(ConfigError):
        otel_rl.init_telemetry({"prometheus": {"port": 70000}})
    assert otel_rl.current() is None
    assert threading.active_count() == before


def _blocker() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("otel-rl")]


def test_strict_port_taken_raises_and_leaves_nothing():
    """With strict, a taken port makes init_telemetry raise ConfigError and leaves no thread, server or handle."""
    blocker = _blocker()
    port = blocker.getsockname()[1]
    before_threads = threading.active_count()
    try:
        with pytest.raises(ConfigError) as info:
            otel_rl.init_telemetry(_local(port, strict=True))
        assert str(port) in str(info.value) and "prometheus.port" in str(info.value)
        assert otel_rl.current() is None
        assert threading.active_count() == before_threads
        assert _server_threads() == []
    finally:
        blocker.close()
    with socket.socket() as again:  # nothing of ours holds the port
        again.bind(("127.0.0.1", port))
        again.listen()
    handle = otel_rl.init_telemetry(_local(port, strict=True))  # and init works once it is free
    assert handle.prometheus_port == port


def test_non_strict_port_taken_logs_and_goes_on(caplog):
    """Without strict, a taken port logs an error and returns a handle whose prometheus_port is None."""
    caplog.set_level(logging.INFO, logger="otel_rl")
    blocker = _blocker()
    port = blocker.getsockname()[1]
    try:
        handle = otel_rl.init_telemetry(_local(port))
        assert handle.prometheus_port is None
        assert handle.server is None
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "otel_rl"]
        assert len(errors) == 1 and str(port) in errors[0].getMessage()
        assert b"rl_training_runs_total" in handle.metrics_text()  # recording and rendering still work
    finally:
        blocker.close()


def test_init_reads_the_environment(monkeypatch):
    """init_telemetry() without config reads the process environment."""
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", "0")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "env-trainer")
    handle = otel_rl.init_telemetry()
    assert handle.settings.service_name == "env-trainer"
    assert handle.prometheus_port not in (None, 0)


# -- hostile and absurd values ----------------------------------------------------------------------------------------

#: (key, value) pairs a naive parser turns into something other than ConfigError (OverflowError, ValueError), or
#: accepts only to break later, in a server or export thread.
ABSURD = [
    ("prometheus.port", float("inf")),
    ("prometheus.port", float("-inf")),
    ("prometheus.port", 10**30),
    ("cardinality_limit", float("inf")),
    ("cardinality_limit", float("-inf")),
    ("cardinality_limit", 10**30),
    ("prometheus.host", "127.0.0.1\x00"),
    ("prometheus.host", "host-\udcff"),
    ("prometheus.host", "a" * 64 + ".example.com"),
    ("prometheus.host", "exa mple.com"),
    ("otlp.endpoint", "\udcff"),
    ("otlp.endpoint", "http://[::1"),
    ("otlp.endpoint", "not a url"),
    ("otlp.endpoint", "ftp://collector:4317"),
    ("otlp.endpoint", "http://:4317"),
    ("otlp.endpoint", "collector:99999"),
    ("service_name", "trainer\udcff"),
    ("resource_attributes", {"team": "rl\udcff"}),
    ("resource_attributes", {"team": {"nested": "value"}}),
    ("shutdown_timeout", 1e300),
    ("shutdown_timeout", 1e-9),
    ("prometheus.linger", 1e300),
    ("otlp.timeout", 1e300),
    ("otlp.timeout", 1e-9),
    ("otlp.export_interval", 1e300),
    ("otlp.export_interval", 1e-9),
    ("otlp.export_interval", float("nan")),
]


def _nested(key: str, value) -> dict:
    section, _, name = key.partition(".")
    return {section: {name: value}} if name else {key: value}


@pytest.mark.parametrize("key,value", ABSURD, ids=[f"{k}={v!r}"[:60] for k, v in ABSURD])
def test_absurd_values_raise_config_error_naming_key_and_value(key, value):
    """Each absurd value raises ConfigError (nothing else) naming the key; init_telemetry starts nothing."""
    message = _error(_nested(key, value))
    assert key in message and "allowed" in message
    before = threading.active_count()
    with pytest.raises(ConfigError):
        otel_rl.init_telemetry(_nested(key, value))
    assert otel_rl.current() is None and threading.active_count() == before


@pytest.mark.parametrize("variable,value", [
    ("OTEL_METRIC_EXPORT_INTERVAL", "1e400"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0.000001"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "inf"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "inf"),
    ("OTEL_RL_CARDINALITY_LIMIT", "1" + "0" * 30),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1"),
    ("OTEL_EXPORTER_PROMETHEUS_HOST", "host-\udcff"),
])
def test_absurd_environment_values_raise_config_error(variable, value):
    """The same checks apply to environment variables, and the message names the variable."""
    assert variable in _error(None, {variable: value})


@pytest.mark.parametrize("key,value", [
    ("prometheus.host", "::1"), ("prometheus.host", "[::1]"), ("prometheus.host", "localhost"),
    ("prometheus.host", "my_host.internal"), ("prometheus.host", "0.0.0.0"),
    ("otlp.endpoint", "localhost:4317"), ("otlp.endpoint", "otel-collector:4317"),
    ("otlp.endpoint", "[::1]:4317"), ("otlp.endpoint", "https://collector.example.com"),
    ("otlp.endpoint", "http://[::1]:4317"), ("shutdown_timeout", 0.01), ("shutdown_timeout", 3600),
    ("otlp.export_interval", 0.1), ("otlp.export_interval", 86400), ("prometheus.linger", 0),
    ("cardinality_limit", 1_000_000),
])
def test_sane_edge_values_are_accepted(key, value):
    """The documented bounds are inclusive, and IPv6 hosts and host:port gRPC endpoints are accepted."""
    settings = load_settings(_nested(key, value), environ={})
    section, _, name = key.partition(".")
    got = getattr(getattr(settings, section), name) if name else getattr(settings, key)
    assert got == value


def test_binary_and_non_utf8_yaml_files_raise_config_error(tmp_path):
    """A binary or Latin-1 file is a ConfigError naming the file, not a UnicodeDecodeError."""
    for name, data in (("binary.yaml", bytes(range(256))), ("latin1.yaml", "service_name: caf\xe9\n".encode("latin-1")),
                       ("nul.yaml", b"service_name: a\x00b\n")):
        path = tmp_path / name
        path.write_bytes(data)
        assert str(path) in _error(path)


def test_deeply_nested_yaml_raises_config_error(tmp_path):
    """YAML nested 5000 levels deep is a ConfigError, not a RecursionError."""
    path = tmp_path / "deep.yaml"
    path.write_text("service_name: " + "[" * 5000 + "]" * 5000 + "\n")
    assert str(path) in _error(path)


def test_nesting_is_checked_before_the_parser_recurses(tmp_path):
    """Nesting past 100 levels is refused from the tokens, before PyYAML composes the document recursively (near
    the recursion limit, any finalizer that runs then fails as well); 97 levels are parsed."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("resource_attributes: {a: " + "[" * 150 + "]" * 150 + "}\n")  # PyYAML alone would parse it
    assert "at most 100 levels deep" in _error(deep)
    parsed = tmp_path / "parsed.yaml"
    parsed.write_text("resource_attributes: {a: " + "[" * 97 + "]" * 97 + "}\n")
    assert "levels deep" not in _error(parsed)  # refused for its value, not its depth


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    """A few hundred bytes of nested aliases (billions of nodes) is refused at once with a short message."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nmonitoring:\n  resource_attributes: {bomb: *i}\n")
    started = time.monotonic()
    message = _error(path)
    assert time.monotonic() - started < 2.0
    assert "alias" in message and len(message) < 1000


def test_error_messages_truncate_huge_values():
    """A huge value is shown truncated in the error, so the message stays readable."""
    message = _error({"service_name": ["x" * 10_000] * 1000})
    assert "service_name" in message and len(message) < 1000


def test_application_keys_in_the_monitoring_section_are_ignored_typos_are_not(caplog):
    """Other keys of an application's monitoring: section belong to it (named once at INFO); a near-miss of an
    otel-rl key is still a ConfigError."""
    caplog.set_level(logging.INFO, logger="otel_rl")
    settings = load_settings({"monitoring": {"prometheus_port": 9300, "enable_grafana": True,
                                             "grafana_url": "http://g"}}, environ={})
    assert settings.prometheus.port == 9300
    assert any("enable_grafana" in r.getMessage() and "grafana_url" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="did you mean 'exporters'"):
        load_settings({"monitoring": {"exporter": ["otlp"]}}, environ={})
@pytest.mark.parametrize("endpoint", ["http://user:pw123@localhost:4317", "https://user@collector:4317"])
def test_a_grpc_endpoint_with_user_or_password_is_rejected_without_showing_the_password(endpoint):
    """gRPC has no URL credentials: the SDK would log the URL with the password, and never authenticate."""
    with pytest.raises(ConfigError) as error:
        load_settings({"otlp": {"endpoint": endpoint}}, environ={})
    assert "otlp.endpoint" in str(error.value) and "pw123" not in str(error.value)
    assert "OTEL_EXPORTER_OTLP_HEADERS" in str(error.value)
    with pytest.raises(ConfigError):
        load_settings({}, environ={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint})
    # http/protobuf sends URL credentials as basic auth: accepted there.
    load_settings({"otlp": {"endpoint": endpoint, "protocol": "http/protobuf"}}, environ={})


def test_buckets_override_is_validated_naming_the_histograms():
    """buckets maps histogram names to strictly increasing finite bounds; anything else is a ConfigError."""
    settings = load_settings({"buckets": {"rl_training_value_loss": [1, 10, 100.5]}}, environ={})
    assert settings.buckets == (("rl_training_value_loss", (1.0, 10.0, 100.5)),)
    for bad in ({"rl_training_value_los": [1]}, {"rl_training_active": [1]}, {"rl_training_value_loss": []},
                {"rl_training_value_loss": [2, 1]}, {"rl_training_value_loss": [1, 1]},
                {"rl_training_value_loss": [1, float("inf")]}, {"rl_training_value_loss": ["1"]},
                {"rl_training_value_loss": 5}, [1, 2]):
        with pytest.raises(ConfigError, match=r"config key 'buckets' has value .*allowed: a mapping of histogram "
                                              r"names \(rl_training_duration_seconds, "):
            load_settings({"buckets": bad}, environ={})


def test_global_provider_and_strict_settings():
    """global_provider is install (default) or off; strict is a boolean, also from OTEL_RL_STRICT."""
    assert load_settings({}, environ={}).global_provider == "install"
    assert load_settings({}, environ={"OTEL_RL_GLOBAL_PROVIDER": "off"}).global_provider == "off"
    assert load_settings({}, environ={"OTEL_RL_STRICT": "1"}).strict is True
    assert load_settings({"strict": "no"}, environ={"OTEL_RL_STRICT": "1"}).strict is False
    with pytest.raises(ConfigError, match="config key 'global_provider' has value 'join'; allowed: one of install, "
                                          "off"):
        load_settings({"global_provider": "join"}, environ={})


def test_signal_path_goes_before_the_query_string():
    """The base URL's query string stays a query string: /v1/metrics joins the path, not the end of the URL."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/?k=v", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert load_settings(None, environ=env).otlp.resolved_endpoint() == "http://c:4318/v1/metrics?k=v"
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "https://gw.example/otlp/?tenant=a&x=1"
    assert load_settings(None, environ=env).otlp.endpoint == "https://gw.example/otlp/v1/metrics?tenant=a&x=1"
    explicit = load_settings({"otlp": {"protocol": "http/protobuf", "endpoint": "http://c:4318?k=v"}}, environ={})
    assert explicit.otlp.resolved_endpoint() == "http://c:4318/v1/metrics?k=v"


@pytest.mark.parametrize("value", [0, 15, 65537, "many", True, 16.5])
def test_label_value_limit_is_checked(value):
    """label_value_limit is an integer number of characters from 16 to 65536."""
    with pytest.raises(ConfigError, match="label_value_limit.*from 16 to 65536"):
        load_settings({"label_value_limit": value}, environ={})
    assert load_settings(None, environ={"OTEL_RL_LABEL_VALUE_LIMIT": "300"}).label_value_limit == 300


def _error_within(seconds: float, call) -> str:
    """The ConfigError ``call`` raises, which must come within ``seconds`` (run in a thread: a hang fails)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"no answer within {seconds} s"
    assert isinstance(outcome[0], ConfigError), repr(outcome[0])
    return str(outcome[0])


@pytest.fixture
def fifo(tmp_path):
    import os

    path = tmp_path / "config.fifo"
    os.mkfifo(path)
    yield str(path)
    try:  # a reader still blocked in open() (the old code) is released by a writer
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "big"])
def test_a_config_file_that_is_not_a_small_regular_file_is_a_config_error(tmp_path, fifo, source):
    """A config file at /dev/zero (read without end: MemoryError), a FIFO (open blocks forever) or one of 2 MiB
    is a ConfigError at once, naming the file and what is allowed."""
    path = {"/dev/zero": "/dev/zero", "fifo": fifo, "big": str(tmp_path / "big.yaml")}[source]
    if source == "big":
        (tmp_path / "big.yaml").write_text("# " + "x" * (2 << 20) + "\n")
    message = _error_within(10, lambda: load_settings(path, {}))
    assert path in message and "regular" in message and "allowed" in message
    reason = {"/dev/zero": "a device", "fifo": "a FIFO", "big": "larger than"}[source]
    assert reason in message


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_a_web_config_file_that_is_not_a_regular_file_is_a_config_error(fifo, source):
    """prometheus.web_config_file at /dev/zero or a FIFO: init_telemetry raises ConfigError at once."""
    path = fifo if source == "fifo" else source
    message = _error_within(10, lambda: otel_rl.init_telemetry({"prometheus": {
        "host": "127.0.0.1", "port": 0, "web_config_file": path}}))
    assert "prometheus.web_config_file" in message and path in message and "regular file" in message


@pytest.mark.parametrize("name", ["a" * 300, "a" * 250, "d" * 300 + "/sd.json"])
def test_a_file_sd_path_too_long_for_the_system_is_a_config_error(tmp_path, name):
    """OTEL_RL_PROMETHEUS_FILE_SD with a 300-character name (OSError: file name too long), or a name too long for
    the temporary file and lock beside it, is a ConfigError naming the variable and what is allowed."""
    message = _error_within(10, lambda: load_settings({}, {"OTEL_RL_PROMETHEUS_FILE_SD": str(tmp_path / name)}))
    assert "OTEL_RL_PROMETHEUS_FILE_SD" in message and "prometheus.file_sd" in message and "allowed" in message


def test_a_file_sd_path_that_is_a_fifo_is_a_config_error(fifo):
    """A target file that exists but is not a regular file (a FIFO would block the writes) is refused."""
    message = _error_within(10, lambda: load_settings({"prometheus": {"file_sd": fifo}}, {}))
    assert "prometheus.file_sd" in message and "regular file" in message
