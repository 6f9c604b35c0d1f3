"""The catalog is the seed's contract, and the generated metrics reference is current."""

from __future__ import annotations

import json
from pathlib import Path

from otel_rl import CATALOG
from otel_rl._internal.reference import metrics_markdown
from otel_rl.cli import main

import facts

ROOT = Path(__file__).resolve().parent.parent


def _facts() -> dict:
    return facts.load()


def test_vendored_facts_are_the_shared_original():
    """tests/data/seed-metrics.json is a byte copy of the workplace's shared/reference file, where that exists."""
    vendored = facts.VENDORED.read_bytes()
    assert json.loads(vendored)["metrics"], "the vendored facts have no metrics"
    if facts.SHARED.is_file():
        assert vendored == facts.SHARED.read_bytes(), "tests/data/seed-metrics.json differs from shared/reference"


def test_catalog_matches_the_seed_facts_exactly():
    """Every seed metric is in the catalog, in order, with its type, label keys, buckets and help."""
    facts = _facts()["metrics"]
    assert [m["name"] for m in facts] == [s.name for s in CATALOG]
    for fact, spec in zip(facts, CATALOG):
        assert spec.type == fact["type"], spec.name
        assert list(spec.labels) == fact["labels"], spec.name
        assert spec.help == fact["help"], spec.name
        assert [float(b) for b in fact.get("buckets", [])] == list(spec.buckets), spec.name


def test_metrics_reference_is_generated_from_the_catalog():
    """docs/metrics.md equals what `otel-rl metrics` generates (regenerate with `make generate`)."""
    committed = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert committed == metrics_markdown(), "docs/metrics.md is stale: run `otel-rl metrics --output docs/metrics.md`"
    for spec in CATALOG:
        assert f"`{spec.name}`" in committed


def test_cli_metrics_writes_the_reference(tmp_path):
    """`otel-rl metrics --output FILE` writes the same Markdown."""
    out = tmp_path / "metrics.md"
    assert main(["metrics", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == metrics_markdown()
