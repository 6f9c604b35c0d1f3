"""Shared fixtures: every test starts from empty metric state and no running telemetry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import otel_rl  # noqa: E402
from otel_rl import testing  # noqa: E402


@pytest.fixture(autouse=True)
def clean_state():
    """Reset recorded values and shut down telemetry left running by a test."""
    testing.reset()
    yield
    running = otel_rl.current()
    if running is not None:
        running.shutdown(timeout=2.0)
    testing.reset()
    _forget_instruments()


def _forget_instruments() -> None:
    """Instruments a test made through the global provider (and record_scalar's gauges) are process-wide: forget
    them, so that a later test's telemetry does not report their observable callbacks and gauges."""
    from otel_rl._internal import provider, scalars

    provider.PROXY._meters.clear()
    scalars._scalars.clear()
    scalars._by_name.clear()


@pytest.fixture
def telemetry():
    """Telemetry with the Prometheus endpoint on a free port."""
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
    yield handle
    handle.shutdown(timeout=2.0)
