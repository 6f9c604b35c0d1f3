"""TLS and basic auth on /metrics from an exporter-toolkit web configuration file (webconfig), on real sockets."""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml
from certs import Certs, make_certs

import otel_rl
from otel_rl._internal import webconfig
from otel_rl._internal.config import ConfigError
from otel_rl._internal.webconfig import load_web_config

PASSWORD = "s3cret-scrape-password"
#: What a client sees when the server ends the connection in the TLS handshake.
REFUSED = (urllib.error.URLError, ssl.SSLError, ConnectionError, http.client.HTTPException)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def hashed() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()


def _web(directory: Path, content: dict) -> str:
    path = directory / "web.yml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _get(url: str, headers=None, context=None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10,
                                    context=context) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _start(web_config: str):
    return otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {
        "host": "127.0.0.1", "port": 0, "web_config_file": web_config}})


def test_tls_and_basic_auth(certs, hashed):
    """Over TLS with the right password: 200; wrong password or none: 401 with a Basic challenge; plain HTTP fails."""
    handle = _start(_web(certs.ca.parent, {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {"prometheus": hashed}}))
    base = f"https://127.0.0.1:{handle.prometheus_port}"
    context = ssl.create_default_context(cafile=str(certs.ca))
    assert _get(base + "/metrics", _basic("prometheus", PASSWORD), context) == 200
    assert _get(base + "/metrics", _basic("prometheus", "wrong"), context) == 401
    assert _get(base + "/metrics", _basic("nobody", PASSWORD), context) == 401
    assert _get(base + "/metrics", None, context) == 401
    assert _get(base + "/health", None, context) == 401  # /health is guarded too (it names service and version)
    assert _get(base + "/health", _basic("prometheus", PASSWORD), context) == 200
    with pytest.raises(REFUSED):
        _get(f"http://127.0.0.1:{handle.prometheus_port}/metrics")
    with pytest.raises(REFUSED):  # a client that does not trust the CA
        _get(base + "/metrics", _basic("prometheus", PASSWORD), ssl.create_default_context(cafile=str(certs.other_ca)))


def test_successful_checks_are_cached(certs, hashed, monkeypatch):
    """bcrypt runs once per user and password, not on every scrape; a wrong password is checked every time."""
    config = load_web_config(_web(certs.ca.parent, {"basic_auth_users": {"prometheus": hashed}}))
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda *a: calls.append(1) or real(*a))
    good = _basic("prometheus", PASSWORD)["Authorization"]
    bad = _basic("prometheus", "nope")["Authorization"]
    assert all(config.authorized(good) for _ in range(20))
    assert len(calls) == 1
    assert not any(config.authorized(bad) for _ in range(3))
    assert len(calls) == 4
    assert not config.authorized("Basic !!!notbase64") and not config.authorized("Bearer x")
    assert not config.authorized(_basic("prometheus", "x" * 100)["Authorization"])  # bcrypt's 72-byte limit


def test_concurrent_bcrypt_checks_are_bounded(certs, hashed, monkeypatch):
    """Sixteen wrong passwords checked from sixteen threads run bcrypt one at a time (without that bound, a flood of
    wrong passwords would take every core from training); the right password, once remembered, needs no check
    meanwhile."""
    config = load_web_config(_web(certs.ca.parent, {"basic_auth_users": {"prometheus": hashed}}))
    good = _basic("prometheus", PASSWORD)["Authorization"]
    assert config.authorized(good)
    running, most = [0], [0]
    lock = threading.Lock()
    real = bcrypt.checkpw

    def counting(*args):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    monkeypatch.setattr(webconfig, "AUTH_WAIT", 60.0, raising=False)
    monkeypatch.setattr(webconfig, "AUTH_REST", 0.0, raising=False)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        config.authorized(_basic("prometheus", f"wrong-{i}")["Authorization"]))) for i in range(16)]
    for thread in threads:
        thread.start()
    assert config.authorized(good)  # served from the cache while the checks queue
    for thread in threads:
        thread.join(120)
    assert results == [False] * 16 and most[0] == 1


