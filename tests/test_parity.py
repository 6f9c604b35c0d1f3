"""Seed parity: otel-rl's compat module exposes what the seed's prometheus_client module exposed.

The reference is rebuilt here with prometheus_client from ``shared/reference/seed-metrics.json`` (names, types,
label keys, buckets, help) and the helpers' documented semantics; both run the same scripted calls and their text
expositions are compared sample by sample.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_rl import ALL_METRICS, CATALOG
from otel_rl.compat import prometheus_metrics as compat

import facts
from procs import free_port

FACTS = facts.load()
SEED_NAMES = [m["name"] for m in FACTS["metrics"]]
EXTRA_FAMILY = "otel_rl_dropped_values"  # otel-rl's own health counter, not a seed metric
#: Families otel-rl adds beyond the seed module: the training signals, the per-module losses, its health counter.
EXTRA_FAMILIES = frozenset({EXTRA_FAMILY} | {spec.family for spec in ALL_METRICS[len(CATALOG):]})


class SeedReference:
    """The seed module rebuilt from the facts file on a fresh CollectorRegistry, with the seed's helpers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.m: dict[str, object] = {}
        for fact in FACTS["metrics"]:
            name, labels, doc = fact["name"], fact["labels"], fact["help"]
            if fact["type"] == "counter":
                # prometheus_client appends _total itself, so the seed passed the name without it.
                self.m[name] = Counter(name.removesuffix("_total"), doc, labels, registry=self.registry)
            elif fact["type"] == "gauge":
                self.m[name] = Gauge(name, doc, labels, registry=self.registry)
            else:
                self.m[name] = Histogram(name, doc, labels, buckets=fact["buckets"], registry=self.registry)

    def _(self, name: str, *labels: str):
        metric = self.m[name]
        return metric.labels(*labels) if labels else metric

    def record_training_start(self, algorithm, run_id="default"):
        self._("rl_training_runs_total", algorithm, "started").inc()
        self._("rl_training_active", algorithm).set(1)
        self._("rl_training_start_timestamp", algorithm, run_id).set(time.time())

    def record_training_complete(self, algorithm, duration, run_id="default"):
        self._("rl_training_runs_total", algorithm, "completed").inc()
        self._("rl_training_duration_seconds", algorithm).observe(duration)
        self._("rl_training_active", algorithm).set(0)

    def record_training_failed(self, algorithm, error_type="unknown"):
        self._("rl_training_runs_total", algorithm, "failed").inc()
        self._("rl_training_errors_total", error_type).inc()
        self._("rl_training_active", algorithm).set(0)

    def record_training_iteration(self, algorithm, iteration, run_id="default"):
        self._("rl_training_iterations_total", algorithm).inc()
        self._("rl_training_current_iteration", algorithm, run_id).set(iteration)

    def record_episode(self, algorithm, agent_id, reward, length):
        self._("rl_training_episodes_total", algorithm, agent_id).inc()
        self._("rl_training_episode_reward", algorithm, agent_id).observe(reward)
        self._("rl_training_episode_length", algorithm, agent_id).observe(length)

    def record_episode_metrics(self, algorithm, run_id, reward_mean, length_mean):
        self._("rl_training_episode_reward_mean", algorithm, run_id).set(reward_mean)
        self._("rl_training_episode_length_mean", algorithm, run_id).set(length_mean)

    def record_performance_metrics(self, algorithm, agent_id, metrics):
        if "sharpe_ratio" in metrics:
            self._("rl_training_sharpe_ratio", algorithm, agent_id).set(metrics["sharpe_ratio"])
        if "max_drawdown" in metrics:
            self._("rl_training_max_drawdown", algorithm, agent_id).set(metrics["max_drawdown"])
        if "win_rate" in metrics:
            self._("rl_training_win_rate", algorithm, agent_id).set(metrics["win_rate"] * 100)
        if "total_return" in metrics:
            self._("rl_training_total_return", algorithm, agent_id).set(metrics["total_return"] * 100)

    def record_loss_metrics(self, algorithm, policy_loss=None, value_loss=None, entropy=None):
        if policy_loss is not None:
            self._("rl_training_policy_loss", algorithm).observe(policy_loss)
        if value_loss is not None:
            self._("rl_training_value_loss", algorithm).observe(value_loss)
        if entropy is not None:
            self._("rl_training_entropy", algorithm).observe(entropy)

    def record_data_load_time(self, duration):
        self._("rl_training_data_load_time_seconds").observe(duration)

    def record_environment_steps(self, algorithm, steps):
        self._("rl_training_environment_steps_total", algorithm).inc(steps)

    def record_training_error(self, error_type):
        self._("rl_training_errors_total", error_type).inc()

    def get_metrics_response(self) -> str:
        return generate_latest(self.registry).decode("utf-8")


