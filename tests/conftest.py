"""Shared fixtures: every test starts from empty metric state and no running telemetry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import otel_rl  # noqa: E402
from otel_rl import testing  # noqa: E402
from otel_rl._internal import webconfig  # noqa: E402


@pytest.fixture(autouse=True)
def clean_state():
    """Reset recorded values and shut down telemetry left running by a test."""
    testing.reset()
    webconfig.forget_parsed()
    yield
    running = otel_rl.current()
    if running is not None:
        running.shutdown(timeout=2.0)
    testing.reset()
    _forget_instruments()
    _restore_store_settings()


def _forget_instruments() -> None:
    """Instruments a test made through the global provider (and record_scalar's gauges) are process-wide: forget
    them, so that a later test's telemetry does not report their observable callbacks and gauges."""
    from otel_rl._internal import provider, scalars

    provider.PROXY._meters.clear()
    scalars._scalars.clear()
    scalars._by_name.clear()


def _restore_store_settings() -> None:
    """What an ``init_telemetry`` applied to the process-wide store outlives its shutdown (bucket overrides,
    ``per_run_series``, ``label_value_limit``), as it should in a program: put the catalog's back between tests."""
    from otel_rl._internal.catalog import BY_NAME
    from otel_rl._internal.store import DEFAULT_LABEL_VALUE_LIMIT, REGISTRY, Histogram

    for metric in REGISTRY.metrics.values():
        if isinstance(metric, Histogram):
            metric.rebucket(tuple(float(b) for b in BY_NAME[metric.name].buckets))
    if REGISTRY.per_run:
        REGISTRY.set_per_run(False)
    REGISTRY.label_value_limit = DEFAULT_LABEL_VALUE_LIMIT


@pytest.fixture
def telemetry():
    """Telemetry with the Prometheus endpoint on a free port."""
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
    yield handle
    handle.shutdown(timeout=2.0)
