"""End-to-end tests with real processes: the SDK, a real OpenTelemetry Collector and a real Prometheus.

Every test starts its own Prometheus and collector on free loopback ports (``procs``) and stops them in a
``finally``, also when it fails. The training run state is process-global, so the export paths a test compares run
one after the other in this process with ``otel_rl.testing.reset()`` between them, or in subprocesses.

What "the truth" is: at the end of a run, ``Telemetry.metrics_text()`` renders the values the SDK holds (the pull
reader exists on every path). Prometheus must end up holding exactly those values, series by series; any missing,
extra or different series fails the test with the series named.

Labels that differ between the paths by design and are ignored when series are compared:

* ``job`` and ``instance``: on the pull path Prometheus sets them from the scrape job's ``job_name`` and the target
  address; on the push path the remote-write exporter derives them from the resource (``service.name`` and
  ``service.instance.id``).
* ``component`` and ``service``: static labels of the seed's scrape job (``collector/prometheus.yml``), which
  Prometheus adds to every scraped series; the push path has no scrape job, so they cannot be there.

``le`` is compared as a number: the pull path's exposition writes ``10.0``, the remote-write exporter ``10``.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import otel_rl
from otel_rl import testing

import facts
import procs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PULL_JOB = "wealtharena_rl_training"
#: Set by Prometheus (job, instance) or by the seed's scrape job (component, service); see the module docstring.
IGNORED_LABELS = frozenset({"job", "instance", "component", "service"})
#: Series whose value is read from the clock during the run, so two runs of the same script cannot agree on them.
#: They are still compared exactly against each run's own truth; across paths only their presence is compared.
WALL_CLOCK = frozenset({"rl_training_start_timestamp", "rl_training_duration_seconds_sum",
                        "rl_training_data_load_time_seconds_sum", "rl_training_env_steps_per_second"})
SELECTOR = '{{__name__=~"{names}",{match}}}'
OTEL_RL_NAMES = "rl_training_.+|otel_rl_.+"

Key = tuple[str, tuple[tuple[str, str], ...]]


SEED = facts.load()["metrics"]  # the seed's 21 metrics (vendored facts file)
assert len(SEED) == 21


# -- series as comparable data -------------------------------------------------------------------------------------


def _key(name: str, labels: Mapping[str, str]) -> Key:
    items = []
    for k, v in labels.items():
        if k in IGNORED_LABELS or k == "__name__":
            continue
        items.append((k, repr(float(v)) if k == "le" else v))
    return name, tuple(sorted(items))


def _show(key: Key) -> str:
    name, labels = key
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


def truth(handle: otel_rl.Telemetry) -> dict[Key, float]:
    """What the SDK holds now, as ``{series: value}`` (the pull exposition, parsed)."""
    return parse_exposition(handle.metrics_text().decode())


def parse_exposition(text: str) -> dict[Key, float]:
    values: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[_key(sample.name, sample.labels)] = float(sample.value)
    return values


def in_prometheus(prom: procs.Prometheus, names: str = OTEL_RL_NAMES, **match: str) -> dict[Key, float]:
    """The last value of every series named by the regex ``names`` in Prometheus whose labels equal ``match``."""
    selector = SELECTOR.format(names=names, match=",".join(f'{k}="{v}"' for k, v in match.items()))
    values: dict[Key, float] = {}
    for labels, value in prom.latest(selector):
        key = _key(labels["__name__"], labels)
        assert key not in values, f"two series for {_show(key)} with {match}: ignored labels are not unique"
        values[key] = value
    return values


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def differences(actual: Mapping[Key, float], expected: Mapping[Key, float], *,
                skip_values: frozenset[str] = frozenset()) -> list[str]:
    """One line per series that is missing, extra, or has another value (unless its name is in skip_values)."""
    lines = [f"missing {_show(k)} (expected {expected[k]!r})" for k in sorted(expected.keys() - actual.keys())]
    lines += [f"unexpected {_show(k)} = {actual[k]!r}" for k in sorted(actual.keys() - expected.keys())]
    for k in sorted(expected.keys() & actual.keys()):
        if k[0] not in skip_values and not _same(actual[k], expected[k]):
            lines.append(f"{_show(k)} = {actual[k]!r}, expected {expected[k]!r}")
    return lines


def await_values(prom: procs.Prometheus, expected: Mapping[Key, float], what: str, timeout: float = 30.0,
                 logs: Callable[[], str] | None = None, names: str = OTEL_RL_NAMES,
                 **match: str) -> dict[Key, float]:
    """Poll Prometheus until the series matching ``match`` are exactly ``expected``; fail naming the differences."""
    deadline = time.monotonic() + timeout
    while True:
        actual = in_prometheus(prom, names, **match)
        diff = differences(actual, expected)
        if not diff:
            return actual
        if time.monotonic() > deadline:
            extra = f"\n--- logs ---\n{logs()}" if logs else ""
            raise AssertionError(f"{what}: after {timeout:.0f} s Prometheus ({match}) differs from the SDK's "
                                 f"values in {len(diff)} series:\n  " + "\n  ".join(diff[:60]) + extra)
        time.sleep(0.25)  # poll interval of this wait on Prometheus's values


# -- processes -------------------------------------------------------------------------------------------------------


class Stack:
    """Prometheus and collector processes of one test; ``close`` stops them all (the fixture calls it)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[procs.Prometheus | procs.Collector] = []

    def prometheus(self, **kwargs) -> procs.Prometheus:
        prom = procs.Prometheus(self.workdir, **kwargs)
        self.processes.append(prom)
        return prom.start()

    def collector(self, prom: procs.Prometheus, start: bool = True) -> procs.Collector:
        collector = procs.Collector(self.workdir, prom.remote_write_url)
        self.processes.append(collector)
        return collector.start() if start else collector

    def logs(self) -> str:
        parts = []
        for log in sorted(self.workdir.glob("*.log")):
            parts.append(f"== {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        errors = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as exc:  # noqa: BLE001 (stop the others anyway)
                errors.append(exc)
        print(self.logs())  # shown by pytest for a failing test only
        if errors:
            raise errors[0]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.close()


def otlp_config(endpoint: str, protocol: str, service_name: str, interval: float = 1.0,
                timeout: float = 5.0) -> dict:
    return {"exporters": ["otlp"], "service_name": service_name,
            "otlp": {"endpoint": endpoint, "protocol": protocol, "export_interval": interval, "timeout": timeout}}


def endpoint_of(collector: procs.Collector, protocol: str) -> str:
    return collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint


def subprocess_env() -> dict[str, str]:
    """The environment for a Python subprocess that imports otel_rl from this checkout (installed or not)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def instance_id(pid: int | None = None) -> str:
    """The SDK's service.instance.id, which the remote-write exporter turns into ``instance``."""
    return f"{socket.gethostname()}-{pid or os.getpid()}"


# -- workloads -------------------------------------------------------------------------------------------------------


def scripted_run() -> None:
    """A deterministic sequence of record_* calls giving every seed metric data (and one dropped value)."""
    ppo, dqn, a2c = "PPO", "DQN", "A2C"
    otel_rl.record_training_start(ppo, "scripted-ppo")
    otel_rl.record_data_load_time(0.75)
    otel_rl.record_data_load_time(3.0)
    for it in range(1, 6):
        otel_rl.record_training_iteration(ppo, it, "scripted-ppo")
        for agent, sign in (("agent_a", 1.0), ("agent_b", -1.0)):
            otel_rl.record_episode(ppo, agent, reward=sign * (150.5 * it - 40.25), length=37 * it)
        otel_rl.record_episode_metrics(ppo, "scripted-ppo", reward_mean=12.5 * it, length_mean=37.0 * it)
        otel_rl.record_loss_metrics(ppo, policy_loss=-0.02 * it, value_loss=0.3 * it, entropy=1.5 - 0.125 * it)
        otel_rl.record_environment_steps(ppo, 74 * it)
    otel_rl.record_performance_metrics(ppo, "agent_a", {"sharpe_ratio": 1.25, "max_drawdown": 12.5,
                                                        "win_rate": 0.65, "total_return": 0.125})
    otel_rl.record_performance_metrics(ppo, "agent_b", {"sharpe_ratio": -0.5, "max_drawdown": 40.0,
                                                        "win_rate": 0.25, "total_return": -0.375})
    otel_rl.record_training_error("timeout")
    otel_rl.record_loss_metrics(ppo, policy_loss=float("nan"))  # dropped: otel_rl_dropped_values_total
    otel_rl.record_training_failed(ppo, "oom")
    otel_rl.record_training_start(dqn, "scripted-dqn")
    otel_rl.record_training_complete(dqn, 420.0, "scripted-dqn")
    otel_rl.record_training_start(a2c, "scripted-a2c")  # still running: rl_training_active{A2C} = 1


def short_demo(config: Mapping) -> None:
    """A real (short) CartPole run through the decorators and the Gymnasium wrapper, with one injected error."""
    from otel_rl.demo.run import run_demo

    run_demo(iterations=4, episodes_per_iter=5, seed=11, config=config, inject_failure=True, progress=False,
             shutdown=False)


def record_iteration(i: int, algorithm: str = "PPO", run_id: str = "loop") -> None:
    """One iteration of a training loop: the record_* calls a trainer makes, with deterministic values."""
    otel_rl.record_training_iteration(algorithm, i, run_id)
    for agent in ("agent_a", "agent_b"):
        otel_rl.record_episode(algorithm, agent, reward=(i % 7) * 37.5 - 120.0, length=10 + i % 50)
    otel_rl.record_episode_metrics(algorithm, run_id, reward_mean=(i % 7) * 37.5 - 120.0, length_mean=10 + i % 50)
    otel_rl.record_loss_metrics(algorithm, policy_loss=0.01 * (i % 9) - 0.03, value_loss=0.5 + i % 5, entropy=1.25)
    otel_rl.record_environment_steps(algorithm, 100 + i % 13)
    otel_rl.record_performance_metrics(algorithm, "agent_a", {"sharpe_ratio": (i % 11) / 4, "win_rate": 0.5})


def training_loop(seconds: float, start: int = 1, step: Callable[[int], None] = record_iteration,
                  pause: float = 0.01, on_tick: Callable[[float], bool] | None = None) -> tuple[int, list[float]]:
    """Iterate ``step`` for ``seconds`` (or until ``on_tick(elapsed)`` returns True).

    Returns the next iteration number and the time each ``step`` took. ``pause`` stands for the training work.
    """
    durations: list[float] = []
    started = time.monotonic()
    i = start
    while True:
        t = time.perf_counter()
        step(i)
        durations.append(time.perf_counter() - t)
        i += 1
        time.sleep(pause)  # a training step's pace: periodic exports happen between steps
        elapsed = time.monotonic() - started
        if (on_tick(elapsed) if on_tick else False) or elapsed >= seconds:
            return i, durations


# -- 1. the same series on every path --------------------------------------------------------------------------------


def test_same_series_on_pull_grpc_and_http_paths(stack: Stack) -> None:
    import gymnasium as gym

    gym.make("CartPole-v1").close()  # warm up: the demo's data-load timing must not include first-time imports

    # (a) pull: Prometheus scrapes the SDK's endpoint (port 0), linger lets it scrape the final values.
    pull_config = {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0, "linger": 10}}
    handle = otel_rl.init_telemetry(pull_config)
    port = handle.prometheus_port
    prom = stack.prometheus(scrape_targets=[f"127.0.0.1:{port}"])
    scripted_run()
    short_demo(pull_config)
    expected = {"pull": truth(handle)}
    assert handle.shutdown(timeout=15), "shutdown with linger did not see a last scrape"
    actual = {"pull": await_values(prom, expected["pull"], "pull path", job=PULL_JOB, instance=f"127.0.0.1:{port}",
                                   logs=stack.logs)}

    # (b) OTLP gRPC and (c) OTLP HTTP through the collector into the same Prometheus (remote write).
    collector = stack.collector(prom)
    for protocol in ("grpc", "http/protobuf"):
        testing.reset()
        name = "e2e-" + protocol.split("/")[0]
        config = otlp_config(endpoint_of(collector, protocol), protocol, name)
        handle = otel_rl.init_telemetry(config)
        scripted_run()
        short_demo(config)
        expected[protocol] = truth(handle)
        assert handle.shutdown(timeout=15), f"{protocol}: shutdown did not flush in time"
        actual[protocol] = await_values(prom, expected[protocol], f"{protocol} path", job=name,
                                        instance=instance_id(), logs=stack.logs)

    print({path: len(values) for path, values in actual.items()}, "series per path")
    # Every seed metric has data on every path (a histogram: observations; a counter or gauge: a non-zero series).
    for path, values in actual.items():
        for metric in SEED:
            name = metric["name"]
            if metric["type"] == "histogram":
                counts = [v for (n, _), v in values.items() if n == name + "_count"]
                assert counts and max(counts) > 0, f"{path}: no observations in {name}"
            else:
                found = [v for (n, _), v in values.items() if n == name]
                assert found and any(v != 0 for v in found), f"{path}: no non-zero series of {name}"
        assert any(n == "otel_rl_dropped_values_total" for n, _ in values), f"{path}: no dropped-values series"

    # Same series names, label keys and values (ignoring job/instance/component/service), and the same values;
    # clock-derived values are only compared with each run's own truth (done above, exactly).
    for path in ("grpc", "http/protobuf"):
        diff = differences(actual[path], actual["pull"], skip_values=WALL_CLOCK)
        assert not diff, f"{path} path differs from the pull path:\n  " + "\n  ".join(diff)

    # Only the labels of the seed (plus le) reach Prometheus, besides those ignored above.
    allowed = {m["name"]: set(m["labels"]) for m in SEED}
    for (name, labels) in actual["grpc"]:
        base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        if base in allowed:
            assert {k for k, _ in labels} - {"le"} == allowed[base], f"label keys of {name}: {labels}"
    # The resource (service.*, the SDK's telemetry.sdk.*, the process role) becomes job and instance on every
    # series; the other resource attributes live only in one target_info series per process (docs/multiprocess.md).
    infos = prom.query("target_info")
    assert sorted(i["metric"]["job"] for i in infos) == ["e2e-grpc", "e2e-http"], infos
    assert all(i["metric"]["process_pid"] for i in infos)
    pushed = prom.series('{job=~"e2e-.+", __name__!="target_info"}')
    assert pushed and not [s for s in pushed if any(k.startswith(("telemetry_", "service_", "process_", "rl_"))
                                                     for k in s)]


