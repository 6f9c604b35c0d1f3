"""The metrics endpoint's server: :class:`MetricsServer` (binding, the connection loop and its limits, serving
threads, each running a :class:`~otel_rl._internal.http_handler.MetricsHandler`) and :func:`bind_server`.

The server is given the :class:`~otel_rl._internal.scrape.Scrape` to serve and the health callable, nothing else.
Imports the handler, the scrape, the web configuration's type and errors; never telemetry or lifecycle.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import resource
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from otel_rl._internal.errors import ConfigError
from otel_rl._internal.http_handler import (
    NOT_HTTP_1,
    TOO_LARGE,
    MetricsHandler,
    PendingRequest,
    ReadyRequest,
    authorization,
    is_http_1,
)
from otel_rl._internal.scrape import Scrape, SharedRender
from otel_rl._internal.webconfig import WebConfig

_logger = logging.getLogger("otel_rl")
#: Seconds between the connection loop's checks for a shutdown request (the standard library's default is 0.5).
_POLL_INTERVAL = 0.02
#: Seconds between accept() tries while the process is out of file descriptors and no connection can be closed.
_ACCEPT_PAUSE = 0.25

#: Seconds a client has, from connecting, to finish the TLS handshake and send its request headers. Until then
#: it costs no serving slot and no thread, only a file descriptor; idle and slow ("slowloris") clients are closed.
HEADER_TIMEOUT = 10.0
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
#: The listen backlog: hundreds of simultaneous scrapes wait there instead of being refused (socketserver: 5).
BACKLOG = 1024


def open_limit() -> int:
    """:data:`MAX_OPEN`, bounded by half the file-descriptor soft limit (the rest is the application's)."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN
    return max(16, min(MAX_OPEN, soft // 2))



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

    def __init__(self, host: str, port: int, scrape: Scrape,
                 health: Callable[[], dict[str, Any]], web_config: WebConfig | None = None) -> None:
        self.address_family = _family(host, port)
        self._selector = selectors.DefaultSelector()
        self._waker = socket.socketpair()  #: stop() writes a byte to wake the loop at once
        super().__init__((host, port), MetricsHandler)  # a bind failure closes the above too (server_close)
        self.scrape = scrape
        self.shared = SharedRender(scrape)
        self.health = health
        self.web_config = web_config
        self.scrapes = 0  #: scrapes started; each gets the next number
        self._served = 0  #: the highest number of a scrape whose response was sent
        self._scrape_event = threading.Condition()
        self.open_limit = open_limit()
        self._accept_after = 0.0  #: monotonic time before which accept() is not tried (after EMFILE)
        self._pending: dict[socket.socket, PendingRequest] = {}  #: insertion order is accept order: oldest first
        self._ready: collections.deque[tuple[ReadyRequest, Any]] = collections.deque()
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
            pending = PendingRequest(sock, address, time.monotonic() + self.header_timeout, handshaken=tls is None)
            self._pending[sock] = pending
            self._selector.register(sock, selectors.EVENT_READ)
            self._advance(pending)  # the request may already be there

    def _advance(self, pending: PendingRequest) -> None:
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
                if line_end >= 0 and not is_http_1(bytes(pending.buffer[:line_end])):
                    # HTTP/0.9 (no version, no headers to wait for) or not HTTP at all: refuse at once.
                    self._refuse(pending, NOT_HTTP_1)
                    return
                end = pending.buffer.find(b"\r\n\r\n")
                if end < 0:
                    end = pending.buffer.find(b"\n\n")
                if end >= 0:
                    self._hand_over(pending)
                    return
                if len(pending.buffer) > MAX_HEADER_BYTES:
                    self._refuse(pending, TOO_LARGE)
                    return
        except OSError as exc:  # reset, TLS handshake failure: routine
            _logger.debug("otel-rl metrics server: connection from %s ended: %r", pending.address, exc)
            self._drop(sock)

    def _refuse(self, pending: PendingRequest, response: bytes) -> None:
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

    def _hand_over(self, pending: PendingRequest) -> None:
        self._forget(pending.sock)
        pending.sock.setblocking(True)
        ready = ReadyRequest(pending.sock, bytes(pending.buffer))
        # Requests with credentials already checked good go first: a flood of wrong passwords (each waiting for a
        # bcrypt check in a serving slot) does not delay Prometheus' scrapes.
        web = self.web_config
        first = web is not None and bool(web.users) and web.known(authorization(ready.head))
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

    def _serve(self, ready: ReadyRequest, client_address: Any) -> None:
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


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for ``::``, ``::1`` and names that resolve only to IPv6; IPv4 otherwise. Raises socket.gaierror."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    families = [info[0] for info in infos]
    return socket.AF_INET if socket.AF_INET in families else families[0]


_ALLOWED_HOSTS = "an address of this machine or a name resolving to one (0.0.0.0 or :: for every interface, " \
                 "127.0.0.1 or ::1 for loopback only)"


def bind_server(host: str, port: int, scrape: Scrape, health: Callable[[], dict[str, Any]],
                strict: bool, web_config: WebConfig | None = None) -> MetricsServer | None:
    """Bind the endpoint. A failure is logged and training goes on, or with ``strict`` raises ConfigError.

    The message says what went wrong: a host that does not resolve, an address this machine does not have, a port
    in use or one that needs privileges.
    """
    try:
        return MetricsServer(host, port, scrape, health, web_config)
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
