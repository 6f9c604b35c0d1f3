"""Secured paths end to end with real processes: Prometheus scraping /metrics over TLS with basic auth, and
otel-rl pushing OTLP over mTLS with a bearer token into the collector, which remote-writes with basic auth into a
Prometheus that requires it (``collector/otelcol-config-secure.yaml``). Certificates are made in the test."""

from __future__ import annotations

import base64
import logging
import urllib.error
import urllib.request

import bcrypt
import pytest
import yaml
from certs import make_certs

import otel_rl

import procs

pytestmark = pytest.mark.integration

SCRAPE_PASSWORD = "scrape-pw-81c4"
WRITE_PASSWORD = "write-pw-5e2a"
TOKEN = "otlp-token-9d3f"


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()


def _value(prometheus: procs.Prometheus, selector: str) -> float | None:
    found = prometheus.latest(selector)
    return found[0][1] if found else None


def test_prometheus_scrapes_over_tls_with_basic_auth(tmp_path):
    """A real Prometheus scrapes over TLS with the right password; wrong password and plain HTTP are refused."""
    certs = make_certs(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS12"},
        "basic_auth_users": {"prometheus": _hash(SCRAPE_PASSWORD)}}))
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {
        "host": "127.0.0.1", "port": 0, "web_config_file": str(web)}})
    otel_rl.record_episode("PPO", "secure-run", 42.5, 7)
    target = f"127.0.0.1:{handle.prometheus_port}"
    prometheus = procs.Prometheus(tmp_path)
    tls = {"ca_file": str(certs.ca)}
    jobs = [
        {"job_name": "secure", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": "prometheus", "password": SCRAPE_PASSWORD}},
        {"job_name": "wrong_password", "scheme": "https", "tls_config": tls,
         "basic_auth": {"username": "prometheus", "password": "not-it"}},
        {"job_name": "no_auth", "scheme": "https", "tls_config": tls},
        {"job_name": "plain_http", "scheme": "http",
         "basic_auth": {"username": "prometheus", "password": SCRAPE_PASSWORD}},
    ]
    prometheus.config_path.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{**job, "static_configs": [{"targets": [target]}]} for job in jobs]}))
    try:
        prometheus.start()
        procs.wait_until(lambda: _value(prometheus, 'rl_training_episode_reward_sum{job="secure"}') == 42.5, 60,
                         what="the episode reward scraped over TLS with basic auth")
        for job in ("wrong_password", "no_auth", "plain_http"):
            procs.wait_until(lambda job=job: prometheus.query(f'up{{job="{job}"}} == 0'), 30,
                             what=f"job {job} seen down")
        assert prometheus.query('up{job="secure"} == 1')
        assert not prometheus.series('rl_training_episode_reward_sum{job!="secure"}')
        errors = {t["labels"]["job"]: t["lastError"] for t in prometheus.api("targets")["activeTargets"]}
        assert "401" in errors["wrong_password"] and "401" in errors["no_auth"], errors
        assert errors["plain_http"], errors
    finally:
        prometheus.stop()


@pytest.fixture
def secure_stack(tmp_path):
    """Prometheus requiring basic auth, and the secured collector (mTLS + bearer token in, basic auth out)."""
    certs = make_certs(tmp_path)
    web = tmp_path / "prometheus-web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"writer": _hash(WRITE_PASSWORD)}}))
    prometheus = procs.Prometheus(tmp_path, web_config=web, auth=("writer", WRITE_PASSWORD)).start()
    collector = procs.Collector(tmp_path, prometheus.remote_write_url, config="otelcol-config-secure.yaml", env={
        "OTELCOL_TLS_CERT_FILE": str(certs.server_cert), "OTELCOL_TLS_KEY_FILE": str(certs.server_key),
        "OTELCOL_TLS_CLIENT_CA_FILE": str(certs.ca), "OTELCOL_BEARER_TOKEN": TOKEN,
        "PROMETHEUS_REMOTE_WRITE_BASIC_AUTH": base64.b64encode(f"writer:{WRITE_PASSWORD}".encode()).decode(),
    })
    try:
        collector.start()
        yield certs, prometheus, collector
    finally:
        collector.stop()
        prometheus.stop()


def _otlp(certs, collector, protocol: str, token: str, client_cert: bool = True) -> dict:
    endpoint = (f"https://127.0.0.1:{collector.grpc_port}" if protocol == "grpc"
                else f"https://127.0.0.1:{collector.http_port}/v1/metrics")
    otlp = {"endpoint": endpoint, "protocol": protocol, "certificate": str(certs.ca), "timeout": 5,
            "export_interval": 3600, "headers": {"Authorization": f"Bearer {token}"}}
    if client_cert:
        otlp |= {"client_certificate": str(certs.client_cert), "client_key": str(certs.client_key)}
    return {"exporters": ["otlp"], "service_name": "secure-push", "otlp": otlp}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_push_over_mtls_with_token_reaches_prometheus_with_basic_auth(secure_stack, protocol):
    """otel-rl -> mTLS + bearer token -> collector -> remote write with basic auth -> Prometheus."""
    certs, prometheus, collector = secure_stack
    handle = otel_rl.init_telemetry(_otlp(certs, collector, protocol, TOKEN))
    otel_rl.record_episode("PPO", "pushed-run", 17.25, 3)
    assert handle.force_flush(timeout=10) is True
    procs.wait_until(
        lambda: _value(prometheus, 'rl_training_episode_reward_sum{agent_id="pushed-run",job="secure-push"}') == 17.25,
        60, what=f"the pushed reward in Prometheus (collector log: {collector.process.output()})")


def test_prometheus_refuses_remote_write_without_basic_auth(secure_stack):
    """The Prometheus of this stack really requires basic auth on remote write (so the pass above proves auth)."""
    _, prometheus, _ = secure_stack
    request = urllib.request.Request(prometheus.remote_write_url, data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 401


@pytest.mark.parametrize(("protocol", "token", "client_cert"), [
    ("grpc", "wrong-token", True), ("http/protobuf", "wrong-token", True), ("grpc", TOKEN, False),
])
def test_push_with_wrong_credentials_is_refused_and_reported(secure_stack, caplog, protocol, token, client_cert):
    """A wrong token (or no client certificate) makes the export fail: force_flush is False and a line is logged."""
    certs, prometheus, collector = secure_stack
    caplog.set_level(logging.WARNING)
    handle = otel_rl.init_telemetry(_otlp(certs, collector, protocol, token, client_cert))
    otel_rl.record_episode("PPO", "refused-run", 5.0, 3)
    assert handle.force_flush(timeout=10) is False
    assert caplog.records, "the failed export was not reported"
    assert token not in caplog.text and TOKEN not in caplog.text
    handle.shutdown(timeout=3)
    assert not prometheus.series('rl_training_episode_reward_sum{agent_id="refused-run"}')
