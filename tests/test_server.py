"""The metrics endpoint's limits and binding (http_server.MetricsServer), against real sockets on loopback."""

from __future__ import annotations

import contextlib
import gzip
import logging
import mmap
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import otel_rl
from otel_rl._internal import http_server
from otel_rl._internal.errors import ConfigError
from otel_rl._internal.http_handler import accepts_gzip

from procs import wait_until


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def _start(host: str = "127.0.0.1"):
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": host, "port": 0}})
    return handle, f"http://{'[' + host + ']' if ':' in host else host}:{handle.prometheus_port}"


def _raise_fd_limit(needed: int) -> None:
    """Raise this process' soft descriptor limit (both ends of every test connection live here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"the test needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _timed_scrape(url: str) -> float:
    started = time.monotonic()
    status, _, body = _get(url + "/metrics", timeout=30)
    assert status == 200 and b"rl_training_episode_reward_count{" in body
    return time.monotonic() - started


def test_idle_and_slowloris_floods_do_not_block_scrapes():
    """With 1,000 idle connections and 300 sending their headers a byte at a time open, scrapes answer within 1 s
    (a server that served connections in accept order behind 32 slots would make a scrape wait for the flood)."""
    _raise_fd_limit(4096)  # both ends of 1,300 connections; the endpoint may then hold 2,048
    handle, url = _start()
    assert handle.server is not None
    otel_rl.record_episode("PPO", "run-1", 1.5, 10)
    address = ("127.0.0.1", handle.prometheus_port)
    idle = [socket.create_connection(address, timeout=10) for _ in range(1000)]
    slow = [socket.create_connection(address, timeout=10) for _ in range(300)]
    stop = threading.Event()

    def trickle() -> None:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        for byte in request:  # bounded: at most len(request) rounds
            for client in slow:
                with contextlib.suppress(OSError):
                    client.send(bytes([byte]))
            if stop.wait(0.2):
                return

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        # The flood is established first: every connection accepted and still sending its headers (scrapes run
        # before the loop has taken the flood would prove nothing).
        deadline = time.monotonic() + 10
        while len(handle.server._pending) < 1300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(handle.server._pending) >= 1300, len(handle.server._pending)
        latencies = [_timed_scrape(url) for _ in range(10)]
        assert max(latencies) < 1.0, latencies
        assert len(handle.server._pending) >= 1000  # the flood is still open
    finally:
        stop.set()
        trickler.join(10)
        for client in idle + slow:
            client.close()


def test_at_the_open_connection_limit_the_oldest_idle_connection_is_closed(monkeypatch):
    """Past the open-connection limit the oldest connection still sending headers is closed: descriptors stay
    bounded and a scrape still gets through at once."""
    monkeypatch.setattr(http_server, "MAX_OPEN", 100)
    handle, url = _start()
    otel_rl.record_episode("PPO", "run-1", 1.5, 10)
    before = _open_fds()
    clients = [socket.create_connection(("127.0.0.1", handle.prometheus_port), timeout=5) for _ in range(400)]
    try:
        deadline = time.monotonic() + 20
        while _open_fds() - before - len(clients) > 100 + 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _open_fds() - before - len(clients) <= 100 + 4
        assert _timed_scrape(url) < 1.0
        assert clients[0].recv(1) == b""  # the oldest was closed by the server
    finally:
        for client in clients:
            client.close()


def test_idle_connections_time_out(monkeypatch):
    """A connection that sends no request is closed after the header timeout."""
    monkeypatch.setattr(http_server.MetricsServer, "header_timeout", 0.5)
    handle, url = _start()
    client = socket.create_connection(("127.0.0.1", handle.prometheus_port), timeout=10)
    try:
        started = time.monotonic()
        assert client.recv(1) == b""  # the server closed the idle connection
        assert time.monotonic() - started < 5
    finally:
        client.close()


def test_a_connection_trickling_bytes_is_cut_off_at_the_header_timeout(monkeypatch):
    """A client sending a header byte every 0.2 s (never idle for long) is disconnected at the header timeout."""
    monkeypatch.setattr(http_server.MetricsServer, "header_timeout", 1.0)
    handle, _ = _start()
    client = socket.create_connection(("127.0.0.1", handle.prometheus_port), timeout=5)
    started = time.monotonic()
    try:
        for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200:
            client.sendall(bytes([byte]))
            time.sleep(0.2)
            if time.monotonic() - started > 15:
                break
    except OSError:  # reset by the server: cut off
        pass
    else:
        assert client.recv(100) == b"", "the connection is still open"
    finally:
        client.close()
    assert time.monotonic() - started < 10


def test_http_0_9_is_refused_at_once_and_no_server_header_names_python():
    """An HTTP/0.9 request (no version, so no headers to wait for) gets a 400 at once; responses carry no
    ``Server:`` header (http.server's names the Python version)."""
    handle, url = _start()
    with socket.create_connection(("127.0.0.1", handle.prometheus_port), timeout=10) as client:
        started = time.monotonic()
        client.sendall(b"GET /metrics\r\n")
        response = b""
        while chunk := client.recv(4096):
            response += chunk
        assert response.startswith(b"HTTP/1.0 400 ") and time.monotonic() - started < 2
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        assert response.status == 200 and "Server" not in response.headers
        assert "Python" not in str(response.headers)
    request = urllib.request.Request(url + "/nowhere")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 404 and "Server" not in info.value.headers


def test_oversized_request_headers_are_refused_at_once():
    """Request headers past 64 KiB get a 431 and the connection is closed (they are never buffered without end)."""
    handle, url = _start()
    with socket.create_connection(("127.0.0.1", handle.prometheus_port), timeout=10) as client:
        with contextlib.suppress(OSError):  # the server may close before everything is sent
            client.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.0 431 ")
    assert _get(url + "/metrics")[0] == 200


def test_five_hundred_simultaneous_gets_succeed():
    """500 scrapes started at once all get a 200 (with a listen backlog of 5, most would be refused or time out)."""
    _, url = _start()
    barrier = threading.Barrier(500)
    results: list[object] = []

    def scrape() -> None:
        barrier.wait()
        try:
            results.append(_get(url + "/metrics", timeout=60)[0])
        except Exception as exc:  # noqa: BLE001 (collected and reported below)
            results.append(exc)

    threads = [threading.Thread(target=scrape) for _ in range(500)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    failures = [r for r in results if r != 200]
    assert len(results) == 500 and not failures, failures[:5]


def test_concurrent_scrapes_share_renders(monkeypatch):
    """Scrapes arriving together share a render, and each still sees the values recorded before it arrived."""
    handle, url = _start()
    renders = 0
    original = handle.scrape.render

    def counting(accept: str = ""):
        nonlocal renders
        renders += 1
        time.sleep(0.05)  # a slow render, so scrapes pile up behind it
        return original(accept)

    monkeypatch.setattr(handle.scrape, "render", counting)
    otel_rl.record_episode("PPO", "run-1", 2.0, 5)
    bodies: list[bytes] = []
    threads = [threading.Thread(target=lambda: bodies.append(_get(url + "/metrics")[2])) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(bodies) == 40 and all(b'rl_training_episode_reward_count{' in b for b in bodies)
    assert renders < 20, renders


@pytest.mark.parametrize(("header", "gzipped"), [
    ("gzip", True), ("gzip, deflate, br", True), ("GZIP;q=0.5", True), ("*", True), ("deflate;q=1, *;q=0.1", True),
    ("gzip;q=0", False), ("gzip; q=0.0", False), ("gzip;q=0, *", False), ("*;q=0", False), ("identity", False),
    ("", False), ("gzip;q=nan", False), ("gzip;q=oops", False), ("x-gzip", True),
])
def test_accept_encoding_q_values(header, gzipped):
    """Accept-Encoding is parsed with its q-values: q=0 refuses a coding, `*` stands for any not listed."""
    assert accepts_gzip(header) is gzipped


def test_gzip_q_zero_gets_identity():
    """`Accept-Encoding: gzip;q=0` gets an uncompressed body; plain `gzip` gets a gzip one."""
    _, url = _start()
    _, headers, body = _get(url + "/metrics", {"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in headers and body.startswith(b"# HELP")
    request = urllib.request.Request(url + "/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(response.read()).startswith(b"# HELP")


def test_a_large_scrape_is_served_from_a_memory_map_identical_to_metrics_text():
    """A scrape of thousands of histogram series is rendered into a memory map (no heap buffer of megabytes, whose
    growth copies and faults in fresh memory while holding the GIL) and arrives, plain or gzipped, byte for byte
    as metrics_text(); a bigger next exposition (past the map sized from the last one) is complete too."""
    handle, url = _start()
    for i in range(1000):
        otel_rl.record_episode("PPO", f"agent-{i:05d}", float(i % 300) - 100.0, 10 + i % 90)
    body, _ = handle.scrape.render()
    assert isinstance(body, memoryview) and body.readonly and isinstance(body.obj, mmap.mmap)
    expected = handle.metrics_text()
    assert bytes(body) == expected and len(expected) > 1 << 20
    _, headers, plain = _get(url + "/metrics", {"Accept-Encoding": "identity"})
    assert plain == expected and int(headers["Content-Length"]) == len(expected)
    _, headers, packed = _get(url + "/metrics", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and int(headers["Content-Length"]) == len(packed)
    assert gzip.decompress(packed) == expected and len(packed) < len(expected) / 4
    for i in range(1000, 1990):  # twice the series, longer: the map sized from the last exposition must grow
        otel_rl.record_episode("PPO", f"agent-{i:05d}-{'x' * 60}", 1.0, 10)
    bigger = handle.metrics_text()
    assert bigger.count(b"rl_training_episode_reward_count{") == 1990 and len(bigger) > 2 * len(expected)
    _, _, plain = _get(url + "/metrics", {"Accept-Encoding": "identity"})
    assert plain == bigger


def test_client_disconnecting_mid_response_logs_no_traceback(caplog, capfd):
    """A client that resets the connection before the response is written costs at most a debug line."""
    handle, _ = _start()
    for i in range(300):  # a body of several hundred kB, bigger than the socket buffers
        otel_rl.record_episode("PPO", f"run-{i:04d}-{'x' * 40}", float(i), 10)
    caplog.set_level(logging.DEBUG, logger="otel_rl")
    for _ in range(20):
        client = socket.create_connection(("127.0.0.1", handle.prometheus_port), timeout=5)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        client.recv(100)  # the response started
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST
    server = handle.server
    assert server is not None
    wait_until(lambda: server._workers == 0, 10, interval=0.02, what="the server to finish the reset connections")
    url = f"http://127.0.0.1:{handle.prometheus_port}"
    assert _get(url + "/metrics")[0] == 200  # still serving
    err = capfd.readouterr().err
    assert "Traceback" not in caplog.text and "Traceback" not in err, (caplog.text[-2000:], err[-2000:])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text[-2000:]


@pytest.mark.parametrize("host", ["::1", "::", "127.0.0.1", "localhost"])
def test_loopback_and_ipv6_hosts_can_be_bound(host):
    """IPv6 hosts are bound with an IPv6 socket; loopback names work; the endpoint answers on the bound address."""
    handle, _ = _start(host)
    address = "[::1]" if ":" in host else "127.0.0.1"
    status, _, body = _get(f"http://{address}:{handle.prometheus_port}/metrics")
    assert status == 200 and body.startswith(b"# HELP")


def _strict_error(host: str, port: int = 0) -> str:
    with pytest.raises(ConfigError) as info:
        otel_rl.init_telemetry({"prometheus": {"host": host, "port": port, "strict": True}})
    return str(info.value)


def test_bind_failure_says_the_host_does_not_resolve():
    """An unresolvable host is reported as such, naming prometheus.host, its value and what is allowed."""
    message = _strict_error("no-such-host.invalid")
    assert "prometheus.host 'no-such-host.invalid' cannot be resolved" in message and "allowed:" in message
    assert "free port" not in message


def test_bind_failure_says_the_port_is_taken():
    """A port in use is reported as such, naming prometheus.port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = _strict_error("127.0.0.1", port)
    assert f"prometheus.port {port} on host '127.0.0.1' is already in use" in message
    assert "allowed: a free port" in message


def test_bind_failure_says_the_address_is_not_of_this_machine():
    """An address of no local interface (TEST-NET-1) is reported as such."""
    message = _strict_error("192.0.2.1")
    assert "prometheus.host '192.0.2.1' is not an address of this machine" in message and "allowed:" in message


@pytest.mark.parametrize("host", ["bad\x00host", "run-\udcff", "a" * 64 + ".example"])
def test_bind_failure_on_hosts_that_cannot_be_encoded(host):
    """A host with NUL, a lone surrogate or an over-long label is a ConfigError, not a ValueError/UnicodeError."""
    assert "prometheus.host" in _strict_error(host)


def test_bind_failure_without_strict_logs_and_goes_on(caplog):
    """Without strict, a bind failure is one error line (no traceback) and training goes on."""
    handle = otel_rl.init_telemetry({"prometheus": {"host": "no-such-host.invalid", "port": 0}})
    assert handle.prometheus_port is None
    assert "cannot be resolved" in caplog.text and "Traceback" not in caplog.text


#: A process whose descriptors are all in use (by the application) while a client waits in the listen backlog.
_OUT_OF_DESCRIPTORS = """
import os, resource, sys, time
import otel_rl

handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
print(handle.prometheus_port, flush=True)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
print("full", flush=True)
sys.stdin.readline()  # the client has connected
started = time.process_time()
time.sleep(3)  # the measurement window: CPU time the process spends while it cannot accept
used = time.process_time() - started
for fd in held:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(used, flush=True)
sys.stdin.readline()
"""


def test_out_of_descriptors_the_server_does_not_spin_and_serves_once_some_are_free():
    """accept() failing with EMFILE while nothing can be closed leaves the listening socket ready: a connection
    loop retrying at once would keep a core busy (holding the GIL) for as long as descriptors run out. The loop
    pauses between tries, and serves the waiting client once descriptors are free."""
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", _OUT_OF_DESCRIPTORS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        assert child.stdout.readline() == "full\n"
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        with client:
            client.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            child.stdin.write("connected\n")
            child.stdin.flush()
            used = float(child.stdout.readline())
            assert used < 0.5, f"{used:.2f} s of CPU in 3 s while out of descriptors"
            assert client.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        child.kill()
        child.wait()
