"""Stable-Baselines3: one callback that records every series SB3 can feed.

``model.learn(total_timesteps, callback=OtelRLCallback())`` records, in the process that calls ``learn``:

* each finished episode, from the ``info["episode"]`` that SB3's ``Monitor`` puts into the step infos (SB3 wraps
  every environment in one), so the count is exact with ``DummyVecEnv`` and ``SubprocVecEnv`` alike: the infos of
  subprocess workers come back to this process;
* what SB3 logs, at the moment its logger writes it (a ``KVWriter`` added to the model's logger for the duration
  of ``learn``), plus the values of the last update, which SB3 records but never writes: the episode reward and
  length means, the losses (entropy is ``-train/entropy_loss``), learning rate, KL divergence, clip fraction,
  explained variance, entropy coefficient, exploration rate and steps per second. With a logger of the user's
  own, SB3 writes those last values again in the next ``learn``: they are observed once, not twice;
* one iteration per rollout (``time/iterations`` for PPO and A2C), the environment steps, and the run: started
  and completed, or failed when ``learn`` runs inside :class:`otel_rl.training_run`, which then owns the run.

Sub-environments that carry otel-rl's Gymnasium wrapper record their episodes and steps themselves; the callback
skips them, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Mapping
from typing import Any

from otel_rl._internal.hints import install_hint

try:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import KVWriter
    from stable_baselines3.common.vec_env import DummyVecEnv
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"otel_rl.integrations.sb3 needs Stable-Baselines3: {install_hint('sb3')}") from exc

from otel_rl._internal import recording as _rec
from otel_rl._internal.runs import current_run, run_labels
from otel_rl._internal.scalars import record_extra
from otel_rl.integrations.gymnasium import RecordEpisodeMetrics

__all__ = ["SB3_KEYS", "OtelRLCallback"]

_logger = logging.getLogger("otel_rl")

#: SB3 logger key -> what otel-rl records from it, for the table in docs/integrations.md.
SB3_KEYS: dict[str, str] = {
    "rollout/ep_rew_mean": "rl_training_episode_reward_mean",
    "rollout/ep_len_mean": "rl_training_episode_length_mean",
    "train/policy_gradient_loss": "rl_training_policy_loss (PPO)",
    "train/policy_loss": "rl_training_policy_loss (A2C)",
    "train/actor_loss": "rl_training_policy_loss (SAC, TD3, DDPG)",
    "train/value_loss": "rl_training_value_loss (PPO, A2C)",
    "train/critic_loss": "rl_training_value_loss (SAC, TD3, DDPG)",
    "train/loss": "rl_training_value_loss (DQN: its TD loss; ignored where a value or critic loss is logged)",
    "train/entropy_loss": "rl_training_entropy, sign flipped (SB3 logs minus the entropy)",
    "train/learning_rate": "rl_training_learning_rate",
    "train/approx_kl": "rl_training_kl_divergence",
    "train/clip_fraction": "rl_training_clip_fraction",
    "train/explained_variance": "rl_training_explained_variance",
    "train/ent_coef": "rl_training_entropy_coefficient",
    "rollout/exploration_rate": "rl_training_exploration_rate",
    "time/fps": "rl_training_env_steps_per_second",
}
_SIGNALS = {
    "train/learning_rate": "learning_rate",
    "train/approx_kl": "kl_divergence",
    "train/clip_fraction": "clip_fraction",
    "train/explained_variance": "explained_variance",
    "train/ent_coef": "entropy_coefficient",
    "rollout/exploration_rate": "exploration_rate",
    "time/fps": "env_steps_per_second",
}
_POLICY_LOSS = ("train/policy_gradient_loss", "train/policy_loss", "train/actor_loss")
_VALUE_LOSS = ("train/value_loss", "train/critic_loss")
_LOSSES = (*_POLICY_LOSS, *_VALUE_LOSS, "train/loss", "train/entropy_loss")

#: Per SB3 logger: the loss values of the last update that a callback recorded when ``learn`` returned. SB3 keeps
#: them in a logger the user set (``model.set_logger``) and writes them in the first dump of the next ``learn``;
#: that dump must not observe them again. Matched by identity: every update logs new float objects. Keyed by the
#: logger's id, not the logger (a logger class of the user's own may have no hash), with a weak reference that
#: drops the entry when the logger goes and tells a reused id apart.
_RECORDED_AT_END: dict[int, tuple[weakref.ref[Any], dict[str, Any]]] = {}


def _take_recorded(logger: Any) -> dict[str, Any] | None:
    """The losses recorded when the last ``learn`` on ``logger`` returned, forgotten: its next dump clears them."""
    entry = _RECORDED_AT_END.pop(id(logger), None)
    return entry[1] if entry is not None and entry[0]() is logger else None


def _keep_recorded(logger: Any, values: dict[str, Any]) -> None:
    key = id(logger)
    try:
        ref = weakref.ref(logger, lambda _: _RECORDED_AT_END.pop(key, None))
    except TypeError:  # a logger without weak references (__slots__): its next dump may observe them again
        return
    _RECORDED_AT_END[key] = (ref, values)


class _LogWriter(KVWriter):
    """An output format of SB3's logger that hands each dump to the callback."""

    def __init__(self, callback: OtelRLCallback) -> None:
        self._callback = callback

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self._callback._record_dump(key_values)

    def close(self) -> None:
        pass


