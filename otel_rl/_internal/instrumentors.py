"""The Gymnasium, Stable-Baselines3 and RLlib instrumentors of zero-code instrumentation, and what they patch in.

* :class:`GymnasiumInstrumentor`: ``gymnasium.make`` / ``gymnasium.make_vec`` wrap the environments they return
  with a recorder (:func:`auto_wrapper_classes`, subclasses of otel-rl's Gymnasium recorders that can take the
  algorithm's name later and step aside for a recorder the script adds above them);
* :class:`StableBaselines3Instrumentor`: the algorithms' ``learn`` adds otel-rl's callback to the script's own;
* :class:`RLlibInstrumentor`: ``Algorithm.setup`` adds otel-rl's callback to the config's callbacks classes.

Nothing is counted twice: an environment made by Stable-Baselines3 or RLlib is left to their callback, and a
callback the script already passes is not added again. :data:`INSTRUMENTORS` names them as pyproject.toml's
``opentelemetry_instrumentor`` entry points do (through :mod:`otel_rl.instrumentation`, the public module).

Imports the patching machinery (:mod:`otel_rl._internal.patching`) at the top. The integrations whose recorders and
callbacks it adds (``otel_rl.integrations.*``, below it), the run context (:mod:`otel_rl._internal.runs`) and the
frameworks themselves are imported inside the functions that run once a framework is imported, so that importing
this module imports no framework. Of the integrations it uses only public names, among them those their recorders
and callback keep for zero-code instrumentation (``relabel``, ``yield_to_outer``, ``algorithm_arg``). Only
:mod:`otel_rl.instrumentation` imports this module.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from otel_rl._internal.patching import Instrumentor, patch_attribute

_logger = logging.getLogger("otel_rl")

__all__ = ["INSTRUMENTORS", "GymnasiumInstrumentor", "RLlibInstrumentor", "StableBaselines3Instrumentor",
           "auto_wrapper_classes"]

# -- Gymnasium ------------------------------------------------------------------------------------------------------

_FRAMEWORKS = ("stable_baselines3", "ray")


def _made_by_framework() -> bool:
    """Whether a framework that records through its own callback is on the stack (it made the environment)."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.partition(".")[0] in _FRAMEWORKS:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _auto_classes():
    from otel_rl.integrations.gymnasium import RecordEpisodeMetrics, RecordVectorEpisodeMetrics

    class AutoRecordEpisodeMetrics(RecordEpisodeMetrics):
        """The recorder ``gymnasium.make`` adds under zero-code instrumentation; it steps aside for a recorder the
        script adds above it."""

        def yield_to_outer(self) -> None:
            _pass_through(self)

    class AutoRecordVectorEpisodeMetrics(RecordVectorEpisodeMetrics):
        """The recorder ``gymnasium.make_vec`` adds under zero-code instrumentation; it steps aside for a recorder
        the script adds above it."""

        def yield_to_outer(self) -> None:
            _pass_through(self)

    return AutoRecordEpisodeMetrics, AutoRecordVectorEpisodeMetrics


def _pass_through(wrapper: Any) -> None:
    """Make a zero-code recorder record nothing more: a recorder placed above it by the script records instead."""
    wrapper.flush()
    wrapper.step = wrapper.env.step
    wrapper.reset = wrapper.env.reset


_AUTO: tuple[Any, Any] | None = None


def auto_wrapper_classes() -> tuple[Any, Any]:
    """The (single, vector) recorder classes zero-code instrumentation wraps environments with."""
    global _AUTO
    if _AUTO is None:
        _AUTO = _auto_classes()
    return _AUTO


def _recorded(env: Any) -> bool:
    """Whether ``env`` already carries one of otel-rl's Gymnasium recorders."""
    from otel_rl.integrations.gymnasium import RecordEpisodeMetrics, RecordVectorEpisodeMetrics

    seen = 0
    while env is not None and seen < 100:
        if isinstance(env, (RecordEpisodeMetrics, RecordVectorEpisodeMetrics)):
            return True
        env, seen = getattr(env, "env", None), seen + 1
    return False


def _wrapping(make: Callable[..., Any], vector: bool) -> Callable[..., Any]:
    def make_recorded(*args: Any, **kwargs: Any) -> Any:
        env = make(*args, **kwargs)
        if _made_by_framework():
            return env
        try:
            if _recorded(env):
                return env
            single, vectorised = auto_wrapper_classes()
            return (vectorised if vector else single)(env)
        except Exception:
            _logger.exception("otel-rl: could not wrap the environment %r; it is not recorded", env)
            return env

    return make_recorded


class GymnasiumInstrumentor(Instrumentor):
    """Wraps what ``gymnasium.make`` and ``gymnasium.make_vec`` return with otel-rl's episode recorder."""

    _instruments = ("gymnasium >= 1.0, < 2",)  # pyproject.toml's extras

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        # Only the package's names: make_vec's own sub-environments (made by gymnasium.envs.registration.make)
        # stay unwrapped, so a vector environment's episodes are recorded once, by its vector recorder.
        return {"gymnasium": lambda gymnasium: [
            patch_attribute(gymnasium, "make", lambda make: _wrapping(make, vector=False)),
            patch_attribute(gymnasium, "make_vec", lambda make: _wrapping(make, vector=True))]}


# -- Stable-Baselines3 ----------------------------------------------------------------------------------------------


