"""``otel-rl stack``: it checks its ports, says "building" only when it builds, shows why a build failed, prints
no addresses of services it has stopped, and keeps its logs unless the run succeeded."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from procs import ROOT, collector_binary, free_port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def _stack(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``otel-rl stack --exit`` with its Alertmanager on a free port (9093 may be taken on a shared machine)."""
    return subprocess.run([sys.executable, "-m", "otel_rl", "stack", "--exit", "--alertmanager-port", str(free_port()),
                           *args], capture_output=True, text=True, env=_env(**env), timeout=timeout)


def test_a_cached_collector_is_not_announced_as_a_build():
    collector_binary()  # built and cached, as make test does before the suite
    code = "from otel_rl._internal.stack import _collector_binary; print(_collector_binary())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert done.returncode == 0 and Path(done.stdout.strip()).is_file(), done.stderr
    assert "build" not in done.stderr, done.stderr


def test_a_failed_build_shows_why(tmp_path: Path):
    """A collector that is not cached and cannot be built: the build's own message reaches the terminal."""
    done = _stack("--iterations", "1", OTEL_RL_CACHE=str(tmp_path), GO=str(tmp_path / "no-go" / "go"), timeout=120)
    assert done.returncode != 0
    assert f"{tmp_path}/no-go/go" in done.stderr, done.stderr  # what the script said: no such go
    assert "building the collector failed" in done.stderr, done.stderr


def test_a_port_in_use_is_refused_before_anything_starts():
    """Something already listens on the Prometheus port: the stack says so instead of talking to it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _stack("--iterations", "1", "--prometheus-port", str(port), OTEL_RL_COLLECTOR=collector_binary(),
                      timeout=120)
    assert done.returncode != 0
    assert f"127.0.0.1:{port} (Prometheus) is in use" in done.stderr, done.stderr


@pytest.mark.integration
def test_exit_prints_no_addresses_and_removes_its_logs_after_success():
    done = _stack("--iterations", "2", "--prometheus-port", str(free_port()), OTEL_RL_COLLECTOR=collector_binary(),
                  OTELCOL_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{free_port()}",
                  OTELCOL_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{free_port()}",
                  OTELCOL_HEALTH_ENDPOINT=f"127.0.0.1:{free_port()}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "http://" not in done.stdout and "Try" not in done.stdout, done.stdout  # everything has stopped
    logs = re.search(r"logs in (\S+)", done.stderr)
    assert logs is not None and not Path(logs.group(1)).exists(), done.stderr
    assert "logs kept" not in done.stderr


@pytest.mark.integration
def test_an_interrupted_run_keeps_the_logs_it_points_to():
    """Ctrl-C during the demo: the run did not succeed, so the logs stay where the stack said they are."""
    env = _env(OTEL_RL_COLLECTOR=collector_binary(), OTELCOL_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{free_port()}",
               OTELCOL_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{free_port()}",
               OTELCOL_HEALTH_ENDPOINT=f"127.0.0.1:{free_port()}")
    process = subprocess.Popen([sys.executable, "-m", "otel_rl", "stack", "--iterations", "100000",
                                "--prometheus-port", str(free_port()), "--alertmanager-port", str(free_port())],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # A suite started in the background (`make test &`) ignores SIGINT, and so would the
                               # stack it starts: give it Ctrl-C's default, as in a terminal.
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stderr is not None
        logs = None
        for line in process.stderr:
            found = re.search(r"logs in (\S+)", line)
            if found:
                logs = Path(found.group(1))
                break
        assert logs is not None, "the stack never said where its logs are"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    try:
        assert process.returncode == 130
        assert f"logs kept in {logs}" in err, err
        assert (logs / "collector.log").is_file() and (logs / "prometheus.log").is_file()
    finally:
        shutil.rmtree(logs, ignore_errors=True)
