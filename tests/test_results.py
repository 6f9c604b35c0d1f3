"""``@train_step`` reading RLlib (old and new API stack) and plain result dicts, nested and flattened."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import otel_rl
from otel_rl import testing
from otel_rl._internal.results import lookup, parse_result

DATA = Path(__file__).parent / "data"
H = testing.histogram
V = testing.value


def flatten(result: dict, prefix: str = "") -> dict:
    """RLlib's ``flatten_dict``: nested keys joined with '/'."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def old_stack(i: int) -> dict:
    """An RLlib old-API-stack result for iteration ``i`` (1-based)."""
    return {
        "episode_reward_mean": -120.5 + i,
        "episode_len_mean": 200.0 + i,
        "num_env_steps_sampled": {1: 1000, 2: 2000, 3: 3500}[i],
        "training_iteration": i,
        "info": {"learner": {"default_policy": {"learner_stats": {
            "policy_loss": -0.05 * i, "vf_loss": 0.4, "entropy": 1.5, "cur_lr": 5e-5}}}},
        "custom_metrics": {"sharpe_ratio_mean": 1.2, "sharpe_ratio_min": -9.0, "sharpe_ratio_max": 9.0,
                           "win_rate_mean": 0.65, "max_drawdown_mean": 12.5},
        "sampler_results": {"episode_reward_mean": 99999.0},
        "timers": {"training_iteration_time_ms": 100.0},
    }


def new_stack(lifetime: int) -> dict:
    """An RLlib new-API-stack result."""
    return {
        "env_runners": {"episode_return_mean": 150.0, "episode_len_mean": 321.0,
                        "num_env_steps_sampled_lifetime": lifetime, "num_episodes": 4},
        "learners": {
            "default_policy": {"policy_loss": -0.01, "vf_loss": 0.5, "entropy": 1.3, "curr_kl_coeff": 0.2},
            "__all_modules__": {"policy_loss": 999.0, "vf_loss": 999.0, "entropy": 999.0,
                                "num_env_steps_trained": 4000},
        },
        "num_env_steps_sampled_lifetime": lifetime,
        "training_iteration": 1,
    }


def run_steps(results, algorithm="PPO", run_id="exp"):
    @otel_rl.train_step(algorithm=algorithm, run_id=run_id)
    def step(result):
        return result

    for result in results:
        step(result)


@pytest.mark.parametrize("form", ["nested", "flattened"])
def test_rllib_old_api_stack(form):
    """Old API stack: means, learner_stats losses, custom_metrics and lifetime steps turned into increments."""
    results = [old_stack(i) for i in (1, 2, 3)]
    if form == "flattened":
        results = [flatten(r) for r in results]
    run_steps(results)
    assert V("rl_training_iterations_total", algorithm="PPO") == 3.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="exp") == 3.0
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="exp") == -117.5
    assert V("rl_training_episode_length_mean", algorithm="PPO", run_id="exp") == 203.0
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 3500.0
    policy = H("rl_training_policy_loss", algorithm="PPO")
    assert policy.count == 3 and policy.sum == pytest.approx(-0.3)
    assert H("rl_training_value_loss", algorithm="PPO").sum == pytest.approx(1.2)
    assert H("rl_training_entropy", algorithm="PPO").count == 3
    labels = {"algorithm": "PPO", "agent_id": "default"}
    assert V("rl_training_sharpe_ratio", **labels) == 1.2
    assert V("rl_training_win_rate", **labels) == 65.0
    assert V("rl_training_max_drawdown", **labels) == 12.5