def your_instruments() -> None:
    """Instruments of every kind from the OpenTelemetry API's global provider, record_scalar, and a histogram
    with overridden buckets: what a trainer records beside otel-rl's catalog."""
    from opentelemetry import metrics
    from opentelemetry.metrics import Observation

    meter = metrics.get_meter("app.trainer")
    meter.create_counter("app_updates_total", description="updates").add(3, {"learner": "0"})
    meter.create_counter("app_plain").add(5)
    meter.create_up_down_counter("app_queue").add(-2, {"queue.name": "replay"})
    latency = meter.create_histogram("app_latency", unit="s")
    for value in (0.3, 7.0, 120.0):
        latency.record(value, {"phase": "update"})
    meter.create_gauge("app_temperature").set(41.5, {"gpu.id": "0"})
    meter.create_gauge("app_typed").set(1.0, {"flag": True, "count": 3, "ratio": 0.5, "whole": 2.0, "big": 1e20,
                                              "layers": [1, 2], "names": ["a", "b"], "mixed": [True, 1.5]})
    meter.create_observable_gauge("app_observed", [lambda options: [Observation(7, {"kind": "a"})]])
    meter.create_observable_counter("app_polled_total", [lambda options: [Observation(11)]])
    meter.create_observable_up_down_counter("app_level", [lambda options: [Observation(-4)]])
    # Names and keys the collector's escaping does more to than replace a character: runs of characters it
    # escapes become one "_", a trailing one is dropped, a label starting with a digit gets "key_".
    meter.create_counter("app.odd..name-/x_total", unit="ms").add(2, {"0core": "a", "gpu..id": "b"})
    meter.create_gauge("app.trailing.", unit="By").set(9.0, {"x.-y": "c"})
    # A None attribute value: the OTLP encoder sends it empty (newer SDKs) or leaves it out (1.39); no label.
    meter.create_observable_gauge("app_none_attribute", [lambda options: [Observation(1, {"n": None, "k": "v"})]])
    # Not UTF-8 (os.fsdecode of bytes): a gauge keeps it escaped, the encoder leaves a counter's attribute out.
    # Text in a sequence: Go's JSON keeps non-ASCII as it is and escapes <, > and &.
    meter.create_gauge("app_json_text").set(1.0, {"names": ["é", "a<b&c>"]})
    meter.create_gauge("app_float_text").set(1.0, {"small": 1.5e-7, "huge": 1e21, "seq": [1e-7, 1e21, 0.1, 5],
                                                   "nan": float("nan"), "inf": float("-inf"), "pinf": float("inf"),
                                                   "seq_nan": [1.0, float("nan")]})
    meter.create_gauge("app_fs_gauge").set(1.0, {"run": os.fsdecode(b"run-\xff")})
    meter.create_counter("app_fs_total").add(2, {"run": os.fsdecode(b"run-\xff"), "k": "v"})
    otel_rl.record_scalar("eval/success_rate", 0.8, algorithm="PPO", run_id="own")
    otel_rl.record_scalar("eval/success_rate", -1.5, algorithm="DQN", run_id="own")
    for loss in (0.5, 42.0, 420.0, 4200.0):  # all past the catalog's last bound (10): here in their own buckets
        otel_rl.record_loss_metrics("PPO", value_loss=loss)


