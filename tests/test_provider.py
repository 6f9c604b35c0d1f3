"""Tests for otel_rl._internal.provider: the OpenTelemetry API's global MeterProvider exports through otel-rl.

The API lets a process set its global provider once, so the cases that need a fresh process (a provider the
application set first, ``global_provider: off``) run in subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry import metrics
from opentelemetry.metrics import Observation
from prometheus_client.parser import text_string_to_metric_families

import otel_rl
from otel_rl._internal.provider import PROXY

ROOT = Path(__file__).resolve().parent.parent
LOCAL = {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}}


def samples(handle: otel_rl.Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = handle.metrics_text().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def types(handle: otel_rl.Telemetry) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(handle.metrics_text().decode())}


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = os.environ.get("PYTHONPATH")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), **(env or {})}
    full_env.pop("OTEL_RL_WORKER_CONFIG", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=full_env)


def test_instruments_made_before_and_after_init_show_on_metrics():
    """Every instrument kind from opentelemetry.metrics.get_meter, made before or after init_telemetry, is on
    /metrics with its value, named as the collector names it (no suffix added)."""
    before = metrics.get_meter("my.trainer").create_counter("test_updates_total", description="updates")
    handle = otel_rl.init_telemetry(LOCAL)
    assert metrics.get_meter_provider() is PROXY
    meter = metrics.get_meter("my.trainer")
    before.add(3, {"learner": "0"})
    meter.create_up_down_counter("test_queue").add(-2)
    meter.create_histogram("test_latency", unit="s").record(0.3)
    meter.create_gauge("test_temperature").set(41.5, {"gpu.id": "0"})
    meter.create_observable_gauge("test_observed", [lambda options: [Observation(7, {"kind": "a"})]])
    meter.create_observable_counter("test_polled", [lambda options: [Observation(11)]])
    meter.create_observable_up_down_counter("test_level", [lambda options: [Observation(-4)]])
    meter.create_counter("test_plain").add(5)
    got = samples(handle)
    assert got[("test_updates_total", (("learner", "0"),))] == 3.0
    assert got[("test_queue", ())] == -2.0
    assert got[("test_latency_count", ())] == 1.0 and got[("test_latency_sum", ())] == 0.3
    assert got[("test_temperature", (("gpu_id", "0"),))] == 41.5
    assert got[("test_observed", (("kind", "a"),))] == 7.0
    assert got[("test_polled", ())] == 11.0
    assert got[("test_level", ())] == -4.0
    assert got[("test_plain", ())] == 5.0  # not test_plain_total: the push path adds no suffix either
    kinds = types(handle)
    assert kinds["test_updates"] == "counter" and kinds["test_plain"] == "unknown"
    assert kinds["test_latency"] == "histogram" and kinds["test_queue"] == "gauge"


def test_names_and_keys_are_escaped_as_the_collector_escapes_them():
    """A run of escaped characters in a name is one "_", one at the end is dropped, and a label key starting with a
    digit gets "key_": what the collector 0.165 wrote to Prometheus (test_collector_e2e compares both paths)."""
    handle = otel_rl.init_telemetry(LOCAL)
    meter = metrics.get_meter("my.trainer")
    meter.create_counter("test.odd..name-/x_total", unit="ms").add(2, {"0core": "a", "gpu..id": "b"})
    meter.create_gauge("test.trailing.", unit="By").set(9.0, {"x.-y": "c"})
    got = samples(handle)
    handle.shutdown(timeout=2)
    assert got[("test_odd_name_x_total", (("gpu__id", "b"), ("key_0core", "a")))] == 2.0
    assert got[("test_trailing", (("x__y", "c"),))] == 9.0


def test_instruments_follow_a_shutdown_and_a_new_init():
    """An instrument made once keeps exporting through the telemetry of a later init_telemetry, from zero; while
    no telemetry runs its measurements are dropped."""
    counter = metrics.get_meter("my.trainer").create_counter("test_swapped_total")
    first = otel_rl.init_telemetry(LOCAL)
    counter.add(2)
    assert samples(first)[("test_swapped_total", ())] == 2.0
    sdk_provider = first.meter_provider
    assert PROXY.delegate is sdk_provider
    first.shutdown(timeout=2)
    assert PROXY.delegate is None
    counter.add(100)  # no telemetry: dropped
    second = otel_rl.init_telemetry(LOCAL)
    assert second.meter_provider is not sdk_provider
    counter.add(1)
    assert samples(second)[("test_swapped_total", ())] == 1.0


def test_meter_provider_is_the_sdk_provider_of_the_handle():
    """Telemetry.meter_provider is the SDK MeterProvider its readers collect; an instrument on it is on /metrics."""
    from opentelemetry.sdk.metrics import MeterProvider

    handle = otel_rl.init_telemetry(LOCAL)
    assert isinstance(handle.meter_provider, MeterProvider)
    handle.meter_provider.get_meter("direct").create_counter("test_direct_total").add(4)
    assert samples(handle)[("test_direct_total", ())] == 4.0
    assert otel_rl.meter_provider() is PROXY


def test_repeated_get_meter_and_create_return_the_same_proxies():
    """get_meter(...).create_counter(...) in a loop adds to one instrument and keeps no growing list."""
    handle = otel_rl.init_telemetry(LOCAL)
    for _ in range(50):
        metrics.get_meter("loop").create_counter("test_loop_total").add(1)
    assert samples(handle)[("test_loop_total", ())] == 50.0
    meter = PROXY.get_meter("loop")
    assert meter is PROXY.get_meter("loop") and len(meter._instruments) == 1


def test_an_application_provider_set_first_is_named_with_what_to_do():
    """With an SDK MeterProvider already global, init_telemetry logs what to do and keeps it; strict mode raises;
    otel_rl.meter_provider() still exports through otel-rl."""
    code = """
        import logging, otel_rl
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        mine = MeterProvider()
        metrics.set_meter_provider(mine)
        config = {"prometheus": {"host": "127.0.0.1", "port": 0}}
        try:
            otel_rl.init_telemetry({**config, "strict": True})
        except otel_rl.ConfigError as exc:
            print("STRICT:", exc)
        handle = otel_rl.init_telemetry(config)
        assert metrics.get_meter_provider() is mine
        otel_rl.meter_provider().get_meter("x").create_counter("joined_total").add(2)
        print("TEXT:", [l for l in handle.metrics_text().decode().splitlines() if l.startswith("joined")])
        handle.shutdown(timeout=2)
        otel_rl.init_telemetry(config).shutdown(timeout=2)  # a re-init (a Tune trial, a notebook cell) again
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("otel-rl: the OpenTelemetry global MeterProvider is already set") == 1, result.stderr
    assert "STRICT: config key 'global_provider' has value 'install', but the OpenTelemetry global " \
           "MeterProvider is already set (a opentelemetry.sdk.metrics" in result.stdout
    assert "TEXT: ['joined_total 2.0']" in result.stdout
    assert "otel-rl: the OpenTelemetry global MeterProvider is already set" in result.stderr
    assert "otel_rl.meter_provider()" in result.stderr and "global_provider: off" in result.stderr
    assert "Overriding of current MeterProvider" not in result.stderr


