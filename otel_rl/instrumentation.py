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

This module holds the configurator, the distro and ``otel-rl run``'s bootstrap, and is where the entry points and
the documentation name the instrumentors; they live in :mod:`otel_rl._internal.instrumentors`, on the post-import
patching of :mod:`otel_rl._internal.patching`. Imports the instrumentors and, inside :func:`configure`, the
lifecycle that starts telemetry. Of our modules only ``otel-rl run`` (the CLI and its ``sitecustomize``) imports
this one.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from otel_rl._internal.instrumentors import (
    INSTRUMENTORS,
    GymnasiumInstrumentor,
    RLlibInstrumentor,
    StableBaselines3Instrumentor,
    auto_wrapper_classes,
)

if TYPE_CHECKING:
    from otel_rl._internal.telemetry import Telemetry

_logger = logging.getLogger("otel_rl")

__all__ = ["INSTRUMENTORS", "GymnasiumInstrumentor", "OtelRLConfigurator", "RLlibInstrumentor",
           "StableBaselines3Instrumentor", "auto_wrapper_classes", "bootstrap", "configure", "disabled",
           "instrument_installed"]

#: The pid of the process the configurator started telemetry in; its descendants (spawned workers, Ray workers,
#: any ``python`` the script starts) inherit the variable and leave telemetry to otel-rl's worker rules.
ROOT_ENV = "OTEL_RL_ZERO_CODE_ROOT"
#: Set by ``otel-rl run``: SIGTERM ends the script through ``sys.exit`` so the final export runs.
SIGTERM_ENV = "OTEL_RL_SIGTERM_EXIT"
DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"


def configure() -> Telemetry | None:
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
    from otel_rl._internal.sigterm import when_interrupted_call_returns

    when_interrupted_call_returns(frame, lambda: sys.exit(128 + signum))


def _set_global_provider(telemetry: Telemetry) -> None:
    """Make otel-rl's MeterProvider the API's global one, unless something already set one."""
    from opentelemetry import metrics

    provider = telemetry.meter_provider
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