YOUR_NAMES = "app_.+|rl_training_custom_.+|rl_training_value_loss_.+"
YOUR_BUCKETS = {"rl_training_value_loss": [1, 10, 100, 1000]}


def test_your_instruments_and_scalars_are_the_same_series_on_pull_and_push(stack: Stack) -> None:
    """Every instrument kind made through the global MeterProvider, record_scalar gauges and a bucket override
    reach Prometheus as the same series with the same values by scrape and through the collector."""
    pull_config = {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0, "linger": 10},
                   "buckets": YOUR_BUCKETS}
    handle = otel_rl.init_telemetry(pull_config)
    port = handle.prometheus_port
    prom = stack.prometheus(scrape_targets=[f"127.0.0.1:{port}"])
    your_instruments()
    expected = {"pull": {k: v for k, v in truth(handle).items() if re.fullmatch(YOUR_NAMES, k[0])}}
    assert handle.shutdown(timeout=15), "shutdown with linger did not see a last scrape"
    actual = {"pull": await_values(prom, expected["pull"], "pull path", names=YOUR_NAMES, job=PULL_JOB,
                                   instance=f"127.0.0.1:{port}", logs=stack.logs)}
    collector = stack.collector(prom)
    testing.reset()
    config = {**otlp_config(endpoint_of(collector, "grpc"), "grpc", "e2e-yours"), "buckets": YOUR_BUCKETS}
    handle = otel_rl.init_telemetry(config)
    your_instruments()
    expected["grpc"] = {k: v for k, v in truth(handle).items() if re.fullmatch(YOUR_NAMES, k[0])}
    assert handle.shutdown(timeout=15), "shutdown did not flush in time"
    actual["grpc"] = await_values(prom, expected["grpc"], "grpc path", names=YOUR_NAMES, job="e2e-yours",
                                  instance=instance_id(), logs=stack.logs)
    diff = differences(actual["grpc"], actual["pull"])
    assert not diff, "the push path differs from the pull path:\n  " + "\n  ".join(diff)
    names = {name for name, _ in actual["pull"]}
    assert {"app_updates_total", "app_plain", "app_queue", "app_latency_bucket", "app_temperature", "app_observed",
            "app_polled_total", "app_level", "rl_training_custom_eval_success_rate"} <= names, names
    values = actual["pull"]
    assert values[("app_temperature", (("gpu_id", "0"),))] == 41.5
    [typed] = [dict(labels) for name, labels in values if name == "app_typed"]
    assert typed == {"flag": "true", "count": "3", "ratio": "0.5", "whole": "2", "big": "100000000000000000000",
                     "layers": "[1,2]", "names": '["a","b"]', "mixed": "[true,1.5]"}, typed
    assert values[("rl_training_custom_eval_success_rate", (("algorithm", "DQN"), ("run_id", "own")))] == -1.5
    loss_buckets = {dict(labels)["le"]: v for (name, labels), v in values.items()
                    if name == "rl_training_value_loss_bucket"}
    assert loss_buckets == {"1.0": 1, "10.0": 1, "100.0": 2, "1000.0": 3, "inf": 4}
    print({path: len(v) for path, v in actual.items()}, "series of your own per path")


