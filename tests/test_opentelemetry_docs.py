"""Every Python block of docs/opentelemetry.md runs as written (on a free port) and its assertions hold."""

from __future__ import annotations

import re

import pytest

from procs import ROOT, free_port

DOC = ROOT / "docs" / "opentelemetry.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_the_page_has_its_examples():
    """The page shows your instruments, the off switch, record_scalar, extra_keys, strict mode, buckets and the
    zero-code commands and instrumentors."""
    joined = "\n".join(BLOCKS)
    for needle in ("create_counter", '"global_provider": "off"', "record_scalar", "extra_keys", '"strict": True',
                   '"buckets"', "GymnasiumInstrumentor().uninstrument()"):
        assert needle in joined, needle
    page = DOC.read_text(encoding="utf-8")
    for needle in ("otel-rl run -- python train.py", "opentelemetry-instrument python train.py",
                   "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="):
        assert needle in page, needle


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs_as_written(index, monkeypatch, capsys):
    """The block runs in a fresh namespace; its own asserts check what it records."""
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(free_port()))
    exec(compile(BLOCKS[index], f"{DOC.name} block {index + 1}", "exec"), {})  # the repository's own doc
    if "StrictModeError" in BLOCKS[index]:
        assert "otel-rl (strict mode) refused a value for rl_training_policy_loss (reason: nan" in \
            capsys.readouterr().out
