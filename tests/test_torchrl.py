"""The TorchRL logger, on a real PPO loop over GymEnv("CartPole-v1"): /metrics equals TorchRL's own figures."""

from __future__ import annotations

import re

import pytest
import torch
from scrape import Scrape
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import Compose, GymEnv, RewardSum, StepCounter, TransformedEnv
from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE
from torchrl.record import CSVLogger

import otel_rl
from otel_rl import testing
from otel_rl.integrations.torchrl import OtelRLLogger

from procs import ROOT, free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

_FRAMES = 128


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ppo(loggers, batches: list, num_envs: int = 1, iterations: int = 4) -> None:
    """A short PPO loop in TorchRL's usual shape: each batch and each update's losses go to every logger."""
    torch.manual_seed(0)
    env = TransformedEnv(GymEnv("CartPole-v1", num_envs=num_envs) if num_envs > 1 else GymEnv("CartPole-v1"),
                         Compose(RewardSum(), StepCounter()))
    env.set_seed(0)
    actor = ProbabilisticActor(TensorDictModule(nn.Linear(4, 2), in_keys=["observation"], out_keys=["logits"]),
                               in_keys=["logits"], distribution_class=OneHotCategorical, return_log_prob=True,
                               spec=env.action_spec)
    critic = ValueOperator(nn.Linear(4, 1), in_keys=["observation"])
    loss_module = ClipPPOLoss(actor, critic, entropy_coeff=0.01)
    advantage = GAE(gamma=0.99, lmbda=0.95, value_network=critic)
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=1e-3)
    collector = Collector(env, actor, frames_per_batch=_FRAMES, total_frames=_FRAMES * iterations)
    for frames, batch in enumerate(collector, start=1):
        batches.append(batch.clone())
        for logger in loggers:
            if isinstance(logger, OtelRLLogger):
                logger.log_batch(batch)
        with torch.no_grad():
            advantage(batch)
        losses = loss_module(batch)
        (losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]).backward()
        optimizer.step()
        optimizer.zero_grad()
        done = batch["next", "done"]
        metrics = {f"train/{k}": v.detach() for k, v in losses.items()}
        metrics["train/lr"] = optimizer.param_groups[0]["lr"]
        if done.any():
            metrics["train/reward"] = batch["next", "episode_reward"][done].mean()
            metrics["train/episode_length"] = batch["next", "step_count"][done].float().mean()
        for logger in loggers:
            logger.log_metrics(metrics, step=frames * _FRAMES)
        for logger in loggers:
            logger.log_scalar("eval/reward", 1e6, step=frames * _FRAMES)
    collector.shutdown()
    env.close()


def _scalars(csv: CSVLogger, name: str) -> list[float]:
    """What TorchRL's own CSV logger recorded under ``name``."""
    return [float(value) for _, value in csv.experiment.scalars[name]]


def test_ppo_loop_records_what_torchrl_logs_and_collects(telemetry, tmp_path):
    """4 PPO updates of 128 frames: losses, entropy, signals and episode means equal what TorchRL's CSVLogger
    recorded; episodes, returns, lengths, steps and iterations equal the collector's batches (RewardSum and
    StepCounter); evaluation scalars are not recorded."""
    csv = CSVLogger("ppo", log_dir=str(tmp_path))
    batches: list = []
    with otel_rl.training_run(algorithm="PPO", run_id="torchrl-1"):
        _ppo([csv, OtelRLLogger()], batches)

    scrape = Scrape(telemetry.prometheus_port)
    for series, name in [("rl_training_policy_loss", "train/loss_objective"),
                         ("rl_training_value_loss", "train/loss_critic"),
                         ("rl_training_entropy", "train/entropy")]:
        values = _scalars(csv, name)
        assert len(values) == 4
        assert scrape.value(f"{series}_count", algorithm="PPO") == len(values), series
        assert scrape.value(f"{series}_sum", algorithm="PPO") == pytest.approx(sum(values), rel=1e-12), series
    run = {"algorithm": "PPO", "run_id": "torchrl-1"}
    for series, name in [("rl_training_kl_divergence", "train/kl_approx"),
                         ("rl_training_clip_fraction", "train/clip_fraction"),
                         ("rl_training_explained_variance", "train/explained_variance"),
                         ("rl_training_learning_rate", "train/lr"),
                         ("rl_training_episode_reward_mean", "train/reward"),
                         ("rl_training_episode_length_mean", "train/episode_length")]:
        assert scrape.value(series, **run) == _scalars(csv, name)[-1], series
    assert _scalars(csv, "eval/reward") == [1e6] * 4
    assert scrape.value("rl_training_episode_reward_mean", **run) < 1e6

    done = [b["next", "done"].reshape(-1) for b in batches]
    returns = [r for b, d in zip(batches, done) for r in b["next", "episode_reward"].reshape(-1)[d].tolist()]
    lengths = [n for b, d in zip(batches, done) for n in b["next", "step_count"].reshape(-1)[d].tolist()]
    assert len(returns) > 5
    agent = {"algorithm": "PPO", "agent_id": "default"}
    assert scrape.value("rl_training_episodes_total", **agent) == len(returns)
    assert scrape.value("rl_training_episode_reward_sum", **agent) == sum(returns)
    assert scrape.value("rl_training_episode_length_sum", **agent) == sum(lengths)
    assert scrape.value("rl_training_environment_steps_total", algorithm="PPO") == 4 * _FRAMES
    assert scrape.value("rl_training_iterations_total", algorithm="PPO") == 4
    assert scrape.value("rl_training_current_iteration", **run) == 4
    assert scrape.value("rl_training_runs_total", algorithm="PPO", status="completed") == 1


