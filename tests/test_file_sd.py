"""Pull path with several processes: each on its own port, found by a real Prometheus through file_sd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from otel_rl._internal import file_sd
from otel_rl._internal.config import ConfigError, load_settings

import procs

ROOT = Path(__file__).resolve().parent.parent

_SCENARIO = """
import json, multiprocessing, os, sys, time
from pathlib import Path
import otel_rl

def worker(stop):
    for _ in range(3):
        otel_rl.record_episode("PPO", "worker", 1.0, 10)   # starts the worker's own endpoint (published settings)
    while not Path(stop).exists():
        time.sleep(0.1)  # poll interval of the wait for the stop file
    # leaving: lingers for a last scrape, then removes its target (multiprocessing's finalizer)

if __name__ == "__main__":
    targets, stop = sys.argv[1:3]
    handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0, "file_sd": targets,
                                                    "linger": 5}})
    for _ in range(5):
        otel_rl.record_episode("PPO", "main", 1.0, 10)
    child = multiprocessing.get_context("spawn").Process(target=worker, args=(stop,))
    child.start()
    print(json.dumps({"port": handle.prometheus_port, "parent": os.getpid(), "child": child.pid}), flush=True)
    child.join(60)
    assert child.exitcode == 0, child.exitcode
    assert handle.shutdown(timeout=5)
"""


def test_prometheus_scrapes_every_process_listed_in_the_target_file(tmp_path: Path) -> None:
    targets = tmp_path / "otel-rl-targets.json"
    prom = procs.Prometheus(tmp_path)
    prom.config_path.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "rl_training", "scrape_interval": "1s",
                            "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
                            "relabel_configs": [{"source_labels": ["__meta_otel_rl_process_role"],
                                                 "target_label": "role"}]}],
    }))
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(_SCENARIO))
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    prom.start()
    proc = subprocess.Popen([sys.executable, str(script), str(targets), str(stop)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        info = json.loads(proc.stdout.readline())

        def both_scraped() -> dict[str, float] | None:
            got = {r["metric"]["role"]: float(r["value"][1])
                   for r in prom.query('sum by (role) (rl_training_episodes_total{job="rl_training"})')}
            return got if got == {"main": 5.0, "multiprocessing-worker": 3.0} else None

        procs.wait_until(both_scraped, 40, what="episodes of both processes in Prometheus")
        groups = json.loads(targets.read_text())
        pids = sorted(int(g["labels"][file_sd.PID_LABEL]) for g in groups)
        assert pids == sorted([info["parent"], info["child"]])
        assert f"127.0.0.1:{info['port']}" in [t for g in groups for t in g["targets"]]
        up = {r["metric"]["instance"]: r["value"][1] for r in prom.query('up{job="rl_training"}')}
        assert len(up) == 2 and set(up.values()) == {"1"}, up
        assert prom.query('sum(rl_training_episodes_total{job="rl_training"})')[0]["value"][1] == "8"

        stop.touch()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(targets.read_text()) == []   # both left the file
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        prom.stop()


def test_joining_drops_entries_of_dead_processes_and_replaces_the_same_address(tmp_path: Path) -> None:
    targets = tmp_path / "t.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    file_sd.join(targets, "127.0.0.1:1", {})
    groups = json.loads(targets.read_text())
    groups[0]["labels"][file_sd.PID_LABEL] = str(dead.pid)   # as if written by a process killed before leaving
    targets.write_text(json.dumps(groups))
    file_sd.join(targets, "127.0.0.1:2", {"rl.process.role": "main", "rl.rank": "0"})
    file_sd.join(targets, "127.0.0.1:2", {"rl.process.role": "main", "rl.rank": "0"})
    groups = json.loads(targets.read_text())
    assert [g["targets"] for g in groups] == [["127.0.0.1:2"]]
    assert groups[0]["labels"]["__meta_otel_rl_process_role"] == "main"
    assert groups[0]["labels"]["__meta_otel_rl_rank"] == "0"
    file_sd.leave(targets, "127.0.0.1:2")
    assert json.loads(targets.read_text()) == []


def test_file_sd_setting_needs_a_writable_directory(tmp_path: Path) -> None:
    assert load_settings({"prometheus": {"file_sd": str(tmp_path / "t.json")}}, environ={}).prometheus.file_sd \
        == str(tmp_path / "t.json")
    assert load_settings(environ={"OTEL_RL_PROMETHEUS_FILE_SD": str(tmp_path / "e.json")}).prometheus.file_sd \
        == str(tmp_path / "e.json")
    with pytest.raises(ConfigError, match="prometheus.file_sd.*existing, writable directory"):
        load_settings({"prometheus": {"file_sd": str(tmp_path / "missing" / "t.json")}}, environ={})


def test_wildcard_binds_are_advertised_under_the_host_name() -> None:
    import socket

    assert file_sd.advertised_address("127.0.0.1", 8011) == "127.0.0.1:8011"
    assert file_sd.advertised_address("0.0.0.0", 9) == f"{socket.gethostname()}:9"
    assert file_sd.advertised_address("::1", 9) == "[::1]:9"
