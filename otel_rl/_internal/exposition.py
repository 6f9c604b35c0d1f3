"""The Prometheus pull path: a reader's collection rendered as Prometheus text, served over HTTP.

Rendering goes through prometheus_client's own encoders (text 0.0.4 and OpenMetrics), so escaping and number
formatting (``le="10.0"``) are exactly what the original ``prometheus_metrics`` module exposed. Families are
built from OTel data points with no ``otel_scope_*`` labels and no ``target_info``, so the pull path shows the
same series as the collector path.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import gzip
import io
import json
import logging
import math
import re
import resource
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from otel_rl._internal.catalog import ALL_METRICS, BY_NAME
from otel_rl._internal.errors import ConfigError
from otel_rl._internal.resource_catalog import (
    RESOURCE_BY_OTEL_NAME,
    RESOURCE_METRICS,
    prometheus_label,
    prometheus_name,
)
from otel_rl._internal.store import _utf8
from otel_rl._internal.webconfig import WebConfig

_logger = logging.getLogger("otel_rl")
#: Seconds between the connection loop's checks for a shutdown request (the standard library's default is 0.5).
_POLL_INTERVAL = 0.02
#: Seconds between accept() tries while the process is out of file descriptors and no connection can be closed.
_ACCEPT_PAUSE = 0.25


def label_value(value: Any) -> Any:
    """A label value as the pull path exposes it: a carriage return as the two characters ``\\r``.

    The exposition formats escape only backslash, double quote and line feed; a raw carriage return is allowed by
    them but ends the line for any reader with universal newlines, and ``\\r`` is an invalid escape for promtool
    and Go's parser. The text ``\\r`` (its backslash escaped by the encoder) parses everywhere."""
    return value.replace("\r", "\\r") if isinstance(value, str) and "\r" in value else value


def families(data: MetricsData | None) -> list[PromMetric]:
    """One prometheus_client family per catalog metric (empty ones too, as prometheus_client shows them)."""
    found: dict[str, Any] = {}
    if data is not None:
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for otel_metric in sm.metrics:
                    found.setdefault(otel_metric.name, otel_metric)
    result = []
    for spec in ALL_METRICS:
        family = PromMetric(spec.family, spec.help, spec.type)
        metric = found.get(spec.name)
        if metric is not None:
            _add_samples(family, spec.name, metric.data)
        result.append(family)
    result.extend(_resource_families(found))
    for name, metric in found.items():  # anything not in the catalog (your instruments) still shows
        if name not in BY_NAME and name not in RESOURCE_BY_OTEL_NAME:
            result.append(_other_family(name, metric))
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
            if text and _utf8(key) is key and _utf8(text) is text:
                labels[prometheus_label(key)] = label_value(text)
    return labels


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


