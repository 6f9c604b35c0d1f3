"""The store renderer writes the bytes prometheus_client's encoders write for the same collection."""

from __future__ import annotations

import io
import random
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics.parser import text_fd_to_metric_families as openmetrics_parser
from prometheus_client.parser import text_fd_to_metric_families, text_string_to_metric_families

import otel_rl
from otel_rl._internal.store import REGISTRY

ACCEPTS = ("", "text/plain; version=0.0.4", "application/openmetrics-text; version=1.0.0",
           "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8")
TRICKY = ['plain', 'back\\slash', 'quo"te', 'new\nline', 'both\\"\n', '', ' ', 'ünïcødé ✓', '%s %d %%', '{x="1"}',
          'le', 'tab\tchar', '\\n literal', 'carriage\rreturn', 'crlf\r\n', '\r']


def random_label(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return rng.choice(TRICKY) + str(rng.randrange(3))
    alphabet = 'ab\\"\n\r%{}=,é😀 '
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))


def record_random(rng: random.Random, n: int) -> None:
    for _ in range(n):
        kind = rng.randrange(6)
        label, other = random_label(rng), random_label(rng)
        value = rng.choice([0.0, 1.0, -2.5, 1e6, 1234567.0, 3e-7, 1e22, -1e7, 0.1 + 0.2, rng.uniform(-1e3, 1e3)])
        if kind == 0:
            otel_rl.record_episode(label, other, value, abs(value))
        elif kind == 1:
            otel_rl.record_training_iteration(label, int(abs(value)) % 10**9, other)
        elif kind == 2:
            otel_rl.record_performance_metrics(label, other, {"sharpe_ratio": value, "win_rate": 0.5})
        elif kind == 3:
            otel_rl.record_loss_metrics(label, value, abs(value), value / 3)
        elif kind == 4:
            otel_rl.record_environment_steps(label, int(abs(value)) % 5000)
        else:
            otel_rl.record_training_error(label)


def reference(handle, accept: str) -> bytes:
    """What the endpoint served before the renderer: the SDK's collection through prometheus_client's encoder."""
    encoder, _ = choose_encoder(accept)
    return encoder(handle.scrape.registry)


@pytest.mark.parametrize("seed", range(6))
def test_matches_prometheus_client_encoders_on_random_series(seed):
    rng = random.Random(seed)
    handle = otel_rl.init_telemetry({"exporters": ["none"], "cardinality_limit": 100000})
    record_random(rng, 150)
    for accept in ACCEPTS:
        assert handle.metrics_text(accept) == reference(handle, accept), accept
    # Many observations in one series (counts past the small-number table) and series added after a scrape.
    for i in range(1500):
        otel_rl.record_episode("PPO", "many", float(i), 3.0)
    record_random(rng, 20)
    for accept in ACCEPTS:
        assert handle.metrics_text(accept) == reference(handle, accept), accept


def test_cache_follows_removed_series():
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_training_iteration("PPO", 1, "gone")
    assert b'run_id="gone"' in handle.metrics_text()
    otel_rl.testing.reset()
    otel_rl.record_training_iteration("PPO", 2, "kept")
    text = handle.metrics_text()
    assert b'run_id="gone"' not in text and b'run_id="kept"' in text
    assert text == reference(handle, "")


def test_empty_state_matches():
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    for accept in ACCEPTS:
        assert handle.metrics_text(accept) == reference(handle, accept)


def test_lone_surrogates_are_escaped_not_raised():
    """Lone surrogates render as the store's attributes escape them (as on the OTLP path), in both formats."""
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_episode("PPO", "bad\udcffagent", 1.0, 2.0)
    otel_rl.record_training_iteration("PPO", 3, "\ud800")
    for accept in ACCEPTS:
        text = handle.metrics_text(accept).decode("utf-8")
        assert 'agent_id="bad\\\\udcffagent"' in text  # a literal backslash, escaped in the exposition
        assert 'run_id="\\\\ud800"' in text
    families = {f.name: f for f in text_string_to_metric_families(handle.metrics_text().decode("utf-8"))}
    assert families["rl_training_episode_reward"].samples


def test_other_instruments_of_the_provider_still_show():
    """Instruments that other code creates on otel-rl's MeterProvider come after the catalog metrics."""
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    meter = handle.meter_provider.get_meter("someone.else")
    meter.create_observable_gauge("my_gpu_temperature", [lambda options: [
        __import__("opentelemetry.metrics", fromlist=["Observation"]).Observation(61.0, {"gpu": "0"})]])
    otel_rl.record_environment_steps("PPO", 5)
    for accept in ACCEPTS:
        text = handle.metrics_text(accept)
        assert text == reference(handle, accept)
        assert b'my_gpu_temperature{gpu="0"} 61.0' in text


