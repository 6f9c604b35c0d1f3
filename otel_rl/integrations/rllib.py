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

import contextlib
import logging
import os
import re
from typing import Any

from otel_rl._internal.hints import install_hint

try:
    from ray.rllib.callbacks.callbacks import RLlibCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"otel_rl.integrations.rllib needs RLlib: {install_hint('rllib')}") from exc

from otel_rl._internal import identity, lifecycle
from otel_rl._internal.errors import StrictModeError
from otel_rl._internal.results import AGENT_EPISODES_KEY, EPISODES_KEY, RECORDED_KEY
from otel_rl._internal.runs import current_run
from otel_rl._internal.steps import StepRecorder
from otel_rl._internal.store import REGISTRY, UNREADABLE

__all__ = ["OtelRLCallback"]

_logger = logging.getLogger("otel_rl")
_EPISODES = tuple(EPISODES_KEY.split("/")[1:])  # the key inside the env runners' MetricsLogger
_AGENT_EPISODES = tuple(AGENT_EPISODES_KEY.split("/")[1:])


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
        self._recorder: StepRecorder | None = None
        self._flush = True  #: export at the end of each result (only does something in a worker process)

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
            agents: dict[str, list[float]] = {}  # a multi-agent episode: each agent's return and step count
            for chunk in chunks:
                for agent_id, agent_chunk in (getattr(chunk, "agent_episodes", None) or {}).items():
                    totals = agents.setdefault(str(agent_id), [0.0, 0])
                    totals[0] += float(agent_chunk.get_return())
                    totals[1] += len(agent_chunk)
            for agent_id, (agent_return, agent_length) in agents.items():
                metrics_logger.log_value(_AGENT_EPISODES, (agent_id, agent_return, agent_length),
                                         reduce="item_series")
        except Exception:  # per episode: one traceback per process, not one per episode
            if not REGISTRY.warn_once(("rllib", "on_episode_end"), "otel-rl: could not log a finished episode for "
                                      "the driver (logged once)", exc_info=True):
                _logger.debug("otel-rl: could not log a finished episode for the driver", exc_info=True)

    def on_train_result(self, *, algorithm: Any, result: dict, metrics_logger: Any = None, **kwargs: Any) -> None:
        """In the driver (or a Tune trial's actor): record the iteration's result, mark it recorded, and in a
        worker process export it at once."""
        try:
            if self._recorder is None:
                run = current_run()
                trial = _trial(algorithm) if run is None else None
                if trial is not None:  # a Tune class trainable: no Tune session tells the process its trial
                    identity.set_trial(*trial)
                name = self.algorithm or (None if run else type(algorithm).__name__)
                run_id = self.run_id or (None if run or trial is None else trial[0])
                self._recorder = StepRecorder(name, run_id, self.agent_id, "training_error")
            self._recorder.record(result)
            result[RECORDED_KEY] = True
        except Exception as exc:
            if not REGISTRY.warn_once(("rllib", "on_train_result"), "otel-rl: could not record the training "
                                      "result (logged once; each failure counts in otel_rl_dropped_values_total"
                                      "{reason=\"unreadable_result\"})", exc_info=True):
                _logger.debug("otel-rl: could not record the training result", exc_info=True)
            if not isinstance(exc, StrictModeError):  # a lost iteration is never silent
                with contextlib.suppress(Exception):
                    REGISTRY.drop("rl_training_iterations_total", UNREADABLE, exc)
        # Ray ends a Tune trial's actor without an interpreter exit, right after its last result: what is not
        # exported now is lost. In the driver this does nothing (the periodic export and the exit flush it). When
        # the collector cannot be reached, each flush would hold training up to shutdown_timeout: after one
        # failure (and its warning) the periodic export alone goes on.
        try:
            flushed = not self._flush or lifecycle.flush_worker()
        except Exception:  # noqa: BLE001 (never raises into training)
            _logger.exception("otel-rl: could not export the result's values")
            flushed = False
        if not flushed:
            self._flush = False
            _logger.warning("otel-rl: this process no longer exports at the end of each RLlib result; its values "
                            "go out with the periodic export only (otlp.export_interval)")


#: A trial id and the counter after it in the name Tune gives a trial's directory,
#: ``<trainable>[_<env>]_<trial id>_<counter>[_<params>]_<date>``: the id is ``<5 hex>_<counter, 5 digits>`` from
#: Tune's default search, eight hex digits from the others.
_TRIAL_ID = re.compile(r"(([0-9a-f]{5})_([0-9]{5})|[0-9a-f]{8})_([0-9]+)(?:_|$)")


def _trial(algorithm: Any) -> tuple[str, str] | None:
    """``(trial_id, trial_name)`` of the Tune trial that runs this algorithm as a class trainable, else None.

    RLlib drops the trial information Tune hands to a class trainable (``Algorithm`` makes its config dict an
    ``AlgorithmConfig`` before ``Trainable`` looks for it), so ``algorithm.trial_id`` answers ``"default"`` there;
    the trial's directory, which Tune names after the trial, still tells it (unless a ``trial_dirname_creator``
    renamed it: then ``OtelRLCallback.configured(run_id=...)``).
    """
    try:
        trial_id = algorithm.trial_id
        if trial_id and trial_id != "default":
            return str(trial_id), str(algorithm.trial_name or trial_id)
        if not identity.in_ray_worker():
            return None
        session = identity.ray_trial()  # an algorithm built inside a function trainable
        if session is not None:
            return session
        storage = getattr(algorithm, "_storage", None)  # set only when Tune runs the trainable
        name = getattr(storage, "trial_dir_name", None) or os.path.basename(
            os.path.normpath(str(algorithm.logdir or "")))
        trial = _trial_from_dirname(str(name), type(algorithm).__name__)
        if trial is None and storage is not None:
            REGISTRY.warn_once(("rllib", "trial_dir"), "otel-rl: cannot tell this Tune trial's id from its directory "
                               "name %r (a trial_dirname_creator?); its run_id is 'default': pass "
                               "OtelRLCallback.configured(run_id=...)", name)
        return trial
    except Exception:  # noqa: BLE001 (not a Trainable, or its API changed: no trial)
        return None


def _trial_from_dirname(name: str, trainable: str) -> tuple[str, str] | None:
    """``(trial_id, trial_name)`` from a trial directory name Tune made for ``trainable``; None when it is not one.

    Anything doubtful answers None (``run_id="default"``, one series for all trials, and a warning) rather than an
    id that would look right and be wrong: the name must start with the trainable's name, an id of Tune's default
    search must carry the counter that follows it, and exactly one place in the name may look like a trial id.
    """
    if not name.startswith(trainable + "_"):
        return None
    found = []
    for start in [len(trainable) + 1] + [i + 1 for i, c in enumerate(name) if c == "_" and i > len(trainable)]:
        match = _TRIAL_ID.match(name, start)
        if match and (match.group(2) is None or int(match.group(3)) == int(match.group(4))):
            found.append((match.group(1), name[:match.end(1)]))
    return found[0] if len(found) == 1 else None
