"""Loaded by Python at start-up under ``otel-rl run`` (this directory is first on ``PYTHONPATH``).

Starts otel-rl's telemetry and instruments Gymnasium, Stable-Baselines3 and RLlib (otel_rl.instrumentation), after
running the ``sitecustomize`` this one hides, if the environment has one. Never stops the script: a failure is
printed and the script runs uninstrumented.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _instrument() -> None:
    try:
        from otel_rl.instrumentation import bootstrap
    except ImportError as exc:  # another interpreter than the one otel-rl is installed in
        print(f"otel-rl run: {sys.executable} cannot import otel_rl ({exc}); the script runs uninstrumented",
              file=sys.stderr)
        return
    try:
        bootstrap()
    except Exception as exc:  # noqa: BLE001 (a setting error must not stop the script; it is shown)
        print(f"otel-rl run: could not start telemetry: {exc}; the script runs uninstrumented", file=sys.stderr)


def _chain() -> None:
    """Run the next ``sitecustomize`` on the path (a distribution's or a virtualenv's), as it would have run."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 (as Python's site module does: report and go on)
        print(f"otel-rl run: the sitecustomize at {spec.origin if spec else '?'} failed: {exc!r}", file=sys.stderr)


_chain()
_instrument()
