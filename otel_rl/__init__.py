"""otel-rl: watch reinforcement-learning training runs in Prometheus and Grafana through OpenTelemetry.

Call :func:`init_telemetry` once, decorate the train step, and the 21 ``rl_training_*`` series of the original
``prometheus_metrics`` module (prometheus_client) that otel-rl replaces appear on
``http://localhost:8011/metrics`` or, over OTLP, through an OpenTelemetry Collector into Prometheus.
"""

from otel_rl._internal.catalog import ALL_METRICS, CATALOG, SIGNALS, MetricSpec
from otel_rl._internal.config import Settings, load_settings
from otel_rl._internal.decorators import (
    RunContext,
    current_run,
    data_load,
    flush_on_return,
    train_step,
    training_run,
)
from otel_rl._internal.errors import ConfigError, StrictModeError
from otel_rl._internal.lifecycle import init_telemetry
from otel_rl._internal.lifecycle import running_telemetry as current
from otel_rl._internal.provider import meter_provider
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
    record_training_signals,
    record_training_start,
)
from otel_rl._internal.scalars import record_scalar
from otel_rl._internal.telemetry import Telemetry
from otel_rl._internal.worker_settings import worker_env
from otel_rl._version import __version__

__all__ = [
    "ALL_METRICS",
    "CATALOG",
    "ConfigError",
    "MetricSpec",
    "RunContext",
    "SIGNALS",
    "Settings",
    "StrictModeError",
    "Telemetry",
    "__version__",
    "current",
    "current_run",
    "data_load",
    "flush_on_return",
    "init_telemetry",
    "load_settings",
    "meter_provider",
    "record_data_load_time",
    "record_environment_steps",
    "record_episode",
    "record_episode_metrics",
    "record_loss_metrics",
    "record_performance_metrics",
    "record_scalar",
    "record_training_complete",
    "record_training_error",
    "record_training_failed",
    "record_training_iteration",
    "record_training_signals",
    "record_training_start",
    "train_step",
    "training_run",
    "worker_env",
]
