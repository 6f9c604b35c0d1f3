"""Install hints name a command that works: otel-rl is installed from its checkout, there is no 'otel-rl' on PyPI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from procs import ROOT


@pytest.mark.parametrize(("module", "missing", "extra"), [
    ("otel_rl.integrations.sb3", "stable_baselines3", "sb3"),
    ("otel_rl.integrations.gymnasium", "gymnasium", "gym"),
    ("otel_rl.integrations.rllib", "ray", "rllib"),
])
def test_adapter_without_its_framework_says_how_to_install_from_the_checkout(module, missing, extra):
    code = f"import sys; sys.modules[{missing!r}] = None\nimport {module}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert f"pip install '.[{extra}]' from the otel-rl repository root" in last, last
    assert f"pip install 'otel-rl[{extra}]'" not in done.stderr