def script(m) -> None:
    """The call sequence both implementations run: every record_* helper, two algorithms, several agents/runs."""
    m.record_training_start("PPO", run_id="run-1")
    m.record_training_start("SAC", "run-2")
    m.record_training_start("DQN")
    m.record_data_load_time(0.42)
    m.record_data_load_time(3.0)
    for i in range(1, 4):
        m.record_training_iteration("PPO", i, run_id="run-1")
    m.record_training_iteration("SAC", 1, "run-2")
    m.record_training_iteration("DQN", 5)
    m.record_episode("PPO", "agent_0", -600.0, 120)
    m.record_episode("PPO", "agent_0", -50.0, 10)
    m.record_episode("PPO", "agent_1", 250.5, 2000)
    m.record_episode("SAC", "agent_0", 100.0, 7000)
    m.record_episode("SAC", "agent_2", 12000.0, 1)
    m.record_episode_metrics("PPO", "run-1", -325.0, 65.0)
    m.record_episode_metrics(algorithm="SAC", run_id="run-2", reward_mean=100.0, length_mean=7000)
    m.record_performance_metrics("PPO", "agent_0",
                                 {"sharpe_ratio": 1.25, "max_drawdown": 15.5, "win_rate": 0.65, "total_return": 0.12})
    m.record_performance_metrics("PPO", "agent_1", {"sharpe_ratio": -0.5})
    m.record_performance_metrics("SAC", "agent_0", {"win_rate": 0.3, "total_return": -0.07})
    m.record_loss_metrics("PPO", policy_loss=-0.02, value_loss=0.35, entropy=-1.2)
    m.record_loss_metrics("PPO", policy_loss=0.001, value_loss=None, entropy=0.5)
    m.record_loss_metrics("SAC", value_loss=12.0)
    m.record_environment_steps("PPO", 4000)
    m.record_environment_steps("SAC", 1000)
    m.record_environment_steps("PPO", 4000)
    m.record_training_error("data_error")
    m.record_training_error("evaluation_error")
    m.record_training_complete("PPO", 125.0, run_id="run-1")
    m.record_training_failed("SAC", error_type="training_error")
    m.record_training_failed("DQN")


def parse(text: str) -> dict[str, tuple[str, str, dict]]:
    """family name -> (type, help, {(sample name, frozenset(labels)): value}), without ``*_created``."""
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue
        samples = {}
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
        out[family.name] = (family.type, family.documentation, samples)
    return out


#: Histograms whose first bucket bound is negative: prometheus_client exposes no ``_sum`` for them.
NEGATIVE_BUCKET_HISTOGRAMS = {m["name"] for m in FACTS["metrics"] if m["type"] == "histogram" and m["buckets"][0] < 0}

#: The ``_sum`` samples the script leaves on those histograms.
SCRIPT_SUMS = {
    "rl_training_episode_reward": {
        ("rl_training_episode_reward_sum", frozenset({"algorithm": a, "agent_id": g}.items())): v
        for a, g, v in (("PPO", "agent_0", -650.0), ("PPO", "agent_1", 250.5), ("SAC", "agent_0", 100.0),
                        ("SAC", "agent_2", 12000.0))
    },
}


def assert_parity(ours_text: str, reference_text: str, expected_sums=SCRIPT_SUMS) -> None:
    ours, ref = parse(ours_text), parse(reference_text)
    assert set(ours) - EXTRA_FAMILIES == set(ref)
    assert len(ref) == len(FACTS["metrics"])
    for name, (ref_type, ref_help, ref_samples) in ref.items():
        our_type, our_help, our_samples = ours[name]
        assert (our_type, our_help) == (ref_type, ref_help), name
        if name in NEGATIVE_BUCKET_HISTOGRAMS:
            # prometheus_client omits _sum when a bucket bound is negative; otel-rl keeps it (a superset).
            extra_sums = {k: v for k, v in our_samples.items() if k[0] == name + "_sum"}
            assert not any(k[0] == name + "_sum" for k in ref_samples)
            assert extra_sums == expected_sums.get(name, {}), name
            our_samples = {k: v for k, v in our_samples.items() if k not in extra_sums}
        assert set(our_samples) == set(ref_samples), (
            f"{name}: only ours {set(our_samples) - set(ref_samples)}, only seed {set(ref_samples) - set(our_samples)}")
        for key, ref_value in ref_samples.items():
            if name == "rl_training_start_timestamp":
                assert our_samples[key] == pytest.approx(ref_value, abs=30), key
            else:
                assert our_samples[key] == ref_value, key


def reference_text() -> str:
    ref = SeedReference()
    script(ref)
    return ref.get_metrics_response()


def test_facts_cover_the_21_seed_metrics():
    """The facts file used as the reference lists the seed's 21 metrics and 11 record_* helpers."""
    assert len(SEED_NAMES) == 21 == len(set(SEED_NAMES))
    assert sum(h["call"].startswith("record_") for h in FACTS["helpers"]) == 11


def test_get_metrics_response_matches_the_seed_module():
    """get_metrics_response() has the seed's families, types, help and samples (labels, le text, values).

    The seed's ``*_created`` samples are ignored (otel-rl deliberately does not emit _created series) and so is
    otel-rl's extra ``otel_rl_dropped_values_total`` family; the start timestamp is compared with a tolerance; the
    reward histogram's ``_sum`` (which prometheus_client omits for negative buckets) must hold the exact sums.
    """
    script(compat)
    assert_parity(compat.get_metrics_response(), reference_text())


