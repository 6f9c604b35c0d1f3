"""Drop-in for the original ``prometheus_metrics`` module (prometheus_client) that otel-rl replaces.

``from tracking.prometheus_metrics import ...`` becomes ``from otel_rl.compat.prometheus_metrics import ...``.
The helpers record into otel-rl; ``start_metrics_server`` serves the same ``/metrics`` and ``/health`` on port
8011 through otel-rl's Prometheus reader. The module's 21 metric objects are here under their names
(``TRAINING_RUNS_TOTAL`` ... ``TRAINING_START_TIME``, and as ``rl_training_*``), and take prometheus_client's
calls: ``labels(...)`` by position or keyword, ``inc``, ``dec``, ``set``, ``set_to_current_time``, ``observe``,
``time()`` as a decorator or context manager, ``remove`` and ``clear``. Like every otel-rl record call they never
raise: a bad value or label set is dropped and counted in ``otel_rl_dropped_values_total``.

After fork/spawn and in a Ray worker these objects write into that process's otel-rl state, as the helpers do.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from otel_rl._internal import lifecycle
from otel_rl._internal.http_server import MetricsServer
from otel_rl._internal.recording import (
    record_data_load_time,
    record_environment_steps,
    record_episode,
    record_episode_metrics,
    record_loss_metrics,
    record_performance_metrics,
    record_training_complete,
    record_training_error,
    record_training_failed,
    record_training_iteration,
    record_training_start,
)
from otel_rl._internal.store import BAD_LABELS, REGISTRY, Counter, Gauge, Histogram, Metric, label_strings, number

_logger = logging.getLogger("otel_rl")
F = TypeVar("F", bound=Callable[..., Any])


class _Timer:
    """prometheus_client's ``time()``: a context manager and a decorator that report the elapsed seconds."""

    def __init__(self, report: Callable[[float], None]) -> None:
        self._report = report
        self._started = 0.0

    def __enter__(self) -> _Timer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._report(max(time.perf_counter() - self._started, 0.0))

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with _Timer(self._report):
                return func(*args, **kwargs)

        return timed  # type: ignore[return-value]


class _Series:
    """One label set of a metric (what ``labels(...)`` returns); a None key is a label set that did not fit."""

    __slots__ = ("_state", "_key")

    def __init__(self, state: Metric, key: tuple[str, ...] | None) -> None:
        self._state = state
        self._key = key

    def _fits(self) -> bool:
        if self._key is None:
            REGISTRY.drop(self._state.name, BAD_LABELS)
            return False
        return True


class CounterSeries(_Series):
    """A counter's label set: ``inc``, ``count_exceptions``."""

    __slots__ = ()
    _state: Counter

    def inc(self, amount: Any = 1) -> None:
        if self._fits():
            self._state.add(self._key, amount)  # type: ignore[arg-type]

    def count_exceptions(self, exception: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> Any:
        """Count exceptions raised in a block or function (they still propagate)."""
        return _ExceptionCounter(self, exception)


class _ExceptionCounter:
    def __init__(self, series: CounterSeries, exception: Any) -> None:
        self._series, self._exception = series, exception

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if kind is not None and issubclass(kind, self._exception):
            self._series.inc()

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return counted  # type: ignore[return-value]


class GaugeSeries(_Series):
    """A gauge's label set: ``set``, ``inc``, ``dec``, ``set_to_current_time``, ``time``, ``track_inprogress``."""

    __slots__ = ()
    _state: Gauge

    def set(self, value: Any) -> None:
        if self._fits():
            self._state.set(self._key, value)  # type: ignore[arg-type]

    def inc(self, amount: Any = 1) -> None:
        if self._fits():
            self._state.add(self._key, amount)  # type: ignore[arg-type]

    def dec(self, amount: Any = 1) -> None:
        value = number(amount)
        self.inc(-value if type(value) is float else amount)  # a bad amount is dropped under its own reason

    def set_to_current_time(self) -> None:
        self.set(time.time())

    def time(self) -> _Timer:
        """Set the gauge to the seconds a block or function took."""
        return _Timer(self.set)

    def track_inprogress(self) -> _InProgress:
        """Add one while a block or function runs."""
        return _InProgress(self)


class _InProgress:
    def __init__(self, series: GaugeSeries) -> None:
        self._series = series

    def __enter__(self) -> None:
        self._series.inc()

    def __exit__(self, *exc: object) -> None:
        self._series.dec()

    def __call__(self, func: F) -> F:
        @functools.wraps(func)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return tracked  # type: ignore[return-value]


class HistogramSeries(_Series):
    """A histogram's label set: ``observe``, ``time``."""

    __slots__ = ()
    _state: Histogram

    def observe(self, amount: Any) -> None:
        if self._fits():
            self._state.observe(self._key, amount)  # type: ignore[arg-type]

    def time(self) -> _Timer:
        """Observe the seconds a block or function took."""
        return _Timer(self.observe)


class _CompatMetric:
    """A metric of the original module: ``labels``, ``remove``, ``clear``, and the series calls for no labels."""

    _series_class: type[_Series] = _Series

    def __init__(self, state: Metric) -> None:
        self._state = state
        self._name = state.name
        self._labelnames = state.label_keys
        self._documentation = state.spec.help

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name}{list(self._labelnames)}>"

    def _key(self, values: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...] | None:
        names = self._labelnames
        if kwargs:
            if values or set(kwargs) != set(names):
                return None
            values = tuple(kwargs[name] for name in names)
        if len(values) != len(names):
            return None
        return label_strings(values)  # None when a value cannot be made a string: dropped on use

    def labels(self, *values: Any, **kwargs: Any) -> Any:
        """The series of one label set, by position or keyword; a set that does not fit drops on use."""
        return self._series_class(self._state, self._key(values, kwargs))

    def remove(self, *values: Any) -> None:
        """Forget the series of one label set."""
        key = self._key(values, {})
        if key is None or not self._labelnames:
            REGISTRY.drop(self._name, BAD_LABELS)
            return
        self._state.remove(key)

    def clear(self) -> None:
        """Forget every series of this metric."""
        self._state.clear()

    def _unlabelled(self) -> Any:
        # prometheus_client allows the series calls on the metric itself only when it has no labels.
        return self._series_class(self._state, () if not self._labelnames else None)


