"""The Stable-Baselines3 callback, on real SB3 training: /metrics equals what SB3 counts and logs."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import gymnasium as gym
import pytest
import stable_baselines3
import torch
from scrape import Scrape
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import KVWriter, Logger, configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import otel_rl
from otel_rl.integrations.gymnasium import RecordEpisodeMetrics, wrap
from otel_rl.integrations.sb3 import SB3_KEYS, OtelRLCallback

from procs import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small networks train faster on one thread, and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Dumps(KVWriter):
    """Keeps every dump of SB3's logger: what SB3 itself writes to stdout, CSV or TensorBoard."""

    def __init__(self) -> None:
        self.dumps: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.dumps.append(dict(key_values))

    def close(self):
        pass


def _logged(model) -> tuple[_Dumps, object]:
    logger = configure(None, [])
    dumps = _Dumps()
    logger.output_formats.append(dumps)
    model.set_logger(logger)
    return dumps, logger


def _sb3_series(dumps: _Dumps, logger, key: str) -> list[float]:
    """Every value SB3 logged under ``key``: one per dump, plus the last update's, recorded but never dumped."""
    values = [d[key] for d in dumps.dumps if key in d]
    if key in logger.name_to_value:
        values.append(logger.name_to_value[key])
    return [float(v) for v in values]


def _episodes(vec_env) -> tuple[list[float], list[int]]:
    """SB3's own record of the finished episodes: each sub-environment's Monitor."""
    rewards = [r for env_rewards in vec_env.env_method("get_episode_rewards") for r in env_rewards]
    lengths = [n for env_lengths in vec_env.env_method("get_episode_lengths") for n in env_lengths]
    return rewards, lengths


def _assert_episodes(scrape: Scrape, algorithm: str, rewards: list[float], lengths: list[int]) -> None:
    labels = {"algorithm": algorithm, "agent_id": "default"}
    assert len(rewards) > 5
    assert scrape.value("rl_training_episodes_total", **labels) == len(rewards)
    assert scrape.value("rl_training_episode_reward_count", **labels) == len(rewards)
    assert scrape.value("rl_training_episode_reward_sum", **labels) == pytest.approx(sum(rewards))
    assert scrape.value("rl_training_episode_length_sum", **labels) == sum(lengths)


def _assert_losses(scrape: Scrape, metric: str, algorithm: str, values: list[float]) -> None:
    assert values, f"SB3 logged no value for {metric}"
    assert scrape.value(f"{metric}_count", algorithm=algorithm) == len(values)
    assert scrape.value(f"{metric}_sum", algorithm=algorithm) == pytest.approx(sum(values), rel=1e-9, abs=1e-9)