def test_http_metrics_endpoint_matches_the_seed_module():
    """/metrics served by start_metrics_server() has the seed's families, types, help and samples.

    The seed's ``*_created`` samples are ignored (otel-rl deliberately does not emit _created series) and so is
    otel-rl's extra ``otel_rl_dropped_values_total`` family; the start timestamp is compared with a tolerance; the
    reward histogram's ``_sum`` (which prometheus_client omits for negative buckets) must hold the exact sums.
    """
    port = free_port()
    server = compat.start_metrics_server(port=port)
    try:
        assert server is not None
        script(compat)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode("utf-8")
    finally:
        compat.stop_metrics_server()
    assert_parity(body, reference_text())


def test_empty_state_matches_the_seed_module():
    """Before any record call the exposition matches a fresh seed module (families present, no labelled samples)."""
    assert_parity(compat.get_metrics_response(), SeedReference().get_metrics_response(), expected_sums={})


def test_start_metrics_server_twice_returns_the_running_server():
    """A second start_metrics_server() call returns the server already running, as the seed did."""
    port = free_port()
    first = compat.start_metrics_server(port=port)
    try:
        assert first is not None
        assert compat.start_metrics_server(port=port) is first
    finally:
        compat.stop_metrics_server()


def test_start_metrics_server_on_a_taken_port_returns_none():
    """start_metrics_server() on a port that is taken logs and returns None instead of raising."""
    import socket

    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", 0))
        blocker.listen()
        assert compat.start_metrics_server(port=blocker.getsockname()[1]) is None


def _samples(text: str, family: str) -> dict[tuple[str, frozenset], float]:
    return parse(text)[family][2]


def test_negative_reward_lands_in_the_negative_bucket():
    """A reward of -600 counts in le="-500.0" and above but not in le="-1000.0" (cumulative buckets)."""
    compat.record_episode("PPO", "agent_0", -600, 100)
    samples = _samples(compat.get_metrics_response(), "rl_training_episode_reward")
    labels = {"algorithm": "PPO", "agent_id": "agent_0"}

    def bucket(le: str) -> float:
        return samples[("rl_training_episode_reward_bucket", frozenset({**labels, "le": le}.items()))]

    assert bucket("-1000.0") == 0.0
    assert bucket("-500.0") == 1.0
    assert bucket("-100.0") == 1.0
    assert bucket("0.0") == 1.0
    assert bucket("10000.0") == 1.0
    assert bucket("+Inf") == 1.0


def test_episode_reward_has_sum_and_count():
    """rl_training_episode_reward exposes _sum and _count, also when the sum is negative."""
    compat.record_episode("PPO", "agent_0", -600, 100)
    compat.record_episode("PPO", "agent_0", -50, 10)
    samples = _samples(compat.get_metrics_response(), "rl_training_episode_reward")
    labels = frozenset({"algorithm": "PPO", "agent_id": "agent_0"}.items())
    assert samples[("rl_training_episode_reward_sum", labels)] == -650.0
    assert samples[("rl_training_episode_reward_count", labels)] == 2.0


def test_le_label_texts_are_prometheus_client_formatted():
    """Bucket bounds are written as prometheus_client writes them: "10.0", "0.001", "-1000.0", "+Inf"."""
    compat.record_episode("PPO", "agent_0", 1, 5)
    compat.record_loss_metrics("PPO", policy_loss=0.5)
    text = compat.get_metrics_response()
    assert 'le="10.0"' in text
    assert 'le="0.001"' in text
    assert 'le="-1000.0"' in text
    assert 'le="+Inf"' in text
    les = {dict(labels)["le"] for name, labels in _samples(text, "rl_training_episode_length")
           if name.endswith("_bucket")}
    assert les == {"10.0", "50.0", "100.0", "200.0", "500.0", "1000.0", "2000.0", "5000.0", "+Inf"}
    les = {dict(labels)["le"] for name, labels in _samples(text, "rl_training_policy_loss") if name.endswith("_bucket")}
    assert les == {"0.001", "0.01", "0.1", "0.5", "1.0", "2.0", "5.0", "10.0", "+Inf"}


def test_no_created_samples_are_exposed():
    """otel-rl emits no ``*_created`` series (a deliberate difference from prometheus_client)."""
    script(compat)
    text = compat.get_metrics_response()
    assert "_created" not in text


def test_histogram_only_recording_is_exposed():
    """A process that only observed histograms (no counter or gauge yet) still exposes those histograms."""
    compat.record_loss_metrics("PPO", policy_loss=-0.25)
    samples = _samples(compat.get_metrics_response(), "rl_training_policy_loss")
    assert samples[("rl_training_policy_loss_count", frozenset({("algorithm", "PPO")}))] == 1.0
    assert samples[("rl_training_policy_loss_sum", frozenset({("algorithm", "PPO")}))] == -0.25
