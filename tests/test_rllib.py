"""The RLlib callback, on real RLlib PPO: /metrics equals RLlib's own counts and logged values on both API stacks,
with the env runner in the driver and with two remote env runners (Ray worker processes)."""

from __future__ import annotations

import logging
import sys

import gymnasium as gym
import numpy as np
import pytest
import ray
from ray import cloudpickle
from ray.rllib.algorithms.ppo import PPOConfig
from ray.tune.registry import register_env
from scrape import Scrape

import otel_rl
from otel_rl.integrations.rllib import OtelRLCallback

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray instance for the module: two CPUs, no dashboard."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # remote env runners build this module's envs
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    register_env("otel-rl-fixed", FixedLength)
    yield
    ray.shutdown()


class FixedLength(gym.Env):
    """Episodes of a known length, reward 1 per step: 50 steps in remote env runner 1, 100 elsewhere."""

    def __init__(self, config: object = None) -> None:
        self.length = 50 if getattr(config, "worker_index", 0) == 1 else 100
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), 1.0, self.t >= self.length, False, {}


def _build(new_stack: bool, runners: int, callbacks: type | None):
    config = (PPOConfig()
              .environment("CartPole-v1")
              .env_runners(num_env_runners=runners, num_envs_per_env_runner=1)
              .training(train_batch_size=256, minibatch_size=64, num_epochs=1)
              .debugging(seed=0))
    if new_stack:
        config = config.training(train_batch_size_per_learner=256)
    else:
        config = config.api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
    if callbacks is not None:
        config = config.callbacks(callbacks)
    return config.build_algo()


def _losses(result: dict, new_stack: bool) -> dict[str, float]:
    """RLlib's own logged losses and signals for the default policy, in otel-rl's terms."""
    if new_stack:
        stats = result["learners"]["default_policy"]
        return {"policy_loss": stats["policy_loss"], "value_loss": stats["vf_loss"], "entropy": stats["entropy"],
                "learning_rate": stats["default_optimizer_learning_rate"], "kl_divergence": stats["mean_kl_loss"],
                "explained_variance": stats["vf_explained_var"]}
    stats = result["info"]["learner"]["default_policy"]["learner_stats"]
    return {"policy_loss": stats["policy_loss"], "value_loss": stats["vf_loss"], "entropy": stats["entropy"],
            "learning_rate": stats["cur_lr"], "kl_divergence": stats["kl"],
            "explained_variance": stats["vf_explained_var"], "grad_norm": stats["grad_gnorm"]}


@pytest.mark.parametrize("new_stack,runners", [(True, 0), (True, 2), (False, 0), (False, 2)],
                         ids=["new-local", "new-2-remote", "old-local", "old-2-remote"])
