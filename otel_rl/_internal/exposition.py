"""The Prometheus pull path: a reader's collection rendered as Prometheus text, served over HTTP.

Rendering goes through prometheus_client's own encoders (text 0.0.4 and OpenMetrics), so escaping and number
formatting (``le="10.0"``) are exactly what the seed module exposed. Families are built from OTel data points with
no ``otel_scope_*`` labels and no ``target_info``, so the pull path shows the same series as the collector path.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from otel_rl._internal.catalog import ALL_METRICS, BY_NAME
from otel_rl._internal.config import ConfigError

_logger = logging.getLogger("otel_rl")


def families(data: MetricsData | None) -> list[PromMetric]:
    """One prometheus_client family per catalog metric (empty ones too, as prometheus_client shows them)."""
    found: dict[str, Any] = {}
    if data is not None:
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    found.setdefault(metric.name, metric)
    result = []
    for spec in ALL_METRICS:
        family = PromMetric(spec.family, spec.help, spec.type)
        metric = found.get(spec.name)
        if metric is not None:
            _add_samples(family, spec.name, metric.data)
        result.append(family)
    for name, metric in found.items():  # anything not in the catalog still shows, with a type from its data
        if name not in BY_NAME:
            kind = "histogram" if isinstance(metric.data, Histogram) else (
                "counter" if isinstance(metric.data, Sum) and metric.data.is_monotonic else "gauge")
            family = PromMetric(name[:-6] if kind == "counter" and name.endswith("_total") else name,
                                metric.description or "", kind)
            _add_samples(family, name if kind != "counter" or name.endswith("_total") else name + "_total",
                         metric.data)
            result.append(family)
    return result


def _add_samples(family: PromMetric, name: str, data: Any) -> None:
    if isinstance(data, Histogram):
        for point in data.data_points:
            labels = dict(point.attributes)
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
            family.add_sample(name, dict(point.attributes), point.value)


class _Families(Collector):
    def __init__(self, collect: Callable[[], MetricsData | None]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[PromMetric]:
        return iter(families(self._collect()))


class Exposition:
    """Renders the current state on demand; thread-safe (concurrent scrapes collect one at a time)."""

    def __init__(self, collect: Callable[[], MetricsData | None],
                 fast: Callable[[Callable[..., bytes]], bytes | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Families(collect))
        self._fast = fast  # renders the same bytes from the store (otel_rl._internal.render); None: not for this
        self._lock = threading.Lock()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type; OpenMetrics when ``accept`` asks for it."""
        encoder, content_type = choose_encoder(accept)
        with self._lock:
            body = self._fast(encoder) if self._fast is not None else None
            return (body if body is not None else encoder(self.registry)), content_type


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                number = self.server.scrape_started() if self.command == "GET" else None
                body, content_type = self.server.exposition.render(self.headers.get("Accept", ""))
                if "gzip" in (self.headers.get("Accept-Encoding") or ""):
                    self._send(200, gzip.compress(body), content_type, {"Content-Encoding": "gzip"})
                else:
                    self._send(200, body, content_type)
                if number is not None:
                    self.server.scrape_served(number)
            elif path == "/health":
                self._send(200, json.dumps(self.server.health()).encode(), "application/json")
            else:
                self._send(404, b"Not Found. Try /metrics or /health.\n", "text/plain; charset=utf-8")
        except Exception:  # never let a scrape take the server down
            _logger.exception("otel-rl: error while serving %s", path)
            self._send(500, b"internal error\n", "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # scrapes every 10 s would flood the training log
        _logger.debug("otel-rl metrics server: " + format, *args)


class MetricsServer(ThreadingHTTPServer):
    """``GET /metrics`` and ``GET /health`` on host:port, served from a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, exposition: Exposition,
                 health: Callable[[], dict[str, Any]]) -> None:
        super().__init__((host, port), _Handler)
        self.exposition = exposition
        self.health = health
        self.scrapes = 0  #: scrapes started; each gets the next number
        self._served = 0  #: the highest number of a scrape whose response was sent
        self._scrape_event = threading.Condition()
        self._thread = threading.Thread(target=self.serve_forever, name="otel-rl-metrics-server", daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

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
        self.shutdown()
        self.server_close()


def bind_server(host: str, port: int, exposition: Exposition, health: Callable[[], dict[str, Any]],
                strict: bool) -> MetricsServer | None:
    """Bind the endpoint. A taken port is logged and training goes on, or with ``strict`` raises ConfigError."""
    try:
        return MetricsServer(host, port, exposition, health)
    except OSError as exc:
        message = (f"prometheus.port {port} on host {host!r} cannot be bound ({exc.strerror or exc}); allowed: a "
                   "free port (0 picks one)")
        if strict:
            raise ConfigError(message) from None
        _logger.error("otel-rl: %s. Training continues without the /metrics endpoint "
                      "(set prometheus.strict: true to make this an error).", message)
        return None