class _Families(Collector):
    def __init__(self, collect: Callable[[], MetricsData | None]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[PromMetric]:
        return iter(families(self._collect()))


#: A response body: bytes, or a read-only view of the memory map the store's renderer wrote (see render.py).
Body = bytes | memoryview


class Exposition:
    """Renders the current state on demand; thread-safe (concurrent scrapes collect one at a time)."""

    def __init__(self, collect: Callable[[], MetricsData | None],
                 fast: Callable[[Callable[..., bytes]], Body | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(collect))
        self._fast = fast  # renders the same bytes from the store (otel_rl._internal.render); None: not for this
        self._lock = threading.Lock()

    def render(self, accept: str = "") -> tuple[Body, str]:
        """The exposition and its content type; OpenMetrics when ``accept`` asks for it."""
        encoder, content_type = choose_encoder(accept)
        with self._lock:
            body = self._fast(encoder) if self._fast is not None else None
            return (body if body is not None else encoder(self.registry)), content_type

    def after_fork_in_child(self) -> None:
        """A forked child may have inherited the lock held by a scrape in progress: use a new one."""
        self._lock = threading.Lock()


#: Seconds a client has, from connecting, to finish the TLS handshake and send its request headers. Until then
#: it costs no serving slot and no thread, only a file descriptor; idle and slow ("slowloris") clients are closed.
HEADER_TIMEOUT = 10.0
#: Seconds one socket operation may wait while a request is served (sending the response).
REQUEST_TIMEOUT = 10.0
#: Seconds one connection may be served in all, however slowly the client reads the response.
REQUEST_DEADLINE = 30.0
#: Requests served at once, each in its own short-lived thread. Requests whose headers have arrived wait in a
#: queue for a slot; connections still sending headers never take one.
MAX_CONNECTIONS = 32
#: Further serving threads only for requests whose credentials were checked before (Prometheus' scrapes), for when
#: the others all wait for a bcrypt check (a flood of wrong passwords).
RESERVED_CONNECTIONS = 4
#: Most connections kept open at once (sending headers, queued, served). The effective bound is also at most half
#: the process' file-descriptor soft limit (``ulimit -n``); past it the oldest connection still sending its headers
#: is closed, so a flood of idle clients cannot lock out a scrape that sends its request at once.
MAX_OPEN = 4096
#: Most bytes of a request line and headers (as Go's net/http, 1 MiB there; a scrape sends a few hundred).
MAX_HEADER_BYTES = 64 * 1024
#: The listen backlog: hundreds of simultaneous scrapes wait there instead of being refused (the old default was 5).
BACKLOG = 1024
_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="otel-rl", charset="UTF-8"'}


def _plain_response(status: str, text: str) -> bytes:
    """A whole response, for refusals written from the connection loop (no handler, no thread)."""
    body = text.encode()
    return (f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


_NOT_HTTP_1 = _plain_response("400 Bad Request", "Bad request: an HTTP/1.0 or HTTP/1.1 request line expected.\n")
_TOO_LARGE = _plain_response("431 Request Header Fields Too Large", "Request headers too large.\n")


def open_limit() -> int:
    """:data:`MAX_OPEN`, bounded by half the file-descriptor soft limit (the rest is the application's)."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN
    return max(16, min(MAX_OPEN, soft // 2))


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip, honouring q-values (``gzip;q=0`` means "not gzip")."""
    gzip_q = star_q = None
    for part in accept_encoding.split(","):
        name, *params = part.split(";")
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        name = name.strip().lower()
        if name in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif name == "*":
            star_q = q
    chosen = gzip_q if gzip_q is not None else star_q
    return chosen is not None and chosen > 0  # NaN is not > 0


class _SharedRender:
    """Concurrent scrapes share renders: one that arrives while a render runs waits and shares the next one.

    The next one, not the running one, so every scrape still sees all values recorded before it arrived. However
    many clients scrape at once, at most one render per output format runs at a time, which keeps a scrape storm
    from taking CPU (and the GIL) from training.
    """

    def __init__(self, exposition: Exposition) -> None:
        self._exposition = exposition
        self._cond = threading.Condition()
        self._state: dict[str, list[Any]] = {}  #: content type -> [started, finished, running, result]
        self._gzipped: tuple[Body, bytes] | None = None  #: (body, its gzip): scrapes sharing a body share this too
        self._gzip_lock = threading.Lock()

    def render(self, accept: str) -> tuple[Body, str]:
        key = choose_encoder(accept)[1]
        with self._cond:
            state = self._state.setdefault(key, [0, 0, False, None])
            need = state[0] + 1  # the first render that starts after this call
            while True:
                if state[1] >= need:
                    return state[3]
                if not state[2]:
                    state[0] += 1
                    number, state[2] = state[0], True
                    break
                self._cond.wait()
        result = None
        try:
            result = self._exposition.render(accept)
            return result
        finally:
            with self._cond:
                state[2] = False
                if result is not None:
                    state[1], state[3] = number, result
                self._cond.notify_all()


    def gzip(self, body: Body) -> bytes:
        """``body`` gzipped, once per body: scrapes sharing a render wait for one compression."""
        with self._gzip_lock:
            last = self._gzipped
            if last is not None and last[0] is body:
                return last[1]
            # The whole body in one call: zlib releases the GIL while it compresses, and a thread that takes the
            # GIL back waits up to the interpreter's switch interval each time, so compressing chunk by chunk next
            # to a busy training thread made a scrape take seconds.
            compressed = gzip.compress(body, compresslevel=6)
            self._gzipped = (body, compressed)
            return compressed


class _Handler(BaseHTTPRequestHandler):
    """Serves one request whose line and headers the connection loop has already read (``request.head``)."""

    server: MetricsServer
    request: _Ready
    timeout = REQUEST_TIMEOUT

    def setup(self) -> None:
        self.connection = self.request.sock
        self.connection.settimeout(self.timeout)
        self.rfile = io.BytesIO(self.request.head)
        self.wfile = _SocketWriter(self.connection)

    def send_response(self, code: int, message: str | None = None) -> None:
        """The status line and Date, without http.server's ``Server:`` header (it names the Python version)."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        web = self.server.web_config
        headers = dict(web.headers) if web is not None else {}
        if web is not None and not web.authorized(self.headers.get("Authorization")):
            # Every path, /health included, as Prometheus exporters do: /health names the service and version.
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8", {**headers, **_UNAUTHORIZED})
            return
        number = None
        try:
            if path == "/metrics":
                number = self.server.scrape_started() if self.command == "GET" else None
                body, content_type = self.server.shared.render(self.headers.get("Accept", ""))
                if accepts_gzip(self.headers.get("Accept-Encoding") or ""):
                    body = self.server.shared.gzip(body)
                    headers["Content-Encoding"] = "gzip"
                response = (200, body, content_type)
            elif path == "/health":
                response = (200, json.dumps(self.server.health()).encode(), "application/json")
            else:
                response = (404, b"Not Found. Try /metrics or /health.\n", "text/plain; charset=utf-8")
        except Exception as exc:  # noqa: BLE001 (never let a scrape take the server down; one line, no traceback)
            _logger.error("otel-rl: error while serving %s: %r", path, exc)
            response = (500, b"internal error\n", "text/plain; charset=utf-8")
            number = None
        self._send(*response, headers)
        if number is not None:
            self.server.scrape_served(number)

    def _send(self, status: int, body: Body, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815 (http.server's naming)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 10 s would flood the training log
        _logger.debug("otel-rl metrics server: " + format, *args)


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes with ``sendall``: a body (a memory map's view, megabytes) goes to the socket in one C call
    that releases the GIL while it waits, with no copy into a buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


class _Ready:
    """A connection whose request headers have arrived: the socket and the bytes read so far."""

    __slots__ = ("sock", "head")

    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self.sock, self.head = sock, head


class _Pending:
    """A connection the loop is still reading: TLS handshake, then request line and headers, before a deadline."""

    __slots__ = ("sock", "address", "deadline", "buffer", "handshaken")

    def __init__(self, sock: socket.socket, address: Any, deadline: float, handshaken: bool) -> None:
        self.sock, self.address, self.deadline, self.handshaken = sock, address, deadline, handshaken
        self.buffer = bytearray()


class MetricsServer(socketserver.TCPServer):
    """``GET /metrics`` and ``GET /health`` on host:port.

    One thread (the connection loop) accepts connections and reads each request's TLS handshake and headers with a
    selector, without blocking, for at most :data:`HEADER_TIMEOUT` seconds; idle or slow clients cost a file
    descriptor there and nothing else. A request whose headers are in is served by one of at most
    :data:`MAX_CONNECTIONS` short-lived threads (:data:`RESERVED_CONNECTIONS` more for credentials already checked,
    which also go first). At most :func:`open_limit` connections are open at once: past it, the oldest one still
    sending headers is closed. With a web configuration, connections are TLS and/or need basic
    auth. The address family (IPv4 or IPv6) follows the host.
    """

    allow_reuse_address = True
    request_queue_size = BACKLOG
    header_timeout = HEADER_TIMEOUT
    request_deadline = REQUEST_DEADLINE

    def __init__(self, host: str, port: int, exposition: Exposition,
                 health: Callable[[], dict[str, Any]], web_config: WebConfig | None = None) -> None:
        self.address_family = _family(host, port)
        self._selector = selectors.DefaultSelector()
        self._waker = socket.socketpair()  #: stop() writes a byte to wake the loop at once
        super().__init__((host, port), _Handler)  # a bind failure closes the above too (server_close)
        self.exposition = exposition
        self.shared = _SharedRender(exposition)
        self.health = health
        self.web_config = web_config
        self.scrapes = 0  #: scrapes started; each gets the next number
        self._served = 0  #: the highest number of a scrape whose response was sent
        self._scrape_event = threading.Condition()
        self.open_limit = open_limit()
        self._accept_after = 0.0  #: monotonic time before which accept() is not tried (after EMFILE)
        self._pending: dict[socket.socket, _Pending] = {}  #: insertion order is accept order: oldest first
        self._ready: collections.deque[tuple[_Ready, Any]] = collections.deque()
        self._workers = 0  #: serving threads running (at most MAX_CONNECTIONS)
        self._ready_lock = threading.Lock()
        self._closing = threading.Event()
        self._deadlines: dict[Any, float] = {}  #: connection being served -> monotonic time it is cut off
        self._deadlines_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="otel-rl-metrics-server", daemon=True)
        self._watchdog = threading.Thread(target=self._expire, name="otel-rl-metrics-watchdog", daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def scheme(self) -> str:
        return "https" if self.web_config is not None and self.web_config.ssl_context is not None else "http"

    def start(self) -> MetricsServer:
        self.socket.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._selector.register(self._waker[0], selectors.EVENT_READ)
        self._thread.start()
        self._watchdog.start()
        return self

    # -- the connection loop: accept, handshake, read headers ------------------------------------------------------

    def _loop(self) -> None:
        accepting = True
        while not self._closing.is_set():
            now = time.monotonic()
            while self._pending:  # oldest first, and all have the same timeout: stop at the first in time
                oldest = next(iter(self._pending.values()))
                if oldest.deadline > now:
                    break
                _logger.debug("otel-rl metrics server: closing %s, no request within %.0f s", oldest.address,
                              self.header_timeout)
                self._drop(oldest.sock)
            want = (self._open() < self.open_limit or bool(self._pending)) and now >= self._accept_after
            if want != accepting:  # at the limit with nothing to evict: leave new clients in the listen backlog
                if want:
                    self._selector.register(self.socket, selectors.EVENT_READ)
                else:
                    self._selector.unregister(self.socket)
                accepting = want
            # Asleep until a connection has news, the oldest pending one times out, or stop() writes to the waker;
            # a short nap only while at the limit (serving threads finishing do not wake the selector).
            wait = _POLL_INTERVAL if not accepting else 1.0
            if self._pending:
                wait = min(wait, max(0.0, next(iter(self._pending.values())).deadline - now))
            try:
                events = self._selector.select(wait)
            except (OSError, ValueError):  # the selector was closed by stop()
                return
            for key, _ in events:
                if key.fileobj is self.socket:
                    self._accept()
                elif key.fileobj is self._waker[0]:
                    return
                else:
                    pending = self._pending.get(key.fileobj)  # type: ignore[call-overload]
                    if pending is not None:
                        self._advance(pending)

    def _open(self) -> int:
        with self._ready_lock:
            return len(self._pending) + len(self._ready) + self._workers

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time, then the others get their turn
            if self._open() >= self.open_limit:
                if not self._pending:
                    return
                oldest = next(iter(self._pending.values()))
                _logger.debug("otel-rl metrics server: %d connections open, closing the oldest still sending its "
                              "request (%s)", self.open_limit, oldest.address)
                self._drop(oldest.sock)
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE / ENFILE: out of descriptors; free one and retry on the next round
                _logger.debug("otel-rl metrics server: accept failed: %r", exc)
                if self._pending:
                    self._drop(next(iter(self._pending)))
                else:  # the application holds them all: the backlog stays ready, retrying at once would spin
                    self._accept_after = time.monotonic() + _ACCEPT_PAUSE
                return
            sock.setblocking(False)
            tls = self.web_config.ssl_context if self.web_config is not None else None
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except OSError:
                    sock.close()
                    continue
            pending = _Pending(sock, address, time.monotonic() + self.header_timeout, handshaken=tls is None)
            self._pending[sock] = pending
            self._selector.register(sock, selectors.EVENT_READ)
            self._advance(pending)  # the request may already be there

    def _advance(self, pending: _Pending) -> None:
        """Take the connection as far as it goes without blocking; hand it to a serving thread once complete."""
        sock = pending.sock
        try:
            if not pending.handshaken:
                assert isinstance(sock, ssl.SSLSocket)
                try:
                    sock.do_handshake()
                except ssl.SSLWantReadError:
                    self._selector.modify(sock, selectors.EVENT_READ)
                    return
                except ssl.SSLWantWriteError:
                    self._selector.modify(sock, selectors.EVENT_WRITE)
                    return
                pending.handshaken = True
                self._selector.modify(sock, selectors.EVENT_READ)
            while True:
                try:
                    chunk = sock.recv(8192)
                except (BlockingIOError, ssl.SSLWantReadError):
                    return
                except ssl.SSLWantWriteError:
                    self._selector.modify(sock, selectors.EVENT_WRITE)
                    return
                if not chunk:  # the client went away
                    self._drop(sock)
                    return
                pending.buffer += chunk
                line_end = pending.buffer.find(b"\n")
                if line_end >= 0 and not _is_http_1(bytes(pending.buffer[:line_end])):
                    # HTTP/0.9 (no version, no headers to wait for) or not HTTP at all: refuse at once.
                    self._refuse(pending, _NOT_HTTP_1)
                    return
                end = pending.buffer.find(b"\r\n\r\n")
                if end < 0:
                    end = pending.buffer.find(b"\n\n")
                if end >= 0:
                    self._hand_over(pending)
                    return
                if len(pending.buffer) > MAX_HEADER_BYTES:
                    self._refuse(pending, _TOO_LARGE)
                    return
        except OSError as exc:  # reset, TLS handshake failure: routine
            _logger.debug("otel-rl metrics server: connection from %s ended: %r", pending.address, exc)
            self._drop(sock)

    def _refuse(self, pending: _Pending, response: bytes) -> None:
        with contextlib.suppress(OSError):
            pending.sock.send(response)  # best effort: a full socket buffer just gets the close
        self._drop(pending.sock)

    def _forget(self, sock: socket.socket) -> None:
        self._pending.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _drop(self, sock: socket.socket) -> None:
        self._forget(sock)
        self.shutdown_request(sock)

    def _hand_over(self, pending: _Pending) -> None:
        self._forget(pending.sock)
        pending.sock.setblocking(True)
        ready = _Ready(pending.sock, bytes(pending.buffer))
        # Requests with credentials already checked good go first: a flood of wrong passwords (each waiting for a
        # bcrypt check in a serving slot) does not delay Prometheus' scrapes.
        web = self.web_config
        first = web is not None and bool(web.users) and web.known(_authorization(ready.head))
        with self._ready_lock:
            if first:
                self._ready.appendleft((ready, pending.address))
            else:
                self._ready.append((ready, pending.address))
            if self._workers >= MAX_CONNECTIONS + (RESERVED_CONNECTIONS if first else 0):
                return  # a running worker takes it when it is done
            self._workers += 1
        try:
            threading.Thread(target=self._work, daemon=True, name="otel-rl-metrics-connection").start()
        except BaseException:
            with self._ready_lock:
                self._workers -= 1
            raise

    def _work(self) -> None:
        """A serving slot: serve queued requests until none is left."""
        while True:
            with self._ready_lock:
                if not self._ready or self._closing.is_set():
                    self._workers -= 1
                    return
                ready, address = self._ready.popleft()
            self._serve(ready, address)

    def _serve(self, ready: _Ready, client_address: Any) -> None:
        with self._deadlines_lock:
            self._deadlines[ready.sock] = time.monotonic() + self.request_deadline
        try:
            self.finish_request(ready, client_address)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 (handle_error decides what is logged)
            self.handle_error(ready, client_address)
        finally:
            with self._deadlines_lock:
                self._deadlines.pop(ready.sock, None)
            self.shutdown_request(ready.sock)

    def _expire(self) -> None:
        """One thread for all served connections: shut down those past their deadline, which ends blocked sends."""
        while not self._closing.wait(min(0.5, self.request_deadline / 4)):
            now = time.monotonic()
            with self._deadlines_lock:
                expired = [request for request, deadline in self._deadlines.items() if deadline < now]
            for request in expired:
                _logger.debug("otel-rl metrics server: closing a connection open longer than %.0f s",
                              self.request_deadline)
                try:  # the plain socket's shutdown, also for TLS: it only wakes the connection's thread
                    socket.socket.shutdown(request, socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or timed out is routine: one debug line, no traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # BrokenPipe, ConnectionReset, timeouts, ssl.SSLError
            _logger.debug("otel-rl metrics server: connection from %s ended: %r", client_address, exc)
        else:
            _logger.error("otel-rl metrics server: error on a connection from %s: %r", client_address, exc)

    # -- scrapes ---------------------------------------------------------------------------------------------------

    def scrape_started(self) -> int:
        """Number a scrape before it collects (so it reads every value recorded before this call)."""
        with self._scrape_event:
            self.scrapes += 1
            return self.scrapes

    def scrape_served(self, number: int) -> None:
        with self._scrape_event:
            self._served = max(self._served, number)
            self._scrape_event.notify_all()

    def wait_for_scrape(self, after: int, timeout: float) -> bool:
        """Block until a scrape that started after scrape number ``after`` was served, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with self._scrape_event:
            while self._served <= after:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._scrape_event.wait(remaining)
        return True

    def stop(self) -> None:
        """Stop accepting, close connections still sending headers and those queued; requests being served end."""
        self._closing.set()
        with contextlib.suppress(OSError):
            self._waker[1].send(b"x")
        if self._thread.is_alive():
            self._thread.join(5.0)
        for sock in list(self._pending):
            self._drop(sock)
        with self._ready_lock:
            queued = [ready.sock for ready, _ in self._ready]
            self._ready.clear()
        for sock in queued:
            self.shutdown_request(sock)
        self.server_close()

    def server_close(self) -> None:
        """Close the listening socket, the selector and the waker (also when the server never started)."""
        super().server_close()
        self._selector.close()
        for end in self._waker:
            end.close()

    def close_inherited(self) -> None:
        """In a forked child: close the inherited listening socket and connections, never join the parent's threads.

        The loop and serving threads only run in the parent. Closing the child's copies lets the port be freed as
        soon as the parent stops serving.
        """
        self._scrape_event = threading.Condition()
        self._ready_lock = threading.Lock()
        self._closing.set()
        served = list(self._deadlines)  # connections the parent's threads serve: the child's copies would keep
        # them open after the parent closed them
        for sock in [*self._pending, *(ready.sock for ready, _ in self._ready), *served, self.socket, *self._waker]:
            with contextlib.suppress(OSError):
                sock.close()
        with contextlib.suppress(OSError):
            self._selector.close()


_AUTHORIZATION = re.compile(rb"\nauthorization:[ \t]*([^\r\n]*)", re.IGNORECASE)


def _authorization(head: bytes) -> str | None:
    """The ``Authorization`` header of a request head, or None."""
    found = _AUTHORIZATION.search(head)
    return found.group(1).decode("latin-1").strip() if found else None


def _is_http_1(line: bytes) -> bool:
    """Whether a request line is ``METHOD target HTTP/1.x`` (HTTP/0.9 has no version and no headers)."""
    words = line.rstrip(b"\r").split()
    return len(words) == 3 and words[2].startswith(b"HTTP/1.")


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for ``::``, ``::1`` and names that resolve only to IPv6; IPv4 otherwise. Raises socket.gaierror."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    families = [info[0] for info in infos]
    return socket.AF_INET if socket.AF_INET in families else families[0]


_ALLOWED_HOSTS = "an address of this machine or a name resolving to one (0.0.0.0 or :: for every interface, " \
                 "127.0.0.1 or ::1 for loopback only)"


def bind_server(host: str, port: int, exposition: Exposition, health: Callable[[], dict[str, Any]],
                strict: bool, web_config: WebConfig | None = None) -> MetricsServer | None:
    """Bind the endpoint. A failure is logged and training goes on, or with ``strict`` raises ConfigError.

    The message says what went wrong: a host that does not resolve, an address this machine does not have, a port
    in use or one that needs privileges.
    """
    try:
        return MetricsServer(host, port, exposition, health, web_config)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        message = f"prometheus.host {host!r} cannot be resolved ({_reason(exc)}); allowed: {_ALLOWED_HOSTS}"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = (f"prometheus.port {port} on host {host!r} is already in use; allowed: a free port "
                       "(0 picks one)")
        elif exc.errno == errno.EADDRNOTAVAIL:
            message = (f"prometheus.host {host!r} is not an address of this machine ({_reason(exc)}); allowed: "
                       f"{_ALLOWED_HOSTS}")
        elif exc.errno == errno.EACCES:
            message = (f"prometheus.port {port} on host {host!r} needs privileges ({_reason(exc)}); allowed: a "
                       "port from 1024 to 65535, or 0 to pick a free one")
        else:
            message = (f"prometheus.port {port} on host {host!r} cannot be bound ({_reason(exc)}); allowed: a "
                       "free port (0 picks one) on an address of this machine")
    if strict:
        raise ConfigError(message) from None
    _logger.error("otel-rl: %s. Training continues without the /metrics endpoint "
                  "(set prometheus.strict: true to make this an error).", message)
    return None


def _reason(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))[:200]
