"""When telemetry starts and stops, and which one runs: ``init_telemetry``, a worker's start on its first record,
the exit and SIGTERM flushes, and what a forked child does with its parent's telemetry.

- :func:`init_telemetry` starts the process' one running :class:`Telemetry` (:func:`running_telemetry`), publishes
  its push settings for the processes this one starts (:mod:`otel_rl._internal.worker_settings`), puts the
  final-export handler on SIGTERM and, in a multiprocessing worker, enrols its flush in the worker's exit.
- A descendant process that records without telemetry of its own starts push telemetry from the settings its
  parent published on its first record (the store's new-series hook), with its own ``service.instance.id`` and
  its role (:mod:`otel_rl._internal.identity`) as resource attributes; without such settings it logs one warning
  naming its pid and what to do. Such an automatic start, and zero-code instrumentation's, is replaced by an
  explicit ``init_telemetry`` with other settings.
- After ``os.fork()`` the child abandons the parent's telemetry without touching it (no export under the parent's
  identity, no ``shutdown()`` of the parent's HTTP server; the inherited listening socket is closed so the port is
  freed when the parent stops); the store, the decorators and the other modules reset their own state in their own
  fork handlers.

Imports telemetry and the plain modules below it. Only modules above it import it: the public API (``otel_rl``),
the decorators (the worker flush), the integrations, ``compat``, ``instrumentation`` and the ``stack`` command;
``tests/test_architecture.py`` checks that none below does.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from otel_rl._internal import identity, scalars, sigterm, worker_settings
from otel_rl._internal.config import Settings, load_settings
from otel_rl._internal.errors import ConfigError
from otel_rl._internal.redaction import redact
from otel_rl._internal.store import REGISTRY, strict_from_environment
from otel_rl._internal.telemetry import Telemetry

_logger = logging.getLogger("otel_rl")

_lock = threading.Lock()  #: guards _running and _automatic
_running: Telemetry | None = None
#: The running telemetry when it was started automatically (a worker's first record, zero-code instrumentation):
#: an explicit init_telemetry() with other settings replaces it instead of refusing.
_automatic: Telemetry | None = None
_hook_lock = threading.Lock()  #: one first-record start at a time (never a store lock)
_warned = False  #: the "records but has no exporter" warning was logged in this process


def running_telemetry() -> Telemetry | None:
    """The running telemetry of this process, if any (``otel_rl.current()``)."""
    return _running


def init_telemetry(config: Settings | Mapping[str, Any] | str | os.PathLike[str] | None = None) -> Telemetry:
    """Set up metrics export for this process and return the handle.

    ``config`` is a :class:`Settings` (used as given after the same validation; not merged with environment), a
    mapping, the path of a YAML file (its ``monitoring:`` section when it has one) or None to use the environment
    alone. Explicit config wins over environment variables, which win over defaults. Calling it again with the
    same settings returns the same handle; with different settings it raises ConfigError until the running
    telemetry is shut down.
    """
    return start(config)


def start(config: Settings | Mapping[str, Any] | str | os.PathLike[str] | None = None, *,
          automatic: bool = False) -> Telemetry:
    """:func:`init_telemetry`; with ``automatic``, the handle is one that a later explicit call may replace.

    Automatic starts are a worker's first record (from its parent's settings) and zero-code instrumentation."""
    global _running, _automatic
    if config is None:
        # A worker of a process that pushes: the settings its parent published (docs/multiprocess.md).
        config = worker_settings.inherited_config()
        if config is not None:
            worker_settings.warn_omitted_secrets()
    settings = _validated(config) if isinstance(config, Settings) else load_settings(config)
    replaced = _automatic if _automatic is not None and _automatic is _running and _automatic.settings != settings \
        else None
    if replaced is not None:
        # The explicit call takes over. No linger: the new telemetry serves the same store, nothing is left to scrape.
        replaced.shutdown(linger=False)
    with _lock:
        if _running is not None:
            if _running.settings != settings:
                raise ConfigError(
                    "init_telemetry() was already called with different settings "
                    f"({_differences(_running.settings, settings)}); call shutdown() on the running handle first")
        else:
            _running = Telemetry(settings, on_stopped=_stopped)
            if settings.flush_on_sigterm:
                sigterm.install(_final_export)
            worker_settings.publish(settings)
            _enroll_worker_exit(_running)
        if automatic:
            _automatic = _running
        return _running


def _stopped(telemetry: Telemetry) -> None:
    """Called by a telemetry when it has shut down: undo what starting it as the running one did."""
    global _running, _automatic
    with _lock:
        if _automatic is telemetry:
            _automatic = None
        if _running is telemetry:
            _running = None
            worker_settings.withdraw()
            sigterm.uninstall()
            scalars.set_patterns(())
            telemetry.registry.strict = strict_from_environment()


def _final_export() -> None:
    """The SIGTERM handler's export: shut the running telemetry down (the final values within shutdown_timeout)."""
    telemetry = _running
    if telemetry is not None:
        telemetry.shutdown()