# -- 2. collector not running when training starts -------------------------------------------------------------------


def test_collector_down_at_start_does_not_slow_training_and_totals_arrive_later(stack: Stack) -> None:
    prom = stack.prometheus()
    collector = stack.collector(prom, start=False)  # ports reserved, nothing listening yet

    otel_rl.init_telemetry({"exporters": ["none"]})
    otel_rl.record_training_start("PPO", "loop")
    _, baseline = training_loop(1.5)
    otel_rl.current().shutdown(timeout=2)
    testing.reset()

    handle = otel_rl.init_telemetry(otlp_config(collector.grpc_endpoint, "grpc", "e2e-late", timeout=2.0))
    otel_rl.record_training_start("PPO", "loop")
    started = time.monotonic()
    _, durations = training_loop(3.5)  # > 3 export intervals with nothing listening
    wall = time.monotonic() - started
    otel_rl.record_training_complete("PPO", 3.5, "loop")
    expected = truth(handle)

    base_median, down_median = statistics.median(baseline), statistics.median(durations)
    print(f"per-iteration record time: baseline median {base_median * 1e6:.0f} us, collector down median "
          f"{down_median * 1e6:.0f} us, max {max(durations) * 1e3:.1f} ms, {len(durations)} iterations in {wall:.2f} s")
    assert down_median <= max(3 * base_median, base_median + 0.002), (
        f"training slowed down while the collector is down: median {down_median * 1e6:.0f} us per iteration vs "
        f"{base_median * 1e6:.0f} us without an exporter")
    assert max(durations) < 0.5, f"an iteration blocked for {max(durations):.2f} s while the collector was down"
    assert wall < 3.5 + 1.0
    assert not in_prometheus(prom, job="e2e-late"), "data arrived although no collector was running"

    collector.start()
    await_values(prom, expected, "after the collector started", timeout=30, logs=stack.logs, job="e2e-late")
    assert handle.shutdown(timeout=10)


# -- 3. collector killed in the middle of a run ----------------------------------------------------------------------


