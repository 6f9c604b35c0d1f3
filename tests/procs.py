"""Real processes for integration tests: Prometheus, Alertmanager and the OpenTelemetry Collector on free loopback
ports.

Binaries come from the test command's set-up (``make test``): ``prometheus`` and ``prometheus-alertmanager`` from
Debian's packages, the collector from ``scripts/build-collector.sh``. Each helper starts a process, waits until it
is ready, and always stops it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0, auth: tuple[str, str] | None = None) -> bytes:
    """GET ``url``; ``auth`` is a (user, password) pair sent as basic auth."""
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return response.read()


def wait_until(check, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll ``check()`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 (not ready yet: any error means try again)
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise RuntimeError("prometheus is not installed: run `make test` (it runs scripts/install-prometheus.sh)")
    return found


def alertmanager_binary() -> str:
    """Debian names it ``prometheus-alertmanager``; upstream's release archive ``alertmanager``."""
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not found:
        raise RuntimeError("Alertmanager is not installed: run `make test` (it runs scripts/install-prometheus.sh)")
    return found


def collector_binary() -> str:
    env = os.environ.get("OTEL_RL_COLLECTOR")
    if env and Path(env).is_file():
        return env
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-collector.sh")], check=True,
                         capture_output=True, text=True, timeout=1800)
    return out.stdout.strip().splitlines()[-1]


class Process:
    """A started process with its log file; ``stop`` is idempotent."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self._log_file = open(log, "ab")  # append: a restarted process keeps its earlier log
        self.proc = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class Prometheus:
    """A real Prometheus on 127.0.0.1 with the remote-write receiver, scraping what it is told to."""

    def __init__(self, workdir: Path, scrape_targets: list[str] | None = None, scrape_interval: str = "1s",
                 rule_files: list[str] | None = None, job_name: str = "wealtharena_rl_training",
                 scrape_extra: dict | None = None, web_config: Path | None = None,
                 auth: tuple[str, str] | None = None, alertmanagers: list[str] | None = None) -> None:
        """``scrape_extra`` adds keys to the scrape job (scheme, tls_config, basic_auth); ``web_config`` is
        Prometheus's own ``--web.config.file`` and ``auth`` the (user, password) this helper then uses;
        ``alertmanagers`` are ``host:port`` addresses the alerts go to."""
        self.port = free_port()
        self.web_config = web_config
        self.auth = auth
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        # As collector/prometheus.yml: samples a collector sends late (after an outage) are accepted.
        config: dict = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                        "storage": {"tsdb": {"out_of_order_time_window": "30m"}}}
        if scrape_targets:
            config["scrape_configs"] = [{
                "job_name": job_name, "scrape_interval": scrape_interval, "metrics_path": "/metrics",
                "static_configs": [{"targets": scrape_targets,
                                    "labels": {"component": "rl_training", "service": "training"}}],
                **(scrape_extra or {}),
            }]
        if rule_files:
            config["rule_files"] = rule_files
        if alertmanagers:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
        self.config_path = workdir / f"prometheus-{self.port}.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.data = workdir / f"prometheus-data-{self.port}"
        self.process: Process | None = None

    def start(self) -> Prometheus:
        """Start (or start again, with the same port, config and TSDB directory) and wait until ready."""
        self.process = Process([
            prometheus_binary(), f"--config.file={self.config_path}", f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver",
            "--web.enable-lifecycle", "--log.level=warn",
            *([f"--web.config.file={self.web_config}"] if self.web_config else []),
        ], self.workdir / f"prometheus-{self.port}.log")
        wait_until(lambda: http_get(self.url + "/-/ready", 2, self.auth) is not None, 60,
                   what=f"Prometheus ready ({self.process.output()})")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @property
    def remote_write_url(self) -> str:
        return self.url + "/api/v1/write"

    def api(self, path: str, **params: str) -> object:
        query = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.url}/api/v1/{path}?{query}", 30, self.auth))
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus API {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query; a list of ``{"metric": labels, "value": [t, "v"]}``."""
        return self.api("query", query=expr)["result"]  # type: ignore[index]

    def series(self, match: str) -> list[dict[str, str]]:
        return self.api("series", **{"match[]": match, "start": str(time.time() - 3600)})  # type: ignore[return-value]

    def latest(self, selector: str, window: str = "1h") -> list[tuple[dict[str, str], float]]:
        """The last sample of every series matching ``selector`` within ``window``, with all its labels.

        A range selector instead of ``last_over_time`` keeps ``__name__``, and it skips staleness markers, so a
        scrape target that is gone (its series marked stale) still shows its last scraped values.
        """
        result = self.api("query", query=f"{selector}[{window}]")["result"]  # type: ignore[index]
        return [(item["metric"], float(item["values"][-1][1])) for item in result if item["values"]]


