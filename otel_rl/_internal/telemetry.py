"""``init_telemetry``: builds the readers from settings and wires them to the shared metric state."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource

from otel_rl._internal.bridge import Bridge, PeriodicReader, PullReader, cumulative_temporality, without_store
from otel_rl._internal.config import ConfigError, Settings, load_settings
from otel_rl._internal.exposition import Exposition, MetricsServer, bind_server, families
from otel_rl._internal.render import StoreRenderer
from otel_rl._internal.store import REGISTRY, Registry
from otel_rl._version import __version__

_logger = logging.getLogger("otel_rl")

_lock = threading.Lock()
_current: Telemetry | None = None


class Telemetry:
    """The running telemetry of this process: its readers, its endpoint and its MeterProvider."""

    def __init__(self, settings: Settings, registry: Registry = REGISTRY) -> None:
        self.settings = settings
        self.registry = registry
        self.started_at = time.time()
        self._shutdown_done = False
        self._shutdown_lock = threading.Lock()
        registry.cardinality_limit = settings.cardinality_limit
        self.resource = _resource(settings)
        # The pull reader always exists (it costs nothing until collected): metrics_text() needs it.
        self.pull_reader = PullReader(settings.cardinality_limit)
        self.renderer = StoreRenderer(registry)
        self.exposition = Exposition(self._collect_for_scrape, self._render_from_store)
        readers: list[MetricReader] = [self.pull_reader]
        self.server: MetricsServer | None = None
        if "prometheus" in settings.exporters:
            # Bind before any thread starts, so a strict bind failure leaves nothing behind.
            self.server = bind_server(settings.prometheus.host, settings.prometheus.port, self.exposition,
                                      self.health, settings.prometheus.strict)
        try:
            for name in settings.exporters:
                if name in ("otlp", "console"):
                    exporter = _otlp_exporter(settings) if name == "otlp" else _console_exporter()
                    readers.append(PeriodicReader(exporter, settings.otlp.export_interval, settings.otlp.timeout,
                                                  settings.cardinality_limit))
            self.readers = readers
            self.bridge = Bridge(registry, self.resource, readers, __version__)
        except BaseException:
            if self.server is not None:  # bound but not serving yet: release the port
                self.server.server_close()
            for reader in readers[1:]:
                reader.shutdown(timeout_millis=1000)
            raise
        if self.server is not None:
            self.server.start()
            _logger.info("otel-rl: serving Prometheus metrics on http://%s:%d/metrics",
                         settings.prometheus.host, self.server.port)

    # -- pull path -------------------------------------------------------------------------------------------------

    def _collect_for_scrape(self):
        self.pull_reader.collect()
        return self.pull_reader.latest

    def _render_from_store(self, encoder):
        """The scrape: catalog metrics straight from the store, then any other instrument of this provider."""
        return self.renderer.render(encoder, self._other_families)

    def _other_families(self):
        with without_store():  # the SDK collects only instruments that are not otel-rl's own
            self.pull_reader.collect()
        catalog = {spec.family for spec in (m.spec for m in self.registry.metrics.values())}
        return [f for f in families(self.pull_reader.latest) if f.name not in catalog]

    @property
    def prometheus_port(self) -> int | None:
        """The bound port of the endpoint (useful with port 0), or None when it is not serving."""
        return self.server.port if self.server is not None else None

    def metrics_text(self, accept: str = "") -> bytes:
        """The exposition the endpoint would serve now (also without a running endpoint)."""
        return self.exposition.render(accept)[0]

    def health(self) -> dict[str, Any]:
        return {
            "status": "healthy" if not self._shutdown_done else "shutting_down",
            "service": self.settings.service_name,
            "exporters": list(self.settings.exporters),
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "version": __version__,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export the current values now on every push reader. False if it did not finish in time or failed."""
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        done = _bounded(lambda: self.bridge.provider.force_flush(timeout_millis=timeout * 1000), timeout)
        return done and not self._export_failed()

    def _export_failed(self) -> bool:
        return any(isinstance(r, PeriodicReader) and r.last_export_failed for r in self.readers)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush the final values and stop every reader and the endpoint, within ``timeout`` seconds (plus the linger).

        With ``prometheus.linger`` set, first waits (within that many seconds) for one more scrape so the last
        values of a short run reach Prometheus. Returns False when something did not finish in time (for instance
        an unreachable collector); the process can still exit, nothing is left blocking it.
        """
        global _current
        with self._shutdown_lock:
            if self._shutdown_done:
                return True
            self._shutdown_done = True
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        ok = True
        if self.server is not None and self.settings.prometheus.linger > 0:
            # The linger is its own budget, before the flush's: a scrape interval is often longer than timeout.
            seen = self.server.scrapes
            _logger.info("otel-rl: waiting up to %.1f s for a last scrape of /metrics", self.settings.prometheus.linger)
            ok = self.server.wait_for_scrape(seen, self.settings.prometheus.linger)
            if not ok:
                _logger.warning("otel-rl: no scrape of /metrics within prometheus.linger (%.1f s); the last values "
                                "of this run may not have reached Prometheus", self.settings.prometheus.linger)
        remaining = max(timeout, 0.05)
        flushed = _bounded(lambda: self.bridge.provider.shutdown(timeout_millis=remaining * 1000), remaining) \
            and not self._export_failed()
        if self.server is not None:
            self.server.stop()
        with _lock:
            if _current is self:
                _current = None
        if not flushed:
            _logger.warning("otel-rl: the final export did not succeed within %.1f s; the last values may not have "
                            "reached the collector", timeout)
        return ok and flushed


def _bounded(func, timeout: float) -> bool:
    """Run ``func`` in a daemon thread and wait at most ``timeout`` seconds: exporters must never hang the exit."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(func())
        except Exception:
            _logger.exception("otel-rl: error while flushing metrics")
            result.append(False)

    thread = threading.Thread(target=run, name="otel-rl-flush", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result) and result[0] is not False