class OtelRLCallback(BaseCallback):
    """Records SB3 training into otel-rl's series; pass it as ``callback=`` to ``learn``.

    ``algorithm`` defaults to the enclosing :class:`otel_rl.training_run`'s, else the model's class name (``PPO``);
    ``run_id`` to the training run's, else ``"default"``. Never raises into training: a recording problem is logged.
    """

    #: Say when sub-environments record themselves (off where zero-code instrumentation wrapped them on purpose).
    _warn_wrapped = True

    def __init__(self, algorithm: str | None = None, run_id: str | None = None, agent_id: str = "default",
                 verbose: int = 0) -> None:
        super().__init__(verbose)
        self._algorithm_arg = algorithm
        self._run_id_arg = run_id
        self.agent_id = str(agent_id)
        self.algorithm = "default"
        self.run_id = "default"
        self._writer = _LogWriter(self)
        self._owns_run = False
        self._started = 0.0
        self._iteration = 0
        self._counted_steps = 0
        self._record_env: list[bool] = []
        self._all_envs_recorded = True

    @property
    def algorithm_arg(self) -> str | None:
        """The ``algorithm`` given to the constructor, None when it is left to the training run or the model. For
        the zero-code instrumentors, which name the environments' recorders before the callback starts."""
        return self._algorithm_arg

    # -- SB3 hooks -----------------------------------------------------------------------------------------------

    def _on_training_start(self) -> None:
        try:
            self._start()
        except Exception:
            _logger.exception("otel-rl: the Stable-Baselines3 callback could not start recording")

    def _on_step(self) -> bool:
        infos = self.locals.get("infos")
        if infos:
            try:
                self._episodes(infos)
            except Exception:
                _logger.exception("otel-rl: could not record the finished episodes")
        return True

    def _on_rollout_end(self) -> None:
        try:
            self._iteration += 1
            _rec.record_training_iteration(self.algorithm, self._iteration, self.run_id)
            self._flush_steps()
        except Exception:
            _logger.exception("otel-rl: could not record the rollout")

    def _on_training_end(self) -> None:
        try:
            self._flush_steps()
            # The last update's values: recorded in SB3's logger after its last dump, never written by this learn.
            logger = self.logger
            pending = logger.name_to_value
            self._record_logged(_unrecorded(pending, _take_recorded(logger)))
            _keep_recorded(logger, {key: pending[key] for key in _LOSSES if key in pending})
            self._detach()
            if self._owns_run:
                _rec.record_training_complete(self.algorithm, time.monotonic() - self._started, self.run_id)
                self._owns_run = False
        except Exception:
            _logger.exception("otel-rl: the Stable-Baselines3 callback could not finish recording")

    # -- recording -----------------------------------------------------------------------------------------------

    def _start(self) -> None:
        run = current_run()
        self.algorithm, self.run_id = run_labels(self._algorithm_arg, self._run_id_arg, type(self.model).__name__)
        self._counted_steps = self.model.num_timesteps
        env = self.training_env
        wrapped = [bool(w) for w in env.env_is_wrapped(RecordEpisodeMetrics)]
        self._record_env = [not w for w in wrapped]
        self._all_envs_recorded = not any(wrapped)
        if any(wrapped) and self._warn_wrapped:
            where = "in this process" if isinstance(env.unwrapped, DummyVecEnv) else \
                "in the subprocess workers, which export only what their own telemetry exports"
            _logger.warning("otel-rl: %d of %d sub-environments carry otel-rl's Gymnasium wrapper; their episodes "
                            "and steps are recorded by the wrapper %s, not by OtelRLCallback",
                            sum(wrapped), len(wrapped), where)
        if self._writer not in self.logger.output_formats:
            self.logger.output_formats.append(self._writer)
        if run is None:
            _rec.record_training_start(self.algorithm, self.run_id)
            self._owns_run = True
            self._started = time.monotonic()

    def _detach(self) -> None:
        formats = self.logger.output_formats
        if self._writer in formats:
            formats.remove(self._writer)

    def _episodes(self, infos: Any) -> None:
        record = self._record_env
        for i, info in enumerate(infos):
            episode = info.get("episode") if isinstance(info, Mapping) else None
            if episode is not None and (i >= len(record) or record[i]):
                _rec.record_episode(self.algorithm, self.agent_id, episode["r"], episode["l"])

    def _flush_steps(self) -> None:
        total = self.model.num_timesteps
        delta = total - self._counted_steps
        self._counted_steps = total
        if delta <= 0:
            return
        if not self._all_envs_recorded:  # each vector step adds num_envs; count only the unwrapped ones
            record = self._record_env
            delta = delta * sum(record) // len(record) if record else 0
        if delta:
            _rec.record_environment_steps(self.algorithm, delta)

    def _record_dump(self, values: Mapping[str, Any]) -> None:
        """Record one dump of SB3's logger, less the losses already recorded at the end of an earlier ``learn``."""
        try:
            done = _take_recorded(self.logger)  # the dump clears what the logger holds
        except Exception:
            _logger.exception("otel-rl: could not read Stable-Baselines3's logger")
            done = None
        self._record_logged(_unrecorded(values, done))

    def _record_logged(self, values: Mapping[str, Any]) -> None:
        """Record what SB3's logger holds: one dump, or the values recorded after the last dump."""
        try:
            key = (self.algorithm, self.run_id)
            reward_mean, length_mean = values.get("rollout/ep_rew_mean"), values.get("rollout/ep_len_mean")
            _rec.set_episode_means(key, reward_mean, length_mean)
            policy = _first(values, _POLICY_LOSS)
            value = _first(values, _VALUE_LOSS)
            if value is None and policy is None:
                value = values.get("train/loss")  # DQN's TD loss; PPO's total loss is not a value loss
            entropy_loss = values.get("train/entropy_loss")
            entropy = _negated(entropy_loss)
            if policy is not None or value is not None or entropy is not None:
                _rec.record_loss_metrics(self.algorithm, policy, value, entropy)
            _rec.set_signals(key, {name: values.get(sb3_key) for sb3_key, name in _SIGNALS.items()})
            record_extra(values, algorithm=self.algorithm, run_id=self.run_id)  # the extra_keys setting
        except Exception:
            _logger.exception("otel-rl: could not record Stable-Baselines3's logged values")


def _unrecorded(values: Mapping[str, Any], done: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``values`` without the losses in ``done`` (the very objects: a new update logs new ones)."""
    if not done:
        return values
    return {key: value for key, value in values.items() if not (key in done and value is done[key])}


def _first(values: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = values.get(key)
        if value is not None:
            return value
    return None


def _negated(value: Any) -> Any:
    """``-value`` for a number; anything else as it is, for the store to count and drop."""
    if value is None or isinstance(value, (bool, str)):
        return value
    try:
        return -float(value)
    except (TypeError, ValueError):
        return value