def test_scrapes_with_known_credentials_pass_a_wrong_password_flood(certs, hashed):
    """While 32 clients send wrong passwords as fast as they are answered (each waiting for a bcrypt check in a
    serving slot), a scrape whose credentials were checked before answers within 1 s: it is served first."""
    handle = _start(_web(certs.ca.parent, {"basic_auth_users": {"prometheus": hashed}}))
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    assert _get(url, _basic("prometheus", PASSWORD)) == 200  # checked once, remembered
    stop = threading.Event()
    refused = [0]

    def flood(n: int) -> None:
        for i in range(10_000):  # bounded; stopped long before
            if stop.is_set():
                return
            with contextlib.suppress(OSError):
                if _get(url, _basic("prometheus", f"wrong-{n}-{i}")) == 401:
                    refused[0] += 1

    threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(32)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 30
        while refused[0] < 5 and time.monotonic() < deadline:  # the flood is under way
            time.sleep(0.05)
        assert refused[0] >= 5
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            assert _get(url, _basic("prometheus", PASSWORD)) == 200
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 1.0, latencies
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def test_a_tls_client_that_never_finishes_the_handshake_is_closed_and_costs_no_slot(certs, monkeypatch):
    """TLS handshakes run in the connection loop: 100 clients stuck before or in the handshake hold no serving slot
    (an HTTPS scrape answers meanwhile) and are closed at the header timeout."""
    from otel_rl._internal import http_server

    monkeypatch.setattr(http_server.MetricsServer, "header_timeout", 2.0)
    handle = _start(_web(certs.ca.parent, {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}}))
    address = ("127.0.0.1", handle.prometheus_port)
    stuck = [socket.create_connection(address, timeout=10) for _ in range(100)]
    for client in stuck[::2]:
        client.sendall(b"\x16\x03\x01\x00\xff")  # the start of a ClientHello that never continues
    try:
        context = ssl.create_default_context(cafile=str(certs.ca))
        started = time.monotonic()
        assert _get(f"https://127.0.0.1:{handle.prometheus_port}/metrics", None, context) == 200
        assert time.monotonic() - started < 1.0
        assert stuck[0].recv(1) == b"" and stuck[1].recv(1) == b""  # closed by the server at the timeout
    finally:
        for client in stuck:
            client.close()


def test_mutual_tls(certs):
    """RequireAndVerifyClientCert: a client without a certificate is refused, one with a CA-signed one served."""
    handle = _start(_web(certs.ca.parent, {"tls_server_config": {
        "cert_file": "server.crt", "key_file": "server.key", "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": "ca.crt", "min_version": "TLS13"}}))
    url = f"https://127.0.0.1:{handle.prometheus_port}/metrics"
    context = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(REFUSED):
        _get(url, context=context)
    context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    assert _get(url, context=context) == 200


def test_http_server_config_headers(certs):
    """http_server_config.headers are added to every response."""
    handle = _start(_web(certs.ca.parent, {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}))
    with urllib.request.urlopen(f"http://127.0.0.1:{handle.prometheus_port}/metrics", timeout=10) as response:
        assert response.headers["X-Frame-Options"] == "deny"


@pytest.mark.parametrize(("content", "key", "allowed"), [
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS9"}},
     "tls_server_config.min_version", "TLS12"),
    ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "server.key"}},
     "tls_server_config.cert_file", "readable PEM file"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "client.key"}},
     "tls_server_config.key_file", "private key matching"),
    ({"tls_server_config": {"cert_file": "server.crt"}}, "tls_server_config", "both cert_file and key_file"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequestClientCert"}},
     "tls_server_config.client_auth_type", "RequireAndVerifyClientCert"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequireAndVerifyClientCert"}},
     "tls_server_config.client_ca_file", "a CA file"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "cipher_suites": ["X"]}},
     "tls_server_config.cipher_suites", "cannot honour"),
    ({"tls_server_confg": {}}, "tls_server_confg", "tls_server_config, basic_auth_users"),
    ({"basic_auth_users": {"u:x": "$2b$10$" + "a" * 53}}, "basic_auth_users", "without ':'"),
    ({"basic_auth_users": []}, "basic_auth_users", "bcrypt hash"),
    ({"http_server_config": {"headers": {"X": "a\r\nb"}}}, "http_server_config.headers", "one-line"),
])
def test_invalid_web_config_is_a_config_error_at_init(certs, content, key, allowed):
    """A broken web config fails init_telemetry with ConfigError naming the file's key and what is allowed."""
    with pytest.raises(ConfigError) as info:
        _start(_web(certs.ca.parent, content))
    message = str(info.value)
    assert "prometheus.web_config_file" in message and repr(key) in message and allowed in message, message
    assert otel_rl.current() is None