class Alertmanager:
    """A real Alertmanager on 127.0.0.1 with ``config`` (a dict), its cluster (gossip) listener off."""

    def __init__(self, workdir: Path, config: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.config_path = workdir / f"alertmanager-{self.port}.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: Process | None = None

    def start(self) -> Alertmanager:
        self.process = Process([
            alertmanager_binary(), f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / f'alertmanager-data-{self.port}'}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn",
        ], self.workdir / f"alertmanager-{self.port}.log")
        wait_until(lambda: http_get(self.url + "/-/ready", 2) is not None, 60,
                   what=f"Alertmanager ready ({self.process.output()})")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def alerts(self, **filters: str) -> list[dict]:
        """``GET /api/v2/alerts`` (``silenced``, ``inhibited``, ``active``: "true"/"false")."""
        query = urllib.parse.urlencode(filters)
        return json.loads(http_get(f"{self.url}/api/v2/alerts?{query}", 10))


class Collector:
    """The otel-rl collector build with ``collector/otelcol-config.yaml``, on free loopback ports."""

    def __init__(self, workdir: Path, remote_write_url: str, config: str = "otelcol-config.yaml",
                 env: dict[str, str] | None = None, settings: tuple[str, ...] = ()) -> None:
        """``config`` names a file in ``collector/``; ``env`` adds the variables it reads; ``settings`` overrides
        its values (the collector's ``--set``, e.g. ``exporters::debug::verbosity=basic``)."""
        self.grpc_port, self.http_port, self.health_port = free_port(), free_port(), free_port()
        self.workdir = workdir
        self.config = config
        self.env = {
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTELCOL_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "PROMETHEUS_REMOTE_WRITE_ENDPOINT": remote_write_url,
            # Kept across restarts of this collector (start() again), as a deployment's volume is.
            "OTELCOL_WAL_DIRECTORY": str(workdir / f"collector-wal-{self.grpc_port}"),
            **(env or {}),
        }
        self.settings = settings
        self.process: Process | None = None
        self.starts = 0

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/metrics"

    def start(self) -> Collector:
        self.starts += 1
        self.process = Process([collector_binary(), f"--config={ROOT / 'collector' / self.config}",
                                *(f"--set={setting}" for setting in self.settings)],
                               self.workdir / f"collector-{self.grpc_port}-{self.starts}.log", self.env)
        wait_until(lambda: http_get(f"http://127.0.0.1:{self.health_port}/", 2) is not None, 60,
                   what=f"collector healthy ({self.process.output()})")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            self.process.stop(kill=kill)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="otel-rl-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def push_stack() -> Iterator[tuple[Path, Prometheus, Collector]]:
    """A started Prometheus and a collector remote-writing into it, in a fresh work dir; both always stopped."""
    with workdir() as wd:
        prom = Prometheus(wd)
        collector = None
        try:
            prom.start()
            collector = Collector(wd, prom.remote_write_url).start()
            yield wd, prom, collector
        finally:
            if collector is not None:
                collector.stop()
            prom.stop()