def _validated(settings: Settings) -> Settings:
    """A hand-built Settings, checked by the same parsers as a mapping (ConfigError naming the key)."""
    def section(obj: Any) -> dict[str, Any]:
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if is_dataclass(value):
                value = section(value)
            elif f.name in ("headers", "resource_attributes", "buckets") and isinstance(value, tuple):
                value = dict(value)
            out[f.name] = value
        return out

    return load_settings(section(settings), environ={})


def _differences(running: Settings, requested: Settings) -> str:
    """The settings that differ, as ``key: running -> requested``, with secrets redacted."""
    changed = []
    for name in running.__dataclass_fields__:
        old, new = getattr(running, name), getattr(requested, name)
        if hasattr(old, "__dataclass_fields__"):
            changed += [(f"{name}.{sub}", getattr(old, sub), getattr(new, sub)) for sub in old.__dataclass_fields__
                        if getattr(old, sub) != getattr(new, sub)]
        elif old != new:
            changed.append((name, old, new))
    return "; ".join(f"{key}: running {redact(key, old)}, requested {redact(key, new)}" for key, old, new in changed)


@atexit.register
def _shutdown_at_exit() -> None:
    telemetry = _running
    if telemetry is not None:
        telemetry.shutdown()


def _is_running() -> bool:
    return _running is not None


# -- worker processes --------------------------------------------------------------------------------------------


def _enroll_worker_exit(telemetry: Telemetry) -> None:
    """Flush a multiprocessing worker's telemetry when it exits.

    A ``multiprocessing`` child leaves through ``os._exit`` after its target returns, so atexit handlers never
    run there; multiprocessing's own finalizers do (unless the worker is terminated, as ``Pool.terminate()`` and
    leaving a ``with Pool()`` block do).
    """
    mp = sys.modules.get("multiprocessing")  # never imported here: a program without it has no such workers
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(telemetry, telemetry.shutdown, exitpriority=10)


def flush_worker(timeout: float | None = None) -> bool:
    """At the end of a training run in a worker process (a Ray Tune trial, a rank): export the final values now.

    Worker processes are often stopped without a normal interpreter exit (Ray kills its actors), which would
    lose the values recorded since the last periodic export. The flush has ``shutdown_timeout`` unless given
    ``timeout``, and counts as done only when values collected after it began were exported (a warning if not).
    Returns False only when such a flush did not get through.
    """
    telemetry = _running
    if telemetry is None or identity.role() == "main" or "otlp" not in telemetry.settings.exporters:
        return True
    timeout = telemetry.settings.shutdown_timeout if timeout is None else timeout
    if not telemetry.force_flush(timeout):
        _logger.warning("otel-rl: process %d could not export its final values within %.1f s", os.getpid(),
                        timeout)
        return False
    return True


def _start_on_first_record() -> None:
    """The store's new-series hook: called (once per process, with no store lock held) on the first new series.

    Starts push telemetry from the published settings in a worker, or warns that the values go nowhere. Takes
    only this module's own lock, never a store lock: starting telemetry re-keys the store under its locks.
    """
    global _warned
    REGISTRY.new_series_hook = None
    if sys.is_finalizing():  # a wrapper's close() from a __del__ at exit: nothing to start
        return
    if _running is not None:
        return
    with _hook_lock:
        if _running is not None:
            return
        config = worker_settings.inherited_config()
        if config is not None:
            worker_settings.warn_omitted_secrets()
            try:
                start(config, automatic=True)
                _logger.info("otel-rl: process %d (%s) pushes its own metrics with the settings its parent "
                             "published in %s", os.getpid(), identity.role(), worker_settings.WORKER_CONFIG_ENV)
                return
            except Exception as exc:  # noqa: BLE001 (a recording call must never raise)
                _logger.warning("otel-rl: process %d could not start telemetry from %s: %s", os.getpid(),
                                worker_settings.WORKER_CONFIG_ENV, exc)
        kind = identity.role()
        if kind == "main" or _warned:
            return  # a main process may record before init_telemetry(): its values are exported then
        _warned = True
        _logger.warning(
            "otel-rl: process %d (%s) records metrics but has no exporter of its own: its values reach neither "
            "/metrics nor a collector. Push from it over OTLP (init_telemetry with exporters: [otlp] in the "
            "parent hands its settings to its workers, or call init_telemetry in the worker), or record in the "
            "driver through the framework's own channel (otel_rl.integrations.sb3, otel_rl.integrations.rllib). "
            "See docs/multiprocess.md.", os.getpid(), kind)


# -- fork --------------------------------------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    """The parent's telemetry is abandoned (it stands for the child's own from now on), and the hook armed again.

    The store empties itself in its own fork handler, registered before this one."""
    global _lock, _hook_lock, _running, _automatic, _warned
    _lock = threading.Lock()
    _hook_lock = threading.Lock()
    _warned = False
    parent, _running, _automatic = _running, None, None
    if parent is not None:
        parent.abandon_in_child(running_telemetry)
        identity.mark_forked_child(os.getppid())
    REGISTRY.new_series_hook = _start_on_first_record


REGISTRY.running = _is_running
REGISTRY.new_series_hook = _start_on_first_record
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
