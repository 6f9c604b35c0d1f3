"""Zero-code instrumentation: record Gymnasium, Stable-Baselines3 and RLlib training without changing the script.

``opentelemetry-instrument python train.py`` (with ``opentelemetry-instrumentation`` installed) and
``otel-rl run -- python train.py`` (without it) both load what this module defines:

* a configurator that starts otel-rl's telemetry from the ``OTEL_*`` / ``OTEL_RL_*`` variables and makes its
  MeterProvider the OpenTelemetry API's global one, so otel-rl's series and the script's own instruments leave
  through one provider, one endpoint, one ``service.instance.id``;
* three instrumentors (entry points ``gymnasium``, ``stable_baselines3`` and ``rllib`` of the
  ``opentelemetry_instrumentor`` group, so ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names them):
  ``gymnasium.make`` / ``gymnasium.make_vec`` wrap the environments they return with otel-rl's recorder,
  Stable-Baselines3's ``learn`` adds :class:`otel_rl.integrations.sb3.OtelRLCallback`, and RLlib's
  ``Algorithm.setup`` adds :class:`otel_rl.integrations.rllib.OtelRLCallback` to the config's callbacks.

Nothing is counted twice: environments made by Stable-Baselines3 or RLlib themselves are left to their callback,
a callback the script already passes is not added again, and the Gymnasium recorder of an environment handed to
Stable-Baselines3 takes the algorithm's name. See docs/opentelemetry.md (zero-code).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

_logger = logging.getLogger("otel_rl")

#: The pid of the process the configurator started telemetry in; its descendants (spawned workers, Ray workers,
#: any ``python`` the script starts) inherit the variable and leave telemetry to otel-rl's worker rules.
ROOT_ENV = "OTEL_RL_ZERO_CODE_ROOT"
#: Set by ``otel-rl run``: SIGTERM ends the script through ``sys.exit`` so the final export runs.
SIGTERM_ENV = "OTEL_RL_SIGTERM_EXIT"
DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"


class _FallbackBase:
    """The part of ``BaseInstrumentor`` otel-rl uses: one instance per class, instrument / uninstrument once."""

    _instance: Any = None
    _is_instrumented_by_opentelemetry = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("_instance") is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._is_instrumented_by_opentelemetry

    def instrument(self, **kwargs: Any) -> None:
        if self._is_instrumented_by_opentelemetry:
            return
        self._instrument(**kwargs)
        self._is_instrumented_by_opentelemetry = True

    def uninstrument(self, **kwargs: Any) -> None:
        if self._is_instrumented_by_opentelemetry:
            self._uninstrument(**kwargs)
            self._is_instrumented_by_opentelemetry = False

    def _instrument(self, **kwargs: Any) -> None:
        raise NotImplementedError

    def _uninstrument(self, **kwargs: Any) -> None:
        raise NotImplementedError


if TYPE_CHECKING:
    _Base = _FallbackBase
else:
    try:  # with opentelemetry-instrumentation, its base class (opentelemetry-instrument loads instrumentors by it)
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor as _Base
    except ImportError:  # ``otel-rl run`` works without opentelemetry-instrumentation
        _Base = _FallbackBase


__all__ = ["GymnasiumInstrumentor", "OtelRLConfigurator", "RLlibInstrumentor", "StableBaselines3Instrumentor",
           "configure"]

_guard = threading.local()  # suppresses a second callback when learn() calls an instrumented learn() again


class _Loader(importlib.abc.Loader):
    """A module's own loader, plus the patches to apply once the module has run."""

    def __init__(self, loader: Any, hooks: list[Callable[[Any], None]]) -> None:
        self._loader = loader
        self._hooks = hooks

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        for hook in self._hooks:
            try:
                hook(module)
            except Exception:
                _logger.exception("otel-rl: could not instrument %s", module.__name__)

    def __getattr__(self, name: str) -> Any:  # resources, get_source, ...: the module's own loader answers
        return getattr(self._loader, name)


class _PostImport(importlib.abc.MetaPathFinder):
    """Patches applied when a module is first imported, so that a program that never imports a framework does
    not pay for importing it (Ray's and torch's start-up, in every Python process a script starts)."""

    def __init__(self) -> None:
        self.hooks: dict[str, list[Callable[[Any], None]]] = {}
        self._busy = threading.local()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        hooks = self.hooks.get(name)
        if not hooks or getattr(self._busy, "name", None) == name:
            return None
        self._busy.name = name
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._busy.name = None
        if spec is None or spec.loader is None:
            return None
        del self.hooks[name]
        spec.loader = _Loader(spec.loader, hooks)
        return spec

    def when_imported(self, name: str, hook: Callable[[Any], None]) -> None:
        module = sys.modules.get(name)
        if module is not None:
            hook(module)
            return
        self.hooks.setdefault(name, []).append(hook)
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def forget(self, hook: Callable[[Any], None]) -> None:
        for name, hooks in list(self.hooks.items()):
            if hook in hooks:
                hooks.remove(hook)
            if not hooks:
                del self.hooks[name]


_post_import = _PostImport()


