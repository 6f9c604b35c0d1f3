"""Loaded by Python at start-up under ``otel-rl run`` (this directory is first on ``PYTHONPATH``).

Starts otel-rl's telemetry and instruments Gymnasium, Stable-Baselines3 and RLlib (otel_rl.instrumentation), after
running the ``sitecustomize`` this one hides, if the environment has one. Never stops the script: a failure is
printed and the script runs uninstrumented.

Every Python process the script starts inherits ``PYTHONPATH`` and runs this too: pip, a helper, one of Ray's own
processes, possibly another interpreter in which otel_rl is not installed. Such a descendant imports otel_rl only
when it imports a framework to instrument, so the others start as fast and as quietly as without ``otel-rl run``.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading

#: otel_rl.instrumentation.ROOT_ENV (not imported from there: that import is what a descendant defers).
ROOT_ENV = "OTEL_RL_ZERO_CODE_ROOT"
#: The imports after which a descendant loads the instrumentation (the instrumentors patch these or their modules).
TRIGGERS = frozenset({"gymnasium", "stable_baselines3", "ray.rllib"})


def _instrument() -> bool:
    try:
        from otel_rl.instrumentation import bootstrap
    except Exception as exc:  # noqa: BLE001 (another interpreter than otel-rl's: ImportError, or a SyntaxError)
        print(f"otel-rl run: {sys.executable} cannot import otel_rl ({exc}); it runs uninstrumented", file=sys.stderr)
        return False
    try:
        bootstrap()
    except Exception as exc:  # noqa: BLE001 (a setting error must not stop the script; it is shown)
        print(f"otel-rl run: could not start telemetry: {exc}; the script runs uninstrumented", file=sys.stderr)
        return False
    return True


class _Deferred(importlib.abc.MetaPathFinder):
    """In a descendant process: instrument on the first import of a framework, then step aside."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False

    def find_spec(self, name, path=None, target=None):
        if self._done or name not in TRIGGERS:
            return None
        with self._lock:
            if self._done:
                return None
            self._done = True  # stays in sys.meta_path (removing it mid-import would skip the next finder)
        if not _instrument():
            return None
        from otel_rl._internal.patching import post_import

        return post_import.find_spec(name, path, target)  # the patches for ``name`` itself (gymnasium)


def _chain() -> None:
    """Run the next ``sitecustomize`` on the path (a distribution's or a virtualenv's), as it would have run.

    It takes this module's place in ``sys.modules`` (the import of this one then returns it), so that
    ``import sitecustomize`` and pickles of its functions find it as without ``otel-rl run``.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    own = sys.modules.get(__name__)
    spec = None
    try:
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
        sys.modules[__name__] = module  # as an import does, before running the module
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 (as Python's site module does: report and go on)
        if own is not None:
            sys.modules[__name__] = own
        print(f"otel-rl run: the sitecustomize at {spec.origin if spec else '?'} failed: {exc!r}", file=sys.stderr)


_chain()
if os.environ.get(ROOT_ENV, "") not in ("", str(os.getpid())):
    sys.meta_path.insert(0, _Deferred())
else:
    # Marked before the import that may fail: the processes this one starts are descendants even then (one that
    # can import otel_rl would otherwise start telemetry of its own, on the same port as its siblings).
    os.environ[ROOT_ENV] = str(os.getpid())
    _instrument()
