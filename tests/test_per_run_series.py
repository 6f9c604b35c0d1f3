"""The ``per_run_series`` setting: ``run_id`` on the original series that lack it, off by default.

Off, the exposition is exactly the original ``prometheus_metrics`` module's (the parity script of test_parity, also
after the setting was switched on and off again). On, every original series carries the run the value belongs to:
the explicit ``run_id`` of the helpers that take one, else the innermost ``training_run``, else the run the process
started last for that algorithm, else ``default``.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

import otel_rl
from otel_rl import testing
from otel_rl._internal.catalog import CATALOG
from otel_rl._internal.config import load_settings
from otel_rl._internal.store import REGISTRY
from otel_rl.compat import prometheus_metrics as compat

from test_parity import assert_parity, reference_text, script


@pytest.fixture(autouse=True)
def per_run_off():
    """Every test here leaves the setting off, as it found it."""
    assert REGISTRY.per_run is False
    yield
    REGISTRY.set_per_run(False)


def _samples(text: str) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(family.name, []).append(sample.labels)
    return found


def test_off_by_default():
    """The setting is off unless configured; OTEL_RL_PER_RUN_SERIES or per_run_series turn it on."""
    assert load_settings({}).per_run_series is False
    assert load_settings({"per_run_series": True}).per_run_series is True
    assert load_settings({}, environ={"OTEL_RL_PER_RUN_SERIES": "true"}).per_run_series is True
    assert all(REGISTRY[spec.name].label_keys == spec.labels for spec in CATALOG)


def test_default_output_is_the_original_modules_also_after_switching_back():
    """Off (also after on and off again), the exposition matches the original module's exactly."""
    REGISTRY.set_per_run(True)
    REGISTRY.set_per_run(False)
    assert all(REGISTRY[spec.name].label_keys == spec.labels for spec in CATALOG)
    script(compat)
    assert_parity(compat.get_metrics_response(), reference_text())


def test_every_original_series_carries_its_run():
    """On, each original series has run_id, attributed to the right run."""
    telemetry = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}, "per_run_series": True})
    assert REGISTRY.per_run
    otel_rl.record_data_load_time(0.1)  # before any run: the default run
    otel_rl.record_training_start("PPO", "ppo-1")
    otel_rl.record_training_iteration("PPO", 1, "ppo-1")
    otel_rl.record_episode("PPO", "agent_0", 10.0, 20)
    otel_rl.record_episode_metrics("PPO", "ppo-1", 10.0, 20)
    otel_rl.record_performance_metrics("PPO", "agent_0", {"sharpe_ratio": 1.0, "max_drawdown": 0.1,
                                                          "win_rate": 0.5, "total_return": 0.2})
    otel_rl.record_loss_metrics("PPO", policy_loss=0.1, value_loss=0.2, entropy=0.3)
    otel_rl.record_environment_steps("PPO", 64)
    with otel_rl.training_run(algorithm="DQN", run_id="dqn-1"):  # the innermost training_run wins
        otel_rl.record_loss_metrics("DQN", value_loss=1.0)
        otel_rl.record_training_error("data_error")
        otel_rl.record_data_load_time(0.2)
    otel_rl.record_training_failed("PPO", "training_error")  # PPO's run, though DQN started later
    otel_rl.record_training_start("A2C", "a2c-1")
    otel_rl.record_training_complete("A2C", 3.0, "a2c-1")
    samples = _samples(telemetry.metrics_text().decode())
    for spec in CATALOG:
        family = samples[spec.family if spec.type == "counter" else spec.name]
        assert family and all(labels.get("run_id") for labels in family), (spec.name, family)
    runs = {(labels.get("algorithm"), labels.get("error_type"), labels["run_id"])
            for name, family in samples.items() if name.startswith("rl_training") for labels in family}
    assert {run for _, _, run in runs} == {"default", "ppo-1", "dqn-1", "a2c-1"}
    assert (None, "training_error", "ppo-1") in runs and (None, "data_error", "dqn-1") in runs
    assert ("DQN", None, "dqn-1") in runs and ("DQN", None, "ppo-1") not in runs
    assert testing.value("rl_training_runs_total", algorithm="PPO", status="failed", run_id="ppo-1") == 1
    assert testing.value("rl_training_active", algorithm="A2C", run_id="a2c-1") == 0
    assert testing.value("rl_training_data_load_time_seconds", run_id="default") == 1
    assert testing.value("rl_training_data_load_time_seconds", run_id="dqn-1") == 1
    assert not REGISTRY.dropped.snapshot(), REGISTRY.dropped.snapshot()


def test_values_recorded_before_the_switch_are_kept():
    """Series recorded before per_run_series is switched on keep their values under run_id="default"; the compat
    module's labels() without run_id records under the current run."""
    otel_rl.record_training_iteration("PPO", 1, "x")
    otel_rl.record_loss_metrics("PPO", policy_loss=0.5)
    REGISTRY.set_per_run(True)
    assert testing.value("rl_training_iterations_total", algorithm="PPO", run_id="default") == 1
    assert testing.value("rl_training_policy_loss", algorithm="PPO", run_id="default") == 1
    otel_rl.record_training_start("PPO", "later")
    compat.TRAINING_ITERATIONS_TOTAL.labels(algorithm="PPO").inc()
    compat.TRAINING_ITERATIONS_TOTAL.labels("PPO").inc()
    assert testing.value("rl_training_iterations_total", algorithm="PPO", run_id="later") == 2
    REGISTRY.set_per_run(False)  # merged back: one series per algorithm again
    assert testing.value("rl_training_iterations_total", algorithm="PPO") == 3


@pytest.mark.integration
def test_push_path_carries_run_id():
    """Through OTLP, the collector and remote write, the series carry run_id as on /metrics."""
    from procs import push_stack, wait_until

    names = "rl_training_(policy_loss_count|environment_steps_total|data_load_time_seconds_count|active|runs_total)"
    with push_stack() as (_, prom, collector):
        telemetry = otel_rl.init_telemetry({"exporters": ["otlp"], "per_run_series": True,
                                            "otlp": {"endpoint": collector.grpc_endpoint, "export_interval": 0.5}})
        otel_rl.record_data_load_time(0.3)
        otel_rl.record_training_start("PPO", "r1")
        otel_rl.record_loss_metrics("PPO", policy_loss=0.2)
        otel_rl.record_environment_steps("PPO", 10)
        assert telemetry.shutdown()
        found = wait_until(lambda: (lambda r: r if len(r) == 5 else None)(prom.query(f'{{__name__=~"{names}"}}')),
                           30, what="the five series in Prometheus")
    runs = {(r["metric"]["__name__"], r["metric"].get("run_id")) for r in found}
    assert runs == {("rl_training_data_load_time_seconds_count", "default"), ("rl_training_active", "r1"),
                    ("rl_training_policy_loss_count", "r1"), ("rl_training_environment_steps_total", "r1"),
                    ("rl_training_runs_total", "r1")}, runs