def test_collect_others_leaves_out_only_otel_rl_metrics():
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_episode("PPO", "a", 1.0, 2.0)
    others = handle.pull_reader.collect_others()
    names = [m.name for rm in others.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert names == []
    handle.pull_reader.collect()  # a plain collection afterwards is complete again
    names = [m.name for rm in handle.pull_reader.latest.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics]
    assert "rl_training_episode_reward" in names and "rl_training_episodes_total" in names


def test_scrape_does_not_hold_a_histogram_lock_for_the_whole_snapshot():
    """A histogram with many series is read a chunk at a time: a recorder waits for one chunk, not the scrape."""
    handle = otel_rl.init_telemetry({"exporters": ["none"], "cardinality_limit": 20000})
    reward = REGISTRY["rl_training_episode_reward"]
    for i in range(5000):
        reward.observe(("PPO", f"a{i}"), 1.0)
    acquisitions = []
    lock = reward.lock

    class Counting:
        def __enter__(self):
            acquisitions.append(1)
            return lock.__enter__()

        def __exit__(self, *exc):
            return lock.__exit__(*exc)

    histogram_cls = type(reward)
    histogram_cls.lock.__set__(reward, Counting())
    try:
        handle.metrics_text()
    finally:
        histogram_cls.lock.__set__(reward, lock)
    assert len(acquisitions) >= 5000 // 256


def test_generate_latest_reference_escapes_like_the_renderer():
    """Guard for the reference itself: prometheus_client escapes label values as the renderer's tests assume."""
    registry = CollectorRegistry()
    Gauge("g", "h", ["k"], registry=registry).labels('a\\b"c\nd').set(1)
    assert b'g{k="a\\\\b\\"c\\nd"} 1.0' in generate_latest(registry)


def test_overflow_series_match():
    """Past the cardinality limit the overflow series (its own label layout) renders as the collector path does."""
    handle = otel_rl.init_telemetry({"exporters": ["none"], "cardinality_limit": 3})
    for i in range(6):
        otel_rl.record_episode("PPO", f"agent-{i}", -1.5 * i, 10 + i)
        otel_rl.record_training_iteration("PPO", i, f"run-{i}")
    otel_rl.record_data_load_time(0.25)
    text = handle.metrics_text()
    assert b'rl_training_episode_reward_bucket{le="+Inf",otel_metric_overflow="true"} 3.0' in text
    assert b'rl_training_current_iteration{otel_metric_overflow="true"} 5.0' in text
    for accept in ACCEPTS:
        assert handle.metrics_text(accept) == reference(handle, accept), accept


@pytest.mark.parametrize("accept", ACCEPTS)
def test_carriage_returns_in_label_values_do_not_break_line_based_readers(accept):
    """A label value with a carriage return is exposed as the text ``\\r``: no raw CR on the wire (a reader with
    universal newlines, such as a Python text file, split the line there and failed to parse), and no ``\\r``
    escape, which the formats do not have (promtool refuses it)."""
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_episode("PPO", "run\r1", 1.0, 3)
    otel_rl.record_episode("PPO", "crlf\r\nrun", 2.0, 3)
    body = handle.metrics_text(accept)
    assert b"\r" not in body
    parse = openmetrics_parser if "openmetrics" in accept else text_fd_to_metric_families
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8")  # universal newlines, as open() reads a file
    if "openmetrics" in accept:  # the OpenMetrics parser refuses _sum beside negative buckets (see families.py)
        text = io.StringIO("".join(line for line in text if "episode_reward" not in line))
    agents = {s.labels.get("agent_id") for f in parse(text) for s in f.samples}
    assert {"run\\r1", "crlf\\r\nrun"} <= agents
    if "openmetrics" not in accept:
        promtool = shutil.which("promtool")
        assert promtool, "promtool not found: run `make test` (it installs Prometheus, which ships promtool)"
        checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert b"parsing error" not in checked.stdout + checked.stderr, checked


@pytest.mark.integration
def test_a_carriage_return_in_a_label_is_the_same_text_on_the_push_path():
    """The store keeps a carriage return as the two characters ``\\r``, so the OTLP points carry the label the
    endpoint shows, not a raw CR that the pull path cannot expose."""
    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_episode("PPO", "run\r1", 1.0, 3)
    handle.pull_reader.collect()
    agents = {point.attributes.get("agent_id") for rm in handle.pull_reader.latest.resource_metrics
              for sm in rm.scope_metrics for m in sm.metrics if m.name == "rl_training_episodes_total"
              for point in m.data.data_points}
    assert agents == {"run\\r1"}
    assert b'agent_id="run\\\\r1"' in handle.metrics_text()


def test_prometheus_scrapes_a_label_value_with_a_carriage_return(tmp_path):
    """A real Prometheus scrapes the endpoint with such a label value: the target is up and the series is there,
    with the value as the pull path shows it (``\\r`` as two characters)."""
    from procs import Prometheus, wait_until

    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
    otel_rl.record_episode("PPO", "run\r1", 1.0, 3)
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{handle.prometheus_port}"]).start()
    try:
        wait_until(lambda: prometheus.latest('rl_training_episodes_total{agent_id="run\\\\r1"}'), 60,
                   what="the series with a carriage return in Prometheus")
        assert [value for _, value in prometheus.latest("up")] == [1.0]
    finally:
        prometheus.stop()
