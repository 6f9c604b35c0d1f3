"""The final export on SIGTERM: ``docker stop``, Kubernetes, Slurm and ``Pool.terminate`` end a process that way.

A SIGTERM at its default disposition kills the process without running ``atexit``, so the values recorded since
the last periodic export never left it. While SIGTERM is at that default, :func:`install` (called by
``init_telemetry`` on the main thread, unless ``flush_on_sigterm`` is off) puts a handler in its place that makes
the final export it is given (lifecycle's: shut the running telemetry down within ``shutdown_timeout``) and then
dies of SIGTERM as it would have (the parent sees ``-SIGTERM``, a shell exit status 143). A handler that is not
the default (the user's, Ray's, a framework's) is never replaced; such handlers usually exit through
``SystemExit``, which runs ``atexit`` and so the final export. A handler installed later that calls the previous
one (the usual way to chain) reaches this one.

The handler runs in the main thread between two bytecodes of whatever it interrupted. When that is otel-rl's or
the OpenTelemetry SDK's own code, a lock the export needs may be held by the interrupted frame; the handler then
lets that call finish (microseconds for a record call) and exports when its frame returns (a trace function on
that one frame; a tracer already set, such as coverage's or a debugger's, is suspended for that call and put back
before the export). The totals exported are therefore exactly those of the record calls that returned. A second
SIGTERM while that call has not returned (it never should) exports at once; during the export it is ignored.

``shutdown()`` puts SIGTERM back to its default when this handler is still the one installed (a Python handler
delays SIGTERM until the main thread runs Python code again); the next ``init_telemetry`` installs it again.

Imports nothing of otel-rl's: the final export is a callable handed to :func:`install`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

_logger = logging.getLogger("otel_rl")


def _dirs(*paths: str) -> tuple[str, ...]:
    """Each path as a code object names it (as imported) and resolved (symbolic links followed)."""
    forms = [(p, os.path.realpath(p) + (os.sep if p.endswith(os.sep) else "")) for p in paths]
    return tuple(dict.fromkeys(form for pair in forms for form in pair))


_here = os.path.dirname(os.path.abspath(__file__))
#: otel-rl's own code: the package directory, with a trailing separator.
_PACKAGE_DIRS = _dirs(os.path.dirname(_here) + os.sep)
#: Code that holds locks the final export needs while it runs: the store's metrics (a record call), and the SDK's
#: metrics and exporters. Such a frame anywhere on the interrupted stack postpones the export (see the module
#: docstring).
_LOCK_HOLDERS = _dirs(*(os.path.join(_here, name) for name in ("metric.py", "histogram.py", "store.py")))
try:
    import opentelemetry.sdk.metrics as _sdk_metrics

    _LOCK_HOLDERS += _dirs(os.path.dirname(os.path.abspath(_sdk_metrics.__file__)) + os.sep)
except ImportError:  # pragma: no cover (a dependency of otel-rl)
    pass

_handling = False
#: What the handler exports before the process dies (given to :func:`install`).
_final_export: Callable[[], object] | None = None
#: While the handler waits for the interrupted call to return: what makes the export then (a second SIGTERM makes
#: it at once, so a call that never returns cannot leave the process deaf to SIGTERM).
_waiting: Callable[[], None] | None = None


def install(final_export: Callable[[], object]) -> bool:
    """Put the handler that calls ``final_export`` and then dies on SIGTERM, when SIGTERM is at its default; returns
    whether it is there.

    Only the main thread of the main interpreter may set a handler; elsewhere this does nothing (and says why at
    debug level)."""
    global _final_export
    if threading.current_thread() is not threading.main_thread():
        _logger.debug("otel-rl: no SIGTERM handler: init_telemetry was not called on the main thread")
        return False
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm:
            _final_export = final_export
            return True
        if current is not signal.SIG_DFL:
            _logger.debug("otel-rl: SIGTERM already has a handler (%r); it is left as it is", current)
            return False
        _final_export = final_export
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main interpreter (a subinterpreter): signal.signal is refused
        _logger.debug("otel-rl: no SIGTERM handler in a subinterpreter")
        return False
    return True


def uninstall() -> None:
    """Put SIGTERM back to its default if this module's handler is the one installed (on the main thread only).

    A handler installed after it (which may chain to it) is left in place."""
    if threading.current_thread() is not threading.main_thread() or _handling:
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # pragma: no cover (not the main interpreter: install() set nothing)
        pass


def _frame_to_finish(frame: FrameType | None) -> FrameType | None:
    """The outermost frame of otel-rl's or the SDK's code that the signal interrupted, or None.

    That is the outermost frame of the innermost run of otel-rl frames (not code otel-rl calls, as ``@train_step``
    calls the training step), or of a record call or the SDK's metrics code anywhere on the stack (they may hold a
    lock while they call the standard library, such as ``logging``)."""
    found = None
    innermost_run = True
    while frame is not None:
        name = frame.f_code.co_filename
        ours = name.startswith(_PACKAGE_DIRS)
        if name.startswith(_LOCK_HOLDERS) or ours and innermost_run:
            found = frame
        innermost_run = innermost_run and ours
        frame = frame.f_back
    return found


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _handling, _waiting
    if _handling:  # a second SIGTERM: the final export goes on, or starts now if it was waiting for a call
        if _waiting is not None:
            _waiting()
        return
    _handling = True
    when_interrupted_call_returns(frame, lambda: _export_and_die(signum))


def when_interrupted_call_returns(frame: FrameType | None, action: Callable[[], object]) -> None:
    """Run ``action`` now, or, when a signal interrupted otel-rl's or the SDK's code, once that call returns.

    The interrupted call may hold a lock the export needs, or be half-way through a record (the episode counted,
    its reward not yet observed): it finishes first. ``otel-rl run``'s SIGTERM exit uses this too.
    """
    global _waiting
    target = _frame_to_finish(frame)
    if target is None:
        action()
        return
    # The interrupted call may hold a lock the export needs: let it finish, and export when its frame returns. A
    # tracer already there (coverage, a debugger) steps aside for that call and is put back before the export:
    # exporting at once under it would wait on that lock for the whole shutdown_timeout and lose the final export.
    previous = sys.gettrace()
    done = False

    def finish() -> None:
        global _waiting
        nonlocal done
        if not done:
            done = True
            _waiting = None
            sys.settrace(previous)
            action()

    def on_return(traced: FrameType, event: str, arg: object):
        if event == "return" and traced is target:
            finish()  # an exception the action raises (SystemExit) leaves from the finished frame
        return on_return

    def on_call(called: FrameType, event: str, arg: object) -> None:
        # The frame's own trace function may be replaced (a Python tracer interrupted by the signal sets the one it
        # returns when it resumes): the first call made after the target returned exports all the same.
        if event == "call" and not _on_stack(target, called.f_back):
            finish()

    target.f_trace = on_return
    target.f_trace_lines = False
    sys.settrace(on_call)  # a frame's f_trace is only called while the thread has a tracer
    _waiting = finish


def _on_stack(target: FrameType, frame: FrameType | None) -> bool:
    while frame is not None:
        if frame is target:
            return True
        frame = frame.f_back
    return False


def _export_and_die(signum: int) -> None:
    final_export = _final_export
    if final_export is not None:
        try:
            final_export()
        except Exception:  # noqa: BLE001 (the process dies of SIGTERM whatever the export does)
            _logger.exception("otel-rl: the final export on SIGTERM failed")
    die_of(signum)


def die_of(signum: int) -> None:
    """End the process as the default disposition of ``signum`` does (the parent sees death by that signal)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    # The default action is taken when the kernel delivers the signal, normally before os.kill returns; a thread
    # that blocks the signal could delay it: wait for it rather than run on.
    while True:  # pragma: no cover
        signal.pause()