class CompatCounter(_CompatMetric):
    """prometheus_client's ``Counter`` calls on an otel-rl counter."""

    _series_class = CounterSeries

    def labels(self, *values: Any, **kwargs: Any) -> CounterSeries:
        return super().labels(*values, **kwargs)

    def inc(self, amount: Any = 1) -> None:
        self._unlabelled().inc(amount)

    def count_exceptions(self, exception: Any = Exception) -> Any:
        return self._unlabelled().count_exceptions(exception)


class CompatGauge(_CompatMetric):
    """prometheus_client's ``Gauge`` calls on an otel-rl gauge."""

    _series_class = GaugeSeries

    def labels(self, *values: Any, **kwargs: Any) -> GaugeSeries:
        return super().labels(*values, **kwargs)

    def set(self, value: Any) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: Any = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: Any = 1) -> None:
        self._unlabelled().dec(amount)

    def set_to_current_time(self) -> None:
        self._unlabelled().set_to_current_time()

    def time(self) -> _Timer:
        return self._unlabelled().time()

    def track_inprogress(self) -> _InProgress:
        return self._unlabelled().track_inprogress()


class CompatHistogram(_CompatMetric):
    """prometheus_client's ``Histogram`` calls on an otel-rl histogram."""

    _series_class = HistogramSeries

    def labels(self, *values: Any, **kwargs: Any) -> HistogramSeries:
        return super().labels(*values, **kwargs)

    def observe(self, amount: Any) -> None:
        self._unlabelled().observe(amount)

    def time(self) -> _Timer:
        return self._unlabelled().time()


TRAINING_RUNS_TOTAL = CompatCounter(REGISTRY.counter("rl_training_runs_total"))
TRAINING_DURATION = CompatHistogram(REGISTRY.histogram("rl_training_duration_seconds"))
TRAINING_ITERATIONS_TOTAL = CompatCounter(REGISTRY.counter("rl_training_iterations_total"))
EPISODES_TOTAL = CompatCounter(REGISTRY.counter("rl_training_episodes_total"))
EPISODE_REWARD = CompatHistogram(REGISTRY.histogram("rl_training_episode_reward"))
EPISODE_LENGTH = CompatHistogram(REGISTRY.histogram("rl_training_episode_length"))
SHARPE_RATIO = CompatGauge(REGISTRY.gauge("rl_training_sharpe_ratio"))
MAX_DRAWDOWN = CompatGauge(REGISTRY.gauge("rl_training_max_drawdown"))
WIN_RATE = CompatGauge(REGISTRY.gauge("rl_training_win_rate"))
TOTAL_RETURN = CompatGauge(REGISTRY.gauge("rl_training_total_return"))
CURRENT_ITERATION = CompatGauge(REGISTRY.gauge("rl_training_current_iteration"))
CURRENT_EPISODE_REWARD_MEAN = CompatGauge(REGISTRY.gauge("rl_training_episode_reward_mean"))
CURRENT_EPISODE_LENGTH_MEAN = CompatGauge(REGISTRY.gauge("rl_training_episode_length_mean"))
POLICY_LOSS = CompatHistogram(REGISTRY.histogram("rl_training_policy_loss"))
VALUE_LOSS = CompatHistogram(REGISTRY.histogram("rl_training_value_loss"))
ENTROPY = CompatHistogram(REGISTRY.histogram("rl_training_entropy"))
DATA_LOAD_TIME = CompatHistogram(REGISTRY.histogram("rl_training_data_load_time_seconds"))
ENVIRONMENT_STEPS_TOTAL = CompatCounter(REGISTRY.counter("rl_training_environment_steps_total"))
TRAINING_ERRORS_TOTAL = CompatCounter(REGISTRY.counter("rl_training_errors_total"))
TRAINING_ACTIVE = CompatGauge(REGISTRY.gauge("rl_training_active"))
TRAINING_START_TIME = CompatGauge(REGISTRY.gauge("rl_training_start_timestamp"))

