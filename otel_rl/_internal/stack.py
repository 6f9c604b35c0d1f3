"""``otel-rl stack``: Prometheus, Alertmanager and the collector on loopback, with the demo pushing OTLP through them.

Needs ``prometheus`` and ``prometheus-alertmanager`` (or ``alertmanager``) on PATH (Debian's packages;
``scripts/install-prometheus.sh``) and the collector: ``$OTEL_RL_COLLECTOR``, or built by
``scripts/build-collector.sh`` when run from a checkout (``make stack`` does both). The collector and Alertmanager
configs ship inside the package and the alerting rules are generated from the catalog, so it works from an installed
wheel too. Prometheus sends its alerts to the Alertmanager (cluster listener off), whose shipped receiver delivers
nowhere: alerts show in its UI until you add one (docs/alerting.md). Everything listens on 127.0.0.1 and stops on
Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def collector_config() -> Iterator[Path]:
    """The collector config shipped with the package, as a file path (also from a zip or a wheel)."""
    with resources.as_file(resources.files("otel_rl") / "_data" / "otelcol-config.yaml") as path:
        yield path


@contextlib.contextmanager
def alertmanager_config() -> Iterator[Path]:
    """The Alertmanager config shipped with the package (``alertmanager/alertmanager.yml``), as a file path."""
    with resources.as_file(resources.files("otel_rl") / "_data" / "alertmanager.yml") as path:
        yield path


def _collector_binary() -> str:
    env = os.environ.get("OTEL_RL_COLLECTOR")
    if env and Path(env).is_file():
        return env
    script = _ROOT / "scripts" / "build-collector.sh"
    if not script.is_file():
        raise SystemExit("otel-rl stack: set OTEL_RL_COLLECTOR to an otelcol-rl or otelcol-contrib binary")
    # The script prints the cached binary's path at once; when it builds, its progress (and on failure, why) goes
    # to this terminal through its standard error.
    built = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True)
    if built.returncode != 0:
        raise SystemExit(f"otel-rl stack: building the collector failed (exit code {built.returncode}; the build's "
                         "output is above); or set OTEL_RL_COLLECTOR to an otelcol-rl or otelcol-contrib binary")
    return built.stdout.strip().splitlines()[-1]


def _check_free(addresses: dict[str, str]) -> None:
    """Exit naming the first ``host:port`` something already listens on: the stack would talk to it instead."""
    for what, address in addresses.items():
        host, _, port = address.rpartition(":")
        with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
            try:
                s.bind((host.strip("[]"), int(port)))
            except OSError as exc:
                raise SystemExit(f"otel-rl stack: {address} ({what}) is in use ({exc.strerror}); stop what listens "
                                 "there (an earlier otel-rl stack?) or move this one: --prometheus-port, "
                                 "--alertmanager-port, OTELCOL_OTLP_GRPC_ENDPOINT, OTELCOL_OTLP_HTTP_ENDPOINT, "
                                 "OTELCOL_HEALTH_ENDPOINT") \
                    from None


def _wait(url: str, what: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"otel-rl stack: {what} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"otel-rl stack: {what} not ready at {url} after {timeout:.0f} s")


def _query(url: str, expr: str) -> float | None:
    query = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as response:
            result = json.load(response)["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def wait_for_count(prom_url: str, expected: float, timeout: float) -> float | None:
    """Prometheus's ``sum(rl_training_episodes_total)`` once it reaches ``expected``, or the last value seen
    when ``timeout`` passes first (the final export goes through the collector's batch and a remote write)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = _query(prom_url, "sum(rl_training_episodes_total)")
        if seen is not None and seen >= expected:
            break
        time.sleep(0.5)
    return seen


def run_stack(iterations: int = 60, seed: int = 0, protocol: str = "grpc", prometheus_port: int = 9090,
              keep: bool = True, alertmanager_port: int = 9093) -> int:
    """Start Alertmanager, Prometheus and the collector, push a demo run through them, print where to look.

    The collector's listen addresses come from the same variables its config reads (``OTELCOL_OTLP_GRPC_ENDPOINT``,
    ``OTELCOL_OTLP_HTTP_ENDPOINT``, ``OTELCOL_HEALTH_ENDPOINT``). With ``keep`` everything runs until Ctrl-C.
    """
    from otel_rl._internal.lifecycle import running_telemetry
    from otel_rl._internal.rules import write_rules
    from otel_rl._internal.store import REGISTRY
    from otel_rl.demo.run import run_demo

    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("otel-rl stack: prometheus is not on PATH (run scripts/install-prometheus.sh)")
    alertmanager = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if alertmanager is None:
        raise SystemExit("otel-rl stack: Alertmanager (prometheus-alertmanager) is not on PATH "
                         "(run scripts/install-prometheus.sh)")
    collector = _collector_binary()
    grpc_address = os.environ.get("OTELCOL_OTLP_GRPC_ENDPOINT", "127.0.0.1:4317")
    http_address = os.environ.get("OTELCOL_OTLP_HTTP_ENDPOINT", "127.0.0.1:4318")
    health_address = os.environ.get("OTELCOL_HEALTH_ENDPOINT", "127.0.0.1:13133")
    _check_free({"Prometheus": f"127.0.0.1:{prometheus_port}", "collector OTLP/gRPC": grpc_address,
                 "Alertmanager": f"127.0.0.1:{alertmanager_port}", "collector OTLP/HTTP": http_address,
                 "collector health check": health_address})
    workdir = Path(tempfile.mkdtemp(prefix="otel-rl-stack-"))
    config = workdir / "prometheus.yml"
    rules = workdir / "otel-rl.rules.yml"
    write_rules(rules)
    # out_of_order_time_window: late samples from the collector's write-ahead log (collector/prometheus.yml)
    config.write_text("global:\n  scrape_interval: 10s\n  evaluation_interval: 10s\n"
                      "storage:\n  tsdb:\n    out_of_order_time_window: 30m\n"
                      f"rule_files:\n  - {rules}\n"
                      "alerting:\n  alertmanagers:\n    - static_configs:\n"
                      f"        - targets: ['127.0.0.1:{alertmanager_port}']\n")
    prom_url = f"http://127.0.0.1:{prometheus_port}"
    am_url = f"http://127.0.0.1:{alertmanager_port}"
    processes: list[subprocess.Popen] = []
    stack = contextlib.ExitStack()
    succeeded = False  #: the logs are kept, and their place printed, unless the run succeeded
    try:
        am_yaml = stack.enter_context(alertmanager_config())
        processes.append(subprocess.Popen(
            [alertmanager, f"--config.file={am_yaml}", f"--storage.path={workdir / 'alertmanager'}",
             f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address=",
             "--log.level=warn"], stdout=open(workdir / "alertmanager.log", "wb"), stderr=subprocess.STDOUT))
        _wait(am_url + "/-/ready", "Alertmanager", processes[-1])
        processes.append(subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}", "--web.enable-remote-write-receiver",
             "--log.level=warn"], stdout=open(workdir / "prometheus.log", "wb"), stderr=subprocess.STDOUT))
        _wait(prom_url + "/-/ready", "Prometheus", processes[-1])
        env = {"OTELCOL_WAL_DIRECTORY": str(workdir / "collector-wal"), **os.environ,
               "PROMETHEUS_REMOTE_WRITE_ENDPOINT": prom_url + "/api/v1/write"}
        collector_yaml = stack.enter_context(collector_config())
        processes.append(subprocess.Popen(
            [collector, f"--config={collector_yaml}"], env=env,
            stdout=open(workdir / "collector.log", "wb"), stderr=subprocess.STDOUT))
        _wait(f"http://{health_address}/", "the collector", processes[-1])
        endpoint = f"http://{grpc_address}" if protocol == "grpc" else f"http://{http_address}/v1/metrics"
        print(f"otel-rl stack: Prometheus {prom_url}, Alertmanager {am_url}, collector OTLP {endpoint}; "
              f"logs in {workdir}", file=sys.stderr)
        result = run_demo(iterations=iterations, seed=seed, shutdown=False, config={
            "service_name": "otel-rl-demo", "exporters": ["otlp"],
            "otlp": {"endpoint": endpoint, "protocol": protocol, "export_interval": 2.0}})
        recorded = sum(value for _, value in REGISTRY.counter("rl_training_episodes_total").snapshot())
        telemetry = running_telemetry()
        flushed = telemetry.shutdown() if telemetry is not None else False  # the final export, with its timeout
        episodes = wait_for_count(prom_url, recorded, timeout=30.0)
        print(f"otel-rl stack: {result.iterations} iterations in {result.seconds:.1f} s; this run recorded "
              f"{recorded:g} episodes, Prometheus counts {'no' if episodes is None else f'{episodes:g}'}"
              f"{'' if flushed else ' (the final export did not succeed)'}.")
        succeeded = episodes == recorded
        if episodes is None:
            print(f"otel-rl stack: nothing arrived; see {workdir}/collector.log", file=sys.stderr)
        if keep:  # with --exit everything stops now: no address to try
            print(f"Try:\n  {prom_url}/graph?g0.expr=rl_training_episode_reward_mean\n"
                  f"  {prom_url}/alerts  (rules) and {am_url}  (Alertmanager: alerts, silences)\n"
                  f"  curl -s '{prom_url}/api/v1/query?query=sum(rl_training_episodes_total)'")
            print("otel-rl stack: running; Ctrl-C stops Prometheus, Alertmanager and the collector", file=sys.stderr)
            while True:
                time.sleep(3600)
        return 0 if succeeded else 1
    except KeyboardInterrupt:
        running = running_telemetry()
        if running is not None:  # the final export, while the collector still runs (not at exit, after it)
            running.shutdown()
        return 130
    finally:
        stack.close()
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if succeeded:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            shutil.rmtree(workdir / "data", ignore_errors=True)
            print(f"otel-rl stack: logs kept in {workdir}", file=sys.stderr)
