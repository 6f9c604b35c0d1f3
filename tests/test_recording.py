"""The record_* helpers of the original ``prometheus_metrics`` module (prometheus_client) that otel-rl replaces:
each records what the facts file says, and none of them ever raises."""

from __future__ import annotations

import logging
import time

import numpy
import pytest

import otel_rl
from otel_rl import testing

H = testing.histogram
V = testing.value


def test_record_training_start():
    """Start: runs_total{status=started} +1, active = 1, start_timestamp = now for (algorithm, run_id)."""
    before = time.time()
    otel_rl.record_training_start("PPO", run_id="exp-1")
    after = time.time()
    assert V("rl_training_runs_total", algorithm="PPO", status="started") == 1.0
    assert V("rl_training_active", algorithm="PPO") == 1.0
    assert before <= V("rl_training_start_timestamp", algorithm="PPO", run_id="exp-1") <= after
    otel_rl.record_training_start("PPO")
    assert V("rl_training_runs_total", algorithm="PPO", status="started") == 2.0
    assert V("rl_training_start_timestamp", algorithm="PPO", run_id="default") is not None


def test_record_training_complete():
    """Complete: runs_total{status=completed} +1, duration observed, active = 0."""
    otel_rl.record_training_start("PPO", "exp-1")
    otel_rl.record_training_complete("PPO", 125.0, run_id="exp-1")
    assert V("rl_training_runs_total", algorithm="PPO", status="completed") == 1.0
    assert V("rl_training_active", algorithm="PPO") == 0.0
    duration = H("rl_training_duration_seconds", algorithm="PPO")
    assert duration.count == 1 and duration.sum == 125.0
    assert duration.counts == [0, 1, 0, 0, 0, 0, 0, 0, 0]  # in le="300.0"
    assert V("rl_training_runs_total", algorithm="PPO", status="failed") is None


def test_record_training_failed():
    """Failed: runs_total{status=failed} +1, errors_total{error_type} +1 (default 'unknown'), active = 0."""
    otel_rl.record_training_start("SAC")
    otel_rl.record_training_failed("SAC", error_type="data_error")
    otel_rl.record_training_failed("SAC")
    assert V("rl_training_runs_total", algorithm="SAC", status="failed") == 2.0
    assert V("rl_training_errors_total", error_type="data_error") == 1.0
    assert V("rl_training_errors_total", error_type="unknown") == 1.0
    assert V("rl_training_active", algorithm="SAC") == 0.0
    assert H("rl_training_duration_seconds", algorithm="SAC") is None


def test_record_training_iteration():
    """Iteration: iterations_total +1 per call and current_iteration = the given number, per run."""
    for i in range(1, 6):
        otel_rl.record_training_iteration("PPO", i, run_id="a")
    otel_rl.record_training_iteration("PPO", 42, "b")
    otel_rl.record_training_iteration("DQN", 3)
    assert V("rl_training_iterations_total", algorithm="PPO") == 6.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="a") == 5.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="b") == 42.0
    assert V("rl_training_current_iteration", algorithm="DQN", run_id="default") == 3.0


def test_record_episode():
    """Episode: episodes_total +1, reward and length observed, per (algorithm, agent_id)."""
    otel_rl.record_episode("PPO", "agent_0", -600.0, 120)
    otel_rl.record_episode("PPO", "agent_0", 50.0, 10)
    otel_rl.record_episode("PPO", "agent_1", 7.0, 7)
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="agent_0") == 2.0
    reward = H("rl_training_episode_reward", algorithm="PPO", agent_id="agent_0")
    assert reward.count == 2 and reward.sum == -550.0
    assert reward.counts == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert reward.min == -600.0 and reward.max == 50.0
    length = H("rl_training_episode_length", algorithm="PPO", agent_id="agent_0")
    assert length.count == 2 and length.sum == 130.0
    assert length.counts == [1, 0, 0, 1, 0, 0, 0, 0, 0]
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="agent_1") == 1.0


def test_record_episode_with_a_bad_reward_still_counts_the_episode():
    """A NaN reward is dropped but the episode and its length still count, as each figure stands alone."""
    otel_rl.record_episode("PPO", "a", float("nan"), 10)
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="a") == 1.0
    assert H("rl_training_episode_reward", algorithm="PPO", agent_id="a") is None
    assert H("rl_training_episode_length", algorithm="PPO", agent_id="a").count == 1
    assert testing.dropped("rl_training_episode_reward", "nan") == 1


def test_record_episode_metrics():
    """Means: episode_reward_mean and episode_length_mean are set (last value wins) per (algorithm, run_id)."""
    otel_rl.record_episode_metrics("PPO", "r1", -10.0, 100.0)
    otel_rl.record_episode_metrics("PPO", "r1", -5.5, 80)
    otel_rl.record_episode_metrics(algorithm="PPO", run_id="r2", reward_mean=3, length_mean=4)
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="r1") == -5.5
    assert V("rl_training_episode_length_mean", algorithm="PPO", run_id="r1") == 80.0
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="r2") == 3.0