#: The original module's object names, in its definition order.
OBJECTS: dict[str, _CompatMetric] = {
    name: value for name, value in list(globals().items()) if isinstance(value, _CompatMetric)}

# The same objects under their metric names, as earlier otel-rl versions exported them.
rl_training_runs_total = TRAINING_RUNS_TOTAL
rl_training_duration_seconds = TRAINING_DURATION
rl_training_iterations_total = TRAINING_ITERATIONS_TOTAL
rl_training_episodes_total = EPISODES_TOTAL
rl_training_episode_reward = EPISODE_REWARD
rl_training_episode_length = EPISODE_LENGTH
rl_training_sharpe_ratio = SHARPE_RATIO
rl_training_max_drawdown = MAX_DRAWDOWN
rl_training_win_rate = WIN_RATE
rl_training_total_return = TOTAL_RETURN
rl_training_current_iteration = CURRENT_ITERATION
rl_training_episode_reward_mean = CURRENT_EPISODE_REWARD_MEAN
rl_training_episode_length_mean = CURRENT_EPISODE_LENGTH_MEAN
rl_training_policy_loss = POLICY_LOSS
rl_training_value_loss = VALUE_LOSS
rl_training_entropy = ENTROPY
rl_training_data_load_time_seconds = DATA_LOAD_TIME
rl_training_environment_steps_total = ENVIRONMENT_STEPS_TOTAL
rl_training_errors_total = TRAINING_ERRORS_TOTAL
rl_training_active = TRAINING_ACTIVE
rl_training_start_timestamp = TRAINING_START_TIME

#: What :func:`start_metrics_server` started, so that :func:`stop_metrics_server` stops exactly that, and in which
#: process: a forked child inherits this but not the server loop (stopping it there would wait forever).
_started: dict[str, Any] = {"telemetry": None, "server": None, "pid": None}


def start_metrics_server(port: int = 8011) -> MetricsServer | None:
    """Serve ``/metrics`` and ``/health`` on port, on all interfaces as the original did.

    A running telemetry's ``prometheus`` settings apply: its host (default 0.0.0.0), its ``web_config_file``
    (TLS, basic auth) and its ``file_sd`` target file.

    Never tears down a running telemetry. Without one, starts otel-rl with the Prometheus endpoint. With one that
    already serves ``/metrics``, returns that server (on its own port, as the original returned its running
    server). With one that pushes OTLP only, adds the endpoint to it, so both paths run. Returns None (after
    logging) when the port cannot be bound.
    """
    running = lifecycle.running_telemetry()
    if running is not None:
        if running.server is not None:
            return running.server
        server = running.serve_prometheus(running.settings.prometheus.host, port)
        if server is not None:
            _started.update(telemetry=None, server=(running, server), pid=os.getpid())
        return server
    try:
        telemetry = lifecycle.init_telemetry({"exporters": ["prometheus"], "prometheus": {"port": port}})
    except Exception as exc:  # noqa: BLE001 (the original logged every failure here and went on)
        _logger.error("otel-rl: could not start the metrics server on port %s: %s", port, exc)
        return None
    if telemetry.server is None:  # the port was taken: bind_server logged it; nothing else was running
        telemetry.shutdown()
        return None
    _started.update(telemetry=telemetry, server=None, pid=os.getpid())
    return telemetry.server


def stop_metrics_server() -> None:
    """Stop what :func:`start_metrics_server` started: its telemetry, or the endpoint it added to a running one.

    A telemetry started by :func:`otel_rl.init_telemetry` is left running: its owner stops it with ``shutdown()``.
    In a forked child it does nothing: what was started belongs to the parent (the child's copy of the listening
    socket was closed at fork).
    """
    telemetry, added, pid = _started["telemetry"], _started["server"], _started["pid"]
    _started.update(telemetry=None, server=None, pid=None)
    if pid != os.getpid():
        return
    if telemetry is not None:
        telemetry.shutdown()
    elif added is not None:
        owner, server = added
        owner.stop_prometheus(server)


def get_metrics_response() -> str:
    """The Prometheus text exposition of every metric, as the server would serve it."""
    running = lifecycle.running_telemetry()
    if running is not None:
        return running.metrics_text().decode("utf-8")
    from otel_rl._internal.config import Settings
    from otel_rl._internal.telemetry import Telemetry

    # No server, no threads: a one-off collection that leaves the configured cardinality limit as it is.
    offline = Telemetry(Settings(exporters=(), cardinality_limit=REGISTRY.cardinality_limit))
    try:
        return offline.metrics_text().decode("utf-8")
    finally:
        offline.shutdown(timeout=1.0)


__all__ = [
    "get_metrics_response",
    "record_data_load_time",
    "record_environment_steps",
    "record_episode",
    "record_episode_metrics",
    "record_loss_metrics",
    "record_performance_metrics",
    "record_training_complete",
    "record_training_error",
    "record_training_failed",
    "record_training_iteration",
    "record_training_start",
    "start_metrics_server",
    "stop_metrics_server",
    *OBJECTS,
] + [name for name in dir() if name.startswith("rl_training_")]