def test_rllib_old_stack_custom_metrics_per_agent():
    """custom_metrics per agent (nested dicts or 'agent/name_mean' keys) set the figures per agent_id."""
    run_steps([{
        "episode_reward_mean": 1.0,
        "custom_metrics": {"agent_0": {"sharpe_ratio": 0.8, "win_rate": 0.5},
                           "agent_1/sharpe_ratio_mean": -0.3, "agent_1/total_return_mean": 0.12},
    }])
    assert V("rl_training_sharpe_ratio", algorithm="PPO", agent_id="agent_0") == 0.8
    assert V("rl_training_win_rate", algorithm="PPO", agent_id="agent_0") == 50.0
    assert V("rl_training_sharpe_ratio", algorithm="PPO", agent_id="agent_1") == -0.3
    assert V("rl_training_total_return", algorithm="PPO", agent_id="agent_1") == 12.0
    assert V("rl_training_sharpe_ratio", algorithm="PPO", agent_id="default") is None


def test_lifetime_counter_reset_counts_the_new_total():
    """When the lifetime step counter goes down (a restored trainer), the new lifetime value is counted."""
    run_steps([{"num_env_steps_sampled": 1000}, {"num_env_steps_sampled": 1500}, {"num_env_steps_sampled": 200}])
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 1700.0


def test_steps_this_iter_beats_lifetime():
    """num_env_steps_sampled_this_iter is used as the increment when present."""
    run_steps([{"num_env_steps_sampled": 1000, "num_env_steps_sampled_this_iter": 1000},
               {"num_env_steps_sampled": 2000, "num_env_steps_sampled_this_iter": 1000}])
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 2000.0


@pytest.mark.parametrize("form", ["nested", "flattened"])
def test_rllib_new_api_stack(form):
    """New API stack: env_runners means, learners/<module> losses (not __all_modules__), lifetime steps."""
    results = [new_stack(4000), new_stack(8000), new_stack(12000)]
    if form == "flattened":
        results = [flatten(r) for r in results]
    run_steps(results)
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="exp") == 150.0
    assert V("rl_training_episode_length_mean", algorithm="PPO", run_id="exp") == 321.0
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 12000.0
    policy = H("rl_training_policy_loss", algorithm="PPO")
    assert policy.count == 3 and policy.sum == pytest.approx(-0.03)
    assert H("rl_training_value_loss", algorithm="PPO").max == 0.5
    assert H("rl_training_entropy", algorithm="PPO").max == 1.3


def test_rllib_new_stack_multi_agent_learners():
    """Each learner module's losses are observed; __all_modules__ is ignored."""
    run_steps([{"learners": {"agent_0": {"policy_loss": 0.1}, "agent_1": {"policy_loss": 0.2},
                             "__all_modules__": {"policy_loss": 50.0}}}])
    policy = H("rl_training_policy_loss", algorithm="PPO")
    assert policy.count == 2 and policy.sum == pytest.approx(0.3)
    module = {"algorithm": "PPO", "run_id": "exp", "loss": "policy"}
    assert V("rl_training_module_loss", agent_id="agent_0", **module) == 0.1
    assert V("rl_training_module_loss", agent_id="agent_1", **module) == 0.2
    assert V("rl_training_module_loss", agent_id="__all_modules__", **module) is None


def test_plain_dict():
    """Plain keys: reward_mean, length_mean, losses, env_steps, training_iteration and trading figures."""
    run_steps([{"reward_mean": 10.0, "length_mean": 50, "policy_loss": 0.1, "value_loss": 0.2, "entropy": 0.9,
                "env_steps": 100, "training_iteration": 7, "sharpe_ratio": 1.5, "win_rate": 0.6,
                "total_return": 0.12, "max_drawdown": 3.0},
               {"reward_mean": 12.0, "env_steps": 50}])
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="exp") == 12.0
    assert V("rl_training_episode_length_mean", algorithm="PPO", run_id="exp") == 50.0
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 150.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="exp") == 8.0
    assert V("rl_training_iterations_total", algorithm="PPO") == 2.0
    assert H("rl_training_policy_loss", algorithm="PPO").sum == 0.1
    assert H("rl_training_value_loss", algorithm="PPO").sum == 0.2
    assert H("rl_training_entropy", algorithm="PPO").sum == 0.9
    labels = {"algorithm": "PPO", "agent_id": "default"}
    assert V("rl_training_sharpe_ratio", **labels) == 1.5
    assert V("rl_training_win_rate", **labels) == 60.0
    assert V("rl_training_total_return", **labels) == 12.0
    assert V("rl_training_max_drawdown", **labels) == 3.0


