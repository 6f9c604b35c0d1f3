"""Every dashboard panel and variable query returns data from a real Prometheus after a real demo run.

The run has ``resource_metrics`` on, so the Resources row has process data. Its GPU panels can only have data on a
machine where NVML sees a GPU, and its torch panel only where torch can initialise CUDA: elsewhere (CI) those
panels are asserted to be empty instead, and the test says so in its output.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse

import pytest

import otel_rl
from otel_rl._internal.dashboard import (
    build_dashboard,
    panel_queries,
    parse_label_values,
    promql,
    substitute,
    variable_queries,
)
from otel_rl._internal.store import REGISTRY
from otel_rl.demo.run import run_demo

from procs import ROOT, Prometheus, http_get, wait_until, workdir

pytestmark = pytest.mark.integration

def _gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 (no binding, library or driver)
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


GPUS = _gpu_count()
#: torch can put a tensor on a GPU here (only checked where NVML sees one, so CI never imports torch for it).
CUDA = GPUS > 0 and __import__("importlib").util.find_spec("torch") is not None
#: Panels that read only GPU (NVML) or torch CUDA series: data only where a GPU exists.
GPU_PANELS = {"GPU utilisation", "GPU memory", "GPU power and temperature"}
TORCH_PANELS = {"Torch CUDA memory"}

REAL = {"job": "wealtharena_rl_training", "algorithm": "PG", "run_id": "cartpole-seed0", "agent_id": "agent_0"}
ALL = {name: "All" for name in REAL}


@pytest.fixture(scope="module", params=[False, True], ids=["original-labels", "per-run-series"])
def landed_run(request):
    """A seeded demo run (with an injected step failure, a failed run and a NaN loss) scraped every second, with
    the original label sets and with ``per_run_series``: the dashboard and the rules serve both."""
    from otel_rl._internal.recording import set_module_losses

    with workdir() as tmp:
        telemetry = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0, "linger": 10},
                                            "resource_metrics": True, "per_run_series": request.param})
        if CUDA:  # give the torch panel data: a tensor on the GPU initialises CUDA in this process
            import torch

            torch.ones(1024, device="cuda")
        prometheus = Prometheus(tmp, scrape_targets=[f"127.0.0.1:{telemetry.prometheus_port}"],
                                rule_files=[str(ROOT / "prometheus" / "rules" / "otel-rl.rules.yml")])
        prometheus.start()
        try:
            wait_until(lambda: prometheus.query('up{job="wealtharena_rl_training"} == 1'), 30,
                       what="the first scrape of the endpoint")
            started = time.time()
            result = run_demo(iterations=12, episodes_per_iter=10, seed=0, inject_failure=True, progress=False,
                              on_iteration=lambda i, outcome: time.sleep(0.4), shutdown=False)  # paced for scrapes
            # The demo's single policy is no learner module: one RLlib-shaped module's losses for that panel.
            set_module_losses(("PG", "cartpole-seed0", "agent_0"), (0.5, 0.25, 0.7))
            otel_rl.record_loss_metrics("PG", entropy=float("nan"))  # counted as dropped, reason nan
            # The demo's REINFORCE agent neither clips its ratio nor explores epsilon-greedily: set those two here.
            otel_rl.record_training_signals("PG", "cartpole-seed0", clip_fraction=0.1, exploration_rate=0.05)
            # Nor does it generate tokens or have reward functions (the TRL adapter's series): set them here too.
            otel_rl.record_training_signals("PG", "cartpole-seed0", tokens_per_second=1500.0)
            REGISTRY.gauge("rl_training_reward_function_mean").set(("PG", "cartpole-seed0", "length"), 0.5)
            otel_rl.record_scalar("success_rate", 0.75, algorithm="PG", run_id="cartpole-seed0")  # the Custom row
            with pytest.raises(RuntimeError):
                with otel_rl.training_run(algorithm="PG", run_id="failing-run"):
                    raise RuntimeError("a failed run, for the error panels")
            time.sleep(2.5)  # time for a few scrapes of the final state, so rate() panels have points
            telemetry.shutdown()  # lingers until one last scrape
            wait_until(lambda: prometheus.query('rl_training_runs_total{status="failed"}'), 30,
                       what="the failed run in Prometheus")
            yield prometheus, started, time.time(), result
        finally:
            telemetry.shutdown()
            REGISTRY.set_per_run(False)
            prometheus.stop()


def _has_data(prometheus: Prometheus, expr: str, start: float, end: float) -> bool:
    query = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"})
    body = json.loads(http_get(f"{prometheus.url}/api/v1/query_range?{query}", 30))
    assert body["status"] == "success", (expr, body)
    return any(math.isfinite(float(value)) for series in body["data"]["result"] for _, value in series["values"])


#: With per_run_series, the demo's one data load of its run is a series born with its first observation: a rate over
#: it has nothing to show (in the original label sets the unlabelled series exists, at 0, from the start). The
#: panel's cumulative mean shows it; this quantile is asserted empty instead.
BORN_WITH_ITS_ONLY_VALUE = "histogram_quantile(0.9, sum by (le) (rate(rl_training_data_load_time_seconds_bucket"


@pytest.mark.parametrize("values", [REAL, ALL], ids=["real-values", "all"])
def test_every_panel_query_returns_data(landed_run, values, request):
    """Each panel query, with the variables substituted by real values and by All, returns finite data."""
    prometheus, started, ended, _ = landed_run
    per_run = request.node.callspec.params["landed_run"]
    span = f"{int(ended - started) + 30}s"
    empty, without_device = [], []
    queries = panel_queries(build_dashboard())
    assert len(queries) >= 29
    no_device = (set() if GPUS else GPU_PANELS) | (set() if CUDA else TORCH_PANELS)
    assert no_device <= {title for title, _ in queries}
    for title, expr in queries:
        concrete = substitute(expr, {**values, "__rate_interval": "5s"}, range_=span)
        has_data = _has_data(prometheus, concrete, started - 5, ended + 1)
        if title in no_device:
            assert not has_data, f"{title} has data but this machine has no GPU / CUDA: {concrete}"
            without_device.append(title)
        elif per_run and expr.startswith(BORN_WITH_ITS_ONLY_VALUE):
            assert not has_data, f"{title}: a rate over one observation has data? {concrete}"
        elif not has_data:
            empty.append(f"{title}: {concrete}")
    assert not empty, "panels with no data:\n" + "\n".join(empty)
    if without_device:
        print(f"no GPU ({GPUS} seen by NVML) or no CUDA for torch: checked empty instead of with data: "
              + ", ".join(sorted(set(without_device))))


@pytest.mark.parametrize("values", [REAL, ALL], ids=["real-values", "all"])
def test_every_variable_query_returns_values(landed_run, values):
    """Each template variable's label_values query lists values, among them the run's real ones."""
    prometheus, *_ = landed_run
    for name, query in variable_queries(build_dashboard()):
        selector, label = parse_label_values(substitute(query, values))
        found = prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert REAL[name] in found, (name, selector, found)


def test_alert_rules_load_and_the_failure_alerts_fire(landed_run):
    """The generated rules are loaded and healthy, and the run-failed alert fires on the failed run."""
    prometheus, *_ = landed_run
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert rules and all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
    failed = wait_until(lambda: [a for a in prometheus.api("alerts")["alerts"]
                                 if a["labels"]["alertname"] == "RLTrainingRunFailed"], 30,
                        what="RLTrainingRunFailed alert")
    # Named after the run that failed (in both modes: the run the process started last for PG), with its process.
    assert [(a["labels"]["algorithm"], a["labels"]["run_id"], a["labels"]["job"]) for a in failed] == [
        ("PG", "failing-run", "wealtharena_rl_training")], failed
    assert failed[0]["labels"]["instance"].startswith("127.0.0.1:")


def test_the_run_variable_filters_per_run_series(landed_run, request):
    """With per_run_series, choosing a run shows only that run's losses; with the original labels the same query
    shows the algorithm's (there is no run to tell apart)."""
    prometheus, started, ended, _ = landed_run
    per_run = request.node.callspec.params["landed_run"]
    for run, losses in (("cartpole-seed0", True), ("failing-run", not per_run)):
        expr = substitute(promql.sel("rl_training_policy_loss", "_count"), {**REAL, "run_id": run})
        assert _has_data(prometheus, expr, started - 5, ended + 1) is losses, (run, expr)


def test_committed_dashboard_is_the_one_tested():
    """The JSON Grafana loads is the generated one these queries came from."""
    committed = json.loads((ROOT / "grafana" / "dashboards" / "rl-training.json").read_text())
    assert committed == json.loads(json.dumps(build_dashboard()))
