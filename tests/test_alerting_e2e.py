"""Alerts delivered end to end: training processes, Prometheus with otel-rl's rules, Alertmanager, a webhook.

Every process is real and listens on a free loopback port: training processes (``tests/alert_driver.py``), a
Prometheus evaluating ``otel-rl rules`` every second, an Alertmanager running the shipped
``alertmanager/alertmanager.yml`` with its waits shortened to a second and its receiver replaced by a webhook served
by this test process. The rules' windows are shortened through the documented thresholds (``Thresholds``, as
``otel-rl rules --set`` takes them), so each condition alerts within seconds.

On both paths (pull: Prometheus scrapes the training process; push: OTLP through the collector and remote write), a
run that stalls, a run that fails and a NaN loss each reach the webhook with ``job``, ``instance``, ``algorithm``,
``run_id``, a summary and a runbook link, and each resolves when its condition clears; on the push path a
collector that stops writing raises ``RLTrainingNoData``. A silence made with ``amtool`` keeps a failed run's
alert from the webhook. The time from each condition to its delivery is printed (``-s`` shows it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from otel_rl._internal import rules

from procs import ROOT, Alertmanager, Collector, Prometheus, wait_until, workdir

pytestmark = pytest.mark.integration

#: The rules' windows, shortened: a stall is 8 s without an iteration; a failure, an error or a dropped value
#: alerts for 10 s; a process is silent after 6 s.
THRESHOLDS = rules.Thresholds(stalled_after="8s", failed_window="10s", errors_window="10s", non_finite_window="10s",
                              dropped_window="10s", no_data_after="6s")
DRIVER = Path(__file__).resolve().parent / "alert_driver.py"
PULL_JOB = "rl-training"
PUSH_JOB = "alerts-e2e"
DEADLINE = 60.0


def _amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool not found: run `make test` (scripts/install-prometheus.sh installs Alertmanager)")
    return path


def test_shipped_alertmanager_config_is_valid():
    """`amtool check-config` accepts alertmanager/alertmanager.yml, and the packaged copy is the same file."""
    path = ROOT / "alertmanager" / "alertmanager.yml"
    result = subprocess.run([_amtool(), "check-config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    assert (ROOT / "otel_rl" / "_data" / "alertmanager.yml").read_text() == path.read_text()
    route = yaml.safe_load(path.read_text())["route"]
    assert route["group_by"] == ["alertname", "algorithm", "run_id"]


# -- the webhook receiver and the training processes -----------------------------------------------------------------


class Webhook:
    """An HTTP server on loopback that keeps every alert Alertmanager posts, with the time it arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.monotonic()
                with webhook._lock:
                    webhook.received += [(now, alert) for alert in body["alerts"]]
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def matching(self, status: str, **labels: str) -> list[tuple[float, dict]]:
        with self._lock:
            return [(t, a) for t, a in self.received
                    if a["status"] == status and all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait(self, status: str, timeout: float = DEADLINE, **labels: str) -> tuple[float, dict]:
        """The first alert with ``status`` and ``labels`` to arrive (waiting for it)."""
        found = wait_until(lambda: self.matching(status, **labels), timeout, 0.05,
                           what=f"a {status} alert {labels} at the webhook (got {self.summary()})")
        return found[0]

    def summary(self) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return [(a["labels"]["alertname"], a["status"], a["labels"].get("run_id")) for _, a in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _subprocess_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


class Driver:
    """A training process (tests/alert_driver.py) running ``algorithm``/``run_id``, steered line by line."""

    def __init__(self, config: dict, algorithm: str, run_id: str, log: Path) -> None:
        self.algorithm, self.run_id = algorithm, run_id
        self._log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, str(DRIVER), json.dumps(config), algorithm, run_id],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=_subprocess_env(), cwd=ROOT)
        self.info = json.loads(self._line(f"{algorithm} started"))
        self.instance: str = self.info["instance"]

    def _line(self, what: str) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(DEADLINE)
        if not result or not result[0]:
            raise AssertionError(f"the training process gave no answer for {what} (log: {self._log.name})")
        return result[0]

    def send(self, command: str) -> float:
        """Send ``command``; the monotonic time at which the process had done it."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self._line(command)
        assert answer.strip() == f"ok {command.split()[0]}", answer
        return time.monotonic()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# -- the stack -------------------------------------------------------------------------------------------------------


def alertmanager_config(webhook_url: str) -> dict:
    """The shipped config with its waits shortened to a second and the webhook as the only receiver."""
    config = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
        route["receiver"] = "webhook"
    config["receivers"] = [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}]
    return config


@pytest.fixture
def alerting(tmp_path: Path) -> Iterator[tuple[Path, Webhook, Alertmanager, Path]]:
    """A webhook, an Alertmanager delivering to it, and the rule file with the shortened thresholds."""
    webhook = Webhook()
    with workdir() as wd:
        manager = Alertmanager(wd, alertmanager_config(webhook.url))
        rule_file = wd / "otel-rl.rules.yml"
        rules.write_rules(rule_file, THRESHOLDS)
        try:
            manager.start()
            yield wd, webhook, manager, rule_file
        finally:
            manager.stop()
            webhook.close()


def _silence(manager: Alertmanager, **labels: str) -> str:
    result = subprocess.run(
        [_amtool(), "silence", "add", f"--alertmanager.url={manager.url}", "--author=otel-rl tests",
         "--comment=a silenced run", "--duration=1h", *(f"{k}={v}" for k, v in labels.items())],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def _check_labels(alert: dict, job: str, driver: Driver, name: str) -> None:
    labels, annotations = alert["labels"], alert["annotations"]
    assert labels["alertname"] == name
    assert (labels["job"], labels["instance"], labels["algorithm"], labels["run_id"]) == (
        job, driver.instance, driver.algorithm, driver.run_id), labels
    assert annotations["summary"] and annotations["description"], annotations
    assert annotations["runbook_url"] == f"{rules.RUNBOOK_BASE}#{name.lower()}", annotations
    assert "{{" not in annotations["summary"] + annotations["description"]


def _wait_for_alertmanager(prom: Prometheus) -> None:
    """Prometheus learns its Alertmanagers through service discovery, which updates every 5 s: an alert that fires
    before is sent nowhere, and sent again only after --rules.alert.resend-delay (1 m)."""
    wait_until(lambda: prom.api("alertmanagers")["activeAlertmanagers"], DEADLINE,  # type: ignore[index]
               what="Prometheus to know its Alertmanager")


def _diagnosis(prom: Prometheus, manager: Alertmanager) -> str:
    """What Prometheus and Alertmanager hold, for a failure message."""
    history = [(a["metric"]["alertname"], a["metric"].get("run_id"), len(a["values"]))
               for a in prom.query("ALERTS[5m]")]
    broken = [(r["name"], r.get("lastError")) for g in prom.api("rules")["groups"]  # type: ignore[index]
              for r in g["rules"] if r.get("health") != "ok"]
    notifier = prom.api("alertmanagers")
    held = [(a["labels"]["alertname"], a["labels"].get("run_id"), a["status"]) for a in manager.alerts()]
    logs = [p.process.output()[-1500:] for p in (prom, manager) if p.process is not None]
    return (f"Prometheus ALERTS[5m]: {history}; rules not ok: {broken}; {notifier}; Alertmanager: {held}; "
            f"logs: {logs}")


def _exercise(path: str, wd: Path, webhook: Webhook, manager: Alertmanager, prom: Prometheus, job: str,
              drivers: dict[str, Driver]) -> dict[str, float]:
    """Stall, fail and NaN on both paths: each delivered with its labels, then resolved; a silenced failure not
    delivered. Returns seconds from condition to delivery per alert."""
    stall, fail, nan, silenced = drivers["stall"], drivers["fail"], drivers["nan"], drivers["silenced"]
    for driver in drivers.values():
        wait_until(lambda d=driver: prom.query(f'rl_training_iterations_total{{instance="{d.instance}"}}'), DEADLINE,
                   what=f"iterations of {driver.run_id} in Prometheus ({path})")
    _wait_for_alertmanager(prom)
    silence_id = _silence(manager, alertname="RLTrainingRunFailed", run_id=silenced.run_id)
    assert silence_id
    t_stall = stall.send("stall")
    t_fail = fail.send("fail")
    silenced.send("fail")
    t_nan = nan.send("nan")

    delivered, latency = {}, {}
    for key, driver, name, since in (
            ("stalled", stall, "RLTrainingStalled", t_stall + 8.0),
            ("failed", fail, "RLTrainingRunFailed", t_fail),
            ("nan", nan, "RLTrainingNonFiniteLoss", t_nan)):
        try:
            arrived, alert = webhook.wait("firing", alertname=name, run_id=driver.run_id)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {_diagnosis(prom, manager)}") from None
        _check_labels(alert, job, driver, name)
        delivered[key], latency[key] = alert, arrived - since
    assert delivered["nan"]["labels"]["metric"] == "rl_training_policy_loss"
    assert delivered["nan"]["labels"]["reason"] == "nan"
    errors = webhook.wait("firing", alertname="RLTrainingErrors", run_id=fail.run_id)[1]
    _check_labels(errors, job, fail, "RLTrainingErrors")

    # The silenced run's failure fired in Prometheus and reached Alertmanager, which kept it from the webhook.
    wait_until(lambda: prom.query(f'ALERTS{{alertname="RLTrainingRunFailed",run_id="{silenced.run_id}",'
                                  f'alertstate="firing"}}'), DEADLINE, what="the silenced run's alert in Prometheus")
    suppressed = wait_until(
        lambda: [a for a in manager.alerts() if a["labels"].get("run_id") == silenced.run_id
                 and a["labels"]["alertname"] == "RLTrainingRunFailed" and a["status"]["state"] == "suppressed"],
        DEADLINE, what="the silenced alert in Alertmanager")
    assert suppressed[0]["status"]["silencedBy"] == [silence_id]

    # Conditions clear: the stalled run iterates again; the failure and the NaN age out of their 10 s windows.
    t_resume = stall.send("resume")
    resolved_stall, _ = webhook.wait("resolved", alertname="RLTrainingStalled", run_id=stall.run_id)
    latency["stalled resolved"] = resolved_stall - t_resume
    webhook.wait("resolved", alertname="RLTrainingRunFailed", run_id=fail.run_id)
    webhook.wait("resolved", alertname="RLTrainingNonFiniteLoss", run_id=nan.run_id)
    assert not webhook.matching("firing", alertname="RLTrainingRunFailed", run_id=silenced.run_id), webhook.summary()
    # Nothing else alerted about the healthy parts: no alert names a run other than the ones made to misbehave.
    names = {(a["labels"]["alertname"], a["labels"].get("run_id")) for _, a in webhook.matching("firing")}
    assert names <= {("RLTrainingStalled", stall.run_id), ("RLTrainingRunFailed", fail.run_id),
                     ("RLTrainingErrors", fail.run_id), ("RLTrainingErrors", silenced.run_id),
                     ("RLTrainingNonFiniteLoss", nan.run_id),
                     ("RLTelemetryValuesDropped", nan.run_id), ("RLTrainingNoData", "nodata-run")}, names
    return latency


RUNS = {"stall": ("PPO", "stall-run"), "fail": ("A2C", "fail-run"), "nan": ("DQN", "nan-run"),
        "silenced": ("SAC", "silenced-run")}


def _report(path: str, latency: dict[str, float]) -> None:
    print(f"\n{path}: condition to delivery " + ", ".join(f"{k} {v:.1f} s" for k, v in latency.items()))


def test_alerts_delivered_and_resolved_on_the_pull_path(alerting):
    """Prometheus scrapes each training process; its alerts reach the webhook and resolve."""
    wd, webhook, manager, rule_file = alerting
    drivers: dict[str, Driver] = {}
    prom = None
    try:
        for key, (algorithm, run_id) in RUNS.items():
            drivers[key] = Driver({"prometheus": {"host": "127.0.0.1", "port": 0}}, algorithm, run_id,
                                  wd / f"{run_id}.log")
        prom = Prometheus(wd, scrape_targets=[d.instance for d in drivers.values()], job_name=PULL_JOB,
                          rule_files=[str(rule_file)], alertmanagers=[manager.address]).start()
        latency = _exercise("pull", wd, webhook, manager, prom, PULL_JOB, drivers)
        _report("pull", latency)
    finally:
        for driver in drivers.values():
            driver.close()
        if prom is not None:
            prom.stop()


def test_alerts_delivered_and_resolved_on_the_push_path(alerting):
    """Training processes push OTLP to the collector, which remote-writes into Prometheus: the same alerts arrive;
    a collector that stops writing raises RLTrainingNoData, which resolves when it writes again."""
    wd, webhook, manager, rule_file = alerting
    prom = Prometheus(wd, rule_files=[str(rule_file)], alertmanagers=[manager.address])
    collectors: list[Collector] = []
    drivers: dict[str, Driver] = {}
    try:
        prom.start()
        collectors = [Collector(wd, prom.remote_write_url).start(), Collector(wd, prom.remote_write_url).start()]

        def push(collector: Collector) -> dict:
            return {"exporters": ["otlp"], "service_name": PUSH_JOB,
                    "otlp": {"endpoint": collector.grpc_endpoint, "export_interval": 0.5, "timeout": 2.0}}

        for key, (algorithm, run_id) in RUNS.items():
            drivers[key] = Driver(push(collectors[0]), algorithm, run_id, wd / f"{run_id}.log")
        drivers["nodata"] = nodata = Driver(push(collectors[1]), "TD3", "nodata-run", wd / "nodata-run.log")
        wait_until(lambda: prom.query(f'rl_training_active{{instance="{nodata.instance}"}} == 1'), DEADLINE,
                   what="the no-data run in Prometheus")
        assert not prom.query("up"), "the push path has no scrape targets, so no `up`"
        _wait_for_alertmanager(prom)
        collectors[1].stop()
        t_stop = time.monotonic()
        latency = _exercise("push", wd, webhook, manager, prom, PUSH_JOB,
                            {k: v for k, v in drivers.items() if k != "nodata"})
        arrived, alert = webhook.wait("firing", alertname="RLTrainingNoData", run_id="nodata-run")
        _check_labels(alert, PUSH_JOB, nodata, "RLTrainingNoData")
        latency["no data"] = arrived - (t_stop + 6.0)
        collectors[1].start()  # same ports: the SDK's next export lands again
        t_back = time.monotonic()
        resolved, _ = webhook.wait("resolved", alertname="RLTrainingNoData", run_id="nodata-run")
        latency["no data resolved"] = resolved - t_back
        _report("push", latency)
    finally:
        for driver in drivers.values():
            driver.close()
        for collector in collectors:
            collector.stop()
        prom.stop()


def test_inhibit_rules_of_the_shipped_config(alerting):
    """A process's "no data" alert holds back its other alerts, and a failed run its stalled and GPU-idle alerts;
    the same alerts of another process or run are delivered."""
    _, webhook, manager, _ = alerting

    def add(name: str, instance: str, run_id: str) -> None:
        result = subprocess.run(
            [_amtool(), "alert", "add", f"--alertmanager.url={manager.url}", f"alertname={name}", "job=trainer",
             f"instance={instance}", "algorithm=PPO", f"run_id={run_id}", "--annotation=summary=test"],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr

    add("RLTrainingNoData", "a:1", "r1")
    add("RLTrainingRunFailed", "c:1", "r3")
    wait_until(lambda: len(manager.alerts()) == 2, DEADLINE, what="the source alerts in Alertmanager")
    inhibited = [("RLTrainingStalled", "a:1", "r1"), ("RLTrainingErrors", "a:1", "r1"),
                 ("RLTrainingStalled", "c:1", "r3"), ("RLGpuIdleWhileTraining", "c:1", "r3")]
    delivered = [("RLTrainingStalled", "b:1", "r2"), ("RLTrainingErrors", "c:1", "r3")]
    for alert in inhibited + delivered:
        add(*alert)
    for name, instance, run_id in delivered + [("RLTrainingNoData", "a:1", "r1"), ("RLTrainingRunFailed", "c:1", "r3")]:
        webhook.wait("firing", alertname=name, instance=instance, run_id=run_id)
    states = wait_until(
        lambda: {(a["labels"]["alertname"], a["labels"]["instance"], a["labels"]["run_id"]): a["status"]
                 for a in manager.alerts()} if len(manager.alerts()) == 8 else None, DEADLINE, what="8 alerts")
    for key in inhibited:
        assert states[key]["state"] == "suppressed" and states[key]["inhibitedBy"], (key, states[key])
        assert not webhook.matching("firing", alertname=key[0], instance=key[1], run_id=key[2]), key
    for key in delivered:
        assert states[key]["state"] == "active", (key, states[key])


def test_receiver_examples_in_the_docs_are_valid_configs(tmp_path):
    """Each YAML example of docs/alerting.md, merged into the shipped config, passes `amtool check-config`."""
    text = (ROOT / "docs" / "alerting.md").read_text()
    examples = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(examples) >= 4
    shipped = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    for number, example in enumerate(examples):
        doc = yaml.safe_load(example)
        config = {**shipped, **doc, "global": {**shipped["global"], **doc.get("global", {})}}
        if "route" not in doc:  # a receivers-only example replaces the receiver the shipped route names
            assert [r["name"] for r in doc["receivers"]] == ["default"], example
        path = tmp_path / f"example-{number}.yml"
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run([_amtool(), "check-config", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, example + result.stdout + result.stderr
