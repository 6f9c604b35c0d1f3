"""TRL (RL post-training of language models): one ``transformers`` callback that records what the trainer logs.

``GRPOTrainer(..., callbacks=[OtelRLCallback()])`` (or RLOO, DPO, any ``transformers.Trainer``) records, in the
process of rank 0 (``state.is_world_process_zero``; TRL gathers its figures over the ranks before it logs them):

* one iteration per optimizer step (``state.global_step``);
* each log the trainer writes (``on_log``: the dict that also goes to ``state.log_history``, W&B or TensorBoard):
  the mean reward and completion length, each reward function's mean reward, the loss, the policy entropy, and the
  training signals (learning rate, gradient norm, KL, clip ratio, entropy coefficient, tokens per second);
* the run: started and completed, or failed when training runs inside :class:`otel_rl.training_run`, which then
  owns the run.

Evaluation logs (keys starting with ``eval_``) and the end-of-training summary (``train_loss``, ...) are not
recorded: they would overwrite the training figures with other ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from otel_rl._internal.hints import install_hint

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"otel_rl.integrations.trl needs TRL and transformers: {install_hint('trl')}") from exc

from otel_rl._internal import recording as _rec
from otel_rl._internal.runs import current_run, run_labels
from otel_rl._internal.store import REGISTRY

__all__ = ["TRL_KEYS", "OtelRLCallback"]

_logger = logging.getLogger("otel_rl")

#: TRL / transformers log key -> what otel-rl records from it, for the table in docs/integrations.md.
TRL_KEYS: dict[str, str] = {
    "reward": "rl_training_episode_reward_mean (one completion is one episode)",
    "completions/mean_length": "rl_training_episode_length_mean (in tokens)",
    "rewards/<function>/mean": "rl_training_reward_function_mean{reward_function=\"<function>\"}",
    "loss": "rl_training_policy_loss (one observation per log)",
    "entropy": "rl_training_entropy (mean token entropy of the policy; one observation per log)",
    "learning_rate": "rl_training_learning_rate",
    "grad_norm": "rl_training_grad_norm",
    "kl": "rl_training_kl_divergence (logged when beta > 0)",
    "clip_ratio/region_mean": "rl_training_clip_fraction",
    "entropy_coef": "rl_training_entropy_coefficient",
    "num_tokens, step_time": "rl_training_tokens_per_second: new tokens over the window's step time",
    "train_tokens_per_second": "rl_training_tokens_per_second (transformers' figure, where it is logged)",
}
_SIGNALS = {
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "kl": "kl_divergence",
    "clip_ratio/region_mean": "clip_fraction",
    "entropy_coef": "entropy_coefficient",
}
_REWARD_FUNCTIONS = REGISTRY.gauge("rl_training_reward_function_mean")


class OtelRLCallback(TrainerCallback):
    """Records TRL training into otel-rl's series; pass it in ``callbacks=[...]`` to the trainer.

    ``algorithm`` defaults to the enclosing :class:`otel_rl.training_run`'s, else the trainer's config class name
    without ``Config`` (``GRPO``, ``RLOO``, ``DPO``; ``Trainer`` for plain ``TrainingArguments``); ``run_id`` to
    the training run's, else ``"default"``. Never raises into training: a recording problem is logged.
    """

    def __init__(self, algorithm: str | None = None, run_id: str | None = None) -> None:
        self._algorithm_arg = algorithm
        self._run_id_arg = run_id
        self.algorithm = "default"
        self.run_id = "default"
        self._owns_run = False
        self._started = 0.0
        self._tokens = 0.0  # num_tokens at the previous log
        self._step = 0  # global_step at the previous log

    # -- transformers hooks ----------------------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        try:
            run = current_run()
            name = type(args).__name__
            default = name[: -len("Config")] if name.endswith("Config") and name != "Config" else "Trainer"
            self.algorithm, self.run_id = run_labels(self._algorithm_arg, self._run_id_arg, default)
            self._tokens = float(getattr(state, "num_input_tokens_seen", 0) or 0)
            self._step = int(state.global_step)
            if run is None and state.is_world_process_zero:
                _rec.record_training_start(self.algorithm, self.run_id)
                self._owns_run = True
                self._started = time.monotonic()
        except Exception:
            _logger.exception("otel-rl: the TRL callback could not start recording")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            _rec.record_training_iteration(self.algorithm, state.global_step, self.run_id)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            try:
                self._record_logged(logs, state.global_step)
            except Exception as exc:  # noqa: BLE001 (recording never raises into training)
                _rec.warn_failure("recording TRL's logged values", exc)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._owns_run:
            self._owns_run = False
            _rec.record_training_complete(self.algorithm, time.monotonic() - self._started, self.run_id)

    # -- recording -----------------------------------------------------------------------------------------------

    def _record_logged(self, logs: Mapping[str, Any], step: int) -> None:
        if any(key.startswith("eval_") for key in logs) or "train_loss" in logs:
            # Evaluation and the end-of-training summary: other figures under other names. The summary is told by
            # train_loss: with include_num_input_tokens_seen every training log has train_runtime as well.
            return
        key = (self.algorithm, self.run_id)
        reward, length = logs.get("reward"), logs.get("completions/mean_length")
        _rec.set_episode_means(key, reward, length)
        for name, value in logs.items():
            if value is not None and name.startswith("rewards/") and name.endswith("/mean"):
                _REWARD_FUNCTIONS.set((self.algorithm, self.run_id, name[len("rewards/"):-len("/mean")]), value)
        loss, entropy = logs.get("loss"), logs.get("entropy")
        if loss is not None or entropy is not None:
            _rec.record_loss_metrics(self.algorithm, loss, None, entropy)
        signals = {name: logs.get(trl_key) for trl_key, name in _SIGNALS.items()}
        signals["tokens_per_second"] = self._tokens_per_second(logs, step)
        _rec.set_signals(key, signals)

    def _tokens_per_second(self, logs: Mapping[str, Any], step: int) -> Any:
        """transformers' own figure where logged, else the window's new tokens over its summed step time."""
        tokens, step_time = logs.get("num_tokens"), logs.get("step_time")
        steps, self._step = step - self._step, step
        if tokens is not None:
            try:
                previous, self._tokens = self._tokens, float(tokens)
            except (TypeError, ValueError):
                return None
        if logs.get("train_tokens_per_second") is not None:
            return logs["train_tokens_per_second"]
        if tokens is None or step_time is None or steps <= 0:
            return None
        try:
            seconds = float(step_time) * steps
        except (TypeError, ValueError):
            return None
        return (self._tokens - previous) / seconds if seconds > 0 else None
