"""The flush lock that held-back step counts are handed over under, in this process and in a forked child."""

from __future__ import annotations

import os

import pytest

from otel_rl._internal import held_back


def test_flushing_is_one_lock_within_a_process():
    """Two holders flushing at once (a collection and the stepping thread) wait for each other."""
    with held_back.flushing():
        assert not held_back.flushing().acquire(blocking=False)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_flushing_in_a_forked_child_is_not_the_lock_the_parent_held_at_fork():
    """A child forked while a collection thread of the parent held the lock can still flush: the lock it takes
    is the child's own, not the parent's (held for ever in the child, where that thread does not exist)."""
    with held_back.flushing():
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os._exit(0 if held_back.flushing().acquire(timeout=5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