def test_a_plaintext_password_in_place_of_a_hash_is_refused_and_not_shown(certs):
    """A password written where the bcrypt hash belongs is refused and never repeated in the error."""
    with pytest.raises(ConfigError) as info:
        _start(_web(certs.ca.parent, {"basic_auth_users": {"prometheus": PASSWORD}}))
    assert "basic_auth_users.prometheus" in str(info.value) and PASSWORD not in str(info.value)


def test_web_config_from_the_environment(certs, hashed, monkeypatch):
    """OTEL_RL_PROMETHEUS_WEB_CONFIG_FILE sets prometheus.web_config_file."""
    monkeypatch.setenv("OTEL_RL_PROMETHEUS_WEB_CONFIG_FILE",
                       _web(certs.ca.parent, {"basic_auth_users": {"prometheus": hashed}}))
    handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
    assert _get(f"http://127.0.0.1:{handle.prometheus_port}/metrics") == 401
    assert repr(hashed) not in repr(load_web_config(handle.settings.prometheus.web_config_file))


def _alias_bomb() -> str:
    """A few hundred bytes of nested aliases that expand to 9**9 nodes."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join(["*" + "abcdefghi"[i]] * 9) + "]")
    return "\n".join(lines).replace("\n", "\n  ").join(["http_server_config:\n  ", "\n  headers: *i\n"])


@pytest.mark.parametrize(("content", "refused"), [
    ("http_server_config:\n  headers: {a: " + "[" * 150 + "]" * 150 + "}\n", "at most 100 levels deep"),
    (_alias_bomb(), "more than 100_000 YAML nodes through its aliases"),
])
def test_web_config_yaml_has_the_limits_of_a_config_file(tmp_path, content, refused):
    """A web config nested past 100 levels, or expanding through aliases past 100 000 nodes, is refused as a config
    file is: a ConfigError naming the setting and the file, before PyYAML builds the document."""
    web = tmp_path / "web.yml"
    web.write_text(content)
    with pytest.raises(ConfigError) as info:
        _start(str(web))
    message = str(info.value)
    assert "prometheus.web_config_file" in message and repr(str(web)) in message and refused in message, message


def test_the_web_config_is_parsed_once(certs, monkeypatch):
    """init_telemetry checks the web config and binds its endpoint with it, and serve_prometheus binds a new endpoint
    with it after stop_prometheus: the file is parsed once, and every endpoint has the same parsed object."""
    parses = []
    parse = webconfig._http  # runs once in every parse of a file
    monkeypatch.setattr(webconfig, "_http", lambda *args: parses.append(args[0]) or parse(*args))
    handle = _start(_web(certs.ca.parent, {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}}))
    first = handle.server.web_config
    handle.stop_prometheus(handle.server)
    server = handle.serve_prometheus("127.0.0.1", 0)
    assert server is not None and server.web_config is first
    assert len(parses) == 1, parses
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
        assert response.headers["X-Frame-Options"] == "deny"


def test_a_changed_web_config_or_a_rotated_certificate_is_parsed_again(tmp_path, certs):
    """The same object while nothing changed; a new one when the file's bytes change or when a certificate and key
    it names are replaced (a rotated certificate is served from then on)."""
    for name in ("server.crt", "server.key", "ca.crt"):
        (tmp_path / name).write_bytes((certs.ca.parent / name).read_bytes())
    path = _web(tmp_path, {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}})
    first = load_web_config(path)
    assert load_web_config(path) is first
    Path(path).write_text(Path(path).read_text() + "http_server_config: {headers: {X-Frame-Options: deny}}\n")
    second = load_web_config(path)
    assert second is not first and dict(second.headers) == {"X-Frame-Options": "deny"}
    assert load_web_config(path) is second
    (tmp_path / "server.crt").write_bytes(certs.client_cert.read_bytes())  # another certificate, and its key
    (tmp_path / "server.key").write_bytes(certs.client_key.read_bytes())
    third = load_web_config(path)
    assert third is not second and load_web_config(path) is third
    webconfig.forget_parsed()
    assert load_web_config(path) is not third


def test_a_forked_child_parses_the_web_config_again(certs):
    """A child does not reuse its parent's parsed object: a parent thread may have held one of its locks at fork."""
    import os

    path = _web(certs.ca.parent, {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}})
    parent = load_web_config(path)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.write(write, b"same" if load_web_config(path) is parent else b"new")
        finally:
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 16)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert answer == b"new"
    assert load_web_config(path) is parent