def _patch(owner: Any, name: str, make_wrapper: Callable[[Any], Any]) -> Callable[[], None]:
    """Replace ``owner.name`` by ``make_wrapper(original)``; returns what puts the original back."""
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    wrapper = functools.wraps(original)(make_wrapper(original))
    setattr(owner, name, wrapper)

    def restore() -> None:
        if getattr(owner, name, None) is wrapper or owner.__dict__.get(name) is wrapper:
            setattr(owner, name, original)

    return restore


class _Instrumentor(_Base):
    """Patches applied when their module is imported (at once if it is already), undone by ``uninstrument()``."""

    _instruments: tuple[str, ...] = ()  #: the framework's distribution and the versions otel-rl supports

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    @classmethod
    def installed(cls) -> bool:
        """Whether the framework's distribution is installed (at any version)."""
        import importlib.metadata
        import re

        for requirement in cls._instruments:
            try:
                importlib.metadata.distribution(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0])
            except importlib.metadata.PackageNotFoundError:
                return False
        return True

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        """Module name -> what patches it, returning what undoes the patches."""
        raise NotImplementedError

    def _unsupported(self) -> str | None:
        """Why the installed framework's version is not one otel-rl supports, or None (also when not installed).

        opentelemetry-instrument does not ask instrumentation_dependencies() here: it checks a distribution's
        ``instruments`` extra, which otel-rl (three frameworks, each optional) has not. So the instrumentor checks.
        """
        if not self.installed():
            return None
        try:
            from packaging.requirements import Requirement
        except ImportError:  # packaging comes with opentelemetry-instrumentation and pip's users; else no check
            return None
        import importlib.metadata

        for dependency in self._instruments:
            requirement = Requirement(dependency)
            version = importlib.metadata.version(requirement.name)
            if not requirement.specifier.contains(version, prereleases=True):
                return f"{requirement.name} {version} is installed; otel-rl supports {requirement.specifier}"
        return None

    def _instrument(self, **kwargs: Any) -> None:
        self._restore: list[Callable[[], None]] = []
        self._pending: list[Callable[[Any], None]] = []
        unsupported = self._unsupported()
        if unsupported is not None:
            _logger.warning("otel-rl: %s; %s patches nothing", unsupported, type(self).__name__)
            return
        for name, patch in self._targets().items():
            def hook(module: Any, patch: Any = patch) -> None:
                self._restore.extend(patch(module))
            self._pending.append(hook)
            _post_import.when_imported(name, hook)

    def _uninstrument(self, **kwargs: Any) -> None:
        for hook in getattr(self, "_pending", []):
            _post_import.forget(hook)
        for restore in reversed(getattr(self, "_restore", [])):
            restore()
        self._restore, self._pending = [], []


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
        """The recorder ``gymnasium.make`` adds under zero-code instrumentation."""

        def _otel_rl_relabel(self, algorithm: str) -> None:
            self.flush()  # steps so far keep the label they were taken under
            self._algorithm = algorithm
            self._key = (algorithm, self._key[1])

        def _otel_rl_yield(self) -> None:
            _pass_through(self)

    class AutoRecordVectorEpisodeMetrics(RecordVectorEpisodeMetrics):
        """The recorder ``gymnasium.make_vec`` adds under zero-code instrumentation."""

        def _otel_rl_relabel(self, algorithm: str) -> None:
            self.flush()
            self._algorithm = algorithm
            self._key = (algorithm, self._key[1])
            self._steps_key = (algorithm,)

        def _otel_rl_yield(self) -> None:
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


class GymnasiumInstrumentor(_Instrumentor):
    """Wraps what ``gymnasium.make`` and ``gymnasium.make_vec`` return with otel-rl's episode recorder."""

    _instruments = ("gymnasium >= 1.0, < 2",)  # pyproject.toml's extras

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        # Only the package's names: make_vec's own sub-environments (made by gymnasium.envs.registration.make)
        # stay unwrapped, so a vector environment's episodes are recorded once, by its vector recorder.
        return {"gymnasium": lambda gymnasium: [
            _patch(gymnasium, "make", lambda make: _wrapping(make, vector=False)),
            _patch(gymnasium, "make_vec", lambda make: _wrapping(make, vector=True))]}


# -- Stable-Baselines3 ----------------------------------------------------------------------------------------------


def _sb3_callback_class():
    from otel_rl.integrations.sb3 import OtelRLCallback

    class ZeroCodeCallback(OtelRLCallback):
        """OtelRLCallback that first gives the zero-code Gymnasium recorders below it the algorithm's name."""

        _warn_wrapped = False

        def _start(self) -> None:
            from otel_rl._internal.decorators import current_run

            run = current_run()
            algorithm = str(self._algorithm_arg or (run.algorithm if run else type(self.model).__name__))
            envs = getattr(self.training_env.unwrapped, "envs", None) or ()  # DummyVecEnv: in this process
            single, vectorised = auto_wrapper_classes()
            for env in envs:
                while env is not None:
                    if isinstance(env, (single, vectorised)):
                        env._otel_rl_relabel(algorithm)
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


