"""RLlib-sized ``train()`` result dicts (old API stack nested and flattened, new API stack) for the decorator bench.

The shapes follow what RLlib 2.x ``Algorithm.train()`` returns: a few hundred leaves, most of them the echoed
``config``, with ``hist_stats`` windows of 100 episodes on the old stack.
"""

from __future__ import annotations

import random
from typing import Any


def _config(rng: random.Random, n: int = 220) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for i in range(n):
        kind = i % 5
        config[f"param_{i:03d}"] = (rng.random(), rng.randint(0, 1000), f"value-{i}", bool(i & 1), None)[kind]
    config["model"] = {"fcnet_hiddens": [256, 256], "fcnet_activation": "tanh", "vf_share_layers": False,
                       "use_lstm": False, "max_seq_len": 20}
    config["multiagent"] = {"policies": ["default_policy"], "policy_mapping_fn": None,
                            "policies_to_train": None, "count_steps_by": "env_steps"}
    return config


def _timers(rng: random.Random) -> dict[str, float]:
    return {k: rng.random() * 100 for k in ("training_iteration_time_ms", "restore_workers_time_ms",
                                            "training_step_time_ms", "sample_time_ms", "load_time_ms",
                                            "load_throughput", "learn_time_ms", "learn_throughput",
                                            "synch_weights_time_ms")}


def _learner_stats(rng: random.Random) -> dict[str, float]:
    names = ("allreduce_latency", "grad_gnorm", "cur_kl_coeff", "cur_lr", "total_loss", "policy_loss", "vf_loss",
             "vf_explained_var", "kl", "entropy", "entropy_coeff", "num_grad_updates_lifetime",
             "diff_num_grad_updates_vs_sampler_policy", "mean_kl_loss", "mean_entropy")
    stats = {k: rng.random() for k in names}
    stats["policy_loss"] = -0.02  # PPO surrogate losses are negative
    return stats


def _episode_stats(rng: random.Random, window: int) -> dict[str, Any]:
    rewards = [rng.uniform(10, 500) for _ in range(window)]
    lengths = [int(r) for r in rewards]
    return {
        "episode_reward_max": max(rewards), "episode_reward_min": min(rewards),
        "episode_reward_mean": sum(rewards) / window, "episode_len_mean": sum(lengths) / window,
        "episode_media": {}, "episodes_this_iter": 12, "episodes_timesteps_total": sum(lengths),
        "policy_reward_min": {}, "policy_reward_max": {}, "policy_reward_mean": {},
        "custom_metrics": {"sharpe_ratio_mean": 1.3, "max_drawdown_mean": 0.08, "win_rate_mean": 0.61,
                           "total_return_mean": 0.14, "turnover_mean": 3.2},
        "hist_stats": {"episode_reward": rewards, "episode_lengths": lengths},
        "sampler_perf": {"mean_raw_obs_processing_ms": 0.3, "mean_inference_ms": 0.9,
                         "mean_action_processing_ms": 0.1, "mean_env_wait_ms": 0.2, "mean_env_render_ms": 0.0},
        "num_faulty_episodes": 0,
        "connector_metrics": {"ObsPreprocessorConnector_ms": 0.01, "StateBufferConnector_ms": 0.01,
                              "ViewRequirementAgentConnector_ms": 0.05},
    }


def old_api_nested(seed: int = 0, window: int = 100) -> dict[str, Any]:
    """Old API stack (``ray.rllib`` < 2.10 default), nested."""
    rng = random.Random(seed)
    episodes = _episode_stats(rng, window)
    result: dict[str, Any] = dict(episodes)
    result.update({
        "info": {"learner": {"default_policy": {"learner_stats": _learner_stats(rng), "custom_metrics": {},
                                                "num_agent_steps_trained": 128.0, "num_grad_updates_lifetime": 900,
                                                "diff_num_grad_updates_vs_sampler_policy": 29.0}},
                 "num_env_steps_sampled": 40000, "num_env_steps_trained": 40000,
                 "num_agent_steps_sampled": 40000, "num_agent_steps_trained": 40000},
        "sampler_results": dict(episodes),
        "num_healthy_workers": 2, "num_in_flight_async_reqs": 0, "num_remote_worker_restarts": 0,
        "num_agent_steps_sampled": 40000, "num_agent_steps_trained": 40000, "num_env_steps_sampled": 40000,
        "num_env_steps_trained": 40000, "num_env_steps_sampled_this_iter": 4000,
        "num_env_steps_trained_this_iter": 4000, "num_env_steps_sampled_throughput_per_sec": 800.0,
        "num_env_steps_trained_throughput_per_sec": 800.0, "num_steps_trained_this_iter": 4000,
        "agent_timesteps_total": 40000, "timers": _timers(rng),
        "counters": {"num_env_steps_sampled": 40000, "num_env_steps_trained": 40000,
                     "num_agent_steps_sampled": 40000, "num_agent_steps_trained": 40000},
        "done": False, "episodes_total": 400, "training_iteration": 10, "trial_id": "default",
        "date": "2025-01-01_00-00-00", "timestamp": 1735689600, "time_this_iter_s": 5.0, "time_total_s": 50.0,
        "pid": 1234, "hostname": "host", "node_ip": "127.0.0.1", "config": _config(rng),
        "time_since_restore": 50.0, "iterations_since_restore": 10,
        "perf": {"cpu_util_percent": 50.0, "ram_util_percent": 30.0},
    })
    return result


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """RLlib's ``flatten_dict`` with ``/``."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def old_api_flat(seed: int = 0, window: int = 100) -> dict[str, Any]:
    """Old API stack, flattened as Tune's loggers see it."""
    return flatten(old_api_nested(seed, window))