def test_global_provider_off_leaves_the_global_provider_alone():
    """global_provider: off (or OTEL_RL_GLOBAL_PROVIDER=off) installs nothing; otel_rl.meter_provider() works."""
    code = """
        import otel_rl
        from opentelemetry import metrics
        handle = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
        print("GLOBAL:", metrics.get_meter_provider() is otel_rl.meter_provider())
        otel_rl.meter_provider().get_meter("x").create_counter("mine_total").add(2)
        print("TEXT:", [l for l in handle.metrics_text().decode().splitlines() if l.startswith("mine")])
    """
    result = run_python(code, {"OTEL_RL_GLOBAL_PROVIDER": "off"})
    assert result.returncode == 0, result.stderr
    assert "GLOBAL: False" in result.stdout and "TEXT: ['mine_total 2.0']" in result.stdout
    result = run_python(code)
    assert "GLOBAL: True" in result.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_after_fork_the_child_exports_only_its_own_measurements():
    """In a forked child the parent's provider is not used: measurements wait for the child's own telemetry, which
    shows only what the child recorded."""
    counter = metrics.get_meter("forked").create_counter("test_forked_total")
    otel_rl.init_telemetry(LOCAL)
    counter.add(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read)
            counter.add(100)  # no telemetry of its own yet: dropped
            child = otel_rl.init_telemetry(LOCAL)
            counter.add(1)
            value = samples(child)[("test_forked_total", ())]
            os.write(write, repr(value).encode())
            child.shutdown(timeout=2)
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        value = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert value == "1.0"
    assert samples(otel_rl.current())[("test_forked_total", ())] == 5.0