@pytest.mark.parametrize("num_envs", [1, 2])
def test_without_reward_sum_episodes_come_from_the_trajectory_ids(num_envs):
    """Without RewardSum/StepCounter keys, episodes are summed per collector trajectory across batches: the same
    episodes, returns and lengths as the transforms report, with one env or a batch of two ([2, T] batches)."""
    batches: list = []
    _ppo([], batches, num_envs=num_envs, iterations=3)
    with_keys, without = OtelRLLogger(algorithm="with"), OtelRLLogger(algorithm="without")
    for batch in batches:
        with_keys.log_batch(batch)
        without.log_batch(batch.exclude(("next", "episode_reward"), ("next", "step_count")))
    for name in ("rl_training_episodes_total", "rl_training_episode_length"):
        assert testing.value(name, algorithm="without", agent_id="default") == \
            testing.value(name, algorithm="with", agent_id="default") > 3, name
    a, b = (testing.histogram(name, algorithm=alg, agent_id="default")
            for name, alg in [("rl_training_episode_reward", "with"), ("rl_training_episode_reward", "without")])
    assert (a.sum, a.counts) == (b.sum, b.counts)
    la, lb = (testing.histogram("rl_training_episode_length", algorithm=alg, agent_id="default")
              for alg in ("with", "without"))
    assert la.sum == lb.sum
    assert testing.value("rl_training_environment_steps_total", algorithm="without") == 3 * _FRAMES


def test_bad_values_and_keys(caplog):
    """A NaN loss or a string learning rate is dropped and counted, never raised; an unknown target in keys= is a
    ConfigError naming it; a batch without episode information logs one warning and still counts its steps."""
    logger = OtelRLLogger(algorithm="X", keys={"train/my_pg": "policy_loss"})
    logger.log_scalar("train/my_pg", torch.tensor(float("nan")))
    logger.log_scalar("train/lr", "high")
    logger.log_scalar("train/unmapped", 1.0)
    assert testing.dropped("rl_training_policy_loss", "nan") == 1
    assert testing.dropped("rl_training_learning_rate", "wrong_type") == 1
    with pytest.raises(otel_rl.ConfigError, match="'train/x'.*'policy'.*allowed: policy_loss"):
        OtelRLLogger(keys={"train/x": "policy"})
    assert "OtelRLLogger" in repr(logger)
    bare = TensorDict({"next": {"done": torch.ones(5, 1, dtype=torch.bool), "reward": torch.ones(5, 1)}}, [5])
    with caplog.at_level("WARNING", logger="otel_rl"):
        logger.log_batch(bare)
        logger.log_batch(bare)
    assert caplog.text.count("add RewardSum() and StepCounter()") == 1
    assert testing.value("rl_training_environment_steps_total", algorithm="X") == 10
    assert testing.value("rl_training_episodes_total", algorithm="X", agent_id="default") is None
    caplog.clear()
    with caplog.at_level("DEBUG", logger="otel_rl"):
        for _ in range(3):
            logger.log_batch([1, 2])  # not a TensorDict: a wrong call in a loop, never an exception
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "OtelRLLogger.log_batch" in r.message]
    assert len(warnings) == 1 and warnings[0].exc_info
    assert testing.value("rl_training_iterations_total", algorithm="X") == 2  # the two good batches only


def test_the_documented_example_runs_and_records_its_episodes(monkeypatch):
    """The TorchRL example of docs/integrations.md runs as written: 1000 steps, 5 iterations, its episodes and the
    mean return it logs, under the training run's labels."""
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    doc = ROOT / "docs" / "integrations.md"
    match = re.search(r"<!-- example: torchrl -->\n```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.DOTALL)
    assert match
    batches: list = []
    code = match.group(1).replace("logger.log_batch(batch)", "logger.log_batch(batch); batches.append(batch.clone())")
    exec(compile(code, str(doc), "exec"), {"batches": batches})  # noqa: S102 (the doc's example)
    assert otel_rl.current().prometheus_port == port

    scrape = Scrape(port)
    agent = {"algorithm": "random", "agent_id": "default"}
    returns = [r for b in batches for r in b["next", "episode_reward"][b["next", "done"]].tolist()]
    assert len(batches) == 5 and len(returns) > 10
    assert scrape.value("rl_training_episodes_total", **agent) == len(returns)
    assert scrape.value("rl_training_episode_reward_sum", **agent) == sum(returns)
    assert scrape.value("rl_training_environment_steps_total", algorithm="random") == 1000
    assert scrape.value("rl_training_iterations_total", algorithm="random") == 5
    last = batches[-1]
    assert scrape.value("rl_training_episode_reward_mean", algorithm="random", run_id="cartpole-0") == \
        last["next", "episode_reward"][last["next", "done"]].mean().item()
    assert scrape.value("rl_training_runs_total", algorithm="random", status="completed") == 1