def test_plain_dict_per_agent_figures():
    """Plain per-agent figures ({"agent_0": {...}} or "agent_1/sharpe_ratio") land under those agent ids."""
    run_steps([{"agent_0": {"sharpe_ratio": 2.0}, "agent_1/win_rate": 0.25}])
    assert V("rl_training_sharpe_ratio", algorithm="PPO", agent_id="agent_0") == 2.0
    assert V("rl_training_win_rate", algorithm="PPO", agent_id="agent_1") == 25.0


def test_hist_stats_episode_rewards_are_recorded_per_episode():
    """hist_stats/episode_reward and episode_lengths lists become one episode record each."""
    run_steps([{"hist_stats": {"episode_reward": [-600.0, 20.0, 300.0], "episode_lengths": [10, 20, 30]}},
               {"hist_stats/episode_reward": [-50.0], "hist_stats/episode_lengths": [5]}])
    labels = {"algorithm": "PPO", "agent_id": "default"}
    assert V("rl_training_episodes_total", **labels) == 4.0
    reward = H("rl_training_episode_reward", **labels)
    assert reward.count == 4 and reward.sum == -330.0
    assert reward.counts[1] == 1  # -600 in le="-500.0"
    length = H("rl_training_episode_length", **labels)
    assert length.count == 4 and length.sum == 65.0


def test_hist_stats_window_counts_only_this_iterations_episodes():
    """RLlib's hist_stats keeps the last 100 episodes: with episodes_this_iter only the newest are recorded."""
    window = [float(i) for i in range(100)]
    run_steps([{"hist_stats": {"episode_reward": window[:60], "episode_lengths": [10] * 60}, "episodes_this_iter": 60},
               {"hist_stats": {"episode_reward": window, "episode_lengths": [20] * 100}, "episodes_this_iter": 40},
               {"hist_stats": {"episode_reward": window, "episode_lengths": [20] * 100}, "episodes_this_iter": 0}])
    labels = {"algorithm": "PPO", "agent_id": "default"}
    assert V("rl_training_episodes_total", **labels) == 100.0
    assert H("rl_training_episode_reward", **labels).sum == sum(window)
    assert H("rl_training_episode_length", **labels).sum == 60 * 10 + 40 * 20


def test_hist_stats_with_bad_values_does_not_raise():
    """NaN rewards in hist_stats are dropped and counted; the other episodes still count."""
    run_steps([{"hist_stats": {"episode_reward": [1.0, float("nan")], "episode_lengths": [10]}}])
    labels = {"algorithm": "PPO", "agent_id": "default"}
    assert V("rl_training_episodes_total", **labels) == 2.0
    assert H("rl_training_episode_reward", **labels).count == 1
    assert H("rl_training_episode_length", **labels).count == 1
    assert testing.dropped("rl_training_episode_reward", "nan") == 1


def test_train_step_agent_id_argument():
    """train_step(agent_id=...) labels per-episode records and default-agent figures."""
    @otel_rl.train_step(algorithm="SAC", agent_id="trader")
    def step():
        return {"hist_stats": {"episode_reward": [5.0]}, "sharpe_ratio": 0.7}

    step()
    assert V("rl_training_episodes_total", algorithm="SAC", agent_id="trader") == 1.0
    assert V("rl_training_sharpe_ratio", algorithm="SAC", agent_id="trader") == 0.7


def test_empty_and_unrelated_dicts_only_count_the_iteration():
    """A dict without known keys records the iteration and nothing else."""
    run_steps([{}, {"foo": 1, "info": {"bar": 2}}])
    assert V("rl_training_iterations_total", algorithm="PPO") == 2.0
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="exp") is None
    assert H("rl_training_policy_loss", algorithm="PPO") is None
    assert V("rl_training_environment_steps_total", algorithm="PPO") is None