def _last(dumps: _Dumps, logger, key: str) -> float:
    return _sb3_series(dumps, logger, key)[-1]


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_ppo_on_cartpole_records_what_sb3_counts_and_logs(telemetry, vec_env_cls):
    """PPO, 2 envs, 2048 steps: episodes, means, losses (last update included), entropy sign, signals, steps,
    iterations and the run on /metrics equal SB3's Monitor records and logged values."""
    vec_env = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=vec_env_cls)
    model = PPO("MlpPolicy", vec_env, n_steps=256, batch_size=128, n_epochs=2, seed=0, device="cpu")
    dumps, logger = _logged(model)
    model.learn(2048, callback=OtelRLCallback())
    rewards, lengths = _episodes(vec_env)
    vec_env.close()

    scrape = Scrape(telemetry.prometheus_port)
    _assert_episodes(scrape, "PPO", rewards, lengths)
    run = {"algorithm": "PPO", "run_id": "default"}
    assert scrape.value("rl_training_episode_reward_mean", **run) == pytest.approx(
        _last(dumps, logger, "rollout/ep_rew_mean"))
    assert scrape.value("rl_training_episode_length_mean", **run) == pytest.approx(
        _last(dumps, logger, "rollout/ep_len_mean"))
    updates = _sb3_series(dumps, logger, "train/policy_gradient_loss")
    assert len(updates) == 4  # 2048 / (256 * 2) updates, the last one never dumped by SB3
    _assert_losses(scrape, "rl_training_policy_loss", "PPO", updates)
    _assert_losses(scrape, "rl_training_value_loss", "PPO", _sb3_series(dumps, logger, "train/value_loss"))
    entropy = [-v for v in _sb3_series(dumps, logger, "train/entropy_loss")]
    assert all(0 < e <= math.log(2) for e in entropy)  # CartPole's two actions: entropy in (0, ln 2]
    _assert_losses(scrape, "rl_training_entropy", "PPO", entropy)
    for sb3_key, series in [("train/approx_kl", "rl_training_kl_divergence"),
                            ("train/clip_fraction", "rl_training_clip_fraction"),
                            ("train/explained_variance", "rl_training_explained_variance"),
                            ("train/learning_rate", "rl_training_learning_rate"),
                            ("time/fps", "rl_training_env_steps_per_second")]:
        assert scrape.value(series, **run) == pytest.approx(_last(dumps, logger, sb3_key)), series
    assert scrape.value("rl_training_iterations_total", algorithm="PPO") == _last(dumps, logger, "time/iterations")
    assert scrape.value("rl_training_current_iteration", **run) == 4
    assert scrape.value("rl_training_environment_steps_total", algorithm="PPO") == model.num_timesteps == 2048
    assert scrape.value("rl_training_runs_total", algorithm="PPO", status="started") == 1
    assert scrape.value("rl_training_runs_total", algorithm="PPO", status="completed") == 1
    assert scrape.value("rl_training_active", algorithm="PPO") == 0
    assert not any(type(f).__name__ == "_LogWriter" for f in logger.output_formats)  # detached after learn


def test_dqn_on_cartpole_records_its_td_loss_and_exploration(telemetry):
    """DQN, 3000 steps: episodes equal SB3's own episode count; train/loss feeds the value loss once per SB3 log
    plus the last update; exploration rate and learning rate are SB3's latest values."""
    vec_env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    model = DQN("MlpPolicy", vec_env, learning_starts=500, train_freq=4, buffer_size=5000,
                target_update_interval=250, seed=0, device="cpu")
    dumps, logger = _logged(model)
    model.learn(3000, callback=OtelRLCallback(run_id="dqn-1"), log_interval=4)
    rewards, lengths = _episodes(vec_env)
    vec_env.close()

    scrape = Scrape(telemetry.prometheus_port)
    assert len(rewards) == model._episode_num
    _assert_episodes(scrape, "DQN", rewards, lengths)
    losses = _sb3_series(dumps, logger, "train/loss")
    _assert_losses(scrape, "rl_training_value_loss", "DQN", losses)
    assert scrape.value("rl_training_policy_loss_count", algorithm="DQN") is None
    run = {"algorithm": "DQN", "run_id": "dqn-1"}
    assert scrape.value("rl_training_exploration_rate", **run) == pytest.approx(
        _last(dumps, logger, "rollout/exploration_rate"))
    assert scrape.value("rl_training_learning_rate", **run) == pytest.approx(
        _last(dumps, logger, "train/learning_rate"))
    assert scrape.value("rl_training_episode_reward_mean", **run) == pytest.approx(
        _last(dumps, logger, "rollout/ep_rew_mean"))
    assert scrape.value("rl_training_environment_steps_total", algorithm="DQN") == model.num_timesteps == 3000


