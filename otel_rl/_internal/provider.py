"""The process' OpenTelemetry MeterProvider: one proxy, installed once as the API's global provider.

The OpenTelemetry API lets a process set its global MeterProvider once. otel-rl's SDK provider is rebuilt by every
``init_telemetry`` (after a ``shutdown``, or in a worker), so the global provider is a proxy (:data:`PROXY`) whose
meters and instruments forward to the SDK provider of the running telemetry, swapped behind them on each init and
shutdown (the pattern of pydantic/logfire). Instruments made from ``opentelemetry.metrics.get_meter(...)`` before
or after ``init_telemetry`` thus export through otel-rl's readers (``/metrics`` and OTLP) with its resource; a
measurement made while no telemetry runs is dropped, as the API's own proxy drops it before a provider is set.

Only the API's public abstract classes are implemented; nothing of the SDK is touched.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    Observation,
    UpDownCounter,
    _Gauge,
)

from otel_rl._internal.catalog import OVERFLOW_LABEL
from otel_rl._internal.store import BAD_LABELS, OVER_LIMIT, REGISTRY, number
from otel_rl._internal.values import utf8

_logger = logging.getLogger("otel_rl")

_OVERFLOW_KEY = ((OVERFLOW_LABEL, "true"),)
_OVERFLOW_ATTRIBUTES = {OVERFLOW_LABEL: "true"}


class _Forwarding:
    """What every proxy instrument shares: the real instrument of the current provider, or None."""

    _real: Any = None
    _create: Callable[[Meter], Any]

    def __init__(self, name: str, unit: str = "", description: str = "") -> None:
        # The API's instrument constructors are abstract: nothing of theirs is needed, the real one validates.
        self.name, self.unit, self.description = name, unit, description

    def _bind(self, meter: Meter | None) -> None:
        if meter is None:
            self._real = None
            return
        try:
            self._real = self._create(meter)
        except Exception:  # noqa: BLE001 (an instrument the SDK refuses must not stop init_telemetry)
            _logger.warning("otel-rl: could not create %r on the running MeterProvider", getattr(self, "name", "?"),
                            exc_info=True)
            self._real = None


class _Counter(_Forwarding, Counter):
    def add(self, amount: Any, *args: Any, **kwargs: Any) -> None:
        real = self._real
        if real is not None:
            real.add(amount, *args, **kwargs)


class _UpDownCounter(_Forwarding, UpDownCounter):
    def add(self, amount: Any, *args: Any, **kwargs: Any) -> None:
        real = self._real
        if real is not None:
            real.add(amount, *args, **kwargs)


class _Histogram(_Forwarding, Histogram):
    def record(self, amount: Any, *args: Any, **kwargs: Any) -> None:
        real = self._real
        if real is not None:
            real.record(amount, *args, **kwargs)


def _text(value: Any) -> Any:
    return utf8(value) if type(value) is str else value


class _SyncGauge(_Forwarding, _Gauge):
    """A synchronous gauge whose last value per attribute set is kept here and reported by an observable gauge.

    Cumulative readers must report a synchronous gauge's last value in every collection (the specification's
    MetricReader section); SDKs before open-telemetry/opentelemetry-python#5637 (1.39 among them) reported it only
    in the first collection after each ``set()``, so it vanished from ``/metrics`` and OTLP between sets. Kept
    here, it is reported by every SDK, survives a re-init and, like the store's gauges, is set before init too.
    """

    def __init__(self, name: str, unit: str = "", description: str = "") -> None:
        super().__init__(name, unit, description)
        self._values: dict[Any, Observation] = {}
        self._lock = threading.Lock()

    def set(self, amount: Any, attributes: Any = None, *args: Any, **kwargs: Any) -> None:
        value = number(amount)
        if type(value) is not float:
            REGISTRY.drop(self.name, value, amount)  # type: ignore[arg-type]
            return
        try:
            # Sequences as tuples, as the SDK keeps a synchronous instrument's attributes (SDKs before 1.4x do not
            # clean an observation's, and a list there breaks the whole collection).
            # Lone surrogates (os.fsdecode of bytes) backslash-escaped, as the store keeps them: no encoder takes them.
            cleaned = {_text(k): tuple(v) if isinstance(v, list) else _text(v)
                       for k, v in attributes.items()} if attributes else {}
            key: Any = tuple(sorted(cleaned.items()))
            hash(key)
            observation = Observation(value, cleaned or None)
        except Exception:  # noqa: BLE001 (attributes that are not a mapping of str: recording never raises)
            REGISTRY.drop(self.name, BAD_LABELS, attributes)
            return
        values = self._values
        if key not in values:
            with self._lock:
                if key not in values and len(values) >= REGISTRY.cardinality_limit:
                    REGISTRY.drop(self.name, OVER_LIMIT, attributes)
                    key, observation = _OVERFLOW_KEY, Observation(value, _OVERFLOW_ATTRIBUTES)
        values[key] = observation

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        return list(self._values.values())

    def _bind(self, meter: Meter | None) -> None:
        self._create = lambda real: real.create_observable_gauge(self.name, [self._observe], self.unit,
                                                                 self.description)
        super()._bind(meter)

    def _forget(self) -> None:
        self._values = {}
        self._lock = threading.Lock()


class _ObservableCounter(_Forwarding, ObservableCounter):
    pass


class _ObservableUpDownCounter(_Forwarding, ObservableUpDownCounter):
    pass


class _ObservableGauge(_Forwarding, ObservableGauge):
    pass


class _ProxyMeter(Meter):
    """A meter whose instruments forward to the same-named meter of the current SDK provider."""

    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Any) -> None:
        super().__init__(name, version, schema_url)
        self._attributes = attributes
        self._lock = threading.Lock()
        #: (method, lower-case name) -> proxy: the SDK returns the first instrument of a name, and so does this
        #: (``get_meter(...).create_counter(...)`` in a loop must not grow a list).
        self._instruments: dict[tuple[str, str], _Forwarding] = {}
        self._real: Meter | None = None

    def _bind(self, provider: MeterProvider | None) -> None:
        with self._lock:
            if provider is None:
                self._real = None
            else:
                extra = {"attributes": self._attributes} if self._attributes is not None else {}
                self._real = provider.get_meter(self.name, self.version, self.schema_url, **extra)
            for instrument in self._instruments.values():
                instrument._bind(self._real)

    def _make(self, cls: type, method: str, name: str, args: tuple, kwargs: dict) -> Any:
        key = (method, name.lower())
        with self._lock:
            found = self._instruments.get(key)
            if found is not None:
                return found
            skip = 1 if method.startswith("create_observable") else 0  # the callbacks come first
            unit = args[skip] if len(args) > skip else kwargs.get("unit", "")
            description = args[skip + 1] if len(args) > skip + 1 else kwargs.get("description", "")
            proxy = cls(name, unit=unit, description=description)
            proxy._create = lambda meter: getattr(meter, method)(name, *args, **kwargs)
            proxy._bind(self._real)
            self._instruments[key] = proxy
            return proxy

    def create_counter(self, name: str, *args: Any, **kwargs: Any) -> Counter:
        return self._make(_Counter, "create_counter", name, args, kwargs)

    def create_up_down_counter(self, name: str, *args: Any, **kwargs: Any) -> UpDownCounter:
        return self._make(_UpDownCounter, "create_up_down_counter", name, args, kwargs)

    def create_histogram(self, name: str, *args: Any, **kwargs: Any) -> Histogram:
        return self._make(_Histogram, "create_histogram", name, args, kwargs)

    def create_gauge(self, name: str, *args: Any, **kwargs: Any) -> _Gauge:
        return self._make(_SyncGauge, "create_gauge", name, args, kwargs)

    def _observable(self, cls: type, method: str, name: str, callbacks: Any, args: tuple, kwargs: dict) -> Any:
        callbacks = list(callbacks) if callbacks is not None else None
        return self._make(cls, method, name, (callbacks, *args), kwargs)

    def create_observable_counter(self, name: str, callbacks: Any = None, *args: Any,
                                  **kwargs: Any) -> ObservableCounter:
        return self._observable(_ObservableCounter, "create_observable_counter", name, callbacks, args, kwargs)

    def create_observable_up_down_counter(self, name: str, callbacks: Any = None, *args: Any,
                                          **kwargs: Any) -> ObservableUpDownCounter:
        return self._observable(_ObservableUpDownCounter, "create_observable_up_down_counter", name, callbacks,
                                args, kwargs)

    def create_observable_gauge(self, name: str, callbacks: Any = None, *args: Any,
                                **kwargs: Any) -> ObservableGauge:
        return self._observable(_ObservableGauge, "create_observable_gauge", name, callbacks, args, kwargs)


class ProxyMeterProvider(MeterProvider):
    """The global MeterProvider otel-rl installs: forwards to the SDK provider of the running telemetry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meters: dict[tuple[str, str, str], _ProxyMeter] = {}
        self._delegate: MeterProvider | None = None

    @property
    def delegate(self) -> MeterProvider | None:
        """The SDK provider instruments forward to now (None: no telemetry runs; measurements are dropped)."""
        return self._delegate

    def get_meter(self, name: str, version: str | None = None, schema_url: str | None = None,
                  attributes: Any = None) -> Meter:
        key = (name, version or "", schema_url or "")  # the API's get_meter passes version "", others None
        with self._lock:
            meter = self._meters.get(key)
            if meter is None:
                meter = self._meters[key] = _ProxyMeter(name, version, schema_url, attributes)
                meter._bind(self._delegate)
            return meter

    def set_delegate(self, provider: MeterProvider | None) -> None:
        """Point every meter and instrument at ``provider`` (None: drop measurements until the next one)."""
        with self._lock:
            self._delegate = provider
            meters = list(self._meters.values())
        for meter in meters:
            meter._bind(provider)

    def release(self, provider: MeterProvider) -> None:
        """Forget ``provider`` if it is the delegate (its telemetry shut down)."""
        if self._delegate is provider:
            self.set_delegate(None)

    def after_fork_in_child(self) -> None:
        """In a forked child: new locks, and no delegate (the parent's SDK provider exports nothing here)."""
        self._lock = threading.Lock()
        self._delegate = None
        for meter in self._meters.values():
            meter._lock = threading.Lock()
            meter._real = None
            for instrument in meter._instruments.values():
                instrument._real = None
                if isinstance(instrument, _SyncGauge):  # the child's values start empty, as the store's
                    instrument._forget()


