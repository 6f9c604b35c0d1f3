"""The pytest plugin that otel-rl installs (entry point ``pytest11``): the ``otel_rl_metrics`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_rl.testing import CapturedMetrics, capture_metrics


@pytest.fixture
def otel_rl_metrics() -> Iterator[CapturedMetrics]:
    """Empty otel-rl metric state for the test, and helpers to assert on what it recorded (see otel_rl.testing)."""
    with capture_metrics() as captured:
        yield captured
