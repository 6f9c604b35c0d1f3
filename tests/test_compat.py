"""The compat module's metric objects take every prometheus_client call the original module allowed.

Each call sequence runs on prometheus_client objects rebuilt from the facts file and on the compat objects, and
the two expositions must hold the same samples. Bad calls are dropped and counted, never raised.
"""

from __future__ import annotations

import logging
import math
import socket
import time
import urllib.error
import urllib.request

import pytest

import otel_rl
from otel_rl import testing
from otel_rl.compat import prometheus_metrics as compat

import facts
from procs import free_port
from test_parity import SeedReference, parse

FACTS = facts.load()
#: The original module's object names, in the facts file's (its definition) order. The facts file does not list
#: them; they are the module-level names its integration guide's users imported.
OBJECT_NAMES = [
    "TRAINING_RUNS_TOTAL", "TRAINING_DURATION", "TRAINING_ITERATIONS_TOTAL", "EPISODES_TOTAL", "EPISODE_REWARD",
    "EPISODE_LENGTH", "SHARPE_RATIO", "MAX_DRAWDOWN", "WIN_RATE", "TOTAL_RETURN", "CURRENT_ITERATION",
    "CURRENT_EPISODE_REWARD_MEAN", "CURRENT_EPISODE_LENGTH_MEAN", "POLICY_LOSS", "VALUE_LOSS", "ENTROPY",
    "DATA_LOAD_TIME", "ENVIRONMENT_STEPS_TOTAL", "TRAINING_ERRORS_TOTAL", "TRAINING_ACTIVE", "TRAINING_START_TIME",
]
OBJECTS = dict(zip(OBJECT_NAMES, FACTS["metrics"], strict=True))


def test_the_21_object_names_of_the_original_module_are_exported():
    """TRAINING_RUNS_TOTAL ... TRAINING_START_TIME import by name and stand for the facts file's metrics."""
    namespace: dict = {}
    exec("from otel_rl.compat.prometheus_metrics import *", namespace)
    assert len(OBJECTS) == 21
    for name, fact in OBJECTS.items():
        assert namespace[name]._name == fact["name"], name
        assert list(namespace[name]._labelnames) == fact["labels"], name
    assert list(compat.OBJECTS) == list(OBJECTS)  # the original's definition order


def _both(reference: SeedReference, name: str):
    """(prometheus_client object, compat object) for one object name of the original module."""
    return reference.m[OBJECTS[name]["name"]], getattr(compat, name)


def _run(calls) -> tuple[dict, dict]:
    """Apply ``calls(obj_of)`` to prometheus_client and to the compat objects; both parsed expositions."""
    reference = SeedReference()
    calls(lambda name: _both(reference, name)[0])
    calls(lambda name: getattr(compat, name))
    return parse(compat.get_metrics_response()), parse(reference.get_metrics_response())


def _samples(parsed: dict, family: str) -> dict:
    # prometheus_client has no _sum for histograms with negative bounds; compare the rest.
    return {k: v for k, v in parsed[family][2].items()}


def test_counter_gauge_and_histogram_calls_match_prometheus_client():
    """labels by position and keyword, inc, dec, set, observe and unlabelled observe give prometheus_client's values."""

    def calls(obj):
        obj("TRAINING_RUNS_TOTAL").labels("PPO", "started").inc()
        obj("TRAINING_RUNS_TOTAL").labels(algorithm="PPO", status="started").inc(2.5)
        obj("TRAINING_RUNS_TOTAL").labels(status="failed", algorithm="SAC").inc()
        obj("TRAINING_ACTIVE").labels("PPO").set(1)
        obj("TRAINING_ACTIVE").labels("PPO").inc()
        obj("TRAINING_ACTIVE").labels(algorithm="PPO").dec(0.5)
        obj("TRAINING_ACTIVE").labels("SAC").dec()
        obj("CURRENT_ITERATION").labels("PPO", "r1").set(7)
        obj("EPISODE_REWARD").labels("PPO", "agent_0").observe(-600)
        obj("EPISODE_REWARD").labels(algorithm="PPO", agent_id="agent_0").observe(250)
        obj("POLICY_LOSS").labels("PPO").observe(0.05)
        obj("DATA_LOAD_TIME").observe(1.5)
        obj("TRAINING_DURATION").labels("PPO").observe(125.0)
        obj("ENVIRONMENT_STEPS_TOTAL").labels("PPO").inc(4000)

    ours, reference = _run(calls)
    for family in ("rl_training_runs", "rl_training_active", "rl_training_current_iteration",
                   "rl_training_policy_loss", "rl_training_data_load_time_seconds", "rl_training_duration_seconds",
                   "rl_training_environment_steps"):
        assert _samples(ours, family) == _samples(reference, family), family
    reward_ours = {k: v for k, v in _samples(ours, "rl_training_episode_reward").items()
                   if k[0] != "rl_training_episode_reward_sum"}
    assert reward_ours == _samples(reference, "rl_training_episode_reward")
    assert testing.value("rl_training_active", algorithm="SAC") == -1.0


