"""scripts/build-collector.sh hands the Go it found (GO, or its fallback path) to the collector builder."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from procs import ROOT

SCRIPT = ROOT / "scripts" / "build-collector.sh"


def _go() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    assert Path(found).is_file(), "Go is needed to build the collector (make test needs it too)"
    return found


def test_the_builder_uses_the_go_the_script_found(tmp_path: Path):
    """GO set, no go on PATH: the builder starts with that Go ("Using go") instead of failing "go not found".

    The build is stopped as soon as the builder has found Go; the builder comes from the usual cache when there.
    """
    version = re.search(r'BUILDER_VERSION="([^"]+)"', SCRIPT.read_text()).group(1)
    cached = Path(os.environ.get("OTEL_RL_CACHE", Path.home() / ".cache" / "otel-rl")) / "tools" / f"builder-{version}"
    if (cached / "builder").is_file():
        (tmp_path / "tools").mkdir()
        (tmp_path / "tools" / f"builder-{version}").symlink_to(cached)
    go = _go()
    path = os.pathsep.join(p for p in ("/usr/bin", "/bin") if not (Path(p) / "go").exists())
    env = {**os.environ, "PATH": path, "GO": go, "OTEL_RL_CACHE": str(tmp_path)}
    process = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 600
        assert process.stderr is not None
        for line in process.stderr:  # ends when the script exits
            seen.append(line)
            if "Using go" in line or "go not found" in line or time.monotonic() > deadline:
                break
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    text = "".join(seen)
    assert "go not found" not in text, text
    assert "Using go" in text and str(Path(go).parent) in text, text