def test_a_synchronous_gauge_reports_its_last_value_in_every_collection():
    """A gauge set once is in every later collection (cumulative readers must keep it; SDK 1.39 alone would show it
    only once after each set), including values set before init; a bad value is dropped and counted."""
    from otel_rl import testing

    gauge = otel_rl.meter_provider().get_meter("gauges").create_gauge("test_kept")
    gauge.set(1.5, {"gpu": "0"})  # before init: kept (the API's own proxy, before any provider is set, drops it)
    handle = otel_rl.init_telemetry(LOCAL)
    gauge.set(2.5, {"gpu": "1"})
    for _ in range(3):
        got = samples(handle)
        assert got[("test_kept", (("gpu", "0"),))] == 1.5 and got[("test_kept", (("gpu", "1"),))] == 2.5
    gauge.set(float("nan"), {"gpu": "0"})
    gauge.set(3.0, ["not", "a", "mapping"])
    gauge.set(4.0, {"layers": [1, 2]})  # a sequence-valued attribute is a series of its own
    got = samples(handle)
    assert got[("test_kept", (("gpu", "0"),))] == 1.5 and got[("test_kept", (("layers", "[1,2]"),))] == 4.0
    assert testing.dropped("test_kept", "nan") == 1 and testing.dropped("test_kept", "bad_labels") == 1