def test_record_performance_metrics_scales_fractions_to_percentages():
    """sharpe_ratio and max_drawdown as given; win_rate 0.65 -> 65.0 and total_return 0.12 -> 12.0."""
    otel_rl.record_performance_metrics("PPO", "agent_0", {"sharpe_ratio": 1.25, "max_drawdown": 15.5,
                                                          "win_rate": 0.65, "total_return": 0.12})
    labels = {"algorithm": "PPO", "agent_id": "agent_0"}
    assert V("rl_training_sharpe_ratio", **labels) == 1.25
    assert V("rl_training_max_drawdown", **labels) == 15.5
    assert V("rl_training_win_rate", **labels) == 65.0
    assert V("rl_training_total_return", **labels) == 12.0


def test_record_performance_metrics_only_sets_keys_present():
    """Keys absent from the dict are not set; unknown keys are ignored; negative returns are kept."""
    otel_rl.record_performance_metrics("PPO", "agent_1", {"total_return": -0.07, "calmar": 3.0})
    labels = {"algorithm": "PPO", "agent_id": "agent_1"}
    assert V("rl_training_total_return", **labels) == pytest.approx(-7.0)
    assert V("rl_training_sharpe_ratio", **labels) is None
    assert V("rl_training_win_rate", **labels) is None
    assert V("rl_training_max_drawdown", **labels) is None


def test_record_performance_metrics_drops_bad_percentages():
    """A bad win_rate is dropped and counted without stopping the other figures."""
    otel_rl.record_performance_metrics("PPO", "a", {"win_rate": "65%", "sharpe_ratio": numpy.float64(2.0),
                                                    "total_return": None})
    assert V("rl_training_win_rate", algorithm="PPO", agent_id="a") is None
    assert V("rl_training_sharpe_ratio", algorithm="PPO", agent_id="a") == 2.0
    assert testing.dropped("rl_training_win_rate", "wrong_type") == 1
    assert testing.dropped("rl_training_total_return", "none") == 1


def test_record_performance_metrics_drops_a_figure_that_overflows_once_scaled():
    """A finite fraction too large to be a percentage (1e307 x 100 is inf) is dropped as inf and counted; a later
    good value, and the figures beside it, are set (also from a Mapping that is not a dict)."""
    from types import MappingProxyType

    otel_rl.record_performance_metrics("PPO", "a", {"win_rate": 1e307, "max_drawdown": 0.2})
    assert V("rl_training_win_rate", algorithm="PPO", agent_id="a") is None
    assert V("rl_training_max_drawdown", algorithm="PPO", agent_id="a") == 0.2
    assert testing.dropped("rl_training_win_rate", "inf") == 1
    otel_rl.record_performance_metrics("PPO", "a", MappingProxyType({"win_rate": 0.5, "sharpe_ratio": 3}))
    assert V("rl_training_win_rate", algorithm="PPO", agent_id="a") == 50.0
    assert V("rl_training_sharpe_ratio", algorithm="PPO", agent_id="a") == 3.0


def test_record_loss_metrics():
    """Losses: each value that is not None is observed; negative policy loss and entropy land in their buckets."""
    otel_rl.record_loss_metrics("PPO", policy_loss=-0.02, value_loss=0.35, entropy=-1.2)
    otel_rl.record_loss_metrics("PPO", policy_loss=0.001)
    otel_rl.record_loss_metrics("PPO", entropy=25.0)
    policy = H("rl_training_policy_loss", algorithm="PPO")
    assert policy.count == 2 and policy.sum == pytest.approx(-0.019)
    assert policy.counts[0] == 2  # -0.02 and 0.001 are both <= 0.001
    value = H("rl_training_value_loss", algorithm="PPO")
    assert value.count == 1 and value.counts[3] == 1  # 0.35 in le="0.5"
    entropy = H("rl_training_entropy", algorithm="PPO")
    assert entropy.count == 2 and entropy.counts[0] == 1 and entropy.counts[-1] == 1


def test_record_loss_metrics_skips_none():
    """None losses are skipped, not dropped: nothing is observed and nothing counts as dropped."""
    otel_rl.record_loss_metrics("PPO")
    otel_rl.record_loss_metrics("PPO", policy_loss=None, value_loss=None, entropy=None)
    assert H("rl_training_policy_loss", algorithm="PPO") is None
    assert H("rl_training_value_loss", algorithm="PPO") is None
    assert H("rl_training_entropy", algorithm="PPO") is None
    assert testing.dropped("rl_training_policy_loss", "none") == 0


def test_record_data_load_time():
    """Data load: the unlabelled data_load_time_seconds histogram observes each duration."""
    otel_rl.record_data_load_time(0.42)
    otel_rl.record_data_load_time(3.0)
    series = H("rl_training_data_load_time_seconds")
    assert series.count == 2 and series.sum == 3.42
    assert series.counts == [0, 1, 0, 0, 1, 0, 0, 0, 0]