def test_collector_killed_mid_run_then_restarted_totals_are_exact(stack: Stack) -> None:
    prom = stack.prometheus()
    collector = stack.collector(prom)
    handle = otel_rl.init_telemetry(otlp_config(collector.http_endpoint, "http/protobuf", "e2e-kill", timeout=2.0))
    otel_rl.record_training_start("PPO", "loop")

    state: dict[str, float] = {}
    last_check = [0.0]

    def tick(elapsed: float) -> bool:
        if "killed" not in state:
            if elapsed - last_check[0] >= 0.25:
                last_check[0] = elapsed
                seen = in_prometheus(prom, job="e2e-kill")
                if seen:  # exports are flowing: kill it now, mid-run
                    collector.stop(kill=True)
                    state["killed"] = elapsed
                    state["iterations_at_kill"] = seen[("rl_training_iterations_total", (("algorithm", "PPO"),))]
        elif "restarted" not in state:
            if elapsed - state["killed"] >= 2.5:  # down for > 2 export intervals
                collector.start()
                state["restarted"] = time.monotonic() - started
        elif elapsed - state["restarted"] >= 1.0:
            return True
        return False

    started = time.monotonic()
    next_i, _ = training_loop(30, on_tick=tick)
    assert "restarted" in state, f"the collector was not killed and restarted in time: {state}\n{stack.logs()}"
    otel_rl.record_training_complete("PPO", 5.0, "loop")
    expected = truth(handle)
    total_iterations = expected[("rl_training_iterations_total", (("algorithm", "PPO"),))]
    assert total_iterations == next_i - 1
    assert state["iterations_at_kill"] < total_iterations
    await_values(prom, expected, "after the collector was killed and restarted", logs=stack.logs, job="e2e-kill")
    assert handle.shutdown(timeout=10)


# -- 4. Prometheus down while the collector runs ---------------------------------------------------------------------


def test_prometheus_down_then_back_final_values_arrive_from_collector_queue(stack: Stack) -> None:
    prom = stack.prometheus()
    collector = stack.collector(prom)
    handle = otel_rl.init_telemetry(otlp_config(collector.grpc_endpoint, "grpc", "e2e-promdown"))
    otel_rl.record_training_start("PPO", "loop")

    def flowing(elapsed: float) -> bool:
        return elapsed >= 1.0 and bool(in_prometheus(prom, job="e2e-promdown"))

    next_i, _ = training_loop(20, on_tick=flowing)
    assert in_prometheus(prom, job="e2e-promdown"), "no data reached Prometheus before it was stopped"
    prom.stop()
    next_i, _ = training_loop(2.0, start=next_i)  # the SDK keeps exporting; the collector cannot write
    otel_rl.record_training_complete("PPO", 3.0, "loop")
    expected = truth(handle)
    # The SDK goes away: from here on the final values exist only in the collector's retry queue.
    assert handle.shutdown(timeout=10), "the collector did not accept the final export"
    time.sleep(1.0)  # time passes with the final values only in the collector's retry queue
    prom.start()  # same port, configuration and TSDB directory
    await_values(prom, expected, "after Prometheus came back", timeout=40, logs=stack.logs, job="e2e-promdown")
    assert collector.process is not None and collector.process.alive()
    print(collector.process.output())


def _minutes(duration: str) -> float:
    units = {"s": 1 / 60, "m": 1.0, "h": 60.0}
    return float(duration[:-1]) * units[duration[-1]]


@pytest.mark.parametrize("config", ["otelcol-config.yaml", "otelcol-config-secure.yaml"])
def test_shipped_configs_keep_a_write_ahead_log_and_accept_late_samples(config: str) -> None:
    """What the outage tests shorten, the shipped files configure for 10 minutes and more (a check of the files;
    the outages themselves are the tests above and below): the remote-write
    write-ahead log (kept until Prometheus took a request, whatever the retry time), and Prometheus accepting
    samples that arrive up to 30 minutes late (collector/prometheus.yml, and the tests' Prometheus)."""
    import yaml

    exporter = yaml.safe_load((ROOT / "collector" / config).read_text())["exporters"]["prometheus_remote_write"]
    assert exporter["wal"]["directory"] == "${env:OTELCOL_WAL_DIRECTORY:-./otelcol-rl-wal}"
    assert exporter["retry_on_failure"]["enabled"] is True
    shipped = yaml.safe_load((ROOT / "collector" / "prometheus.yml").read_text())
    window = shipped["storage"]["tsdb"]["out_of_order_time_window"]
    assert _minutes(window) >= 10
    with procs.workdir() as wd:
        tests = yaml.safe_load(procs.Prometheus(wd).config_path.read_text())
    assert tests["storage"]["tsdb"]["out_of_order_time_window"] == window


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_restarted_while_prometheus_is_down_loses_nothing(stack: Stack, protocol: str) -> None:
    """Prometheus down, the run ends (its final export accepted by the collector), the collector restarts during
    the outage: the shipped config's write-ahead log keeps what the collector accepted, Prometheus takes the late
    samples (out_of_order_time_window), and every total arrives exactly."""
    prom = stack.prometheus()
    collector = stack.collector(prom)
    job = "e2e-wal-" + protocol.replace("/", "-")
    handle = otel_rl.init_telemetry(otlp_config(endpoint_of(collector, protocol), protocol, job))
    otel_rl.record_training_start("PPO", "loop")
    next_i, _ = training_loop(20, on_tick=lambda elapsed: elapsed >= 1.0 and bool(in_prometheus(prom, job=job)))
    assert in_prometheus(prom, job=job), "no data reached Prometheus before it was stopped"
    prom.stop()
    next_i, _ = training_loop(2.0, start=next_i)  # exported every second; the collector cannot write any of it
    otel_rl.record_training_complete("PPO", 3.0, "loop")
    expected = truth(handle)
    assert handle.shutdown(timeout=10), "the collector did not accept the final export"
    collector.stop()  # a graceful restart (SIGTERM) in the middle of the outage
    collector.start()
    prom.start()  # same port, configuration and TSDB directory
    await_values(prom, expected, "after a collector restart during the outage", timeout=60, logs=stack.logs,
                 job=job)