def test_ppo_two_iterations_match_rllib(telemetry, new_stack, runners):
    """Episodes (count, reward and length sums), means, losses, signals, iterations and env steps on /metrics equal
    RLlib's own figures; a @train_step around algo.train() adds nothing on top of the callback."""
    algo = _build(new_stack, runners, OtelRLCallback.configured(run_id="r1"))
    train = otel_rl.train_step(algorithm="PPO", run_id="r1")(algo.train)
    episode = {"algorithm": "PPO", "agent_id": "default"}
    results, scrapes = [], []
    try:
        for _ in range(2):
            results.append(train())
            scrapes.append(Scrape(telemetry.prometheus_port))
    finally:
        algo.stop()
    last, scrape = results[-1], scrapes[-1]
    runners_result = last["env_runners"]
    if new_stack:
        episodes = sum(int(r["env_runners"]["num_episodes"]) for r in results)
        assert episodes == runners_result["num_episodes_lifetime"]
    else:
        episodes = sum(int(r["env_runners"]["episodes_this_iter"]) for r in results)
    assert episodes > 5
    assert scrape.value("rl_training_episodes_total", **episode) == episodes
    assert scrape.value("rl_training_episode_reward_count", **episode) == episodes
    assert scrape.value("rl_training_episode_length_count", **episode) == episodes
    before = (0.0, 0.0, 0.0)
    for result, iteration_scrape in zip(results, scrapes):
        stats = result["env_runners"]
        now = (iteration_scrape.value("rl_training_episode_reward_sum", **episode),
               iteration_scrape.value("rl_training_episode_length_sum", **episode),
               iteration_scrape.value("rl_training_episode_reward_count", **episode))
        count = now[2] - before[2] if new_stack else now[2]
        reward_sum = now[0] - before[0] if new_stack else now[0]
        length_sum = now[1] - before[1] if new_stack else now[1]
        # The iteration's episodes (old stack: all so far, its window holds up to 100) lie within RLlib's min and max.
        assert stats["episode_return_min"] * count <= reward_sum <= stats["episode_return_max"] * count
        if new_stack:
            assert stats["episode_len_min"] * count <= length_sum <= stats["episode_len_max"] * count
        else:  # the old stack lists its episodes (the last 100) in hist_stats
            assert reward_sum == pytest.approx(sum(stats["hist_stats"]["episode_reward"]))
            assert length_sum == sum(stats["hist_stats"]["episode_lengths"])
        if runners == 0 or not new_stack:
            # Then RLlib's means are over exactly these episodes. (With remote runners the new stack averages the
            # runners' means, unweighted.)
            assert reward_sum / count == pytest.approx(stats["episode_return_mean"])
            assert length_sum / count == pytest.approx(stats["episode_len_mean"])
        before = now
    run = {"algorithm": "PPO", "run_id": "r1"}
    assert scrape.value("rl_training_episode_reward_mean", **run) == pytest.approx(
        runners_result["episode_return_mean"])
    assert scrape.value("rl_training_episode_length_mean", **run) == pytest.approx(runners_result["episode_len_mean"])
    logged = [_losses(r, new_stack) for r in results]
    for name in ("policy_loss", "value_loss", "entropy"):
        assert scrape.value(f"rl_training_{name}_count", algorithm="PPO") == 2, name
        assert scrape.value(f"rl_training_{name}_sum", algorithm="PPO") == pytest.approx(
            sum(float(stats[name]) for stats in logged)), name
    for name in ("learning_rate", "kl_divergence", "explained_variance", "grad_norm"):
        if name in logged[-1]:
            assert scrape.value(f"rl_training_{name}", **run) == pytest.approx(float(logged[-1][name])), name
    assert scrape.value("rl_training_env_steps_per_second", **run) > 0
    assert scrape.value("rl_training_iterations_total", algorithm="PPO") == 2
    assert scrape.value("rl_training_current_iteration", **run) == last["training_iteration"] == 2
    assert scrape.value("rl_training_environment_steps_total", algorithm="PPO") == \
        last["num_env_steps_sampled_lifetime"] == 512


def test_train_step_alone_counts_new_stack_episodes(telemetry):
    """Without the callback, @train_step on a new-stack result counts env_runners/num_episodes (no histograms)."""
    algo = _build(True, 0, None)
    train = otel_rl.train_step(algorithm="PPO")(algo.train)
    try:
        result = train()
    finally:
        algo.stop()
    episodes = int(result["env_runners"]["num_episodes"])
    assert episodes > 5
    scrape = Scrape(telemetry.prometheus_port)
    assert scrape.value("rl_training_episodes_total", algorithm="PPO", agent_id="default") == episodes
    assert scrape.value("rl_training_episode_reward_count", algorithm="PPO", agent_id="default") is None
    assert scrape.value("rl_training_iterations_total", algorithm="PPO") == 1


@pytest.mark.parametrize("runners,lengths", [(0, [100, 100]), (2, [50, 50, 100])], ids=["local", "2-remote"])
def test_iteration_with_one_episode_is_recorded(telemetry, caplog, runners, lengths):
    """An iteration in which exactly one episode ends (RLlib hands its one-item series over as a bare
    ``(return, length)``) is recorded whole: iterations, episodes, steps, losses. Each iteration samples 100 steps;
    locally one 100-step episode ends in each; with two remote runners (50 steps each) runner 1's 50-step episode
    ends in both iterations and runner 2's 100-step episode in the second only."""
    config = (PPOConfig()
              .environment("otel-rl-fixed")
              .env_runners(num_env_runners=runners, num_envs_per_env_runner=1)
              .training(train_batch_size_per_learner=100, minibatch_size=50, num_epochs=1)
              .callbacks(OtelRLCallback.configured(run_id="one"))
              .debugging(seed=0))
    algo = config.build_algo()
    try:
        with caplog.at_level(logging.WARNING, logger="otel_rl"):
            results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    assert [int(r["env_runners"]["num_episodes"]) for r in results] == [1, 2 if runners else 1]
    scrape = Scrape(telemetry.prometheus_port)
    episode = {"algorithm": "PPO", "agent_id": "default"}
    assert scrape.value("rl_training_episodes_total", **episode) == len(lengths)
    assert scrape.value("rl_training_episode_length_count", **episode) == len(lengths)
    assert scrape.value("rl_training_episode_length_sum", **episode) == sum(lengths)
    assert scrape.value("rl_training_episode_reward_sum", **episode) == sum(lengths)  # reward 1 per step
    assert scrape.value("rl_training_iterations_total", algorithm="PPO") == 2
    assert scrape.value("rl_training_current_iteration", algorithm="PPO", run_id="one") == 2
    assert scrape.value("rl_training_environment_steps_total", algorithm="PPO") == \
        results[-1]["num_env_steps_sampled_lifetime"] == 200
    assert scrape.value("rl_training_policy_loss_count", algorithm="PPO") == 2
    assert scrape.value("rl_training_policy_loss_sum", algorithm="PPO") == pytest.approx(
        sum(float(r["learners"]["default_policy"]["policy_loss"]) for r in results))
    assert not [r for r in caplog.records if r.name == "otel_rl"], caplog.text


