"""The running telemetry of a process: its readers, its ``/metrics`` endpoint, its flush and its shutdown.

:class:`Telemetry` builds the readers from settings and wires them to the store; :mod:`otel_rl._internal.lifecycle`
decides when one starts and stops and which one is running. This module imports nothing above it (not lifecycle):
what it needs from there (the running telemetry of a forked child, what to undo when it stops) it is handed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider, MetricsTimeoutError
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource

from otel_rl._internal import file_sd, identity, provider, scalars
from otel_rl._internal.catalog import BY_NAME
from otel_rl._internal.config import Settings, sdk_disabled
from otel_rl._internal.errors import ConfigError
from otel_rl._internal.exporters import console_exporter, otlp_exporter
from otel_rl._internal.http_server import MetricsServer, bind_server
from otel_rl._internal.producer import StoreProducer
from otel_rl._internal.readers import PeriodicReader, PullReader
from otel_rl._internal.render import StoreRenderer
from otel_rl._internal.scrape import Scrape
from otel_rl._internal.store import REGISTRY, Histogram, Registry
from otel_rl._internal.webconfig import load_web_config
from otel_rl._version import __version__

_logger = logging.getLogger("otel_rl")

#: What a telemetry is told to call when it has stopped, and what a forked child's copy asks for this process' own.
OnStopped = Callable[["Telemetry"], None]
RunningHere = Callable[[], "Telemetry | None"]


class Telemetry:
    """The running telemetry of this process: its readers, its endpoint and its MeterProvider."""

    def __init__(self, settings: Settings, registry: Registry = REGISTRY, on_stopped: OnStopped | None = None) -> None:
        """Build the readers and start the endpoint of ``settings``.

        ``on_stopped`` is called once this telemetry has shut down (lifecycle forgets it as the running one)."""
        self.settings = settings
        self.registry = registry
        self.started_at = time.time()
        self._shutdown_done = False
        self._shutdown_result = False
        self._shutdown_finished = threading.Event()
        self._shutdown_lock = threading.Lock()
        self._on_stopped = on_stopped
        self._abandoned_in: int | None = None  #: the pid of a forked child in which this handle is the parent's
        self._running_here: RunningHere = lambda: None  #: in that child: the child's own running telemetry
        self._view: Telemetry | None = None  #: what this (parent's) handle shows in a forked child
        registry.cardinality_limit = settings.cardinality_limit
        registry.set_per_run(settings.per_run_series)
        if settings.global_provider == "install":
            # First, so that strict mode refuses before any port is bound or thread started.
            foreign = provider.install_global()
            if foreign is not None:
                if settings.strict:
                    raise ConfigError("config key 'global_provider' has value 'install', but "
                                      + provider.foreign_provider_message(foreign))
                # Once per process: each re-init (a Tune trial, a notebook cell) finds the same provider.
                registry.warn_once(("otel_rl", "foreign_provider"), "otel-rl: %s",
                                   provider.foreign_provider_message(foreign))
        _apply_buckets(settings, registry)
        registry.label_value_limit = settings.label_value_limit
        self.resource = _resource(settings)
        # OTEL_SDK_DISABLED=true (the OpenTelemetry spec's switch): otel-rl builds no points and exports nothing.
        disabled = sdk_disabled()
        # The producer first: the readers receive it. Then the readers, then the MeterProvider that collects for them.
        self.producer = StoreProducer(registry, self.resource, __version__, disabled=disabled)
        # The pull reader always exists (it costs nothing until collected): metrics_text() needs it.
        self.pull_reader = PullReader(self.producer, settings.cardinality_limit)
        self.renderer = StoreRenderer(registry)
        #: What /metrics and metrics_text() show: the store's metrics, then the pull reader's other instruments.
        self.scrape = Scrape(self.renderer, self.pull_reader, registry.warn_once, sdk_disabled=disabled)
        readers: list[MetricReader] = [self.pull_reader]
        self.server: MetricsServer | None = None
        #: The exporters of the settings; none (no endpoint, no push) with OTEL_SDK_DISABLED.
        self.exporters = () if disabled else settings.exporters
        if disabled:
            _logger.info("otel-rl: OTEL_SDK_DISABLED is true; nothing is exported (recording still costs nothing)")
        if "prometheus" in self.exporters:
            # Bind before any thread starts, so a strict bind failure leaves nothing behind.
            self.server = bind_server(settings.prometheus.host, settings.prometheus.port, self.scrape,
                                      self.health, settings.prometheus.strict, self._web_config())
        try:
            for name in self.exporters:
                if name in ("otlp", "console"):
                    exporter = otlp_exporter(settings.otlp) if name == "otlp" else console_exporter()
                    readers.append(PeriodicReader(self.producer, exporter, settings.otlp.export_interval,
                                                  settings.otlp.timeout, settings.cardinality_limit))
            self.readers = readers
            self._meter_provider = self.producer.meter_provider(readers)
            self.resource_metrics = _resource_metrics(settings, self._meter_provider)
            # Your instruments (the global provider's, otel_rl.meter_provider()'s, record_scalar's) now export here.
            provider.PROXY.set_delegate(self._meter_provider)
            scalars.set_patterns(settings.extra_keys)
            registry.strict = settings.strict
        except BaseException:
            if self.server is not None:  # bound but not serving yet: release the port
                self.server.server_close()
            for reader in readers[1:]:
                reader.shutdown(timeout_millis=1000)
            raise
        self._sd_address: str | None = None
        if self.server is not None:
            self.server.start()
            host = settings.prometheus.host
            _logger.info("otel-rl: serving Prometheus metrics on %s://%s:%d/metrics%s", self.server.scheme,
                         f"[{host}]" if ":" in host else host, self.server.port,
                         " (basic auth)" if self.server.web_config and self.server.web_config.users else "")
            if settings.prometheus.file_sd:
                self._join_file_sd()

    def _web_config(self):
        """The endpoint's TLS and basic auth from ``prometheus.web_config_file`` (None: plain HTTP, no auth),
        parsed once: while the file and the TLS files it names are unchanged, the object checked at init."""
        if not self.settings.prometheus.web_config_file:
            return None
        return load_web_config(self.settings.prometheus.web_config_file)

    def _join_file_sd(self) -> None:
        """Add this endpoint to the ``prometheus.file_sd`` target file, so Prometheus scrapes every process."""
        assert self.server is not None and self.settings.prometheus.file_sd
        address = file_sd.advertised_address(self.settings.prometheus.host, self.server.port)
        try:
            file_sd.join(self.settings.prometheus.file_sd, address, identity.process_attributes())
            self._sd_address = address
        except OSError as exc:
            _logger.error("otel-rl: could not add %s to the target file %s (%s); Prometheus will not find this "
                          "process' endpoint", address, self.settings.prometheus.file_sd, exc)

    # -- pull path -------------------------------------------------------------------------------------------------

    def serve_prometheus(self, host: str, port: int) -> MetricsServer | None:
        """Start the ``/metrics`` endpoint on a telemetry that has none (one that pushes OTLP only).

        Returns the running endpoint when there is one already, and None (after logging) when the port cannot be
        bound. The endpoint stops with :meth:`shutdown`. It has the TLS and basic auth of
        ``prometheus.web_config_file`` and joins the ``prometheus.file_sd`` target file, as one started by
        :func:`init_telemetry` does.
        """
        with self._shutdown_lock:
            if self._shutdown_done:
                return None
            if self.server is None:
                try:
                    web_config = self._web_config()
                except ConfigError as exc:  # validated at init: the file changed since; serve nothing rather than open
                    _logger.error("otel-rl: %s; the /metrics endpoint was not started", exc)
                    return None
                server = bind_server(host, port, self.scrape, self.health, strict=False, web_config=web_config)
                if server is None:
                    return None
                self.server = server.start()
                _logger.info("otel-rl: serving Prometheus metrics on %s://%s:%d/metrics%s", server.scheme,
                             f"[{host}]" if ":" in host else host, server.port,
                             " (basic auth)" if web_config and web_config.users else "")
                if self.settings.prometheus.file_sd:
                    self._join_file_sd()
            return self.server

    def stop_prometheus(self, server: MetricsServer) -> None:
        """Stop an endpoint that :meth:`serve_prometheus` started; the readers go on."""
        with self._shutdown_lock:
            if self.server is server:
                self.server = None
        server.stop()
        if self._sd_address is not None and self.settings.prometheus.file_sd:
            file_sd.leave(self.settings.prometheus.file_sd, self._sd_address)
            self._sd_address = None

    @property
    def meter_provider(self) -> MeterProvider:
        """The OpenTelemetry SDK MeterProvider this telemetry exports through (``/metrics`` and OTLP).

        Instruments made on it stop with this telemetry; those made from ``opentelemetry.metrics.get_meter`` (with
        ``global_provider: install``) or :func:`otel_rl.meter_provider` follow every later ``init_telemetry``."""
        return self._meter_provider

    @property
    def prometheus_port(self) -> int | None:
        """The bound port of the endpoint (useful with port 0), or None when it is not serving."""
        return self.server.port if self.server is not None else None

    def metrics_text(self, accept: str = "") -> bytes:
        """The exposition the endpoint would serve now (also without a running endpoint), as ``bytes``.

        For tests and debugging: the copy into ``bytes`` holds the GIL (~35 ms for the 50 MB of 50k histogram
        series); the endpoint serves the same bytes without one. In a forked child the parent's handle shows the
        child's own telemetry, or a private pull-only one (:func:`_child_view`)."""
        if self._abandoned_in == os.getpid():
            # The parent's handle in a forked child: its SDK state may be locked mid-scrape; show this process'.
            return _child_view(self).metrics_text(accept)
        return bytes(self.scrape.render(accept)[0])

    def health(self) -> dict[str, Any]:
        return {
            "status": "healthy" if not self._shutdown_done else "shutting_down",
            "service": self.settings.service_name,
            "exporters": list(self.exporters),
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "version": __version__,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export the current values now on every push reader. False if it did not finish in time or failed."""
        if self._abandoned_in == os.getpid():
            replacement = self._running_here()
            return replacement.force_flush(timeout) if replacement is not None else True
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        mark = time.monotonic_ns()  # success means: values collected after this call went out
        done = _bounded(lambda: self._meter_provider.force_flush(timeout_millis=timeout * 1000), timeout)
        return done and self._exported_since(mark)

    def _push_readers(self) -> list[PeriodicReader]:
        return [r for r in self.readers if isinstance(r, PeriodicReader)]

    def _exported_since(self, mark_ns: int) -> bool:
        """Whether every push reader exported, successfully, a collection that began after ``mark_ns``."""
        return all(r.exported_since(mark_ns) for r in self._push_readers())

    def _export_final(self, timeout: float) -> None:
        """Each push reader's last export, made here with the whole remaining budget (see PeriodicReader)."""
        deadline = time.monotonic() + timeout
        for reader in self._push_readers():
            try:
                reader.export_final(max(deadline - time.monotonic(), 0.001) * 1000)
            except MetricsTimeoutError:
                _logger.warning("otel-rl: reading the final values took longer than %.1f s; they were not exported",
                                timeout)

    def shutdown(self, timeout: float | None = None, *, linger: bool = True) -> bool:
        """Flush the final values and stop every reader and the endpoint, within ``timeout`` seconds (plus the linger).

        With ``prometheus.linger`` set (and ``linger`` true), first waits (within that many seconds) for one more
        scrape so the last values of a short run reach Prometheus; ``linger=False`` is for a telemetry that another
        one replaces, which serves the same store, so nothing is left to scrape. Returns False when something did
        not finish in time (for instance an unreachable collector); the process can still exit, nothing is left
        blocking it. A later call returns the first call's result.
        """
        if self._abandoned_in == os.getpid():
            # The parent's handle, used in a forked child: it stands for this process' own telemetry, if any.
            replacement = self._running_here()
            return replacement.shutdown(timeout) if replacement is not None else True
        with self._shutdown_lock:
            again = self._shutdown_done
            self._shutdown_done = True
        if again:  # a later call reports what the first one did (waiting for it while it runs)
            finished = self._shutdown_finished.wait(self.settings.shutdown_timeout if timeout is None else timeout)
            return finished and self._shutdown_result
        try:
            self._shutdown_result = self._shutdown(timeout, linger)
        finally:
            self._shutdown_finished.set()
        return self._shutdown_result

    def _shutdown(self, timeout: float | None, linger: bool) -> bool:
        mark = time.monotonic_ns()
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        ok = True
        if self.server is not None and self.settings.prometheus.linger > 0 and linger:
            # The linger is its own budget, before the flush's: a scrape interval is often longer than timeout.
            seen = self.server.scrapes
            _logger.info("otel-rl: waiting up to %.1f s for a last scrape of /metrics", self.settings.prometheus.linger)
            ok = self.server.wait_for_scrape(seen, self.settings.prometheus.linger)
            if not ok:
                _logger.warning("otel-rl: no scrape of /metrics within prometheus.linger (%.1f s); the last values "
                                "of this run may not have reached Prometheus", self.settings.prometheus.linger)
        # The final export is otel-rl's own, judged by its own result: the SDK's last collection at shutdown is
        # bounded by the export interval and only logged when it times out (docs/collector.md, "What shutdown() and
        # force_flush() guarantee").
        deadline = time.monotonic() + max(timeout, 0.05)
        exported = _bounded(lambda: self._export_final(deadline - time.monotonic()), deadline - time.monotonic()) \
            and self._exported_since(mark)
        remaining = max(deadline - time.monotonic(), 0.05)
        provider.PROXY.release(self._meter_provider)  # instruments drop their measurements until the next init
        stopped = _bounded(lambda: self._meter_provider.shutdown(timeout_millis=remaining * 1000), remaining)
        if not stopped and exported:
            _logger.info("otel-rl: the final values were exported; the SDK's shutdown did not finish within %.1f s",
                         timeout)
        flushed = exported and (stopped or bool(self._push_readers()))
        if self.server is not None:
            self.server.stop()
            if self._sd_address is not None and self.settings.prometheus.file_sd:
                file_sd.leave(self.settings.prometheus.file_sd, self._sd_address)
        if self.resource_metrics is not None:
            self.resource_metrics.close()
        if self._on_stopped is not None:
            self._on_stopped(self)
        if not flushed:
            _logger.warning("otel-rl: the final export did not succeed within %.1f s; the last values may not have "
                            "reached the collector", timeout)
        return ok and flushed

    def abandon_in_child(self, running_here: RunningHere) -> None:
        """In a forked child: make this (the parent's) telemetry inert without touching its threads or server.

        ``running_here`` returns the child's own running telemetry, if any: this handle stands for it from now on
        (its flush, shutdown and exposition are that one's).

        Nothing it holds is used again here: its periodic readers are shut down (their exporters, made in the
        parent, do nothing in another process, and the readers export nothing there: see ``PeriodicReader``), so
        no value of this process goes out under the parent's identity; the inherited listening socket is closed
        (no ``shutdown()``, which would hang).
        """
        self._abandoned_in = os.getpid()
        self._running_here = running_here
        self._shutdown_lock = threading.Lock()
        self._shutdown_done = True
        readers = self._push_readers()
        if readers:
            # Ends the thread the SDK restarts in a child. From a daemon thread: the parent may have held one of the
            # SDK's locks at fork, and a fork handler must never block (the readers export nothing here anyway).
            threading.Thread(target=_stop_inherited, args=(readers,), name="otel-rl-fork", daemon=True).start()
        self.scrape.after_fork_in_child()
        if self.server is not None:
            self.server.close_inherited()


def _stop_inherited(readers: list[PeriodicReader]) -> None:
    for reader in readers:
        try:
            reader.shutdown(timeout_millis=100)
        except Exception:  # noqa: BLE001 (the parent's reader in a child: it exports nothing here anyway)
            _logger.debug("otel-rl: could not stop the parent's reader in a forked child", exc_info=True)


def _child_view(parent: Telemetry) -> Telemetry:
    """What the parent's handle shows in a forked child: this process' telemetry, or a private pull-only one."""
    running = parent._running_here()
    if running is not None:
        return running
    view = parent._view
    if view is None or view._abandoned_in is not None:
        view = parent._view = Telemetry(dataclasses.replace(parent.settings, exporters=()))
    return view


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


def _apply_buckets(settings: Settings, registry: Registry) -> None:
    """Give each histogram the bounds of the ``buckets`` setting, or back the catalog's."""
    overrides = dict(settings.buckets)
    for metric in registry.metrics.values():
        if isinstance(metric, Histogram):
            bounds = overrides.get(metric.name, tuple(float(b) for b in BY_NAME[metric.name].buckets))
            lost = metric.rebucket(bounds)
            if lost:
                _logger.warning("otel-rl: %s has new bucket bounds (the buckets setting); the %d observations "
                                "recorded before init_telemetry() could not be re-bucketed and were discarded. "
                                "Call init_telemetry() before recording to keep them.", metric.name, lost)


def _resource(settings: Settings) -> Resource:
    """The SDK's own resource (``telemetry.sdk.*``, detectors) with the service name, instance id and the
    configured attributes on top. Settings already resolved OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME."""
    attributes: dict[str, Any] = {
        "service.name": settings.service_name,
        "service.instance.id": identity.instance_id(),
    }
    attributes.update(identity.process_attributes())  # pid, role, worker index, rank, Ray ids
    given = dict(settings.resource_attributes)
    attributes.update(given)
    if settings.service_name != Settings.service_name or "service.name" not in given:
        attributes["service.name"] = settings.service_name  # OTEL_SERVICE_NAME wins, as the spec says
    return Resource.create(attributes)


def _resource_metrics(settings: Settings, meter_provider: MeterProvider):
    """The process/GPU/torch instruments on ``meter_provider`` when the setting is on, else None."""
    if not settings.resource_metrics:
        return None
    # Here, not at the top: the setting is off by default, and the module and its catalog take ~5 ms to import.
    from otel_rl._internal.resources import ResourceMetrics

    return ResourceMetrics(meter_provider, __version__)