def test_a2c_and_sac_map_their_own_loss_keys(telemetry):
    """A2C's policy_loss and SAC's actor/critic losses and entropy coefficient land in the matching series."""
    a2c_env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    a2c = A2C("MlpPolicy", a2c_env, n_steps=8, seed=0, device="cpu")
    a2c_dumps, a2c_logger = _logged(a2c)
    a2c.learn(480, callback=OtelRLCallback(), log_interval=5)
    a2c_env.close()
    sac_env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    sac = SAC("MlpPolicy", sac_env, learning_starts=150, buffer_size=1000, batch_size=32, seed=0, device="cpu",
              policy_kwargs={"net_arch": [32, 32]})
    sac_dumps, sac_logger = _logged(sac)
    sac.learn(250, callback=OtelRLCallback(), log_interval=1)
    sac_rewards, sac_lengths = _episodes(sac_env)
    sac_env.close()

    scrape = Scrape(telemetry.prometheus_port)
    _assert_losses(scrape, "rl_training_policy_loss", "A2C", _sb3_series(a2c_dumps, a2c_logger, "train/policy_loss"))
    _assert_losses(scrape, "rl_training_entropy", "A2C",
                   [-v for v in _sb3_series(a2c_dumps, a2c_logger, "train/entropy_loss")])
    assert scrape.value("rl_training_iterations_total", algorithm="A2C") == 480 // 16
    _assert_losses(scrape, "rl_training_policy_loss", "SAC", _sb3_series(sac_dumps, sac_logger, "train/actor_loss"))
    _assert_losses(scrape, "rl_training_value_loss", "SAC", _sb3_series(sac_dumps, sac_logger, "train/critic_loss"))
    assert scrape.value("rl_training_entropy_coefficient", algorithm="SAC", run_id="default") == pytest.approx(
        _last(sac_dumps, sac_logger, "train/ent_coef"))
    assert scrape.value("rl_training_episodes_total", algorithm="SAC", agent_id="default") == len(sac_rewards) == 1
    assert scrape.value("rl_training_episode_length_sum", algorithm="SAC", agent_id="default") == sum(sac_lengths)


_LOSS_SERIES = ("rl_training_policy_loss", "rl_training_value_loss", "rl_training_entropy")
_SHORT_PENDULUM = {"env_id": "Pendulum-v1", "env_kwargs": {"max_episode_steps": 50}}
_OFF_POLICY = {"learning_starts": 100, "buffer_size": 1000, "batch_size": 32, "policy_kwargs": {"net_arch": [32, 32]}}


@pytest.mark.parametrize(("algorithm", "env", "kwargs", "steps", "mapping"), [
    (PPO, {"env_id": "CartPole-v1", "n_envs": 2}, {"n_steps": 128, "batch_size": 64, "n_epochs": 2}, 1024,
     {"rl_training_policy_loss": ("train/policy_gradient_loss", 1), "rl_training_value_loss": ("train/value_loss", 1),
      "rl_training_entropy": ("train/entropy_loss", -1)}),
    (A2C, {"env_id": "CartPole-v1", "n_envs": 2}, {"n_steps": 8}, 320,
     {"rl_training_policy_loss": ("train/policy_loss", 1), "rl_training_value_loss": ("train/value_loss", 1),
      "rl_training_entropy": ("train/entropy_loss", -1)}),
    (DQN, {"env_id": "CartPole-v1"}, {"learning_starts": 200, "train_freq": 4, "buffer_size": 2000}, 1000,
     {"rl_training_value_loss": ("train/loss", 1)}),
    (SAC, _SHORT_PENDULUM, _OFF_POLICY, 300,
     {"rl_training_policy_loss": ("train/actor_loss", 1), "rl_training_value_loss": ("train/critic_loss", 1)}),
    (TD3, _SHORT_PENDULUM, _OFF_POLICY, 300,
     {"rl_training_policy_loss": ("train/actor_loss", 1), "rl_training_value_loss": ("train/critic_loss", 1)}),
    (DDPG, _SHORT_PENDULUM, _OFF_POLICY, 300,
     {"rl_training_policy_loss": ("train/actor_loss", 1), "rl_training_value_loss": ("train/critic_loss", 1)}),
], ids=lambda v: v.__name__ if isinstance(v, type) else None)
def test_every_builtin_algorithm_maps_its_loss_keys(algorithm, env, kwargs, steps, mapping):
    """Each SB3 algorithm's loss keys feed the catalog's loss series with exactly what SB3's logger wrote (each
    dump plus the last update); a series the algorithm has no key for stays empty (SAC's ent_coef_loss, PPO's total
    loss and DQN's absent policy loss are not recorded)."""
    vec_env = make_vec_env(**env, seed=0)
    model = algorithm("MlpPolicy", vec_env, seed=0, device="cpu", **copy.deepcopy(kwargs))  # SB3 edits them
    dumps, logger = _logged(model)
    model.learn(steps, callback=OtelRLCallback(), log_interval=1)
    vec_env.close()

    name = algorithm.__name__
    for series in _LOSS_SERIES:
        recorded = otel_rl.testing.histogram(series, algorithm=name)
        if series not in mapping:
            assert recorded is None, series
            continue
        key, sign = mapping[series]
        assert SB3_KEYS[key].startswith(series)
        values = [sign * v for v in _sb3_series(dumps, logger, key)]
        assert len(values) >= 2, f"{name} logged {key} only {len(values)} times"
        assert (recorded.count, recorded.sum) == (len(values), pytest.approx(sum(values), rel=1e-12)), series