def test_multi_agent_cartpole_records_each_agent_beside_the_team(telemetry):
    """MultiAgentCartPole with two agents and two policies: each agent's episodes, returns and step counts under
    its own ``agent_id`` (mean return equal to RLlib's ``agent_episode_returns_mean``), and the team's, summed over
    the agents, under ``agent_id="default"``; each module's losses in ``rl_training_module_loss``."""
    from ray.rllib.examples.envs.classes.multi_agent import MultiAgentCartPole

    config = (PPOConfig()
              .environment(MultiAgentCartPole, env_config={"num_agents": 2})
              .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=lambda agent_id, *args, **kw: f"p{agent_id}")
              .env_runners(num_env_runners=0)
              .training(train_batch_size_per_learner=256, minibatch_size=128, num_epochs=1)
              .callbacks(OtelRLCallback)
              .debugging(seed=0))
    algo = config.build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    runners = result["env_runners"]
    episodes = int(runners["num_episodes"])
    assert episodes > 3
    scrape = Scrape(telemetry.prometheus_port)
    team = {"algorithm": "PPO", "agent_id": "default"}
    assert scrape.value("rl_training_episodes_total", **team) == episodes
    team_reward = scrape.value("rl_training_episode_reward_sum", **team)
    agent_rewards = 0.0
    for agent in ("0", "1"):
        labels = {"algorithm": "PPO", "agent_id": agent}
        assert scrape.value("rl_training_episodes_total", **labels) == episodes
        assert scrape.value("rl_training_episode_reward_count", **labels) == episodes
        reward = scrape.value("rl_training_episode_reward_sum", **labels)
        means = runners["agent_episode_returns_mean"]
        assert reward / episodes == pytest.approx(means[agent])
        # CartPole pays 1 per step: an agent's return is its step count.
        assert scrape.value("rl_training_episode_length_sum", **labels) == reward
        agent_rewards += reward
    assert team_reward == pytest.approx(agent_rewards)
    assert team_reward / episodes == pytest.approx(runners["episode_return_mean"])
    assert scrape.value("rl_training_policy_loss_count", algorithm="PPO") == 2  # one per module, mixed
    for module in ("p0", "p1"):  # ... and each module's apart
        stats = result["learners"][module]
        for loss, key in (("policy", "policy_loss"), ("value", "vf_loss"), ("entropy", "entropy")):
            assert scrape.value("rl_training_module_loss", algorithm="PPO", run_id="default", agent_id=module,
                                loss=loss) == pytest.approx(float(stats[key])), (module, loss)


@pytest.mark.parametrize("algo_name", ["DQN", "SAC"])
def test_dqn_and_sac_losses_match_rllib(telemetry, algo_name):
    """New API stack DQN (CartPole) and SAC (Pendulum), two real iterations each: the value-loss histogram holds
    RLlib's ``qf_loss`` of each iteration, SAC's policy loss its ``policy_loss``, and SAC's learned temperature
    (``alpha_value``) is the entropy coefficient."""
    if algo_name == "DQN":
        from ray.rllib.algorithms.dqn import DQNConfig as Config
        env = "CartPole-v1"
    else:
        from ray.rllib.algorithms.sac import SACConfig as Config  # type: ignore[assignment]
        env = "Pendulum-v1"
    config = (Config()
              .environment(env)
              .env_runners(num_env_runners=0)
              .training(train_batch_size_per_learner=32, num_steps_sampled_before_learning_starts=32)
              .rl_module(model_config={"fcnet_hiddens": [8]})
              .reporting(min_sample_timesteps_per_iteration=32)
              .callbacks(OtelRLCallback.configured(run_id="q"))
              .debugging(seed=0))
    algo = config.build_algo()
    try:
        stats = [algo.train()["learners"]["default_policy"] for _ in range(2)]
    finally:
        algo.stop()
    assert all("qf_loss" in s for s in stats)
    scrape = Scrape(telemetry.prometheus_port)
    assert scrape.value("rl_training_value_loss_count", algorithm=algo_name) == 2
    assert scrape.value("rl_training_value_loss_sum", algorithm=algo_name) == pytest.approx(
        sum(float(s["qf_loss"]) for s in stats))
    if algo_name == "SAC":
        assert scrape.value("rl_training_policy_loss_sum", algorithm=algo_name) == pytest.approx(
            sum(float(s["policy_loss"]) for s in stats))
        assert scrape.value("rl_training_entropy_coefficient", algorithm=algo_name, run_id="q") == pytest.approx(
            float(stats[-1]["alpha_value"]))
    else:
        assert scrape.value("rl_training_policy_loss_count", algorithm=algo_name) is None


