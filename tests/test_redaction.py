"""Secrets (OTLP header values, URL passwords) never appear in what otel-rl prints: repr, errors, logs, the CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otel_rl
from otel_rl._internal.config import ConfigError, OtlpSettings, load_settings

import procs

SECRET = "tok-3f9c2e7d1b5a"
ROOT = Path(__file__).resolve().parent.parent


def _config_error(config=None, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ or {})
    return str(info.value)


def test_repr_of_settings_redacts_header_values_and_url_passwords():
    """repr(Settings) and repr(OtlpSettings) show header names and the host, never a token, user or password (a
    user name cannot be told from a token: ``https://TOKEN@host``)."""
    settings = load_settings({"exporters": ["otlp"], "otlp": {  # URL credentials: http/protobuf only (not gRPC)
        "endpoint": f"https://user:{SECRET}@collector.example:4318", "protocol": "http/protobuf",
        "headers": {"Authorization": f"Bearer {SECRET}", "x-api-key": SECRET}}}, {})
    for text in (repr(settings), str(settings), repr(settings.otlp), f"{settings.otlp!s}"):
        assert SECRET not in text and "Authorization" in text and "x-api-key" in text
        assert "<redacted>@collector.example:4318" in text
    assert dict(settings.otlp.headers)["Authorization"] == f"Bearer {SECRET}"  # the value itself is intact
    assert SECRET not in repr(OtlpSettings(headers=(("Authorization", f"Basic {SECRET}"),)))


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"])
def test_malformed_headers_variable_error_hides_the_value(variable):
    """A malformed headers variable names the variable and the allowed form, not its content."""
    message = _config_error(environ={variable: f"Authorization=Bearer {SECRET},missing-equals-{SECRET}"})
    assert variable in message and "otlp.headers" in message and "allowed" in message
    assert SECRET not in message


@pytest.mark.parametrize("config", [
    {"otlp": {"hedaers": {"Authorization": f"Bearer {SECRET}"}}},
    {"otlp": {"header": f"Authorization=Bearer {SECRET}"}},
    {"headers": {"Authorization": f"Bearer {SECRET}"}},
    {"otlp": f"Authorization=Bearer {SECRET}"},
    {"otlp": {"headers": f"broken-{SECRET}"}},
    {"otlp": {"headers": [f"Bearer {SECRET}"]}},
    {"otlp": {"endpiont": f"https://user:{SECRET}@collector:4317"}},
    {"exporters": ["otlp"], "otlp": {"protocol": "http/protobuf", "endpoint": f"ftp://u:{SECRET}@collector"}},
])
def test_config_errors_near_secrets_hide_them(config):
    """Misspelled keys next to otlp.headers, a non-mapping otlp section, bad header values: key named, secret not."""
    message = _config_error(config)
    assert SECRET not in message and "allowed" in message


def test_second_init_with_other_settings_names_the_difference_without_secrets():
    """The "already called with different settings" error names what differs, with header values redacted."""
    base = {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0},
            "otlp": {"headers": {"Authorization": f"Bearer {SECRET}"}}}
    otel_rl.init_telemetry(base)
    other = {**base, "otlp": {"headers": {"Authorization": f"Bearer {SECRET}-2"}}}
    with pytest.raises(ConfigError) as info:
        otel_rl.init_telemetry(other)
    message = str(info.value)
    assert "otlp.headers" in message and SECRET not in message and "shutdown()" in message
    assert "prometheus.port" not in message  # only what differs


def test_failed_exports_log_no_secret(caplog):
    """An OTLP export refused by an unreachable collector logs its failure without the header values."""
    caplog.set_level(logging.DEBUG)
    handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
        "endpoint": f"http://127.0.0.1:{procs.free_port()}", "protocol": "http/protobuf", "timeout": 1,
        "headers": {"Authorization": f"Bearer {SECRET}"}}})
    otel_rl.record_episode("PPO", "run-1", 1.0, 5)
    assert handle.force_flush(timeout=3) is False
    handle.shutdown(timeout=2)
    assert caplog.records and SECRET not in caplog.text