def test_record_environment_steps():
    """Steps: environment_steps_total += steps per algorithm."""
    otel_rl.record_environment_steps("PPO", 4000)
    otel_rl.record_environment_steps("PPO", 1000)
    otel_rl.record_environment_steps("SAC", 7)
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 5000.0
    assert V("rl_training_environment_steps_total", algorithm="SAC") == 7.0


def test_record_training_error():
    """Errors: errors_total{error_type} +1 per call."""
    otel_rl.record_training_error("data_error")
    otel_rl.record_training_error("data_error")
    otel_rl.record_training_error("evaluation_error")
    assert V("rl_training_errors_total", error_type="data_error") == 2.0
    assert V("rl_training_errors_total", error_type="evaluation_error") == 1.0


@pytest.mark.parametrize("call", [
    lambda: otel_rl.record_performance_metrics("PPO", "a", None),
    lambda: otel_rl.record_performance_metrics("PPO", "a", ["win_rate"]),
    lambda: otel_rl.record_episode("PPO"),
    lambda: otel_rl.record_training_complete("PPO", duration=None),
    lambda: otel_rl.record_training_iteration("PPO", "seven"),
    lambda: otel_rl.record_environment_steps("PPO", float("inf")),
])
def test_helpers_never_raise(call, caplog):
    """Misuse of a helper (wrong types, missing arguments) is logged or counted, never raised into training."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    assert call() is None
    assert [r for r in caplog.records if r.name == "otel_rl"]


def test_values_recorded_before_init_are_exported():
    """Values recorded before init_telemetry() are in the first scrape after it."""
    assert otel_rl.current() is None
    otel_rl.record_environment_steps("PPO", 12)
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
    assert b'rl_training_environment_steps_total{algorithm="PPO"} 12.0' in handle.metrics_text()


def test_helpers_are_fast_enough():
    """A record call stays cheap (well under 50 microseconds on average), so it can sit in a training loop."""
    calls = 20000
    started = time.perf_counter()
    for _ in range(calls):
        otel_rl.record_episode("PPO", "agent_0", -1.5, 100)
    per_call = (time.perf_counter() - started) / calls
    assert per_call < 50e-6
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="agent_0") == calls


def test_record_training_signals_sets_each_given_gauge_and_drops_bad_values(caplog):
    """Each signal that is given is set for (algorithm, run_id); None leaves it alone; NaN is dropped, not raised."""
    otel_rl.record_training_signals("PPO", "r1", learning_rate=3e-4, kl_divergence=0.01, grad_norm=numpy.float32(2.5))
    assert V("rl_training_learning_rate", algorithm="PPO", run_id="r1") == pytest.approx(3e-4)
    assert V("rl_training_kl_divergence", algorithm="PPO", run_id="r1") == 0.01
    assert V("rl_training_grad_norm", algorithm="PPO", run_id="r1") == 2.5
    assert V("rl_training_clip_fraction", algorithm="PPO", run_id="r1") is None
    otel_rl.record_training_signals("PPO", "r1", learning_rate=float("nan"), explained_variance="high")
    assert V("rl_training_learning_rate", algorithm="PPO", run_id="r1") == pytest.approx(3e-4)
    assert testing.dropped("rl_training_learning_rate", "nan") == 1
    assert testing.dropped("rl_training_explained_variance", "wrong_type") == 1


def test_signals_follow_the_original_21_in_the_catalog():
    """The signal gauges come after the original 21 series, labelled (algorithm, run_id), the per-reward-function
    gauge by the reward function as well."""
    names = [spec.name for spec in otel_rl.ALL_METRICS]
    assert names[:21] == [spec.name for spec in otel_rl.CATALOG]
    assert names[21:21 + len(otel_rl.SIGNALS)] == [spec.name for spec in otel_rl.SIGNALS]
    assert names[21 + len(otel_rl.SIGNALS):-1] == ["rl_training_module_loss"]
    assert all(spec.type == "gauge" and spec.labels[:2] == ("algorithm", "run_id") for spec in otel_rl.SIGNALS)
    assert [spec.name for spec in otel_rl.SIGNALS if spec.labels != ("algorithm", "run_id")] == [
        "rl_training_reward_function_mean"]


def test_a_wrong_call_logs_one_traceback_not_one_per_call(caplog):
    """A helper called with the wrong arguments in a loop logs its traceback once; later calls only at debug."""
    caplog.set_level(logging.DEBUG, logger="otel_rl")
    for _ in range(5):
        otel_rl.record_episode("PPO")  # type: ignore[call-arg]
    tracebacks = [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert len(tracebacks) == 1 and "record_episode" in tracebacks[0].getMessage()
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG and "record_episode" in r.getMessage()]) == 4
