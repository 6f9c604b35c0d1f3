"""RLlib: a callback that records every finished episode and each training iteration, exactly, in the driver.

``config.callbacks(OtelRLCallback)`` (or ``OtelRLCallback.configured(algorithm=..., run_id=...)``) works on both
API stacks and with any number of remote env runners:

* New API stack: each env runner logs every finished episode's ``(return, length)`` in ``on_episode_end`` into
  RLlib's own ``MetricsLogger`` as an unreduced series (``reduce="item_series"``). RLlib ships these series from
  the remote env runners to the driver and hands the iteration's episodes, from every runner, to
  ``on_train_result`` under ``env_runners/otel_rl/episodes``.
* Old API stack: the result's ``hist_stats`` hold the episodes; ``episodes_this_iter`` says which are new.

``on_train_result`` runs in the driver and records the result as :func:`otel_rl.train_step` does (iteration,
means, losses, training signals, environment steps, episodes), then marks the result as recorded, so a
``@train_step`` around ``algo.train()`` does not record it a second time. Env runners record nothing themselves:
nothing needs to be exported from Ray worker processes. The run's start and end are not RLlib callbacks: wrap
the training loop in :class:`otel_rl.training_run`.
"""

from __future__ import annotations

import logging
from typing import Any

from otel_rl._internal.hints import install_hint

try:
    from ray.rllib.callbacks.callbacks import RLlibCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"otel_rl.integrations.rllib needs RLlib: {install_hint('rllib')}") from exc

from otel_rl._internal.decorators import _StepRecorder, current_run
from otel_rl._internal.results import EPISODES_KEY, RECORDED_KEY

__all__ = ["OtelRLCallback"]

_logger = logging.getLogger("otel_rl")
_EPISODES = tuple(EPISODES_KEY.split("/")[1:])  # the key inside the env runners' MetricsLogger


class OtelRLCallback(RLlibCallback):
    """Records RLlib training into otel-rl's series; pass the class to ``AlgorithmConfig.callbacks``.

    ``algorithm`` defaults to the enclosing :class:`otel_rl.training_run`'s, else the algorithm's class name
    (``PPO``); ``run_id`` to the training run's, else ``"default"``. Never raises into training.
    """

    algorithm: str | None = None
    run_id: str | None = None
    agent_id: str = "default"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recorder: _StepRecorder | None = None

    @classmethod
    def configured(cls, *, algorithm: str | None = None, run_id: str | None = None,
                   agent_id: str = "default") -> type[OtelRLCallback]:
        """A subclass with these labels, for ``config.callbacks(OtelRLCallback.configured(run_id="exp-1"))``."""
        return type(cls.__name__, (cls,), {"algorithm": algorithm, "run_id": run_id, "agent_id": str(agent_id),
                                           "__module__": cls.__module__, "__qualname__": cls.__qualname__})

    def on_episode_end(self, *, episode: Any, prev_episode_chunks: Any = None, metrics_logger: Any = None,
                       **kwargs: Any) -> None:
        """In the env runner: log the episode's return and length for the driver (new API stack).

        An episode that spans several ``sample()`` calls arrives in chunks: ``episode`` is the last one, the earlier
        ones are in ``prev_episode_chunks``; return and length add up over all of them.
        """
        if metrics_logger is None or not hasattr(episode, "get_return"):
            return  # old API stack: the result's hist_stats carry the episodes
        try:
            chunks = [episode, *(prev_episode_chunks or ())]
            episode_return = sum(float(chunk.get_return()) for chunk in chunks)
            length = sum(len(chunk) for chunk in chunks)
            metrics_logger.log_value(_EPISODES, (episode_return, length), reduce="item_series")
        except Exception:
            _logger.exception("otel-rl: could not log the finished episode for the driver")

    def on_train_result(self, *, algorithm: Any, result: dict, metrics_logger: Any = None, **kwargs: Any) -> None:
        """In the driver: record the iteration's result, then mark it recorded."""
        try:
            if self._recorder is None:
                run = current_run()
                name = self.algorithm or (None if run else type(algorithm).__name__)
                self._recorder = _StepRecorder(name, self.run_id, self.agent_id, "training_error")
            self._recorder.record(result)
            result[RECORDED_KEY] = True
        except Exception:
            _logger.exception("otel-rl: could not record the training result")
