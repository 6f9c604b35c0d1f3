"""``make demo`` builds a small venv of its own with the demo extra, not the dev extra's torch, SB3 and Ray."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from procs import ROOT


def test_make_demo_installs_only_the_demo_extra(tmp_path: Path):
    make = shutil.which("make")
    assert make is not None, "make is what the README's two commands run"
    venv = tmp_path / "venv-demo"
    done = subprocess.run([make, "-n", "demo", f"VENV_DEMO={venv}", f"VENV={tmp_path / 'venv'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    commands = done.stdout
    assert f"{venv}/bin/python -m pip install --quiet -e '.[demo]'" in commands, commands
    assert f"{venv}/bin/otel-rl demo" in commands, commands
    assert "[dev]" not in commands and str(tmp_path / "venv") + "/" not in commands, commands