def _resource(settings: Settings) -> Resource:
    attributes: dict[str, Any] = {
        "service.name": settings.service_name,
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        "telemetry.sdk.name": "otel-rl",
    }
    given = dict(settings.resource_attributes)
    attributes.update(given)
    if settings.service_name != Settings.service_name or "service.name" not in given:
        attributes["service.name"] = settings.service_name  # OTEL_SERVICE_NAME wins, as the spec says
    return Resource(attributes)


def _otlp_exporter(settings: Settings):
    otlp = settings.otlp
    endpoint = otlp.resolved_endpoint()
    headers = dict(otlp.headers) or None
    temporality = cumulative_temporality()
    if otlp.protocol == "grpc":
        from grpc import Compression
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        insecure = otlp.insecure if otlp.insecure is not None else endpoint.startswith("http://")
        credentials = None
        if otlp.certificate:
            import grpc

            with open(otlp.certificate, "rb") as f:
                credentials = grpc.ssl_channel_credentials(f.read())
        compression = {"none": Compression.NoCompression, "gzip": Compression.Gzip,
                       "deflate": Compression.Deflate}[otlp.compression]
        return OTLPMetricExporter(endpoint=endpoint, insecure=insecure, credentials=credentials, headers=headers,
                                  timeout=otlp.timeout, compression=compression,
                                  preferred_temporality=temporality)
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    compression = {"none": HttpCompression.NoCompression, "gzip": HttpCompression.Gzip,
                   "deflate": HttpCompression.Deflate}[otlp.compression]
    return HttpExporter(endpoint=endpoint, certificate_file=otlp.certificate or None, headers=headers,
                        timeout=otlp.timeout, compression=compression, preferred_temporality=temporality)


def _console_exporter():
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

    return ConsoleMetricExporter(preferred_temporality=cumulative_temporality())


def init_telemetry(config: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> Telemetry:
    """Set up metrics export for this process and return the handle.

    ``config`` is a mapping, the path of a YAML file (its ``monitoring:`` section when it has one) or None to use
    the environment alone. Explicit config wins over environment variables, which win over defaults. Calling it
    again with the same settings returns the same handle; with different settings it raises ConfigError until the
    running telemetry is shut down.
    """
    global _current
    settings = load_settings(config)
    with _lock:
        if _current is not None:
            if _current.settings == settings:
                return _current
            raise ConfigError(
                "init_telemetry() was already called with different settings "
                f"(running: {_current.settings}; requested: {settings}); call shutdown() on the running handle "
                "first")
        _current = Telemetry(settings)
        return _current


def current() -> Telemetry | None:
    """The running telemetry, if any."""
    return _current


@atexit.register
def _shutdown_at_exit() -> None:
    telemetry = _current
    if telemetry is not None:
        telemetry.shutdown()