def test_cli_prints_no_secret():
    """`otel-rl demo` with a malformed headers variable fails with ConfigError, without the token in its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer {SECRET},x"}
    out = subprocess.run([sys.executable, "-m", "otel_rl", "-v", "demo", "--exporter", "otlp", "--iterations", "1",
                          "--no-progress", "--linger", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "OTEL_EXPORTER_OTLP_HEADERS" in out.stderr
    assert SECRET not in out.stdout + out.stderr


_KEYS = st.sampled_from(["headers", "hedaers", "header", "Headers", "otlp_headers", "auth", "token", "endpiont",
                         "certificat", "Authorization", "resource_atributes"])
_SECRET_VALUES = st.one_of(
    st.just(f"Bearer {SECRET}"), st.just(f"Authorization=Bearer {SECRET}"), st.just(f"a=b,{SECRET}"),
    st.just(f"https://user:{SECRET}@collector:4317"), st.just({"Authorization": f"Bearer {SECRET}"}),
    st.just([f"Bearer {SECRET}"]), st.just({"x": [SECRET]}),
    st.builds(lambda a, b: f"{a}{SECRET}{b}", st.text(max_size=5), st.text(max_size=5)))


@settings(max_examples=200, deadline=None)
@given(key=_KEYS, value=_SECRET_VALUES, nested=st.booleans())
def test_property_config_errors_never_show_a_secret(key, value, nested):
    """Whatever secret sits under a header-like key, loading succeeds or raises a ConfigError without it."""
    config = {"otlp": {key: value}} if nested else {key: value}
    try:
        settings = load_settings(config, {})
    except ConfigError as exc:
        assert SECRET not in str(exc)
    else:
        assert SECRET not in repr(settings)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=40).map(lambda t: f"{t}Authorization=Bearer {SECRET}{t}"))
def test_property_headers_variable_never_shows_a_secret(text):
    """Whatever OTEL_EXPORTER_OTLP_HEADERS holds, its token appears neither in the error nor in the repr."""
    try:
        settings = load_settings({}, {"OTEL_EXPORTER_OTLP_HEADERS": text})
    except ConfigError as exc:
        assert SECRET not in str(exc)
    else:
        assert SECRET not in repr(settings)


def test_mtls_settings_from_the_standard_variables(tmp_path):
    """OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/CLIENT_KEY/CERTIFICATE set the mTLS files; one without the other fails."""
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("pem")
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "ca.crt"),
           "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(tmp_path / "client.crt"),
           "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(tmp_path / "client.key")}
    otlp = load_settings({}, env).otlp
    assert (otlp.certificate, otlp.client_certificate, otlp.client_key) == tuple(env.values())
    del env["OTEL_EXPORTER_OTLP_CLIENT_KEY"]
    message = _config_error(environ=env)
    assert "otlp.client_certificate" in message and "otlp.client_key" in message


@pytest.mark.parametrize(("endpoint", "protocol"), [
    (f"user:{SECRET}@collector.example:4317", "grpc"),  # no scheme: the old redaction looked for "://" only
    (f"user:{SECRET}@collector.example:4317", "http/protobuf"),
    (f"https://{SECRET}@collector.example:4317", "grpc"),  # a token as the user name, no password
    (f"ftp://{SECRET}@collector.example", "http/protobuf"),
])
def test_endpoint_errors_hide_credentials_with_or_without_a_scheme(endpoint, protocol):
    """A refused endpoint with a password or token in it is named without the secret, from config and env."""
    message = _config_error({"otlp": {"endpoint": endpoint, "protocol": protocol}})
    assert SECRET not in message and "otlp.endpoint" in message and "allowed" in message
    message = _config_error(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    assert SECRET not in message and "otlp.endpoint" in message


@pytest.mark.parametrize("endpoint", [
    f"https://{SECRET}@collector.example:4318",
    f"https://collector.example:4318/v1/metrics?access_token={SECRET}",
    f"https://collector.example:4318/v1/metrics?{SECRET}",
    f"https://user:pw@collector.example:4318/v1/metrics?a=b&token={SECRET}#{SECRET}",
])
def test_repr_hides_tokens_in_the_user_part_and_the_query(endpoint):
    """repr(Settings) hides a token used as the URL's user name and anything in a query string or fragment."""
    settings = load_settings({"otlp": {"endpoint": endpoint, "protocol": "http/protobuf"}}, {})
    assert settings.otlp.endpoint == endpoint  # the exporter still gets it whole
    assert SECRET not in repr(settings) and "collector.example:4318" in repr(settings)


