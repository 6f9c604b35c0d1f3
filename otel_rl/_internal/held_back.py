"""Objects that hold values back from the store until a collection flushes them.

The Gymnasium wrappers count steps in a plain integer and hand the count to the store in ``flush()``: registered
here with :func:`hold_back`, they are flushed by :func:`flush_held_back` before every scrape, export and the final
export at shutdown. A holder's ``flush()`` holds :func:`flushing`. Imports the store (for its warn-once log) and
nothing above it; the store does not import this.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any, Protocol

from otel_rl._internal.store import REGISTRY


class _Flushable(Protocol):
    """What :func:`hold_back` takes: an object with a ``flush()`` that hands held-back values to the store."""

    def flush(self) -> None: ...


#: Live objects that hold values back from the store (the Gymnasium wrappers count steps in an integer).
_holders: weakref.WeakSet[Any] = weakref.WeakSet()
#: Guards ``_holders`` and is the lock their ``flush()`` takes, so a flush before a collection and one in the
#: stepping thread never hand the same steps over twice. Replaced in a forked child: take it through
#: :func:`flushing`, never through a name imported from here (that would keep the parent's lock).
flush_lock = threading.Lock()


def flushing() -> threading.Lock:
    """This process' flush lock, to hold as ``with held_back.flushing():`` while handing held-back values over."""
    return flush_lock


def hold_back(holder: _Flushable) -> None:
    """Register ``holder``: :func:`flush_held_back` calls its ``flush()`` before each collection, so its values
    reach a scrape, an export and the final export at shutdown even when ``flush``/``close`` is never called."""
    with flushing():
        _holders.add(holder)


def flush_held_back() -> None:
    """Flush every registered holder (before a collection). An error is logged once, never raised."""
    if not _holders:
        return
    with flushing():
        holders = list(_holders)
    for holder in holders:
        try:
            holder.flush()
        except Exception:  # noqa: BLE001 (a collection never fails for a holder)
            REGISTRY.warn_once(("otel_rl", "flush_failed"), "otel-rl could not flush %s before a collection",
                               type(holder).__qualname__, exc_info=True)


def _new_flush_lock() -> None:
    # A forked child: the parent's collection thread may have held the lock at fork, and it is gone in the child.
    global flush_lock
    flush_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_flush_lock)