def test_remove_and_clear_match_prometheus_client():
    """remove(*labels) forgets one series and clear() all series of a metric, as in prometheus_client."""

    def calls(obj):
        for algorithm in ("PPO", "SAC", "DQN"):
            obj("TRAINING_ITERATIONS_TOTAL").labels(algorithm).inc()
            obj("SHARPE_RATIO").labels(algorithm, "agent_0").set(1.5)
        obj("TRAINING_ITERATIONS_TOTAL").remove("SAC")
        obj("SHARPE_RATIO").clear()
        obj("SHARPE_RATIO").labels("PPO", "agent_1").set(2.0)

    ours, reference = _run(calls)
    for family in ("rl_training_iterations", "rl_training_sharpe_ratio"):
        assert _samples(ours, family) == _samples(reference, family), family
    assert testing.value("rl_training_iterations_total", algorithm="SAC") is None


def test_set_to_current_time_and_time_as_context_manager_and_decorator():
    """set_to_current_time sets now; time() observes (histogram) or sets (gauge) the elapsed seconds."""
    before = time.time()
    compat.TRAINING_START_TIME.labels("PPO", "r1").set_to_current_time()
    assert before <= testing.value("rl_training_start_timestamp", algorithm="PPO", run_id="r1") <= time.time()

    with compat.DATA_LOAD_TIME.time():
        time.sleep(0.02)  # the elapsed time the timer must observe

    @compat.TRAINING_DURATION.labels("PPO").time()
    def train() -> str:
        time.sleep(0.01)  # the elapsed time the timer must observe
        return "done"

    assert train() == "done" and train.__name__ == "train"
    assert train() == "done"
    loads = testing.histogram("rl_training_data_load_time_seconds")
    assert loads.count == 1 and 0.02 <= loads.sum < 5
    durations = testing.histogram("rl_training_duration_seconds", algorithm="PPO")
    assert durations.count == 2 and 0.02 <= durations.sum < 5

    with compat.TRAINING_ACTIVE.labels("PPO").time():
        time.sleep(0.01)  # the elapsed time the gauge must be set to
    assert 0.01 <= testing.value("rl_training_active", algorithm="PPO") < 5
    with compat.TRAINING_ACTIVE.labels("SAC").track_inprogress():
        assert testing.value("rl_training_active", algorithm="SAC") == 1.0
    assert testing.value("rl_training_active", algorithm="SAC") == 0.0


def test_count_exceptions_counts_and_reraises():
    """count_exceptions() counts an exception of the given type and lets it propagate."""
    with pytest.raises(KeyError):
        with compat.TRAINING_ERRORS_TOTAL.labels("data_error").count_exceptions(KeyError):
            raise KeyError("x")
    with compat.TRAINING_ERRORS_TOTAL.labels("data_error").count_exceptions(KeyError):
        pass
    assert testing.value("rl_training_errors_total", error_type="data_error") == 1.0