def test_malformed_values_in_results_are_dropped_not_raised():
    """Strings, None and NaN in a result dict are dropped and counted; the step still returns its result."""
    result = {"episode_reward_mean": float("nan"), "policy_loss": "high", "num_env_steps_sampled": "many",
              "hist_stats": {"episode_reward": "oops"}, "custom_metrics": {"win_rate": None}}

    @otel_rl.train_step(algorithm="PPO")
    def step():
        return result

    assert step() is result
    assert V("rl_training_iterations_total", algorithm="PPO") == 1.0
    assert testing.dropped("rl_training_episode_reward_mean", "nan") == 1
    assert testing.dropped("rl_training_policy_loss", "wrong_type") == 1


# -- the parser on its own --------------------------------------------------------------------------------------------


def test_lookup_reads_nested_and_flat_forms():
    """lookup() finds the same values in nested and '/'-flattened dicts."""
    nested = {"a": {"b": {"c": 1}, "d": 2}}
    flat = flatten(nested)
    assert lookup(nested, "a/b/c") == lookup(flat, "a/b/c") == 1
    assert lookup(nested, "a/x") is None and lookup(flat, "a/x") is None


def test_parse_result_prefers_new_stack_reward():
    """With both env_runners/episode_return_mean and episode_reward_mean the new-stack value is used."""
    parsed = parse_result({"env_runners": {"episode_return_mean": 5.0}, "episode_reward_mean": 1.0})
    assert parsed.reward_mean == 5.0


def test_parse_result_ignores_sections_as_agents():
    """Section names such as info, timers or evaluation are never taken for agent ids."""
    parsed = parse_result({"evaluation": {"sharpe_ratio": 3.0}, "timers": {"win_rate": 1.0}})
    assert parsed.performance == {}


def test_numpy_lifetime_steps_and_iteration():
    """Lifetime step counters and training_iteration given as numpy integers are used like Python ints."""
    import numpy

    run_steps([{"num_env_steps_sampled": numpy.int64(1000), "training_iteration": numpy.int64(4)},
               {"num_env_steps_sampled": numpy.int64(2500), "training_iteration": numpy.int64(5)}])
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 2500.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="exp") == 5.0


def test_nan_lifetime_steps_do_not_corrupt_later_increments():
    """A NaN lifetime step count is ignored, and the next finite one still counts only its increment."""
    run_steps([{"num_env_steps_sampled": 1000}, {"num_env_steps_sampled": float("nan")},
               {"num_env_steps_sampled": 1500}])
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 1500.0


def test_training_signals_from_both_rllib_stacks_and_plain_keys():
    """Learning rate, KL, explained variance, grad norm, entropy coefficient and throughput are read from the old
    stack's learner_stats, the new stack's learner results and plain keys; plain keys win."""
    old = parse_result({"info": {"learner": {"default_policy": {"learner_stats": {
        "cur_lr": 5e-5, "kl": 0.01, "vf_explained_var": 0.3, "grad_gnorm": 1.5, "entropy_coeff": 0.0}}}},
        "num_env_steps_sampled_throughput_per_sec": 900.0})
    assert old.signals == {"learning_rate": 5e-5, "kl_divergence": 0.01, "explained_variance": 0.3,
                           "grad_norm": 1.5, "entropy_coefficient": 0.0, "env_steps_per_second": 900.0}
    new = flatten({"learners": {"default_policy": {
        "default_optimizer_learning_rate": 3e-4, "mean_kl_loss": 0.02, "vf_explained_var": -0.1,
        "gradients_default_optimizer_global_norm": 2.0, "curr_entropy_coeff": 0.01, "policy_loss": 0.1}},
        "env_runners": {"num_env_steps_sampled_lifetime_throughput": {"throughput_since_last_reduce": 1200.0}}})
    assert parse_result(new).signals == {"learning_rate": 3e-4, "kl_divergence": 0.02, "explained_variance": -0.1,
                                         "grad_norm": 2.0, "entropy_coefficient": 0.01,
                                         "env_steps_per_second": 1200.0}
    plain = parse_result({"learning_rate": 1e-3, "clip_fraction": 0.2, "exploration_rate": 0.05,
                          "info": {"learner": {"p": {"learner_stats": {"cur_lr": 5.0}}}}})
    assert plain.signals == {"learning_rate": 1e-3, "clip_fraction": 0.2, "exploration_rate": 0.05}