@pytest.mark.parametrize(("algorithm", "kwargs"), [(PPO, {"batch_size": 128, "n_epochs": 2}), (A2C, {})],
                         ids=["PPO", "A2C"])
def test_repeated_learn_with_a_custom_logger_records_each_update_once(algorithm, kwargs):
    """With the user's own logger, SB3 keeps the last update's values across ``learn`` calls and writes them in
    the first dump of the next one; the callback recorded them when the first ``learn`` returned and must not
    observe them again, nor when a ``learn`` ends without an update: 2 x 2 updates are 4 observations, equal to
    what SB3 wrote."""
    vec_env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = algorithm("MlpPolicy", vec_env, n_steps=256, seed=0, device="cpu", **kwargs)
    dumps, logger = _logged(model)
    model.learn(1024, callback=OtelRLCallback(), log_interval=1)
    model.learn(1024, callback=OtelRLCallback(), log_interval=1, reset_num_timesteps=False)
    model.learn(0, callback=OtelRLCallback(), reset_num_timesteps=False)  # no rollout: the same last update
    vec_env.close()

    name = algorithm.__name__
    updates = 4  # 2 x 1024 steps / (256 steps x 2 envs) rollouts, one train() each
    for series, key, sign in [("rl_training_policy_loss", "train/" + ("policy_gradient_loss" if algorithm is PPO
                                                                      else "policy_loss"), 1),
                              ("rl_training_value_loss", "train/value_loss", 1),
                              ("rl_training_entropy", "train/entropy_loss", -1)]:
        values = [sign * v for v in _sb3_series(dumps, logger, key)]
        assert len(values) == updates, key
        recorded = otel_rl.testing.histogram(series, algorithm=name)
        assert (recorded.count, recorded.sum) == (updates, pytest.approx(sum(values), rel=1e-12)), series
    assert otel_rl.testing.value("rl_training_iterations_total", algorithm=name) == updates


def test_a_custom_logger_that_cannot_be_hashed_still_completes_the_run():
    """A logger class of the user's own may define ``__eq__`` (and so have no hash): each update is still observed
    once across ``learn`` calls, each run completes and the callback's writer leaves the logger."""
    class ComparableLogger(Logger):
        def __eq__(self, other):
            return self is other

    vec_env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPO("MlpPolicy", vec_env, n_steps=256, batch_size=128, n_epochs=2, seed=0, device="cpu")
    dumps, logger = _Dumps(), ComparableLogger(None, [])
    logger.output_formats.append(dumps)
    model.set_logger(logger)
    model.learn(1024, callback=OtelRLCallback(), log_interval=1)
    model.learn(1024, callback=OtelRLCallback(), log_interval=1, reset_num_timesteps=False)
    vec_env.close()

    values = _sb3_series(dumps, logger, "train/value_loss")
    assert len(values) == 4  # 2 x 2 updates
    recorded = otel_rl.testing.histogram("rl_training_value_loss", algorithm="PPO")
    assert (recorded.count, recorded.sum) == (4, pytest.approx(sum(values), rel=1e-12))
    assert otel_rl.testing.value("rl_training_runs_total", algorithm="PPO", status="completed") == 2
    assert logger.output_formats == [dumps]


def test_the_docs_table_lists_every_key_sb3_logs():
    """docs/integrations.md names every key that the installed SB3's algorithms and callbacks log, and every key
    the callback maps: a new SB3 key shows up here before users miss it."""
    source = Path(stable_baselines3.__file__).parent
    logged = {key for path in source.rglob("*.py")
              for key in re.findall(r'logger\.record\(\s*"([^"]+)"', path.read_text(encoding="utf-8"))}
    assert {"train/policy_gradient_loss", "train/actor_loss", "train/loss", "train/ent_coef_loss"} <= logged
    doc = (ROOT / "docs" / "integrations.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Stable-Baselines3"):doc.index("## RLlib")]
    listed = set(re.findall(r"`([a-z_]+/[a-z_]+)`", section))
    assert logged - listed == set(), "SB3 keys missing from the SB3 table of docs/integrations.md"
    assert set(SB3_KEYS) - listed == set()


