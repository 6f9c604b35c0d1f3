"""TorchRL: a ``torchrl.record.loggers.Logger`` that records into otel-rl's series, beside CSV, TensorBoard or W&B.

TorchRL users pick where their figures go by choosing a logger (``CSVLogger``, ``TensorboardLogger``,
``WandbLogger``) and calling ``logger.log_scalar(name, value, step)`` or ``logger.log_metrics({...}, step)`` in
their loop. :class:`OtelRLLogger` is one more such logger:

* ``log_scalar`` maps each scalar by the last part of its name (``train/loss_objective`` -> ``loss_objective``) to
  a catalog series: losses and entropy are observed into the loss histograms, learning rate, KL, clip fraction,
  ... set the training-signal gauges, the mean episode reward and length set their gauges (:data:`TORCHRL_KEYS`;
  ``keys=`` maps names of your own). Names under ``eval`` are not recorded: evaluation figures would overwrite the
  training ones.
* :meth:`OtelRLLogger.log_batch` takes each batch a collector yields and records the episodes that finished in it
  (from a ``RewardSum`` and a ``StepCounter`` transform where present, else summed along the collector's
  trajectory ids), the environment steps (the batch's size) and one iteration.

Nothing here starts or ends the run: wrap the loop in :class:`otel_rl.training_run`, whose labels the logger
takes unless it was given its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from otel_rl._internal.hints import install_hint

try:
    import torch
    from torchrl.record.loggers import Logger
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"otel_rl.integrations.torchrl needs TorchRL: {install_hint('torchrl')}") from exc

from otel_rl._internal import recording as _rec
from otel_rl._internal.catalog import SIGNAL_NAMES
from otel_rl._internal.errors import ConfigError
from otel_rl._internal.runs import run_labels
from otel_rl._internal.store import REGISTRY

__all__ = ["TORCHRL_KEYS", "OtelRLLogger"]

#: Where a scalar can go: the loss histograms, the episode mean gauges and the training signals.
TARGETS: tuple[str, ...] = ("policy_loss", "value_loss", "entropy", "reward_mean", "length_mean") + SIGNAL_NAMES

#: The last part of a TorchRL scalar name -> where it is recorded (names of TorchRL's loss modules and of the
#: scalars its example scripts log).
TORCHRL_KEYS: dict[str, str] = {
    "loss_objective": "policy_loss",  # PPO, A2C
    "loss_actor": "policy_loss",  # SAC, TD3, DDPG
    "loss_critic": "value_loss",  # PPO, A2C
    "loss_qvalue": "value_loss",  # SAC, TD3
    "loss_value": "value_loss",  # DDPG, IQL
    "loss": "value_loss",  # DQN's TD loss
    "entropy": "entropy",
    "reward": "reward_mean",  # the examples' mean return of the episodes finished in the batch
    "episode_reward": "reward_mean",
    "episode_length": "length_mean",
    "lr": "learning_rate",
    "learning_rate": "learning_rate",
    "kl_approx": "kl_divergence",
    "kl": "kl_divergence",
    "clip_fraction": "clip_fraction",
    "explained_variance": "explained_variance",
    "grad_norm": "grad_norm",
    "alpha": "entropy_coefficient",  # SAC
    "entropy_coeff": "entropy_coefficient",
    "epsilon": "exploration_rate",  # EGreedyModule
    "fps": "env_steps_per_second",
    "frames_per_second": "env_steps_per_second",
}


class OtelRLLogger(Logger):
    """A TorchRL logger whose scalars and collector batches land in otel-rl's series.

    ``algorithm`` and ``run_id`` default to the enclosing :class:`otel_rl.training_run`'s at each call, else
    ``"default"``; ``keys`` maps more scalar names (the full name or its last part) to one of :data:`TARGETS` and
    raises :class:`otel_rl.ConfigError` for anything else. Never raises into training: bad values are dropped and
    counted, a recording problem is logged.
    """

    def __init__(self, exp_name: str = "otel-rl", log_dir: str | None = None, *, algorithm: str | None = None,
                 run_id: str | None = None, agent_id: str = "default", keys: Mapping[str, str] | None = None) -> None:
        self._keys = dict(TORCHRL_KEYS)
        for name, target in (keys or {}).items():
            if target not in TARGETS:
                raise ConfigError(f"OtelRLLogger keys[{name!r}] = {target!r}: not a series otel-rl records from a "
                                  f"scalar; allowed: {', '.join(TARGETS)}")
            self._keys[str(name)] = target
        self._algorithm_arg = algorithm
        self._run_id_arg = run_id
        self.agent_id = str(agent_id)
        self._iteration = 0
        self._open: dict[int, tuple[float, int]] = {}  # trajectory id -> (return, length) so far
        super().__init__(exp_name=exp_name, log_dir=log_dir)

    def _create_experiment(self) -> None:
        return None  # the experiment is otel-rl's telemetry, started by otel_rl.init_telemetry

    def __repr__(self) -> str:
        return f"OtelRLLogger(exp_name={self.exp_name!r}, algorithm={self._labels()[0]!r})"

    def _labels(self) -> tuple[str, str]:
        return run_labels(self._algorithm_arg, self._run_id_arg)

    # -- the Logger interface ----------------------------------------------------------------------------------------

    def log_scalar(self, name: str, value: float, step: int | None = None) -> None:
        """Record ``value`` into the series ``name`` maps to; other names are ignored."""
        try:
            name = str(name)
            head, _, last = name.rpartition("/")
            if head.split("/", 1)[0].startswith("eval"):
                return
            target = self._keys.get(name) or self._keys.get(last)
            if target is None:
                return
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            algorithm, run_id = self._labels()
            if target == "policy_loss":
                _rec.record_loss_metrics(algorithm, policy_loss=value)
            elif target == "value_loss":
                _rec.record_loss_metrics(algorithm, value_loss=value)
            elif target == "entropy":
                _rec.record_loss_metrics(algorithm, entropy=value)
            elif target == "reward_mean":  # a None is skipped, as for the losses and signals
                _rec.set_episode_means((algorithm, run_id), value, None)
            elif target == "length_mean":
                _rec.set_episode_means((algorithm, run_id), None, value)
            else:
                _rec.set_signals((algorithm, run_id), {target: value})
        except Exception as exc:  # noqa: BLE001 (recording never raises into training)
            _rec.warn_failure("OtelRLLogger.log_scalar", exc)

    def log_video(self, name: str, video: Any, step: int | None = None, **kwargs: Any) -> None:
        """Videos are not metrics: nothing is recorded."""

    def log_hparams(self, cfg: Any) -> None:
        """Hyperparameters are not time series: nothing is recorded (``run_id`` names the run)."""

    def log_histogram(self, name: str, data: Sequence[Any], **kwargs: Any) -> None:
        """Histograms of arbitrary data have no catalog series: nothing is recorded."""

    # -- collector batches ---------------------------------------------------------------------------------------

    def log_batch(self, batch: Any) -> None:
        """Record a collector batch: its finished episodes, its environment steps and one iteration.

        Pass every batch the collector yields, before anything (a replay buffer, ``reshape``) reorders it.
        """
        try:
            steps, finished = int(batch.numel()), self._finished(batch)  # read it all before recording any of it
            algorithm, run_id = self._labels()
            self._iteration += 1
            _rec.record_training_iteration(algorithm, self._iteration, run_id)
            _rec.record_environment_steps(algorithm, steps)
            for reward, length in finished:
                _rec.record_episode(algorithm, self.agent_id, reward, length)
        except Exception as exc:  # noqa: BLE001 (recording never raises into training)
            _rec.warn_failure("OtelRLLogger.log_batch", exc)

    def _finished(self, batch: Any) -> list[tuple[float, int]]:
        keys = batch.keys(True, True)
        done = batch["next", "done"].reshape(-1)  # (*batch, 1) -> one flag per step, in collection order
        if ("next", "episode_reward") in keys and ("next", "step_count") in keys:  # RewardSum and StepCounter
            rewards = batch["next", "episode_reward"].reshape(done.numel(), -1)[done].sum(-1)
            lengths = batch["next", "step_count"].reshape(-1)[done]
            return list(zip(rewards.tolist(), lengths.tolist()))
        if ("collector", "traj_ids") not in keys:
            REGISTRY.warn_once(("torchrl", "no_episodes"),
                               "otel-rl: a TorchRL batch has neither RewardSum/StepCounter keys nor the collector's "
                               "trajectory ids; its episodes are not recorded (add RewardSum() and StepCounter())")
            return []
        ids = batch["collector", "traj_ids"].reshape(-1).tolist()
        rewards_per_step = batch["next", "reward"].reshape(len(ids), -1).sum(-1).double().tolist()
        finished = []
        for traj, reward, is_done in zip(ids, rewards_per_step, done.tolist()):
            total, length = self._open.pop(traj, (0.0, 0))
            if is_done:
                finished.append((total + reward, length + 1))
            else:
                self._open[traj] = (total + reward, length + 1)
        return finished