def test_cli_prints_no_password_of_a_scheme_less_endpoint():
    """`otel-rl demo --otlp-endpoint user:PW@host:4317` fails with the key named and without the password."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "otel_rl", "-v", "demo", "--exporter", "otlp", "--otlp-endpoint",
                          f"user:{SECRET}@collector.example:4317", "--iterations", "1", "--no-progress",
                          "--linger", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "otlp.endpoint" in out.stderr
    assert SECRET not in out.stdout + out.stderr


@pytest.mark.parametrize("content", [
    f"basic_auth_user:\n  prometheus: $2b$10${SECRET}" + "x" * 37 + "\n",  # misspelled: a hash under it
    f"basic_auth_user:\n  prometheus: {SECRET}\n",  # a plain password
    f"basic_auths: {SECRET}\n",
    f"tls_server_config:\n  basic_auth_users: {SECRET}\n",
    f"http_server_config:\n  header: {SECRET}\n",
    f"tls_server_config:\n  key: {SECRET}\n",  # an inline private key: refused (unsupported), never shown
    f"tls_server_config: {SECRET}\n",
    f"basic_auth_users:\n  prometheus: {SECRET}: x\n",  # not YAML: PyYAML's message quotes the line
    f"basic_auth_users:\n  prometheus: \"{SECRET}\n",
])
def test_web_config_errors_never_show_hashes_or_passwords(tmp_path, content):
    """A misspelled key, a key in the wrong section or broken YAML in the web config: the error names the file
    and the key, never the hash or password under it."""
    web = tmp_path / "web.yml"
    web.write_text(content)
    message = _config_error({"prometheus": {"web_config_file": str(web)}})
    assert SECRET not in message and "web.yml" in message


_TEXT = st.text(max_size=6)
_URLS = st.one_of(
    st.builds(lambda s, a, b: f"{s}{a}{SECRET}{b}@collector.example:4317", st.sampled_from(["", "http://", "https://"]),
              _TEXT, _TEXT),
    st.builds(lambda s, u, a, b: f"{s}{u}:{a}{SECRET}{b}@collector.example:4317",
              st.sampled_from(["", "http://", "https://"]), st.from_regex(r"[a-z]{1,8}", fullmatch=True), _TEXT, _TEXT),
    st.builds(lambda s, k, a, b: f"{s}collector.example:4318/v1/metrics?{k}{a}{SECRET}{b}",
              st.sampled_from(["", "http://", "https://"]), st.sampled_from(["", "token=", "a=b&token="]),
              _TEXT, _TEXT),
    st.builds(lambda s, a, b: f"{s}collector.example:4318/#{a}{SECRET}{b}", st.sampled_from(["", "https://"]),
              _TEXT, _TEXT),
)


@settings(max_examples=300, deadline=None)
@given(endpoint=_URLS, protocol=st.sampled_from(["grpc", "http/protobuf"]), from_env=st.booleans())
def test_property_endpoint_credentials_never_show(endpoint, protocol, from_env):
    """Whatever URL shape carries a password or token (with or without a scheme, as user, password, query or
    fragment), loading succeeds without it in the repr or fails without it in the ConfigError."""
    config = {} if from_env else {"otlp": {"endpoint": endpoint, "protocol": protocol}}
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol} if from_env else {}
    try:
        settings = load_settings(config, environ)
    except ConfigError as exc:
        assert SECRET not in str(exc)
    else:
        assert SECRET not in repr(settings)


_WEB_KEYS = st.sampled_from(["basic_auth_user", "basic_auth_users", "basic-auth-users", "Basic_Auth_Users",
                             "basic_auth", "users", "tls_server_config", "http_server_config"])
_WEB_VALUES = st.one_of(
    st.builds(lambda a, b: f"{a}{SECRET}{b}", _TEXT, _TEXT),
    st.builds(lambda user, a: {user: f"$2b$10${a}{SECRET}"}, st.sampled_from(["prometheus", "u"]), _TEXT),
    st.builds(lambda key: {key: SECRET}, st.sampled_from(["prometheus", "key", "cert", "headers", "basic_auth_users"])),
    st.just([SECRET]), st.just({"headers": {"X-Token": SECRET, "bad\nname": "x"}}))


@settings(max_examples=150, deadline=None)
@given(key=_WEB_KEYS, value=_WEB_VALUES, nested=st.sampled_from([None, "tls_server_config", "http_server_config"]))
def test_property_web_config_errors_never_show_a_secret(key, value, nested):
    """Whatever sits under a (misspelled) key of a web configuration file, its ConfigError never shows it."""
    import tempfile

    import yaml

    content = {nested: {key: value}} if nested else {key: value}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "web.yml"
        path.write_text(yaml.safe_dump(content))
        try:
            load_settings({"prometheus": {"web_config_file": str(path)}}, {})
        except ConfigError as exc:
            assert SECRET not in str(exc)