@pytest.mark.parametrize("bad", [None, "x", math.nan, math.inf, [1.0], object()])
def test_bad_values_are_dropped_and_counted_never_raised(bad, caplog):
    """Every value-taking call drops a bad value (counted, one warning per metric and reason) and never raises."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    compat.TRAINING_RUNS_TOTAL.labels("PPO", "started").inc(bad)
    compat.TRAINING_ACTIVE.labels("PPO").set(bad)
    compat.TRAINING_ACTIVE.labels("PPO").inc(bad)
    compat.TRAINING_ACTIVE.labels("PPO").dec(bad)
    compat.EPISODE_REWARD.labels("PPO", "a").observe(bad)
    compat.DATA_LOAD_TIME.observe(bad)
    for metric in ("rl_training_runs_total", "rl_training_episode_reward", "rl_training_data_load_time_seconds"):
        assert sum(v for (m, _), v in _dropped().items() if m == metric) == 1, metric
    assert sum(v for (m, _), v in _dropped().items() if m == "rl_training_active") == 3
    assert testing.value("rl_training_runs_total", algorithm="PPO", status="started") is None


def test_bad_label_sets_and_negative_counter_amounts_are_dropped_and_counted():
    """Wrong label counts or names, unlabelled calls on labelled metrics and counter decreases never raise."""
    compat.TRAINING_RUNS_TOTAL.labels("PPO").inc()
    compat.TRAINING_RUNS_TOTAL.labels(algorithm="PPO", state="x").inc()
    compat.TRAINING_RUNS_TOTAL.labels("PPO", status="started").inc()
    compat.TRAINING_RUNS_TOTAL.inc()
    compat.TRAINING_RUNS_TOTAL.remove("PPO")
    compat.EPISODE_REWARD.observe(1.0)
    compat.TRAINING_ACTIVE.set(1)
    compat.DATA_LOAD_TIME.labels("x").observe(1.0)
    compat.DATA_LOAD_TIME.remove()
    compat.TRAINING_ITERATIONS_TOTAL.labels("PPO").inc(-1)
    assert testing.dropped("rl_training_runs_total", "bad_labels") == 5
    assert testing.dropped("rl_training_episode_reward", "bad_labels") == 1
    assert testing.dropped("rl_training_active", "bad_labels") == 1
    assert testing.dropped("rl_training_data_load_time_seconds", "bad_labels") == 2
    assert testing.dropped("rl_training_iterations_total", "negative") == 1


def _dropped() -> dict:
    return dict(otel_rl_dropped())


def otel_rl_dropped():
    from otel_rl._internal.store import REGISTRY

    return REGISTRY.dropped.snapshot()


# -- start_metrics_server ----------------------------------------------------------------------------------------------


def test_start_metrics_server_adds_an_endpoint_to_an_otlp_only_telemetry():
    """With OTLP-only telemetry running, start_metrics_server adds /metrics to it and never shuts it down."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    handle = otel_rl.init_telemetry({"exporters": ["otlp"], "otlp": {
        "endpoint": f"http://127.0.0.1:{dead}", "protocol": "http/protobuf", "export_interval": 60, "timeout": 1}})
    port = free_port()
    server = compat.start_metrics_server(port=port)
    assert server is not None and server.port == port
    assert otel_rl.current() is handle and handle.server is server
    compat.TRAINING_ACTIVE.labels("PPO").set(1)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'rl_training_active{algorithm="PPO"} 1.0' in body
    assert compat.start_metrics_server(port=port) is server
    compat.stop_metrics_server()
    assert otel_rl.current() is handle and handle.server is None  # the OTLP telemetry goes on
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    handle.shutdown(timeout=2)


def test_start_metrics_server_applies_the_running_telemetrys_host_basic_auth_and_file_sd(tmp_path):
    """An endpoint added to an OTLP-only telemetry has its prometheus settings: host, basic auth, file_sd target."""
    import base64
    import json

    import bcrypt
    import yaml

    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"scraper": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()}}))
    targets = tmp_path / "targets.json"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    handle = otel_rl.init_telemetry({
        "exporters": ["otlp"], "otlp": {"endpoint": f"http://127.0.0.1:{dead}", "protocol": "http/protobuf",
                                         "export_interval": 60, "timeout": 1},
        "prometheus": {"host": "127.0.0.1", "web_config_file": str(web), "file_sd": str(targets)}})
    try:
        server = compat.start_metrics_server(port=0)
        assert server is not None and server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=5)
        assert denied.value.code == 401
        request = urllib.request.Request(url, headers={
            "Authorization": "Basic " + base64.b64encode(b"scraper:pw").decode()})
        assert urllib.request.urlopen(request, timeout=5).status == 200
        listed = [t for group in json.loads(targets.read_text()) for t in group["targets"]]
        assert listed == [f"127.0.0.1:{server.port}"]
        compat.stop_metrics_server()
        assert json.loads(targets.read_text()) == []  # the endpoint left the target file when it stopped
    finally:
        handle.shutdown(timeout=2)


def test_stop_metrics_server_stops_the_telemetry_it_started():
    """start_metrics_server without telemetry starts it; stop_metrics_server shuts exactly that down."""
    server = compat.start_metrics_server(port=free_port())
    assert server is not None and otel_rl.current() is not None
    compat.stop_metrics_server()
    assert otel_rl.current() is None


def test_stop_metrics_server_leaves_a_telemetry_started_by_init_telemetry():
    """A telemetry the user started with init_telemetry (its own endpoint) is left to its owner."""
    handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
    assert compat.start_metrics_server(port=free_port()) is handle.server
    compat.stop_metrics_server()
    assert otel_rl.current() is handle and handle.server is not None