#: The one proxy of this process; otel-rl's own ``record_scalar`` gauges live on it too.
PROXY = ProxyMeterProvider()


class _QuietOverride(logging.Filter):
    """Hides the API's "Overriding of current MeterProvider is not allowed": otel-rl says what to do instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Overriding of current MeterProvider" not in record.getMessage()


def install_global() -> MeterProvider | None:
    """Make :data:`PROXY` the API's global MeterProvider; returns the foreign provider already set, if any."""
    current = metrics.get_meter_provider()
    if current is PROXY:
        return None
    api_logger = logging.getLogger("opentelemetry.metrics._internal")
    quiet = _QuietOverride()
    api_logger.addFilter(quiet)
    try:
        metrics.set_meter_provider(PROXY)
    finally:
        api_logger.removeFilter(quiet)
    current = metrics.get_meter_provider()
    return None if current is PROXY else current


def foreign_provider_message(foreign: MeterProvider) -> str:
    """What to do when the application set its own global MeterProvider before ``init_telemetry``."""
    return (f"the OpenTelemetry global MeterProvider is already set (a {type(foreign).__module__}."
            f"{type(foreign).__qualname__}, set before init_telemetry), and the API lets a process set it once. "
            "Instruments made from opentelemetry.metrics.get_meter() export through that provider's readers, not "
            "otel-rl's. Either call init_telemetry() before setting a provider (otel-rl's then is the global one), "
            "make your instruments from otel_rl.meter_provider() (they export through otel-rl's readers), or set "
            "global_provider: off (OTEL_RL_GLOBAL_PROVIDER=off) to keep the two apart knowingly; "
            "see docs/opentelemetry.md")


def meter_provider() -> MeterProvider:
    """otel-rl's MeterProvider for your own instruments, whether or not it is the API's global one."""
    return PROXY


def _after_fork_in_child() -> None:
    PROXY.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