def test_signals_of_several_modules_are_averaged():
    """With several learner modules, each signal is the mean over the modules that report it; bad values are
    left out of the mean."""
    parsed = parse_result({"learners": {"a": {"mean_kl_loss": 0.01}, "b": {"mean_kl_loss": 0.03},
                                        "c": {"mean_kl_loss": float("nan")}, "__all_modules__": {"mean_kl_loss": 9}}})
    assert parsed.signals["kl_divergence"] == pytest.approx(0.02)


def test_train_step_sets_the_signal_gauges():
    """@train_step sets the signal gauges per (algorithm, run_id)."""
    step = otel_rl.train_step(algorithm="PPO", run_id="r")(lambda: {"learners": {"default_policy": {
        "default_optimizer_learning_rate": 3e-4, "mean_kl_loss": 0.02}}})
    step()
    assert V("rl_training_learning_rate", algorithm="PPO", run_id="r") == 3e-4
    assert V("rl_training_kl_divergence", algorithm="PPO", run_id="r") == 0.02
    assert V("rl_training_clip_fraction", algorithm="PPO", run_id="r") is None


def test_new_stack_episode_count_without_values():
    """A new-stack result counts env_runners/num_episodes; it has no per-episode values to observe."""
    step = otel_rl.train_step(algorithm="PPO")(lambda: {"env_runners": {"num_episodes": 49,
                                                                         "episode_return_mean": 21.0}})
    step()
    step()
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="default") == 98
    assert H("rl_training_episode_reward", algorithm="PPO", agent_id="default") is None


def test_callback_episodes_are_observed_and_a_recorded_result_is_skipped():
    """The RLlib callback's (return, length) pairs are every episode of the iteration; a result marked as
    recorded by the callback is not recorded again."""
    result = {"env_runners": {"num_episodes": 2, "otel_rl": {"episodes": [(10.0, 10), (-3.5, 7)]}},
              "training_iteration": 1}
    otel_rl.train_step(algorithm="PPO")(lambda: result)()
    reward = H("rl_training_episode_reward", algorithm="PPO", agent_id="default")
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="default") == 2
    assert reward.count == 2 and reward.sum == 6.5
    assert H("rl_training_episode_length", algorithm="PPO", agent_id="default").sum == 17
    otel_rl.train_step(algorithm="PPO")(lambda: {**result, "otel_rl_recorded": True})()
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="default") == 2
    assert V("rl_training_iterations_total", algorithm="PPO") == 1


def test_more_episodes_than_the_hist_stats_window_all_count():
    """Old stack: 150 episodes in one iteration count 150; the 100 in hist_stats are observed."""
    otel_rl.train_step(algorithm="PPO")(lambda: {"episodes_this_iter": 150, "hist_stats": {
        "episode_reward": [1.0] * 100, "episode_lengths": [5] * 100}})()
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="default") == 150
    assert H("rl_training_episode_reward", algorithm="PPO", agent_id="default").count == 100


def test_plain_episodes_this_iter_without_values_does_not_count():
    """A plain result's episodes_this_iter alone records no episodes (a Gymnasium wrapper may count them)."""
    otel_rl.train_step(algorithm="PG")(lambda: {"episodes_this_iter": 10, "episode_reward_mean": 3.0})()
    assert V("rl_training_episodes_total", algorithm="PG", agent_id="default") is None
# -- hostile result dicts: read in bounded time, never raised into the loop -------------------------------------------


def _timed_parse(result) -> tuple[float, object]:
    started = time.monotonic()
    parsed = parse_result(result)
    return time.monotonic() - started, parsed