def _sb3_callback_class():
    from otel_rl.integrations.sb3 import OtelRLCallback

    class ZeroCodeCallback(OtelRLCallback):
        """OtelRLCallback that first gives the zero-code Gymnasium recorders below it the algorithm's name."""

        _warn_wrapped = False

        def _start(self) -> None:
            from otel_rl._internal.runs import current_run

            run = current_run()
            algorithm = str(self.algorithm_arg or (run.algorithm if run else type(self.model).__name__))
            envs = getattr(self.training_env.unwrapped, "envs", None) or ()  # DummyVecEnv: in this process
            single, vectorised = auto_wrapper_classes()
            for env in envs:
                while env is not None:
                    if isinstance(env, (single, vectorised)):
                        env.relabel(algorithm)
                    env = getattr(env, "env", None)
            super()._start()

    return ZeroCodeCallback


def _has_callback(callback: Any, cls: type) -> bool:
    if callback is None:
        return False
    if isinstance(callback, cls):
        return True
    if isinstance(callback, (list, tuple)):
        return any(_has_callback(c, cls) for c in callback)
    return _has_callback(getattr(callback, "callbacks", None), cls)  # CallbackList


#: ``learning`` is true while an instrumented learn() runs in this thread: a learn() it calls adds no second callback.
_inside_learn = threading.local()


def _learning(learn: Callable[..., Any]) -> Callable[..., Any]:
    def learn_recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_inside_learn, "learning", False):
            return learn(self, *args, **kwargs)
        from stable_baselines3.common.callbacks import BaseCallback, ConvertCallback

        from otel_rl.integrations.sb3 import OtelRLCallback

        try:
            given = kwargs["callback"] if "callback" in kwargs else (args[1] if len(args) > 1 else None)
            if not _has_callback(given, OtelRLCallback):
                ours = _sb3_callback_class()()
                if given is not None and not isinstance(given, (list, BaseCallback)):
                    given = ConvertCallback(given)  # a function: SB3 converts it alone, not inside a list
                added = ours if given is None else [*given, ours] if isinstance(given, list) else [given, ours]
                if "callback" in kwargs or len(args) <= 1:
                    kwargs["callback"] = added
                else:
                    args = (args[0], added, *args[2:])
        except Exception:
            _logger.exception("otel-rl: could not add the Stable-Baselines3 callback; this run is not recorded")
        _inside_learn.learning = True
        try:
            return learn(self, *args, **kwargs)
        finally:
            _inside_learn.learning = False

    return learn_recorded


class StableBaselines3Instrumentor(Instrumentor):
    """Adds otel-rl's callback to every ``learn`` of a Stable-Baselines3 algorithm."""

    _instruments = ("stable-baselines3 >= 2.3, < 3",)

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        # PPO.learn and friends call these through super(); BaseAlgorithm.learn is abstract.
        return {
            "stable_baselines3.common.on_policy_algorithm":
                lambda module: [patch_attribute(module.OnPolicyAlgorithm, "learn", _learning)],
            "stable_baselines3.common.off_policy_algorithm":
                lambda module: [patch_attribute(module.OffPolicyAlgorithm, "learn", _learning)],
        }


# -- RLlib ----------------------------------------------------------------------------------------------------------


def _with_rllib_callback(config: Any) -> Any:
    """``config`` with otel-rl's RLlib callback added to its callbacks (a copy when it is frozen)."""
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
    from ray.rllib.utils import force_list

    from otel_rl.integrations.rllib import OtelRLCallback

    if not isinstance(config, AlgorithmConfig):
        return config  # a dict config: merged with the defaults inside setup; left as it is
    given = force_list(config.callbacks_class)
    if any(isinstance(c, type) and issubclass(c, OtelRLCallback) for c in given):
        return config
    from ray.rllib.callbacks.callbacks import RLlibCallback

    own = [c for c in given if c is not RLlibCallback]
    if own and not config.enable_env_runner_and_connector_v2:
        _logger.warning("otel-rl: RLlib's old API stack takes one callbacks class and this config has its own; "
                        "add otel_rl.integrations.rllib.OtelRLCallback to it to record this run")
        return config
    frozen = getattr(config, "_is_frozen", False)
    config = config.copy(copy_frozen=False) if frozen else config
    config.callbacks(callbacks_class=[*own, OtelRLCallback] if own else OtelRLCallback)
    if frozen:
        config.freeze()
    return config


def _setting_up(setup: Callable[..., Any]) -> Callable[..., Any]:
    def setup_recorded(self: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            # Algorithm.__init__ keeps the config object as self.config, and setup() reads that one.
            own = getattr(self, "config", None)
            if own is not None:
                self.config = _with_rllib_callback(own)
            config = self.config if own is not None and config is own else _with_rllib_callback(config)
        except Exception:
            _logger.exception("otel-rl: could not add the RLlib callback; this run is not recorded")
        return setup(self, config, *args, **kwargs)

    return setup_recorded


class RLlibInstrumentor(Instrumentor):
    """Adds otel-rl's callback to the callbacks of every RLlib algorithm that is set up."""

    _instruments = ("ray >= 2.60, < 3",)

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        return {"ray.rllib.algorithms.algorithm":
                lambda module: [patch_attribute(module.Algorithm, "setup", _setting_up)]}


#: Entry-point name -> instrumentor, as pyproject.toml registers them (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``).
INSTRUMENTORS: dict[str, type[Instrumentor]] = {
    "gymnasium": GymnasiumInstrumentor,
    "stable_baselines3": StableBaselines3Instrumentor,
    "rllib": RLlibInstrumentor,
}
