"""What users read never says "the seed": it names the original ``prometheus_metrics`` module instead."""

from __future__ import annotations

import ast
import pydoc
import re
from pathlib import Path

import pytest

import otel_rl
import otel_rl.compat.prometheus_metrics
import otel_rl.testing

ROOT = Path(__file__).resolve().parent.parent
# "seed" as jargon for the replaced module; the random seed (--seed, seed=0, "the seed of ...") stays allowed.
JARGON = re.compile(r"(?i)\bseed's\b|\b(the|a) seed\b(?!\s+(of|for|=))"
                    r"|\bseed[ -](module|guide|panel|metric|layout|iteration|bucket|dashboard|drop-in|call)")


def _hits(text: str) -> list[str]:
    """Lines using the jargon; the test data file tests/data/seed-metrics.json keeps its name."""
    return [line.strip() for line in text.splitlines() if JARGON.search(line.replace("seed-metrics.json", ""))]


USER_FILES = ["README.md", "collector/prometheus.yml", "collector/otelcol-config.yaml",
              *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", USER_FILES)
def test_documents_name_the_original_module(path):
    """README, docs and the configs users copy never say "the seed"."""
    assert not _hits((ROOT / path).read_text(encoding="utf-8"))


@pytest.mark.parametrize("module", [otel_rl, otel_rl.testing, otel_rl.compat.prometheus_metrics])
def test_help_of_public_modules_has_no_jargon(module):
    """help(otel_rl) and the other public modules' help texts never say "the seed"."""
    assert not _hits(pydoc.render_doc(module, renderer=pydoc.plaintext))


def test_docstrings_and_messages_in_the_package_have_no_jargon():
    """No docstring, comment or string constant under otel_rl/ says "the seed"."""
    offending = []
    for path in sorted((ROOT / "otel_rl").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        strings = [node.value for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        comments = [line.split("#", 1)[1] for line in source.splitlines() if "#" in line]
        offending += [f"{path.name}: {hit}" for text in strings + comments for hit in _hits(text)]
    assert not offending, offending


def test_the_check_finds_the_jargon():
    """The pattern catches the phrasings that were in use, and lets the random seed through."""
    assert _hits("the seed's 21 series") and _hits("Migrating from the seed module") and _hits("one seed iteration")
    assert not _hits("--seed 0 sets the random seed") and not _hits("run_demo(seed=3)")


def test_readme_links_every_docs_page():
    """Each page under docs/ (architecture, testing, ...) is reachable from the README."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme] == []


def test_install_instructions_do_not_promise_a_pypi_package():
    """otel-rl is not on PyPI: README, docs, the package's messages (a missing extra) and the scripts install from a
    checkout (`pip install .`, `pip install '.[sb3]'`, `pip install '/path/to/otel-rl[sb3]'`), never
    `pip install otel-rl` or a bare `otel-rl[sb3]`."""
    sources = [*sorted((ROOT / "otel_rl").rglob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sources]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pip install '?otel-rl\b|(?<![/\w-])otel-rl\[", text), path.relative_to(ROOT)
    assert "pip install ." in (ROOT / "README.md").read_text(encoding="utf-8")