def test_self_referencing_result_is_read_once_in_bounded_time():
    """``d["custom_metrics"] = d`` (and a cycle inside custom_metrics) ends quickly, with the figures found."""
    result = {"custom_metrics": {"sharpe_ratio": 1.25}}
    result["custom_metrics"]["again"] = result["custom_metrics"]
    result["custom_metrics"]["root"] = result
    elapsed, parsed = _timed_parse(result)
    assert elapsed < 1.0
    assert parsed.performance == {None: {"sharpe_ratio": 1.25}}
    outer = {"sharpe_ratio": 0.5}
    outer["custom_metrics"] = outer
    elapsed, parsed = _timed_parse(outer)
    assert elapsed < 1.0 and parsed.performance[None]["sharpe_ratio"] == 0.5


def test_absurdly_deep_and_exponentially_shared_results_are_bounded(caplog):
    """5000 nested levels, or 2**64 paths through shared sub-dicts, are read up to the limits, logged once."""
    deep = node = {}
    for _ in range(5000):
        node["level"] = {}
        node = node["level"]
    node["sharpe_ratio"] = 9.0  # below MAX_DEPTH: not read
    shared = {"agent_0": {"win_rate": 0.5}}
    for _ in range(64):
        shared = {"a": shared, "b": shared}
    for result in ({"custom_metrics": deep}, {"custom_metrics": shared}):
        elapsed, parsed = _timed_parse(result)
        assert elapsed < 5.0
        assert None not in parsed.performance or "sharpe_ratio" not in parsed.performance[None]
    assert len([r for r in caplog.records if "result dict" in r.getMessage()]) <= 1


def test_train_step_with_a_self_referencing_result_records_and_returns():
    """A train_step returning a self-referencing dict records its figures and returns it unchanged."""
    @otel_rl.train_step(algorithm="PPO", run_id="r")
    def step():
        result = {"episode_reward_mean": 3.0, "custom_metrics": {}}
        result["custom_metrics"]["loop"] = result
        return result

    assert step()["episode_reward_mean"] == 3.0
    assert testing.value("rl_training_episode_reward_mean", algorithm="PPO", run_id="r") == 3.0


def test_one_episode_series_unwrapped_by_rllib_is_one_episode():
    """RLlib's MetricsLogger hands a one-item series over as the item: a bare ``(return, length)`` is one episode,
    and the iteration is recorded whole."""
    otel_rl.train_step(algorithm="PPO")(lambda: {"env_runners": {"num_episodes": 1, "otel_rl": {
        "episodes": (100.0, 100), "agent_episodes": ("0", 60.0, 100)}}, "training_iteration": 1,
        "learners": {"default_policy": {"policy_loss": 0.5}}})()
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="default") == 1
    assert H("rl_training_episode_length", algorithm="PPO", agent_id="default").sum == 100
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="0") == 1
    assert H("rl_training_episode_reward", algorithm="PPO", agent_id="0").sum == 60.0
    assert V("rl_training_iterations_total", algorithm="PPO") == 1
    assert H("rl_training_policy_loss", algorithm="PPO").count == 1


def test_episode_series_as_numpy_arrays_or_lists_are_read():
    """The episode series read the same as a list of tuples when it comes as a NumPy array (2 episodes, or the bare
    one of a one-item series) or as lists (a result that went through JSON)."""
    import numpy as np

    step = otel_rl.train_step(algorithm="PPO")(lambda episodes: {"env_runners": {"otel_rl": {"episodes": episodes}}})
    step(np.array([[1.0, 5], [2.0, 6]]))
    step(np.array([3.0, 7]))
    step([[4.0, 8]])
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="default") == 4
    assert H("rl_training_episode_reward", algorithm="PPO", agent_id="default").sum == 10.0
    assert H("rl_training_episode_length", algorithm="PPO", agent_id="default").sum == 26