def _learning(learn: Callable[..., Any]) -> Callable[..., Any]:
    def learn_recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_guard, "learning", False):
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
        _guard.learning = True
        try:
            return learn(self, *args, **kwargs)
        finally:
            _guard.learning = False

    return learn_recorded


class StableBaselines3Instrumentor(_Instrumentor):
    """Adds otel-rl's callback to every ``learn`` of a Stable-Baselines3 algorithm."""

    _instruments = ("stable-baselines3 >= 2.3, < 3",)

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        # PPO.learn and friends call these through super(); BaseAlgorithm.learn is abstract.
        return {
            "stable_baselines3.common.on_policy_algorithm":
                lambda module: [_patch(module.OnPolicyAlgorithm, "learn", _learning)],
            "stable_baselines3.common.off_policy_algorithm":
                lambda module: [_patch(module.OffPolicyAlgorithm, "learn", _learning)],
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


class RLlibInstrumentor(_Instrumentor):
    """Adds otel-rl's callback to the callbacks of every RLlib algorithm that is set up."""

    _instruments = ("ray >= 2.60, < 3",)

    def _targets(self) -> dict[str, Callable[[Any], list[Callable[[], None]]]]:
        return {"ray.rllib.algorithms.algorithm": lambda module: [_patch(module.Algorithm, "setup", _setting_up)]}


#: Entry-point name -> instrumentor, as pyproject.toml registers them (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``).
INSTRUMENTORS: dict[str, type[_Instrumentor]] = {
    "gymnasium": GymnasiumInstrumentor,
    "stable_baselines3": StableBaselines3Instrumentor,
    "rllib": RLlibInstrumentor,
}


# -- configurator and distro ------------------------------------------------------------------------------------------


def configure() -> Any:
    """Start otel-rl's telemetry from the environment for a zero-code run and make it the global provider.

    Returns the handle, or None in a descendant of the process that did it (a spawned worker, a Ray worker, a
    ``python`` the script starts): those follow otel-rl's worker rules (docs/multiprocess.md) instead of taking
    the endpoint's port. The handle is marked automatic: an ``init_telemetry(config)`` in the script with other
    settings replaces it; one with the same settings returns it.
    """
    root = os.environ.get(ROOT_ENV, "")
    if root and root != str(os.getpid()):
        return None
    os.environ[ROOT_ENV] = str(os.getpid())
    from otel_rl._internal import lifecycle

    # Before init_telemetry, whose own SIGTERM handler (final export, then death by SIGTERM) steps aside for it:
    # sys.exit also runs the script's finally blocks and records an interrupted training_run as failed.
    if os.environ.get(SIGTERM_ENV, "").strip().lower() in ("1", "true") and \
            threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    telemetry = lifecycle.start(automatic=True)
    _set_global_provider(telemetry)
    return telemetry


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Python's default for SIGTERM ends the process without atexit: the last values would never be exported.
    # A record call the signal interrupted finishes first, so the final export never shows half of one.
    from otel_rl._internal.sigterm import after_otel_rl

    after_otel_rl(frame, lambda: sys.exit(128 + signum))


def _set_global_provider(telemetry: Any) -> None:
    """Make otel-rl's MeterProvider the API's global one, unless something already set one."""
    from opentelemetry import metrics

    provider = getattr(telemetry, "meter_provider", None) or telemetry.bridge.provider
    current = metrics.get_meter_provider()
    if current is provider or not type(current).__module__.startswith("opentelemetry.metrics"):
        return  # set already (by otel-rl's init_telemetry or by the application)
    metrics.set_meter_provider(provider)


class OtelRLConfigurator:
    """The ``opentelemetry_configurator`` entry point: ``opentelemetry-instrument`` calls ``configure()``."""

    def configure(self, **kwargs: Any) -> None:
        configure()


def _distro_class() -> Any:
    """The ``opentelemetry_distro`` entry point's class (only opentelemetry-instrument loads it, and brings its base).

    The distro picks otel-rl's configurator when none is named, also when another configurator is installed.
    """
    from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined,unused-ignore]

    class OtelRLDistro(BaseDistro):
        def _configure(self, **kwargs: Any) -> None:
            os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", "otel_rl")

    return OtelRLDistro


def __getattr__(name: str) -> Any:
    if name == "OtelRLDistro":
        return _distro_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def disabled() -> set[str]:
    """The instrumentations ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` turns off (``*``: all)."""
    return {name.strip() for name in os.environ.get(DISABLED_ENV, "").split(",") if name.strip()}


def bootstrap() -> None:
    """What ``otel-rl run`` does in the script's interpreter: configure, then instrument what is not disabled."""
    configure()
    instrument_installed()


def instrument_installed() -> None:
    """Instrument the installed frameworks that ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` leaves on.

    A framework that is not installed is skipped quietly (opentelemetry-instrumentation's ``instrument()`` would
    log it as an error, in every Python process the script starts); one at a version otel-rl does not support is
    refused by that check, with its message.
    """
    off = disabled()
    for name, instrumentor in INSTRUMENTORS.items():
        if "*" in off or name in off or not instrumentor.installed():
            continue
        try:
            instrumentor().instrument()
        except Exception:
            _logger.exception("otel-rl: could not instrument %s", name)
