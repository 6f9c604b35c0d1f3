"""Drop-in for the seed's ``prometheus_metrics`` module: change one import line, keep every call.

``from tracking.prometheus_metrics import ...`` becomes ``from otel_rl.compat.prometheus_metrics import ...``.
The helpers record into otel-rl; ``start_metrics_server`` serves the same ``/metrics`` and ``/health`` on port
8011 through otel-rl's Prometheus reader. The seed's metric objects are here too, with prometheus_client's
``labels(...).inc()/set()/observe()`` calls.
"""

from __future__ import annotations

import logging

from otel_rl._internal import telemetry as _telemetry
from otel_rl._internal.exposition import MetricsServer
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
from otel_rl._internal.store import REGISTRY

_logger = logging.getLogger("otel_rl")

# The seed module's metric objects, under its names.
rl_training_runs_total = REGISTRY["rl_training_runs_total"]
rl_training_duration_seconds = REGISTRY["rl_training_duration_seconds"]
rl_training_iterations_total = REGISTRY["rl_training_iterations_total"]
rl_training_episodes_total = REGISTRY["rl_training_episodes_total"]
rl_training_episode_reward = REGISTRY["rl_training_episode_reward"]
rl_training_episode_length = REGISTRY["rl_training_episode_length"]
rl_training_sharpe_ratio = REGISTRY["rl_training_sharpe_ratio"]
rl_training_max_drawdown = REGISTRY["rl_training_max_drawdown"]
rl_training_win_rate = REGISTRY["rl_training_win_rate"]
rl_training_total_return = REGISTRY["rl_training_total_return"]
rl_training_current_iteration = REGISTRY["rl_training_current_iteration"]
rl_training_episode_reward_mean = REGISTRY["rl_training_episode_reward_mean"]
rl_training_episode_length_mean = REGISTRY["rl_training_episode_length_mean"]
rl_training_policy_loss = REGISTRY["rl_training_policy_loss"]
rl_training_value_loss = REGISTRY["rl_training_value_loss"]
rl_training_entropy = REGISTRY["rl_training_entropy"]
rl_training_data_load_time_seconds = REGISTRY["rl_training_data_load_time_seconds"]
rl_training_environment_steps_total = REGISTRY["rl_training_environment_steps_total"]
rl_training_errors_total = REGISTRY["rl_training_errors_total"]
rl_training_active = REGISTRY["rl_training_active"]
rl_training_start_timestamp = REGISTRY["rl_training_start_timestamp"]


def start_metrics_server(port: int = 8011) -> MetricsServer | None:
    """Serve ``/metrics`` and ``/health`` on 0.0.0.0:port. Returns the running server if there is one already,
    and None (after logging) when the port cannot be bound, as the seed did."""
    running = _telemetry.current()
    if running is not None and running.server is not None:
        return running.server
    try:
        telemetry = running or _telemetry.init_telemetry({"exporters": ["prometheus"],
                                                          "prometheus": {"port": port}})
    except Exception as exc:  # the seed never raised here
        _logger.error("otel-rl: could not start the metrics server on port %s: %s", port, exc)
        return None
    if telemetry.server is None:
        telemetry.shutdown()
    return telemetry.server


def stop_metrics_server() -> None:
    """Stop the server (and the telemetry it belongs to)."""
    running = _telemetry.current()
    if running is not None:
        running.shutdown()


def get_metrics_response() -> str:
    """The Prometheus text exposition of every metric, as the server would serve it."""
    running = _telemetry.current()
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
] + [name for name in dir() if name.startswith("rl_training_")]