def test_malformed_episode_items_are_dropped_and_counted(caplog):
    """An item of the episode series that is no (return, length) pair is dropped with one warning and counted;
    the other episodes and the iteration are recorded."""
    step = otel_rl.train_step(algorithm="PPO")(lambda: {"env_runners": {"otel_rl": {
        "episodes": [(1.0, 5), "junk", (2.0, 6, 7)]}}})
    step()
    step()
    assert V("rl_training_episodes_total", algorithm="PPO", agent_id="default") == 2
    assert V("rl_training_iterations_total", algorithm="PPO") == 2
    assert testing.dropped("rl_training_episode_reward", "wrong_type") == 4
    assert len([r for r in caplog.records if "wrong_type" in r.getMessage()]) == 1


def test_every_unreadable_result_counts_and_warns_once(caplog, monkeypatch):
    """A result the parser cannot read loses only its iteration, and each such loss counts as unreadable_result
    in otel_rl_dropped_values_total (one traceback in the log, not one per step)."""
    from otel_rl._internal import steps

    def broken(result):
        raise RuntimeError("unreadable")

    monkeypatch.setattr(steps, "parse_result", broken)
    step = otel_rl.train_step(algorithm="PPO")(lambda: {"training_iteration": 1})
    for _ in range(3):
        step()
    assert testing.dropped("rl_training_iterations_total", "unreadable_result") == 3
    assert len([r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]) == 2  # traceback + drop


#: RLlib's learner statistics, as its built-in algorithms log them (tests/data/rllib-learner-stats.json holds the
#: ones captured from real APPO and IMPALA iterations on both API stacks).
def test_loss_keys_of_dqn_and_sac_on_both_stacks():
    """DQN's qf_loss and SAC's policy/qf (new stack) and actor/critic (old stack) losses are the policy and value
    losses; SAC's alpha_value is the entropy coefficient."""
    otel_rl.train_step(algorithm="DQN")(lambda: {"learners": {"default_policy": {"qf_loss": 0.25,
                                                                                  "td_error_mean": -3.0}}})()
    assert H("rl_training_value_loss", algorithm="DQN").sum == 0.25
    assert H("rl_training_policy_loss", algorithm="DQN") is None
    otel_rl.train_step(algorithm="SAC", run_id="r")(lambda: {
        "learners": {"default_policy": {"policy_loss": 1.5, "qf_loss": 0.75, "alpha_value": 0.9}},
        "info": {"learner": {"other": {"learner_stats": {"actor_loss": 2.5, "critic_loss": 0.5}}}}})()
    assert H("rl_training_policy_loss", algorithm="SAC").sum == 4.0
    assert H("rl_training_value_loss", algorithm="SAC").sum == 1.25
    assert V("rl_training_entropy_coefficient", algorithm="SAC", run_id="r") == 0.9


#: Which of RLlib's own keys each captured algorithm's losses must come from: (policy, value, entropy).
_CAPTURED = {
    "APPO-new": ("policy_loss", "vf_loss", "entropy"),
    "APPO-old": ("policy_loss", "vf_loss", "entropy"),
    "IMPALA-new": ("mean_pi_loss", "mean_vf_loss", "entropy"),  # its pi_loss and vf_loss are batch sums
    "IMPALA-old": ("policy_loss", "vf_loss", "entropy"),
}


@pytest.mark.parametrize("captured", sorted(_CAPTURED))
def test_appo_and_impala_losses_from_captured_learner_stats(captured):
    """APPO's and IMPALA's learner statistics, as captured from one real iteration of each on both API stacks
    (tests/data/rllib-learner-stats.json), give the policy loss, value loss and entropy from the right keys."""
    stats = json.loads((DATA / "rllib-learner-stats.json").read_text())[captured]
    result = {"learners": stats} if captured.endswith("new") else {"info": {"learner": stats}}
    policy = stats["default_policy"]
    if captured.endswith("old"):
        policy = policy["learner_stats"]
    otel_rl.train_step(algorithm="X")(lambda: result)()
    for series, key in zip(("policy_loss", "value_loss", "entropy"), _CAPTURED[captured]):
        histogram = H(f"rl_training_{series}", algorithm="X")
        assert histogram.count == 1 and histogram.sum == pytest.approx(policy[key]), series
