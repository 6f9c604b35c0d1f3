"""The seed module's facts (``shared/reference/seed-metrics.json``), vendored so the tests run from any checkout."""

from __future__ import annotations

import json
from pathlib import Path

VENDORED = Path(__file__).resolve().parent / "data" / "seed-metrics.json"
#: Where the workplace keeps the original, beside the repository root.
SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-metrics.json"


def load() -> dict:
    """The facts: ``metrics``, ``helpers``, ``prometheus_scrape_job`` and ``original_dashboard``."""
    return json.loads(VENDORED.read_text(encoding="utf-8"))