def test_a_failed_flush_stops_the_per_result_flushes(telemetry, monkeypatch, caplog):
    """When the export at the end of a result fails (an unreachable collector), the callback warns once and stops
    flushing per result, so training is held up once, not at every iteration; results are still recorded."""
    from otel_rl._internal import lifecycle

    flushes = []
    monkeypatch.setattr(lifecycle, "flush_worker", lambda: flushes.append(1) or False)
    callback = OtelRLCallback.configured(algorithm="PPO")()
    with caplog.at_level(logging.WARNING, logger="otel_rl"):
        for i in range(3):
            callback.on_train_result(algorithm=object(), result={"training_iteration": i + 1})
    assert flushes == [1]
    assert len([r for r in caplog.records if "no longer exports" in r.getMessage()]) == 1
    assert Scrape(telemetry.prometheus_port).value("rl_training_iterations_total", algorithm="PPO") == 3


@pytest.mark.parametrize(("dirname", "expected"), [
    # Tune's default search (BasicVariantGenerator): <5 hex>_<counter> and the counter again.
    ("PPO_CartPole-v1_1a2b3_00000_0_lr=0.0010_2026-12-04_17-18-00", ("1a2b3_00000", "PPO_CartPole-v1_1a2b3_00000")),
    ("PPO_1a2b3_00001_1_2026-12-04_17-18-00", ("1a2b3_00001", "PPO_1a2b3_00001")),
    ("PPO_ALE_Pong-v5_12345_00002_2_2026-12-04_17-18-00", ("12345_00002", "PPO_ALE_Pong-v5_12345_00002")),
    # A searcher (SearchGenerator): eight hex digits.
    ("PPO_CartPole-v1_deadbeef_3_lr=0.0010_2026-12-04_17-18-00", ("deadbeef", "PPO_CartPole-v1_deadbeef")),
    # Doubtful: None (run_id "default", with a warning), never an id that looks right and is not.
    ("PPO_prices_20240101_2_assets_deadbeef_3_2026-12-04_17-18-00", None),  # two places look like an id
    ("PPO_CartPole-v1_1a2b3_00003_1_2026-12-04_17-18-00", None),  # the counter is not the id's
    ("APPO_CartPole-v1_1a2b3_00000_0_2026-12-04_17-18-00", None),  # another trainable's trial
    ("trial_0", None),  # a trial_dirname_creator of one's own
])
def test_trial_id_from_the_trial_directory_name(dirname, expected):
    """The trial id of a class trainable (RLlib loses Tune's) is read from Tune's trial directory name only when
    the name says it unambiguously."""
    from otel_rl.integrations.rllib import _trial_from_dirname

    assert _trial_from_dirname(dirname, "PPO") == expected


def test_every_result_the_callback_cannot_record_counts_as_dropped(telemetry, monkeypatch, caplog):
    """When the callback cannot even set up its recorder (here: it raises), each lost iteration counts in
    otel_rl_dropped_values_total{reason="unreadable_result"}, with one warning, not only a debug line."""
    import otel_rl.integrations.rllib as rllib_integration
    from otel_rl import testing

    def broken(*args, **kwargs):
        raise RuntimeError("cannot record")

    monkeypatch.setattr(rllib_integration, "StepRecorder", broken)
    callback = OtelRLCallback.configured(algorithm="PPO")()
    with caplog.at_level(logging.WARNING, logger="otel_rl"):
        for i in range(3):
            callback.on_train_result(algorithm=object(), result={"training_iteration": i + 1})
    assert testing.dropped("rl_training_iterations_total", "unreadable_result") == 3
    assert len([r for r in caplog.records if "could not record the training result" in r.getMessage()]) == 1
