"""Several processes: fork, fork under scrape load, forked children on push, spawn/forkserver workers.

Every scenario runs in a fresh Python process (a script below), so a hang is a timeout here and a deadlock in a
child is a SIGALRM exit code, never a stuck test session. Push scenarios use a real collector and Prometheus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_rl._internal import identity, worker_settings
from otel_rl._internal.config import load_settings

import procs

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)


def run_script(body: str, *args: str, timeout: float = 90, env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run ``body`` in a new interpreter; return the JSON it prints last and its stderr."""
    path = os.environ.get("PYTHONPATH")
    environ = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), **(env or {})}
    environ.pop(worker_settings.WORKER_CONFIG_ENV, None)
    with procs.workdir() as wd:  # a file, not -c: spawn and forkserver workers import the script's functions
        script = wd / "scenario.py"
        script.write_text(textwrap.dedent(body))
        proc = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=environ,
                              capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:{proc.stdout[-3000:]}\nstderr:{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


_PRELUDE = """
import json, os, signal, socket, sys, threading, time, urllib.request
import otel_rl, otel_rl.testing
from otel_rl import testing

def wait_child(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"

def port_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        return False
    except ConnectionRefusedError:
        return True

def episodes(text):
    for line in text.decode().splitlines():
        if line.startswith('rl_training_episodes_total{'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
"""


def test_a_first_record_during_interpreter_shutdown_is_quiet() -> None:
    """A vector wrapper collected at exit (a reference cycle) hands its steps over from VectorEnv.__del__, after
    Python has torn down its import system: the process's first new series must not print an ImportError."""
    result, stderr = run_script("""
        import json
        import gymnasium as gym
        from otel_rl.integrations.gymnasium import RecordVectorEpisodeMetrics

        class Holder:
            pass

        holder = Holder()
        holder.cycle = holder  # collected only by the last garbage collection at exit
        holder.env = RecordVectorEpisodeMetrics(
            gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"), "PPO")
        holder.env.reset(seed=0)
        holder.env.step(holder.env.action_space.sample())
        print(json.dumps({"stepped": True}))
    """)
    assert result == {"stepped": True}
    assert "Exception ignored" not in stderr and "ImportError" not in stderr, stderr


# -- fork on the pull path ------------------------------------------------------------------------------------------


def test_forked_child_that_records_and_exits_does_not_hang() -> None:
    result, stderr = run_script(_PRELUDE + """
handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
otel_rl.record_episode("PPO", "main", 1.0, 10)
pid = os.fork()
if pid == 0:
    signal.alarm(20)
    otel_rl.record_episode("PPO", "child", 2.0, 10)
    text = handle.metrics_text()   # the parent's handle shows this process' values
    ok = b'agent_id="child"' in text and b'agent_id="main"' not in text
    sys.exit(0 if ok else 5)       # atexit shuts down the parent's inherited handle: it must not hang
started = time.monotonic()
code = wait_child(pid, 30)
elapsed = time.monotonic() - started

import multiprocessing
ctx = multiprocessing.get_context("fork")
def worker():
    signal.alarm(20)
    otel_rl.record_episode("PPO", "worker", 1.0, 10)
    sys.exit(0 if handle.shutdown(timeout=1) else 6)
p = ctx.Process(target=worker)
started = time.monotonic()
p.start(); p.join(30)
worker_elapsed = time.monotonic() - started
if p.is_alive():
    p.kill(); p.join()
served = urllib.request.urlopen(f"http://127.0.0.1:{handle.prometheus_port}/metrics", timeout=5).read()
print(json.dumps({"code": code, "elapsed": elapsed, "child": pid, "worker_code": p.exitcode,
                  "worker": p.pid, "worker_elapsed": worker_elapsed,
                  "parent_has_child": b'agent_id="child"' in served or b'agent_id="worker"' in served,
                  "parent_episodes": episodes(served)}))
handle.shutdown(timeout=2)
""")
    assert result["code"] == 0 and result["elapsed"] < 15, result
    assert result["worker_code"] == 0 and result["worker_elapsed"] < 15, result
    assert not result["parent_has_child"] and result["parent_episodes"] == 1.0, result
    # Nothing silent: each child that recorded without an exporter said so once, naming its pid.
    for pid, role in ((result["child"], "forked-child"), (result["worker"], "multiprocessing-worker")):
        warnings = [line for line in stderr.splitlines() if f"process {pid} ({role}) records metrics" in line]
        assert len(warnings) == 1, stderr[-3000:]
        assert "docs/multiprocess.md" in warnings[0]


def test_forked_child_releases_the_inherited_listening_socket() -> None:
    result, _ = run_script(_PRELUDE + """
handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
port = handle.prometheus_port
ready_read, ready_write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(ready_write, b"1")   # the fork handlers have run: whatever the child releases, it has released
    time.sleep(60)   # a long-lived worker, like a SubprocVecEnv env process
    os._exit(0)
os.read(ready_read, 1)
assert handle.shutdown(timeout=2)
refused = port_refused(port)
rebound = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": port, "strict": True}})
served = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status
rebound.shutdown(timeout=2)
os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
print(json.dumps({"refused": refused, "served": served}))
""")
    assert result == {"refused": True, "served": 200}


def test_fork_during_a_scrape_does_not_deadlock_the_child() -> None:
    result, _ = run_script(_PRELUDE + """
import logging
logging.getLogger("otel_rl").setLevel(logging.ERROR)   # 40 children, 40 expected warnings
handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
stop = threading.Event()
def scrape():
    while not stop.is_set():
        urllib.request.urlopen(url, timeout=10).read()
def record():
    i = 0
    while not stop.is_set():
        i += 1
        otel_rl.record_episode("PPO", f"parent-{i % 50}", float(i), 10)
        otel_rl.record_training_iteration("PPO", i)
threads = [threading.Thread(target=scrape) for _ in range(2)] + [threading.Thread(target=record)]
for t in threads: t.start()

def child():
    signal.alarm(20)   # a deadlock ends as SIGALRM instead of hanging
    for _ in range(3):
        otel_rl.record_episode("PPO", "child", 1.0, 5)
    text = handle.metrics_text()
    os._exit(0 if episodes(text) == 3.0 and b"parent-" not in text else 7)

codes = []
# Deterministic: fork while a scrape holds the scrape lock and a recording holds the metrics' locks.
from otel_rl._internal.store import REGISTRY
held = [handle.scrape._lock, REGISTRY._warn_lock] + [m.lock for m in REGISTRY.metrics.values()]
for lock in held: lock.acquire()
pid = os.fork()
if pid == 0:
    child()
for lock in held: lock.release()
codes.append(wait_child(pid, 30))
# Under load: forks at whatever moment the scrapes and records are in.
for _ in range(40):
    pid = os.fork()
    if pid == 0:
        child()
    codes.append(wait_child(pid, 30))
stop.set()
for t in threads: t.join()
scrapes = handle.server.scrapes
handle.shutdown(timeout=2)
print(json.dumps({"codes": codes, "scrapes": scrapes}))
""", timeout=150)
    assert result["codes"] == [0] * 41, result
    assert result["scrapes"] > 10, result


# -- push: forked and spawned workers with their own identity ------------------------------------------------------


@pytest.fixture(scope="module")
def push_stack() -> Iterator[tuple[procs.Prometheus, procs.Collector]]:
    with procs.push_stack() as (_, prom, collector):
        yield prom, collector


def _totals(prom: procs.Prometheus, job: str, metric: str = "rl_training_episodes_total") -> dict[str, float]:
    return {r["metric"].get("instance", ""): float(r["value"][1])
            for r in prom.query(f'sum by (instance) ({metric}{{job="{job}"}})')}


def test_forked_children_on_push_export_only_their_own_values_under_their_own_instance(push_stack) -> None:
    prom, collector = push_stack
    job = "mp-fork-push"
    result, _ = run_script(_PRELUDE + """
endpoint, job = sys.argv[1], sys.argv[2]
handle = otel_rl.init_telemetry({"exporters": ["otlp"], "service_name": job,
                                 "otlp": {"endpoint": endpoint, "export_interval": 0.3, "timeout": 5}})
for _ in range(5):
    otel_rl.record_episode("PPO", "default", 1.0, 10)
assert handle.force_flush(5)
children = {}
for k in (3, 4):
    pid = os.fork()
    if pid == 0:
        signal.alarm(30)
        for _ in range(k):
            otel_rl.record_episode("PPO", "default", 2.0, 10)
        time.sleep(1.0)   # several export intervals: the parent's reader must not export here
        sys.exit(0 if handle.shutdown(timeout=5) else 8)
    children[pid] = k
codes = {pid: wait_child(pid, 40) for pid in children}
assert handle.shutdown(timeout=5)
print(json.dumps({"parent": os.getpid(), "children": children, "codes": codes,
                  "host": socket.gethostname()}))
""", collector.grpc_endpoint, job)
    assert set(result["codes"].values()) == {0}, result
    host = result["host"]
    want = {f"{host}-{result['parent']}": 5.0, **{f"{host}-{pid}": float(k) for pid, k in result["children"].items()}}
    procs.wait_until(lambda: _totals(prom, job) == want, 30, what=f"{want} (got {_totals(prom, job)})")
    assert prom.query(f'sum by (algorithm) (rl_training_episodes_total{{job="{job}"}})')[0]["value"][1] == "12"
    # Two writers on one series would show as a jump in the parent's series: it only ever held 5.
    parent_values = prom.query(f'rl_training_episodes_total{{job="{job}",instance="{host}-{result["parent"]}"}}[5m]')
    assert {v for _, v in parent_values[0]["values"]} == {"5"}, parent_values
    roles = {r["metric"]["instance"]: r["metric"].get("rl_process_role")
             for r in prom.query(f'target_info{{job="{job}"}}')}
    assert roles == {f"{host}-{result['parent']}": "main",
                     **{f"{host}-{pid}": "forked-child" for pid in result["children"]}}, roles


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_pool_workers_push_with_the_settings_their_parent_published(push_stack, method: str) -> None:
    prom, collector = push_stack
    job = f"mp-pool-{method}"
    result, _ = run_script("""
import json, multiprocessing, os, socket, sys
import otel_rl

def task(n):
    for _ in range(n):
        otel_rl.record_episode("PPO", "worker", 1.0, 10)
    otel_rl.record_environment_steps("PPO", n * 100)
    return os.getpid()

if __name__ == "__main__":
    endpoint, job, method = sys.argv[1:4]
    handle = otel_rl.init_telemetry({"exporters": ["otlp"], "service_name": job,
                                     "otlp": {"endpoint": endpoint, "export_interval": 0.5, "timeout": 5}})
    otel_rl.record_environment_steps("PPO", 1)
    pool = multiprocessing.get_context(method).Pool(2)
    pids = pool.map(task, [1, 2, 3, 4], chunksize=1)
    pool.close(); pool.join()   # workers exit normally and flush on the way out
    assert handle.shutdown(timeout=5)
    print(json.dumps({"parent": os.getpid(), "workers": sorted(set(pids)), "host": socket.gethostname()}))
""", collector.grpc_endpoint, job, method, timeout=120)
    host = result["host"]
    workers = {f"{host}-{pid}" for pid in result["workers"]}

    def episodes_arrived() -> bool:
        got = _totals(prom, job)
        return sum(got.values()) == 10 and set(got) == workers

    procs.wait_until(episodes_arrived, 30, what=f"10 episodes from {workers} (got {_totals(prom, job)})")
    # The parent's own series may come in a later remote-write batch than the workers': wait for the exact sum.
    steps_query = f'sum by (algorithm) (rl_training_environment_steps_total{{job="{job}"}})'
    procs.wait_until(lambda: [s["value"][1] for s in prom.query(steps_query)] == ["1001"], 30,
                     what=f"1001 environment steps (got {prom.query(steps_query)})")
    info = {r["metric"]["instance"]: r["metric"] for r in prom.query(f'target_info{{job="{job}"}}')}
    assert set(info) == workers | {f"{host}-{result['parent']}"}
    for instance in workers:
        assert info[instance]["rl_process_role"] == "multiprocessing-worker", info[instance]
        assert info[instance]["rl_worker_index"] in ("1", "2"), info[instance]
        assert info[instance]["process_parent_pid"] == str(result["parent"]), info[instance]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_of_a_pull_only_parent_warn_that_their_values_go_nowhere(method: str) -> None:
    result, stderr = run_script("""
import json, multiprocessing, os, sys
import otel_rl

def task(n):
    for _ in range(n):
        otel_rl.record_episode("PPO", "worker", 1.0, 10)
    return os.getpid()

if __name__ == "__main__":
    handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:
        pids = pool.map(task, [2, 2, 2, 2], chunksize=1)
    handle.shutdown(timeout=2)
    print(json.dumps({"workers": sorted(set(pids))}))
""", method)
    for pid in result["workers"]:
        warnings = [line for line in stderr.splitlines()
                    if f"process {pid} (multiprocessing-worker) records metrics but has no exporter" in line]
        assert len(warnings) == 1, stderr[-3000:]


_SECRET_WORKER = """
import json, otel_rl
otel_rl.record_episode("PPO", "w", 1.0, 1)      # the first record starts the worker's telemetry
otlp = otel_rl.current().settings.otlp
print(json.dumps({"headers": dict(otlp.headers), "endpoint": otlp.endpoint}))
"""


def test_worker_env_leaves_secrets_out_and_a_worker_without_headers_says_what_to_set() -> None:
    """worker_env() (for Ray's runtime_env, shown in its dashboard) has no token or URL password by default."""
    result, _ = run_script("""
import json, os, subprocess, sys
import otel_rl
from otel_rl._internal.worker_settings import WORKER_CONFIG_ENV
handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
    "endpoint": "http://writer:s3cretPW@127.0.0.1:9/v1/metrics", "protocol": "http/protobuf",
    "headers": {"authorization": "Bearer s3cretTOKEN"}, "export_interval": 3600, "timeout": 1}})
def run_worker(env):
    base = {k: v for k, v in os.environ.items() if k != WORKER_CONFIG_ENV}
    proc = subprocess.run([sys.executable, "-c", sys.argv[1]], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr
plain, with_secrets = otel_rl.worker_env(), otel_rl.worker_env(include_secrets=True)
no_headers = run_worker(plain)
own_headers = run_worker({**plain, "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20workerTOKEN"})
full = run_worker(with_secrets)
local = os.environ[WORKER_CONFIG_ENV]
handle.shutdown(timeout=0.5)
print(json.dumps({"plain": plain[WORKER_CONFIG_ENV], "with_secrets": with_secrets[WORKER_CONFIG_ENV],
                  "local": local, "no_headers": no_headers, "own_headers": own_headers, "full": full}))
""", _SECRET_WORKER)
    assert "s3cret" not in result["plain"]
    assert "s3cretTOKEN" in result["with_secrets"] and "s3cretPW" in result["with_secrets"]
    assert "s3cretTOKEN" in result["local"]   # children on this machine, same user, inherit the full settings
    settings, stderr = result["no_headers"]
    assert settings == {"headers": {}, "endpoint": "http://127.0.0.1:9/v1/metrics"}
    warnings = [line for line in stderr.splitlines() if "without otlp.headers" in line]
    assert len(warnings) == 1 and "OTEL_EXPORTER_OTLP_HEADERS" in warnings[0], stderr
    settings, stderr = result["own_headers"]
    assert settings["headers"] == {"authorization": "Bearer workerTOKEN"} and "without otlp.headers" not in stderr
    settings, stderr = result["full"]
    assert settings["headers"] == {"authorization": "Bearer s3cretTOKEN"} and "without otlp.headers" not in stderr
    assert settings["endpoint"] == "http://writer:s3cretPW@127.0.0.1:9/v1/metrics"


# -- units -----------------------------------------------------------------------------------------------------------


def test_worker_config_keeps_push_and_drops_the_fixed_port() -> None:
    settings = load_settings({"exporters": ["prometheus", "otlp"], "service_name": "svc",
                              "otlp": {"endpoint": "http://collector:4317", "export_interval": 2},
                              "resource_attributes": {"team": "rl", "service.instance.id": "fixed"}},
                             environ={})
    config = worker_settings.worker_config(settings)
    assert config is not None and config["exporters"] == ["otlp"]
    assert config["resource_attributes"] == {"team": "rl"}   # each worker gets its own instance id
    again = load_settings(config, environ={})
    assert again.otlp == settings.otlp and again.service_name == "svc" and again.exporters == ("otlp",)
    assert worker_settings.worker_config(load_settings({"exporters": ["prometheus"]}, environ={})) is None


def test_process_attributes_name_the_rank(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")
    attrs = identity.process_attributes()
    assert attrs["rl.rank"] == "3" and attrs["rl.local_rank"] == "1" and attrs["rl.world_size"] == "8"
    assert attrs["rl.process.role"] == "rank" and attrs["process.pid"] == str(os.getpid())
    monkeypatch.setenv("RANK", "not-a-number")
    assert "rl.rank" not in identity.process_attributes()


def test_published_settings_are_not_picked_up_by_the_publisher_itself(monkeypatch) -> None:
    monkeypatch.setenv(worker_settings.WORKER_CONFIG_ENV, json.dumps({"parent": os.getpid(), "config": {"a": 1}}))
    assert worker_settings.inherited_config() is None
    monkeypatch.setenv(worker_settings.WORKER_CONFIG_ENV, json.dumps({"parent": os.getpid() + 1, "config": {"a": 1}}))
    assert worker_settings.inherited_config() == {"a": 1}
    other_host = {"parent": os.getpid(), "host": "elsewhere", "config": {"b": 2}}   # a remote Ray node
    monkeypatch.setenv(worker_settings.WORKER_CONFIG_ENV, json.dumps(other_host))
    assert worker_settings.inherited_config() == {"b": 2}
    monkeypatch.setenv(worker_settings.WORKER_CONFIG_ENV, "{not json")
    assert worker_settings.inherited_config() is None



def test_a_worker_that_calls_init_telemetry_after_recording_gets_the_settings_it_asked_for() -> None:
    result, _ = run_script("""
import json, os, sys
import otel_rl
from otel_rl._internal import worker_settings
os.environ[worker_settings.WORKER_CONFIG_ENV] = json.dumps(
    {"parent": os.getppid(), "config": {"exporters": ["otlp"], "shutdown_timeout": 1,
                                        "otlp": {"endpoint": "http://127.0.0.1:9"}}})
otel_rl.record_episode("PPO", "w", 1.0, 10)           # starts push telemetry from the published settings
automatic = otel_rl.current()
handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
text = handle.metrics_text()
print(json.dumps({"automatic": automatic is not None and automatic.settings.exporters == ("otlp",),
                  "replaced": handle is not automatic and handle.prometheus_port is not None,
                  "kept": b'rl_training_episodes_total{agent_id="w",algorithm="PPO"} 1.0' in text}))
handle.shutdown(timeout=1)
""")
    assert result == {"automatic": True, "replaced": True, "kept": True}


def test_subproc_vec_env_workers_do_not_keep_the_port_or_hang() -> None:
    """SB3's SubprocVecEnv forks env workers while the endpoint serves: they must not hold its port."""
    result, stderr = run_script(_PRELUDE + """
import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv

handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
port = handle.prometheus_port
env = SubprocVecEnv([lambda: gym.make("CartPole-v1")] * 2, start_method="fork")
env.reset()
for _ in range(20):
    env.step([env.action_space.sample() for _ in range(2)])
otel_rl.record_episode("PPO", "driver", 1.0, 20)
workers = [p.pid for p in env.processes]
assert handle.shutdown(timeout=2)
refused = port_refused(port)
alive = all(p.is_alive() for p in env.processes)
started = time.monotonic()
env.close()
print(json.dumps({"refused": refused, "workers_alive_meanwhile": alive,
                  "close_s": time.monotonic() - started, "workers": workers}))
""", timeout=120)
    assert result["refused"] and result["workers_alive_meanwhile"], result
    assert result["close_s"] < 15, result
    assert "records metrics" not in stderr   # the env workers recorded nothing, so nothing to warn about


# -- the flush at the end of a training_run in a worker ----------------------------------------------------------------


def test_a_rank_exports_its_final_values_when_its_training_run_ends(monkeypatch, caplog):
    """A rank (RANK set) pushes its final values when its run ends, before any periodic export or shutdown; when that
    export fails it says so: an earlier export's success says nothing about the final values."""
    from test_telemetry import OtlpReceiver, _steps_exported

    import otel_rl

    monkeypatch.setenv("RANK", "1")
    with OtlpReceiver() as receiver:
        handle = otel_rl.init_telemetry({"exporters": ["otlp"], "shutdown_timeout": 3, "otlp": {
            "endpoint": receiver.endpoint, "protocol": "http/protobuf", "export_interval": 60, "timeout": 1}})
        with otel_rl.training_run("PPO"):
            otel_rl.record_environment_steps("PPO", 10)
        assert _steps_exported(receiver) == [10.0]  # the run's end exported, the interval is a minute
    with caplog.at_level("WARNING", logger="otel_rl"):
        with otel_rl.training_run("PPO"):
            otel_rl.record_environment_steps("PPO", 5)
    assert any("could not export its final values" in r.getMessage() for r in caplog.records), caplog.text
    assert handle.shutdown(timeout=2) is False


# -- fork: what the child inherits must neither hang nor export under the parent's name ----------------------------


def test_forked_child_renders_the_parents_exposition_while_the_parent_renders() -> None:
    """The store renderer's lock, held by a parent thread at fork, is a new one in the child."""
    result, _ = run_script(_PRELUDE + """
handle = otel_rl.init_telemetry({"exporters": ["none"]})
otel_rl.record_environment_steps("PPO", 5)
handle.renderer._lock.acquire()   # deterministic: a parent thread is in the middle of a render
pid = os.fork()
if pid == 0:
    signal.alarm(5)
    body = bytes(handle.scrape.render()[0])
    os._exit(0 if b"rl_training_environment_steps_total" in body else 7)
handle.renderer._lock.release()
codes = [wait_child(pid, 20)]
# Under load: a parent thread renders all the time (the SDK's own locks too), the children render at once.
import logging
logging.getLogger("otel_rl").setLevel(logging.ERROR)
for i in range(2000):
    otel_rl.record_environment_steps(f"algo-{i}", 1)
stop = threading.Event()
renders = [0]
def scrape():
    while not stop.is_set():
        renders[0] += 1
        handle.scrape.render()
thread = threading.Thread(target=scrape)
thread.start()
for _ in range(20):
    begun = renders[0]
    while renders[0] == begun:   # fork while the thread is inside a render it has just begun
        time.sleep(0.001)
    pid = os.fork()
    if pid == 0:
        signal.alarm(5)
        body = bytes(handle.scrape.render()[0])
        os._exit(0 if b"algo-" not in body else 7)   # the child shows its own (empty) store, not the parent's
    codes.append(wait_child(pid, 20))
stop.set()
thread.join()
print(json.dumps({"codes": codes}))
""")
    assert result["codes"] == [0] * 21, result


def test_forked_train_step_counts_only_the_childs_new_lifetime_steps() -> None:
    """The child's store starts empty; its first result adds the steps since the fork, not the lifetime again."""
    result, _ = run_script(_PRELUDE + """
handle = otel_rl.init_telemetry({"exporters": ["none"]})
@otel_rl.train_step(algorithm="PPO")
def step(lifetime):
    return {"num_env_steps_sampled_lifetime": lifetime}
step(1000)
step(2000)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    step(2100)
    os.write(w, json.dumps(testing.value("rl_training_environment_steps_total", algorithm="PPO")).encode())
    os._exit(0)
code = wait_child(pid, 20)
child = json.loads(os.read(r, 100))
print(json.dumps({"code": code, "child": child,
                  "parent": testing.value("rl_training_environment_steps_total", algorithm="PPO")}))
""")
    assert result["code"] == 0, result
    assert result["parent"] == 2000.0, result
    assert result["child"] == 100.0, result


def test_forked_child_never_exports_under_the_parents_identity() -> None:
    """The parent's periodic reader, restarted by the SDK in the child, exports nothing there (not even once)."""
    result, _ = run_script("""
import json, os, sys, tempfile, time
import otel_rl
exported = tempfile.TemporaryFile()
saved = os.dup(1)
os.dup2(exported.fileno(), 1)  # the console exporter's output, of parent and child, goes to this file
handle = otel_rl.init_telemetry({"exporters": ["console"], "otlp": {"export_interval": 3600}})
for _ in range(3):
    otel_rl.record_data_load_time(0.2)
pid = os.fork()
if pid == 0:
    time.sleep(1.0)            # a window for the SDK's restarted ticker to export, which it must not do
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
sys.stdout.flush()
os.dup2(saved, 1)
exported.seek(0)
text = exported.read().decode()
print(json.dumps({"exported": text[:2000]}))
os._exit(0)                    # the parent exports nothing either (interval 3600 s, no shutdown)
""")
    # An export from the child would carry its emptied store under the parent's service.instance.id: a counter reset.
    assert result["exported"] == "", result


def test_compat_stop_metrics_server_in_a_forked_child_returns_and_leaves_the_parent_serving() -> None:
    result, _ = run_script(_PRELUDE + """
from otel_rl.compat import prometheus_metrics as pm
handle = otel_rl.init_telemetry({"exporters": ["console"], "otlp": {"export_interval": 3600}})
server = pm.start_metrics_server(port=0)   # added to the running telemetry: stopping it stops that server
pid = os.fork()
if pid == 0:
    signal.alarm(5)
    pm.stop_metrics_server()
    os._exit(0)
code = wait_child(pid, 20)
status = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5).status
pm.stop_metrics_server()
handle.shutdown(timeout=1)
print(json.dumps({"code": code, "status": status}))
""")
    assert result == {"code": 0, "status": 200}, result


def test_worker_config_hands_on_extra_keys_buckets_global_provider_and_strict() -> None:
    """A worker started from its parent's published settings gets the same extra_keys, buckets, global_provider
    and strict mode (only where they differ from the defaults, so other workers' configs stay as they were)."""
    settings = load_settings({"exporters": ["otlp"], "extra_keys": ["eval/*"], "strict": True,
                              "buckets": {"rl_training_value_loss": [1, 10]}, "global_provider": "off"},
                             environ={})
    config = worker_settings.worker_config(settings)
    assert config is not None
    again = load_settings(json.loads(json.dumps(config)), environ={})
    assert (again.extra_keys, again.buckets, again.global_provider, again.strict) == \
        (settings.extra_keys, settings.buckets, "off", True)
    plain = worker_settings.worker_config(load_settings({"exporters": ["otlp"]}, environ={}))
    assert plain is not None and not {"extra_keys", "buckets", "global_provider", "strict"} & set(plain)


def test_worker_config_hands_on_label_value_limit_per_run_series_and_flush_on_sigterm() -> None:
    """A worker cuts labels, labels its series with run_id and treats SIGTERM as its parent does: with
    flush_on_sigterm off in the parent's config, a worker must not install otel-rl's SIGTERM handler."""
    settings = load_settings({"exporters": ["otlp"], "label_value_limit": 64, "per_run_series": True,
                              "flush_on_sigterm": False}, environ={})
    config = worker_settings.worker_config(settings)
    assert config is not None
    again = load_settings(json.loads(json.dumps(config)), environ={})
    assert (again.label_value_limit, again.per_run_series, again.flush_on_sigterm) == (64, True, False)
    plain = worker_settings.worker_config(load_settings({"exporters": ["otlp"]}, environ={}))
    assert plain is not None and not {"per_run_series", "flush_on_sigterm"} & set(plain)