def test_gymnasium_wrapper_below_is_not_counted_twice(caplog):
    """A sub-environment that carries otel-rl's Gymnasium wrapper records itself; the callback skips it."""
    vec_env = DummyVecEnv([lambda: Monitor(RecordEpisodeMetrics(gym.make("CartPole-v1"), algorithm="PPO")),
                           lambda: Monitor(gym.make("CartPole-v1"))])
    model = PPO("MlpPolicy", vec_env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    with caplog.at_level("WARNING", logger="otel_rl"):
        model.learn(1024, callback=OtelRLCallback())
    rewards, _ = _episodes(vec_env)
    vec_env.close()
    assert "1 of 2 sub-environments carry otel-rl's Gymnasium wrapper" in caplog.text
    assert otel_rl.testing.value("rl_training_episodes_total", algorithm="PPO", agent_id="default") == len(rewards)
    assert otel_rl.testing.value("rl_training_environment_steps_total", algorithm="PPO") == 1024


class _FailAfter(BaseCallback):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.steps:
            raise RuntimeError("boom")
        return True


def test_inside_training_run_the_run_owns_start_complete_and_failure():
    """In a training_run, its algorithm and run id label everything, the run counts once, and a failing learn
    counts as failed."""
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    with otel_rl.training_run(algorithm="ppo-cartpole", run_id="r1"):
        model.learn(128, callback=OtelRLCallback())
    with pytest.raises(RuntimeError, match="boom"), otel_rl.training_run(algorithm="ppo-cartpole", run_id="r2"):
        model.learn(256, callback=CallbackList([OtelRLCallback(), _FailAfter(64)]))
    env.close()
    value = otel_rl.testing.value
    assert value("rl_training_runs_total", algorithm="ppo-cartpole", status="started") == 2
    assert value("rl_training_runs_total", algorithm="ppo-cartpole", status="completed") == 1
    assert value("rl_training_runs_total", algorithm="ppo-cartpole", status="failed") == 1
    assert value("rl_training_current_iteration", algorithm="ppo-cartpole", run_id="r1") == 2
    assert value("rl_training_runs_total", algorithm="PPO", status="started") is None


def test_wrapping_an_sb3_vec_env_says_what_to_use():
    """otel-rl's Gymnasium wrapper refuses an SB3 VecEnv with a message naming the callback."""
    vec_env = make_vec_env("CartPole-v1", n_envs=2)
    with pytest.raises(TypeError, match="OtelRLCallback"):
        wrap(vec_env)
    with pytest.raises(TypeError, match="not the Stable-Baselines3 VecEnv DummyVecEnv"):
        RecordEpisodeMetrics(vec_env)
    vec_env.close()


def test_extra_keys_record_matching_sb3_logger_keys_as_custom_gauges():
    """With extra_keys ["time/*", "train/n_updates"], the last value SB3 logged under each matching numeric key is
    a custom gauge labelled by algorithm and run; keys that do not match are not recorded."""
    from otel_rl._internal.scalars import metric_name

    telemetry = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0},
                                        "extra_keys": ["time/*", "train/n_updates"]})
    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=0), n_steps=64, batch_size=32, n_epochs=1,
                seed=0, device="cpu")
    dumps, logger = _logged(model)
    model.learn(192, callback=OtelRLCallback(run_id="extra"))
    scrape = Scrape(telemetry.prometheus_port)
    labels = {"algorithm": "PPO", "run_id": "extra"}
    for key in ("time/iterations", "time/total_timesteps", "train/n_updates"):
        assert scrape.value(metric_name(key), **labels) == _sb3_series(dumps, logger, key)[-1], key
    assert scrape.value(metric_name("train/value_loss"), **labels) is None
    assert not [name for name, _, _ in scrape.samples if name.startswith("rl_training_custom_rollout")]
