"""The sdist carries its tests and runs them; the wheel carries the stack's collector config and the plugin.

Built with setuptools' own PEP 517 hooks (what ``pip wheel`` and ``python -m build`` call) from a copy of the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".*_cache")


def _hook(source: Path, call: str, out: Path) -> str:
    code = f"from setuptools import build_meta; print(build_meta.{call}({str(out)!r}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """The sdist built from a copy of this tree, unpacked; its directory."""
    work = tmp_path_factory.mktemp("sdist")
    shutil.copytree(ROOT, work / "src", ignore=SKIP, symlinks=True)
    name = _hook(work / "src", "build_sdist", work)
    with tarfile.open(work / name) as archive:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse links and paths out of the tree
            archive.extractall(work / "unpacked", filter="data")
        else:
            archive.extractall(work / "unpacked")
    (unpacked,) = (work / "unpacked").iterdir()
    return unpacked


def test_sdist_holds_license_tests_helpers_data_and_configs(sdist):
    """LICENSE, tests/ with conftest, helpers and data, and the collector and Prometheus configs are in the sdist."""
    for path in ("LICENSE", "tests/conftest.py", "tests/facts.py", "tests/procs.py", "tests/data/seed-metrics.json",
                 "tests/constraints-oldest.txt", "collector/otelcol-config.yaml", "collector/builder-config.yaml",
                 "collector/prometheus.yml", "prometheus/rules/otel-rl.rules.yml", "scripts/build-collector.sh",
                 "Makefile", "otel_rl/_data/otelcol-config.yaml", "alertmanager/alertmanager.yml",
                 "otel_rl/_data/alertmanager.yml"):
        assert (sdist / path).is_file(), path
    assert "Apache License" in (sdist / "LICENSE").read_text()
    assert "License-Expression: Apache-2.0" in (sdist / "PKG-INFO").read_text()


def test_sdist_tests_run(sdist):
    """A part of the suite passes when run from the unpacked sdist (not from this checkout)."""
    env = {**os.environ, "PYTHONPATH": str(sdist)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_store.py",
         "tests/test_reference.py", "tests/test_compat.py", "tests/test_wording.py"],
        cwd=sdist, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and str(sdist) in subprocess.run(
        [sys.executable, "-c", "import otel_rl; print(otel_rl.__file__)"], cwd=sdist, env=env, capture_output=True,
        text=True).stdout


@pytest.fixture(scope="module")
def wheel(sdist, tmp_path_factory) -> Path:
    """The wheel built from the unpacked sdist."""
    out = tmp_path_factory.mktemp("wheel")
    return out / _hook(sdist, "build_wheel", out)


def test_wheel_built_from_the_sdist_ships_the_collector_config_and_the_pytest_plugin(wheel):
    """The wheel holds the collector config that `otel-rl stack` reads, the LICENSE and the pytest11 entry point."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        config = archive.read("otel_rl/_data/otelcol-config.yaml")
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert config == (ROOT / "collector" / "otelcol-config.yaml").read_bytes()
    assert "otel_rl/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "[pytest11]\notel_rl = otel_rl.pytest_plugin" in entry_points
    assert "otel-rl = otel_rl.cli:main" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "collector/"))]


def test_wheel_holds_every_module_of_the_package(wheel):
    """Each module under otel_rl/ in this checkout, subpackages included (otel_rl/_internal/dashboard/), is in the
    wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "otel_rl").rglob("*.py")}
    assert "otel_rl/_internal/dashboard/panels.py" in modules
    assert modules - names == set()


@pytest.mark.integration
def test_otel_rl_stack_runs_from_the_installed_wheel(wheel, tmp_path):
    """`otel-rl stack --exit`, installed from the wheel and run outside a checkout, pushes the demo into Prometheus."""
    from procs import collector_binary, free_port

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(site), str(wheel)], check=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": str(site), "OTEL_RL_COLLECTOR": collector_binary()}
    for name in ("OTELCOL_OTLP_GRPC_ENDPOINT", "OTELCOL_OTLP_HTTP_ENDPOINT", "OTELCOL_HEALTH_ENDPOINT"):
        env[name] = f"127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "otel_rl", "stack", "--exit", "--iterations", "2",
                           "--prometheus-port", str(free_port()), "--alertmanager-port", str(free_port())],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "this run recorded 20 episodes, Prometheus counts 20" in done.stdout, done.stdout
    where = subprocess.run([sys.executable, "-c", "import otel_rl; print(otel_rl.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60).stdout
    assert where.startswith(str(site)), where  # the installed wheel ran, not a checkout