@pytest.mark.parametrize("handled", [False, True], ids=["default-action", "turned-into-exit"])
def test_sigterm_turned_into_an_exit_exports_your_instruments(handled):
    """On SIGTERM at its default, otel-rl's handler makes the final export of your instruments and scalars (here to
    the console exporter) and the process dies of SIGTERM; with SIGTERM turned into sys.exit, the exit hook does."""
    code = f"""
        import signal, sys, time, otel_rl
        from opentelemetry import metrics
        if {handled}:
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        otel_rl.init_telemetry({{"exporters": ["console"], "otlp": {{"export_interval": 3600}}}})
        metrics.get_meter("x").create_counter("sigterm_updates_total").add(7)
        otel_rl.record_scalar("sigterm_scalar", 2.5)
        print("READY", flush=True)
        time.sleep(60)  # waits to be ended by the SIGTERM under test
    """
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    env.pop("OTEL_RL_WORKER_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        proc.terminate()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    exported = '"sigterm_updates_total"' in out and '"rl_training_custom_sigterm_scalar"' in out
    assert (proc.returncode, exported) == ((143, True) if handled else (-15, True)), (out[-2000:], err[-2000:])


def test_a_failing_collection_of_your_instruments_leaves_otel_rl_series_on_the_scrape(caplog, monkeypatch):
    """An observable callback whose attributes the SDK cannot take (a list, on SDKs before 1.4x) or that breaks
    the collection otherwise costs only your instruments on that scrape, logged once; otel-rl's series stay."""
    from otel_rl._internal.readers import PullReader

    handle = otel_rl.init_telemetry(LOCAL)
    otel_rl.record_episode("PPO", "a", 1.0, 10)

    def broken(self, *args, **kwargs):
        raise TypeError("unhashable type: 'list'")

    # What the SDK's collect raised on 1.39 for such an observation. monkeypatch, not an assignment back: collect
    # is the SDK's (inherited), and PullReader must not keep an override of it after this test.
    monkeypatch.setattr(PullReader, "collect", broken)
    text = handle.metrics_text().decode()
    handle.metrics_text()
    monkeypatch.undo()
    assert 'rl_training_episodes_total{agent_id="a",algorithm="PPO"} 1.0' in text
    assert caplog.text.count("collecting the instruments of other meters failed") == 1


def test_attributes_the_push_path_leaves_out_neither_break_the_scrape_nor_show_on_it():
    """An observable callback with a non-str attribute key or a None value (SDK 1.39 passes such attributes on
    uncleaned) is on /metrics without them, as the OTLP encoder and the collector leave them out, and otel-rl's own
    series stay on the scrape."""
    handle = otel_rl.init_telemetry(LOCAL)
    otel_rl.record_episode("PPO", "a", 1.0, 10)
    metrics.get_meter("my.trainer").create_observable_gauge(
        "test_odd_attributes", [lambda options: [Observation(2.0, {2: "b", "n": None, "k": "v"})]])  # type: ignore[dict-item]
    got = samples(handle)
    handle.shutdown(timeout=2)
    assert got[("rl_training_episodes_total", (("agent_id", "a"), ("algorithm", "PPO")))] == 1.0
    assert [(labels, value) for (name, labels), value in got.items() if name == "test_odd_attributes"] in (
        [((("k", "v"),), 2.0)],  # SDK 1.39: what this test is about
        [((("k", "v"), ("key_2", "b")), 2.0)],  # newer SDKs make the key the text "2" before otel-rl sees it
    )


def test_rendering_leaves_out_a_non_text_attribute_key_and_a_none_value():
    """families() itself, on data such as SDK 1.39 hands over: no TypeError, and no label the push path lacks."""
    from opentelemetry.sdk.metrics.export import Gauge, Metric, NumberDataPoint

    from otel_rl._internal.families import _other_family

    attributes = {7: "x", "n": None, "k": "v"}
    point = NumberDataPoint(attributes=attributes, start_time_unix_nano=0, time_unix_nano=1, value=3.0)  # type: ignore[arg-type]
    family = _other_family("test.gauge", Metric("test.gauge", "", "", Gauge(data_points=[point])))
    assert [(s.name, s.labels, s.value) for s in family.samples] == [("test_gauge", {"k": "v"}, 3.0)]


def test_families_converts_only_what_is_not_in_the_catalog():
    """families() leaves out a catalog metric and an instrument whose Prometheus family is a catalog family (the
    store's series have that name), so no caller filters; all_families() has every catalog family first."""
    from opentelemetry.sdk.metrics.export import (
        Gauge,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from otel_rl._internal.catalog import ALL_METRICS
    from otel_rl._internal.families import all_families, families

    def gauge(name: str) -> Metric:
        point = NumberDataPoint(attributes={"k": "v"}, start_time_unix_nano=0, time_unix_nano=1, value=1.0)
        return Metric(name, "", "", Gauge(data_points=[point]))

    scope = ScopeMetrics(InstrumentationScope("test"), [gauge("rl_training_sharpe_ratio"),
                                                        gauge("rl.training.win.rate"), gauge("my.gauge")], "")
    data = MetricsData([ResourceMetrics(Resource.create({}), [scope], "")])
    assert [f.name for f in families(data)] == ["my_gauge"]
    whole = all_families(data)
    assert [f.name for f in whole] == [spec.family for spec in ALL_METRICS] + ["my_gauge"]
    assert [s.value for f in whole if f.name == "rl_training_sharpe_ratio" for s in f.samples] == [1.0]


def test_attribute_values_that_are_not_utf8_keep_the_scrape_working():
    """Lone surrogates (os.fsdecode of bytes) in an attribute: a gauge keeps the value backslash-escaped, as the
    store does; an SDK instrument's attribute is left out on /metrics, as the OTLP encoder leaves it out. Either
    way otel-rl's series and the rest stay on the scrape."""
    handle = otel_rl.init_telemetry(LOCAL)
    otel_rl.record_episode("PPO", "a", 1.0, 10)
    meter = metrics.get_meter("my.trainer")
    meter.create_gauge("test_fs_gauge").set(1.0, {"run": os.fsdecode(b"run-\xff")})
    meter.create_counter("test_fs_total").add(2, {"run": os.fsdecode(b"run-\xff"), "k": "v"})
    got = samples(handle)
    handle.shutdown(timeout=2)
    assert got[("rl_training_episodes_total", (("agent_id", "a"), ("algorithm", "PPO")))] == 1.0
    assert got[("test_fs_gauge", (("run", "run-\\udcff"),))] == 1.0
    assert got[("test_fs_total", (("k", "v"),))] == 2.0


def test_text_in_a_sequence_attribute_is_written_as_the_collector_writes_it():
    """A sequence becomes compact JSON with non-ASCII kept and <, >, & not escaped: what the collector 0.165 wrote
    to Prometheus (test_collector_e2e compares both paths)."""
    handle = otel_rl.init_telemetry(LOCAL)
    metrics.get_meter("my.trainer").create_gauge("test_json_text").set(1.0, {"names": ["é", "a<b&c>"]})
    got = samples(handle)
    handle.shutdown(timeout=2)
    assert got[("test_json_text", (("names", '["é","a<b&c>"]'),))] == 1.0


def test_float_attributes_are_written_as_the_collector_writes_them():
    """Floats as pdata writes them (JavaScript's number text): an exponent below 1e-6 and from 1e21, NaN and
    +-Infinity; a sequence holding NaN, which JSON cannot write, gives no label. What the collector 0.165 wrote."""
    from otel_rl._internal.families import attribute_text

    written = [attribute_text(v) for v in (1.5e-7, 1e-6, 1e20, 1e21, -2.5e22, 0.1, 2.0, -0.0, float("nan"),
                                           float("inf"), float("-inf"), [1e-7, 1e21, 0.1, 5], [1.0, float("nan")])]
    assert written == ["1.5e-7", "0.000001", "100000000000000000000", "1e+21", "-2.5e+22", "0.1", "2", "-0", "NaN",
                       "Infinity", "-Infinity", "[1e-7,1e+21,0.1,5]", ""]