def new_api(seed: int = 0) -> dict[str, Any]:
    """New API stack (``env_runners`` / ``learners``)."""
    rng = random.Random(seed)
    learner = _learner_stats(rng)
    learner.update({"num_module_steps_trained": 4000, "num_non_trainable_parameters": 0,
                    "num_trainable_parameters": 140000, "module_train_batch_size_mean": 4000,
                    "weights_seq_no": 10, "gradients_default_optimizer_global_norm": 0.7,
                    "default_optimizer_learning_rate": 3e-4, "vf_loss_unclipped": 1.2, "curr_entropy_coeff": 0.0,
                    "curr_kl_coeff": 0.2})
    env_runners = {
        "episode_return_mean": 210.0, "episode_return_max": 500.0, "episode_return_min": 12.0,
        "episode_len_mean": 210.0, "episode_len_max": 500, "episode_len_min": 12, "episode_duration_sec_mean": 0.3,
        "num_episodes": 19, "num_episodes_lifetime": 400, "num_env_steps_sampled": 4000,
        "num_env_steps_sampled_lifetime": 40000, "num_agent_steps_sampled": {"default_agent": 4000},
        "num_agent_steps_sampled_lifetime": {"default_agent": 40000},
        "num_module_steps_sampled": {"default_policy": 4000},
        "num_module_steps_sampled_lifetime": {"default_policy": 40000},
        "agent_episode_returns_mean": {"default_agent": 210.0},
        "module_episode_returns_mean": {"default_policy": 210.0}, "sample": 3.1, "time_between_sampling": 1.9,
        "weights_seq_no": 9, "env_to_module_connector": {"timers": {"connectors": {str(i): 1e-5 for i in range(6)}}},
        "module_to_env_connector": {"timers": {"connectors": {str(i): 1e-5 for i in range(6)}}},
        "env_reset_timer": 0.001, "env_step_timer": 3e-5, "rlmodule_inference_timer": 2e-4,
        "num_env_steps_sampled_lifetime_throughput": 800.0, "sharpe_ratio": 1.3, "win_rate": 0.61,
    }
    return {
        "env_runners": env_runners,
        "learners": {"default_policy": learner,
                     "__all_modules__": {"num_env_steps_trained": 4000, "num_module_steps_trained": 4000,
                                         "num_trainable_parameters": 140000, "learner_connector": {"timers": {}},
                                         "num_env_steps_trained_lifetime": 40000}},
        "num_env_steps_sampled_lifetime": 40000, "num_training_step_calls_per_iteration": 1,
        "num_env_steps_sampled_lifetime_throughput": 800.0,
        "fault_tolerance": {"num_healthy_workers": 2, "num_in_flight_async_reqs": 0,
                            "num_remote_worker_restarts": 0},
        "timers": _timers(rng), "done": False, "training_iteration": 10, "trial_id": "default",
        "date": "2025-01-01_00-00-00", "timestamp": 1735689600, "time_this_iter_s": 5.0, "time_total_s": 50.0,
        "pid": 1234, "hostname": "host", "node_ip": "127.0.0.1", "config": _config(rng),
        "time_since_restore": 50.0, "iterations_since_restore": 10,
        "perf": {"cpu_util_percent": 50.0, "ram_util_percent": 30.0},
    }


def leaf_count(node: Any) -> int:
    """Leaves of a nested result (a list counts as one leaf, as RLlib logs it)."""
    if isinstance(node, dict):
        return sum(leaf_count(v) for v in node.values()) or 1
    return 1
