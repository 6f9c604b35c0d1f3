"""One request to the metrics endpoint: its head read and checked, its response written.

:class:`MetricsHandler` serves ``GET /metrics`` (through the server's :class:`~otel_rl._internal.scrape.SharedRender`)
and ``GET /health``, after the basic-auth check of the web configuration. A request is a :class:`PendingRequest`
while the connection loop reads its head and a :class:`ReadyRequest` once the head is in. The helpers here read a
head (:func:`authorization`, :func:`is_http_1`, :func:`accepts_gzip`) and write the refusals the connection loop
sends without a handler (:func:`plain_response`).

Imports the scrape (:mod:`otel_rl._internal.scrape`) and the web configuration's type; the server
(:mod:`otel_rl._internal.http_server`) imports this module, never the other way round.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from otel_rl._internal.scrape import Body, SharedRender
from otel_rl._internal.webconfig import WebConfig

_logger = logging.getLogger("otel_rl")

#: Seconds one socket operation may wait while a request is served (sending the response).
REQUEST_TIMEOUT = 10.0
_UNAUTHORIZED = {"WWW-Authenticate": 'Basic realm="otel-rl", charset="UTF-8"'}


def plain_response(status: str, text: str) -> bytes:
    """A whole response, for refusals written from the connection loop (no handler, no thread)."""
    body = text.encode()
    return (f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


NOT_HTTP_1 = plain_response("400 Bad Request", "Bad request: an HTTP/1.0 or HTTP/1.1 request line expected.\n")
TOO_LARGE = plain_response("431 Request Header Fields Too Large", "Request headers too large.\n")

_AUTHORIZATION = re.compile(rb"\nauthorization:[ \t]*([^\r\n]*)", re.IGNORECASE)


def authorization(head: bytes) -> str | None:
    """The ``Authorization`` header of a request head, or None."""
    found = _AUTHORIZATION.search(head)
    return found.group(1).decode("latin-1").strip() if found else None


def is_http_1(line: bytes) -> bool:
    """Whether a request line is ``METHOD target HTTP/1.x`` (HTTP/0.9 has no version and no headers)."""
    words = line.rstrip(b"\r").split()
    return len(words) == 3 and words[2].startswith(b"HTTP/1.")


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


class ReadyRequest:
    """A connection whose request headers have arrived: the socket and the bytes read so far."""

    __slots__ = ("sock", "head")

    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self.sock, self.head = sock, head


class PendingRequest:
    """A connection the loop is still reading: TLS handshake, then request line and headers, before a deadline."""

    __slots__ = ("sock", "address", "deadline", "buffer", "handshaken")

    def __init__(self, sock: socket.socket, address: Any, deadline: float, handshaken: bool) -> None:
        self.sock, self.address, self.deadline, self.handshaken = sock, address, deadline, handshaken
        self.buffer = bytearray()


class Endpoint(Protocol):
    """What a handler uses of its server."""

    web_config: WebConfig | None
    shared: SharedRender
    health: Callable[[], dict[str, Any]]

    def scrape_started(self) -> int: ...

    def scrape_served(self, number: int) -> None: ...


class MetricsHandler(BaseHTTPRequestHandler):
    """Serves one request whose line and headers the connection loop has already read (``request.head``)."""

    server: Endpoint  # type: ignore[assignment]  # a MetricsServer, which is also a socketserver.TCPServer
    request: ReadyRequest
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