def test_an_outage_longer_than_the_retries_loses_nothing(stack: Stack) -> None:
    """The shipped config retries a remote write for 5 minutes (``max_elapsed_time``); a longer outage relies on
    the write-ahead log sending the request again after the retries gave up. Shortened here to 1 s of retries and
    an outage through three such give-ups: every total arrives exactly (measured: the log kept retrying through 14
    give-ups in 15 s, and nothing was lost)."""
    prom = stack.prometheus()
    retry = "exporters::prometheus_remote_write::retry_on_failure::"
    collector = procs.Collector(stack.workdir, prom.remote_write_url, settings=(
        retry + "initial_interval=200ms", retry + "max_interval=500ms", retry + "max_elapsed_time=1s"))
    stack.processes.append(collector)
    collector.start()
    job = "e2e-long-outage"
    handle = otel_rl.init_telemetry(otlp_config(collector.grpc_endpoint, "grpc", job))
    otel_rl.record_training_start("PPO", "loop")
    next_i, _ = training_loop(20, on_tick=lambda elapsed: elapsed >= 1.0 and bool(in_prometheus(prom, job=job)))
    assert in_prometheus(prom, job=job), "no data reached Prometheus before it was stopped"
    prom.stop()
    next_i, _ = training_loop(2.0, start=next_i)
    otel_rl.record_training_complete("PPO", 3.0, "loop")
    expected = truth(handle)
    assert handle.shutdown(timeout=10), "the collector did not accept the final export"
    assert collector.process is not None
    process = collector.process
    gave_up = procs.wait_until(lambda: process.output().count("maximum elapsed time exceeded") >= 3, 60,
                               what="the remote write's retries given up three times")
    assert gave_up
    prom.start()
    await_values(prom, expected, "after an outage longer than the retries", timeout=60, logs=stack.logs, job=job)


def _one(prom: procs.Prometheus, expr: str) -> float | None:
    found = prom.query(expr)
    return float(found[0]["value"][1]) if found else None


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_100k_series_and_a_1mb_label_reach_prometheus_and_exports_go_on(stack: Stack, protocol: str) -> None:
    """A collection far over the collector's 4 MiB gRPC message limit (100k series, about 9 MB encoded) goes out in
    parts; a 1 MB label value is cut to label_value_limit (counted); and the exports after them still succeed."""
    prom = stack.prometheus()
    collector = stack.collector(prom)
    job = "e2e-big-" + protocol.replace("/", "-")
    config = otlp_config(endpoint_of(collector, protocol), protocol, job, interval=3600, timeout=60)
    handle = otel_rl.init_telemetry({**config, "cardinality_limit": 200_000, "shutdown_timeout": 120})
    for i in range(100_000):
        otel_rl.record_training_error(f"error-{i:06d}-" + "x" * 40)
    otel_rl.record_training_error("m" * 2**20)
    assert handle.force_flush(), f"the big export failed\n{stack.logs()}"
    errors = f'rl_training_errors_total{{job="{job}"}}'
    procs.wait_until(lambda: _one(prom, f"count({errors})") == 100_001 and _one(prom, f"sum({errors})") == 100_001,
                     120, what=f"100001 series in Prometheus (seen {_one(prom, f'count({errors})')})")
    cut = prom.query(f'rl_training_errors_total{{job="{job}",error_type=~"m+"}}')
    assert [len(s["metric"]["error_type"]) for s in cut] == [2048]
    dropped = f'otel_rl_dropped_values_total{{job="{job}",metric="rl_training_errors_total",reason="label_too_long"}}'
    assert _one(prom, dropped) == 1.0
    for _ in range(3):  # the push path still works after the big exports
        otel_rl.record_training_error("after")
    assert handle.force_flush(), f"the export after the big one failed\n{stack.logs()}"
    procs.wait_until(lambda: _one(prom, f'rl_training_errors_total{{job="{job}",error_type="after"}}') == 3.0, 60,
                     what="the series recorded after the big export")


# -- 5. shutdown: bounded when unreachable, flushes short runs ----------------------------------------------------

_SHUTDOWN_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import otel_rl

    protocol, endpoint, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    handle = otel_rl.init_telemetry({"exporters": ["otlp"], "shutdown_timeout": 2,
                                     "otlp": {"endpoint": endpoint, "protocol": protocol,
                                              "export_interval": 60, "timeout": 10}})
    otel_rl.record_training_start("PPO", "short")
    otel_rl.record_training_iteration("PPO", 1, "short")
    if mode == "atexit":
        print(json.dumps({"ok": None, "elapsed": None}), flush=True)
        sys.exit(0)  # the atexit hook shuts down with the configured timeout
    started = time.monotonic()
    ok = handle.shutdown()
    print(json.dumps({"ok": ok, "elapsed": time.monotonic() - started}), flush=True)
