"""One scrape of ``/metrics``: what the endpoint and ``Telemetry.metrics_text()`` serve, rendered on demand.

:class:`Scrape` is the whole pull path in one object. Telemetry builds it with the store's renderer and the pull
reader; the HTTP server (:mod:`otel_rl._internal.http_server`) and ``metrics_text()`` call its ``render`` (in a
forked child, ``metrics_text()`` of the parent's handle renders the child's telemetry's scrape: ``_child_view``).
:class:`SharedRender` lets concurrent scrapes of the server share one render and its gzip.

Imports the renderer (:mod:`otel_rl._internal.render`, which reads the store) and the conversion of the SDK's
collection (:mod:`otel_rl._internal.families`); never telemetry, lifecycle or the readers' module (the pull reader
is handed in).
"""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from opentelemetry.sdk.metrics.export import MetricsData
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector, CollectorRegistry

from otel_rl._internal.families import all_families, families
from otel_rl._internal.render import StoreRenderer

#: A response body: bytes, or a read-only view of the memory map the store's renderer wrote (see render.py).
Body = bytes | memoryview
#: Logs a message once per key (``Registry.warn_once``): ``warn_once(key, message, *args, exc_info=...)``.
WarnOnce = Callable[..., object]


class PullCollection(Protocol):
    """What a scrape asks of the pull reader: a collection now, with or without otel-rl's own metrics."""

    def collect_all(self) -> MetricsData | None: ...

    def collect_others(self) -> MetricsData | None: ...


class Scrape:
    """The text a scrape of ``/metrics`` returns: otel-rl's metrics read from the store, then every other
    instrument of the MeterProvider (yours, the resource metrics) from an OpenTelemetry collection.

    The catalog metrics are written straight from the store by ``renderer`` (fast, no objects per series); the
    pull reader collects the rest, which :func:`otel_rl._internal.families.families` converts. A format the
    renderer does not write (a name escaping other than the default), and every scrape with OTEL_SDK_DISABLED,
    goes through prometheus_client's encoder over :attr:`registry`: the whole collection converted.

    Thread-safe: concurrent renders run one at a time. In a forked child the parent's scrape renders the child's
    store and never touches the parent's SDK (see :meth:`after_fork_in_child`).
    """

    def __init__(self, renderer: StoreRenderer, pull_reader: PullCollection, warn_once: WarnOnce,
                 sdk_disabled: bool = False) -> None:
        """``warn_once`` (the store's ``Registry.warn_once``) logs a failed collection of other instruments, once.

        ``sdk_disabled`` (OTEL_SDK_DISABLED): the store is not rendered; the collection (empty) is all a scrape
        shows."""
        self.renderer = renderer
        self._pull_reader = pull_reader
        self._warn_once = warn_once
        self._from_store = not sdk_disabled
        #: prometheus_client's view of the whole collection, for what the renderer does not write.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collection(self._collect_all))
        self._abandoned_in: int | None = None  #: the pid of a forked child in which this is the parent's scrape
        self._lock = threading.Lock()

    def render(self, accept: str = "") -> tuple[Body, str]:
        """The exposition and its content type; OpenMetrics when ``accept`` asks for it."""
        encoder, content_type = choose_encoder(accept)
        with self._lock:
            body = self.renderer.render(encoder, self._other_families) if self._from_store else None
            return (body if body is not None else encoder(self.registry)), content_type

    def after_fork_in_child(self) -> None:
        """In a forked child, for the parent's scrape: new locks (a parent thread may have held them at fork), and
        the parent's SDK is left alone from now on (its locks may be held too; its instruments are the parent's)."""
        self._abandoned_in = os.getpid()
        self._lock = threading.Lock()
        self.renderer.after_fork_in_child()

    def _collect_all(self) -> MetricsData | None:
        if self._abandoned_in == os.getpid():
            return None
        return self._pull_reader.collect_all()

    def _other_families(self) -> list[PromMetric]:
        if self._abandoned_in == os.getpid():
            return []  # the child's own telemetry shows this process' instruments
        try:
            others = self._pull_reader.collect_others()
        except Exception:  # noqa: BLE001 (your instruments must not take otel-rl's series off the scrape)
            self._warn_once(("otel_rl", "other_instruments"), "otel-rl: collecting the instruments of other "
                            "meters failed; this scrape shows otel-rl's series only (an observable callback "
                            "returning attributes the SDK cannot hash, such as a list, on an older SDK?)",
                            exc_info=True)
            return []
        return families(others)


class _Collection(Collector):
    """prometheus_client's collector over a whole SDK collection (catalog metrics included)."""

    def __init__(self, collect: Callable[[], MetricsData | None]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[PromMetric]:
        return iter(all_families(self._collect()))


class SharedRender:
    """Concurrent scrapes share renders: one that arrives while a render runs waits and shares the next one.

    The next one, not the running one, so every scrape still sees all values recorded before it arrived. However
    many clients scrape at once, at most one render per output format runs at a time, which keeps a scrape storm
    from taking CPU (and the GIL) from training.
    """

    def __init__(self, scrape: Scrape) -> None:
        self._scrape = scrape
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
            result = self._scrape.render(accept)
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
            # to a busy training thread would make a scrape take seconds.
            compressed = gzip.compress(body, compresslevel=6)
            self._gzipped = (body, compressed)
            return compressed