""")


def test_shutdown_with_unreachable_collector_returns_within_timeout(tmp_path: Path) -> None:
    """shutdown_timeout 2 s, otlp.timeout 10 s: shutdown (explicit or at exit) returns in ~2 s, never 10."""
    script = tmp_path / "shutdown.py"
    script.write_text(_SHUTDOWN_SCRIPT)
    blackhole = socket.socket()  # accepts connections (kernel backlog) and never answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    black, refused = blackhole.getsockname()[1], procs.free_port()
    cases = []
    for protocol in ("grpc", "http/protobuf"):
        for what, port in (("refused", refused), ("blackhole", black)):
            path = "" if protocol == "grpc" else "/v1/metrics"
            cases.append((protocol, what, f"http://127.0.0.1:{port}{path}", "explicit"))
        cases.append((protocol, "blackhole", f"http://127.0.0.1:{black}{'/v1/metrics' * (protocol != 'grpc')}",
                      "atexit"))
    running: list[tuple[tuple, subprocess.Popen, dict]] = []

    def watch(proc: subprocess.Popen, times: dict) -> None:
        """Note when the process printed its line (the run ended) and when it exited."""
        times["line"] = proc.stdout.readline()
        times["printed"] = time.monotonic()
        proc.wait()
        times["exited"] = time.monotonic()

    try:
        for case in cases:  # all at once: the bound is per process, and it keeps the test short
            proc = subprocess.Popen([sys.executable, str(script), case[0], case[2], case[3]], cwd=ROOT,
                                    env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            times: dict = {}
            thread = threading.Thread(target=watch, args=(proc, times), daemon=True)
            thread.start()
            running.append((case, proc, times))
        failures = []
        for case, proc, times in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            deadline = time.monotonic() + 5
            while "exited" not in times and time.monotonic() < deadline:
                time.sleep(0.01)  # poll interval of the wait for the child's exit line
            label = f"{case[0]} {case[1]} ({case[3]} shutdown)"
            if not times.get("line"):
                failures.append(f"{label}: printed nothing, rc={proc.returncode}: {proc.stderr.read()[-2000:]}")
                continue
            result = json.loads(times["line"])
            exit_after = times["exited"] - times["printed"]
            if case[3] == "explicit":
                if result["ok"] is not False:
                    failures.append(f"{label}: shutdown returned {result['ok']!r} although nothing was delivered")
                if result["elapsed"] > 2.0 + 1.0:
                    failures.append(f"{label}: shutdown took {result['elapsed']:.2f} s (timeout 2 s)")
                limit = 2.0  # interpreter exit only
            else:
                limit = 2.0 + 2.0  # the atexit shutdown (bounded by the 2 s timeout), then interpreter exit
            if exit_after > limit:
                failures.append(f"{label}: the process exited {exit_after:.2f} s after the run ended")
            if proc.returncode != 0:
                failures.append(f"{label}: rc={proc.returncode}: {proc.stderr.read()[-2000:]}")
            print(f"{label}: shutdown {result['elapsed']}, exit after {exit_after:.2f} s")
        assert not failures, "\n".join(failures)
    finally:
        for _, proc, _ in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for _, proc, _ in running:
            proc.stdout.close()
            proc.stderr.close()
        blackhole.close()


def test_shutdown_reports_undelivered_final_values() -> None:
    """Nothing listens on the endpoint and the export gives up at once (otlp.timeout 1 s is below the first retry
    backoff): shutdown finishes in time, but the final values were not delivered, so it should return False."""
    handle = otel_rl.init_telemetry(otlp_config(f"http://127.0.0.1:{procs.free_port()}/v1/metrics",
                                                "http/protobuf", "e2e-undelivered", interval=60, timeout=1.0))
    otel_rl.record_training_start("PPO", "undelivered")
    assert handle.force_flush(timeout=5) is False
    assert handle.shutdown(timeout=5) is False


def test_run_shorter_than_export_interval_lands_on_push_path(stack: Stack) -> None:
    prom = stack.prometheus()
    collector = stack.collector(prom)
    for protocol in ("grpc", "http/protobuf"):
        testing.reset()
        name = "e2e-short-" + protocol.split("/")[0]
        handle = otel_rl.init_telemetry(otlp_config(endpoint_of(collector, protocol), protocol, name, interval=60))
        otel_rl.record_training_start("PPO", "short")
        for i in range(1, 4):
            record_iteration(i, run_id="short")
        otel_rl.record_training_complete("PPO", 0.2, "short")
        expected = truth(handle)
        started = time.monotonic()
        assert handle.shutdown(timeout=10), f"{protocol}: the final export did not finish"
        assert time.monotonic() - started < 10
        await_values(prom, expected, f"{protocol}: short run after shutdown", logs=stack.logs, job=name)


def test_final_values_arrive_when_the_sdks_last_collection_overruns_the_interval(stack: Stack) -> None:
    """The SDK bounds its own last collection at shutdown by the export interval and only logs when it overruns
    (many series on a loaded machine; here a 0.4 s reading against a 0.2 s interval). otel-rl's own final export
    has the whole shutdown_timeout: shutdown() is True and Prometheus ends with exactly the final values."""
    from opentelemetry.metrics import Observation

    prom = stack.prometheus()
    collector = stack.collector(prom)
    name = "e2e-final-overrun"
    config = otlp_config(endpoint_of(collector, "http/protobuf"), "http/protobuf", name, interval=0.2, timeout=10)
    handle = otel_rl.init_telemetry({**config, "shutdown_timeout": 10})

    slowed = threading.Event()  # slow only from shutdown on, so that no periodic export carries the final values

    def slow(options):
        if slowed.is_set():
            time.sleep(0.4)  # the slow callback under test
        return [Observation(1.0)]

    meter = handle.meter_provider.get_meter("test.slow")
    meter.create_observable_gauge("test_slow_reading", [slow])
    # The SDK's deadline check runs after each instrument's (lazy) callbacks were started: one must follow.
    meter.create_observable_gauge("test_fast_reading", [lambda options: [Observation(2.0)]])
    otel_rl.record_training_start("PPO", "overrun")
    record_iteration(1, run_id="overrun")
    procs.wait_until(lambda: in_prometheus(prom, job=name), 30, what="a periodic export in Prometheus")
    for i in range(2, 6):
        record_iteration(i, run_id="overrun")
    otel_rl.record_training_complete("PPO", 0.5, "overrun")
    expected = {k: v for k, v in truth(handle).items() if k[0].startswith(("rl_training_", "otel_rl_"))}
    slowed.set()
    assert handle.shutdown(), "the final export did not succeed"
    await_values(prom, expected, "final values after a slow last collection", logs=stack.logs, job=name)


def test_pull_path_linger_waits_for_a_last_scrape(stack: Stack) -> None:
    """With ``prometheus.linger``, values recorded just before shutdown still reach Prometheus.

    Without linger, a run ending between two scrapes loses what it recorded since the last scrape (and a run
    shorter than the scrape interval may never be scraped at all); that negative case is documented in
    docs/collector.md, not tested.
    """
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"],
                                     "prometheus": {"host": "127.0.0.1", "port": 0, "linger": 10}})
    target = f"127.0.0.1:{handle.prometheus_port}"
    prom = stack.prometheus(scrape_targets=[target], scrape_interval="2s")
    otel_rl.record_training_start("PPO", "linger")
    procs.wait_until(lambda: prom.query(f'up{{instance="{target}"}} == 1'), 20, what="a first scrape")
    # Recorded right after a scrape: with a 2 s interval the next scrape is seconds away.
    for i in range(1, 4):
        record_iteration(i, run_id="linger")
    otel_rl.record_training_complete("PPO", 1.0, "linger")
    expected = truth(handle)
    started = time.monotonic()
    assert handle.shutdown(timeout=15), "no scrape within linger"
    waited = time.monotonic() - started
    print(f"shutdown waited {waited:.2f} s for the last scrape")
    assert waited < 2.0 + 2.0, f"shutdown waited {waited:.2f} s for a scrape every 2 s"
    await_values(prom, expected, "pull path after shutdown with linger", timeout=10, logs=stack.logs,
                 job=PULL_JOB, instance=target)


# -- 6. two training processes pushing at once ------------------------------------------------------------------------

_TRAINER_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import otel_rl
    from otel_rl.demo.run import run_demo

    endpoint, run_id, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = {"exporters": ["otlp"], "service_name": "e2e-multi",
              "otlp": {"endpoint": endpoint, "protocol": "grpc", "export_interval": 1, "timeout": 5}}
    began = time.time()
    run_demo(iterations=6, episodes_per_iter=5, seed=seed, run_id=run_id, config=config, progress=False,
             shutdown=False, on_iteration=lambda i, outcome: time.sleep(0.3))  # paced: exports between iterations
    handle = otel_rl.current()
    print(json.dumps({"pid": os.getpid(), "instance": handle.resource.attributes["service.instance.id"],
                      "began": began, "ended": time.time(), "exposition": handle.metrics_text().decode()}),
          flush=True)
    sys.exit(0 if handle.shutdown(timeout=10) else 3)
""")


def test_two_processes_pushing_at_once_keep_distinct_series(stack: Stack, tmp_path: Path) -> None:
    prom = stack.prometheus()
    collector = stack.collector(prom)
    script = tmp_path / "trainer.py"
    script.write_text(_TRAINER_SCRIPT)
    runs = [("multi-a", 1), ("multi-b", 2)]
    procs_ = []
    try:
        for run_id, seed in runs:
            procs_.append(subprocess.Popen(
                [sys.executable, str(script), collector.grpc_endpoint, run_id, str(seed)], cwd=ROOT,
                env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = []
        for (run_id, _), proc in zip(runs, procs_):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"{run_id}: rc={proc.returncode}\n{err[-3000:]}"
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs_:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    a, b = outputs
    assert a["began"] < b["ended"] and b["began"] < a["ended"], "the two runs did not overlap"
    for out in outputs:
        assert out["instance"] == instance_id(out["pid"])
    assert a["instance"] != b["instance"]

    truths = [parse_exposition(out["exposition"]) for out in outputs]
    for out, expected in zip(outputs, truths):
        await_values(prom, expected, f"process {out['pid']}", logs=stack.logs, job="e2e-multi",
                     instance=out["instance"])

    # Each run_id-labelled gauge exists once per process, under that process's instance only.
    for out, (run_id, _) in zip(outputs, runs):
        series = prom.series(f'rl_training_current_iteration{{job="e2e-multi",run_id="{run_id}"}}')
        assert [s["instance"] for s in series] == [out["instance"]], series

    # sum by (algorithm) of every counter with an algorithm label = the sum of both processes' own totals.
    for metric in SEED:
        if metric["type"] != "counter" or "algorithm" not in metric["labels"]:
            continue
        name = metric["name"]
        want: dict[str, float] = {}
        for expected in truths:
            for (n, labels), v in expected.items():
                if n == name:
                    algorithm = dict(labels)["algorithm"]
                    want[algorithm] = want.get(algorithm, 0.0) + v
        got = {r["metric"]["algorithm"]: float(r["value"][1])
               for r in prom.query(f'sum by (algorithm) ({name}{{job="e2e-multi"}})')}
        assert want and got == want, f"sum by (algorithm) ({name}): Prometheus {got}, both runs {want}"


_SPAWN_SCRIPT = '''
import json, multiprocessing, os, sys
import otel_rl
from opentelemetry import metrics

early = metrics.get_meter("worker").create_counter("app_worker_early_total")  # before any provider: the API's proxy


def work():
    # No init_telemetry here: the first otel-rl record starts push telemetry from the parent's published settings,
    # which also makes otel-rl's provider this process' global one.
    otel_rl.record_scalar("worker_scalar", 3.0, role="worker")
    metrics.get_meter("worker").create_counter("app_worker_total").add(2)
    early.add(5)
    return os.getpid()


if __name__ == "__main__":
    otel_rl.init_telemetry({"exporters": ["otlp"], "service_name": "e2e-spawn",
                            "otlp": {"endpoint": sys.argv[1], "export_interval": 1}})
    pool = multiprocessing.get_context("spawn").Pool(1)
    pid = pool.apply(work)
    pool.close()
    pool.join()
    print(json.dumps({"pid": pid}))
'''


def test_a_spawned_worker_exports_its_instruments_and_scalars_under_its_own_instance(stack: Stack,
                                                                                      tmp_path: Path) -> None:
    """A spawned multiprocessing worker that never calls init_telemetry: its first record_scalar starts its push
    telemetry from the parent's settings, and its instruments (one made before any provider) export with it."""
    prom = stack.prometheus()
    collector = stack.collector(prom)
    script = tmp_path / "spawning.py"
    script.write_text(_SPAWN_SCRIPT)
    result = subprocess.run([sys.executable, str(script), collector.grpc_endpoint], cwd=tmp_path,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    pid = json.loads(result.stdout.strip().splitlines()[-1])["pid"]
    expected = {("app_worker_total", ()): 2.0, ("app_worker_early_total", ()): 5.0,
                ("rl_training_custom_worker_scalar", (("role", "worker"),)): 3.0}
    await_values(prom, expected, "the spawned worker", names="app_.+|rl_training_custom_.+", logs=stack.logs,
                 job="e2e-spawn", instance=instance_id(pid))
