"""The benchmarks still import and their shared harness still measures: a broken benchmark fails ``make test``.

Not a benchmark: nothing here is timed against a target. The figures come from ``python benchmarks/run.py`` and the
other scripts (benchmarks/README.md).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

MODULES = sorted(p.stem for p in BENCHMARKS.glob("*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_imports(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"benchmarks/{name}.py says what it measures in its docstring"


def test_every_suite_benchmark_has_a_bench_function():
    run = importlib.import_module("run")
    for name, module_name in run.MODULES.items():
        assert callable(importlib.import_module(module_name).bench), name
    bench_modules = {p.stem for p in BENCHMARKS.glob("bench_*.py")}
    assert bench_modules <= set(run.MODULES.values()), "every bench_* module is a run.py family"
    assert set(run.DEFAULT) | set(run.ON_REQUEST) == set(run.BENCHES)


def test_interleave_alternates_the_order_and_ratios_pair_repetitions():
    harness = importlib.import_module("harness")
    calls: list[str] = []
    values = {"a": iter([1.0, 2.0, 3.0, 4.0]), "b": iter([2.0, 2.0, 6.0, 8.0])}

    def variant(name: str):
        def run() -> float:
            calls.append(name)
            return next(values[name])
        return run

    times = harness.interleave({"a": variant("a"), "b": variant("b")}, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # ABBA: neither side always runs first
    assert times == {"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 2.0, 6.0, 8.0]}
    assert harness.ratios(times, "a", "b") == [0.5, 1.0, 0.5, 0.5]
    assert harness.median(harness.ratios(times, "a", "b")) == 0.5


def test_timed_measures_the_call_with_the_given_clock():
    harness = importlib.import_module("harness")
    slept = harness.timed(lambda: time.sleep(0.02))()
    assert 0.015 <= slept < 5.0
    assert harness.timed(lambda: time.sleep(0.02), time.thread_time)() < 0.015  # sleeping costs no CPU


def test_report_marks_targets(capsys):
    harness = importlib.import_module("harness")
    report = harness.Report()
    report.add("x", "met", 1.0, "us", 0.4, "base", "<= 0.5x", True)
    report.add("x", "missed", 2.0, "us", 0.9, "base", "<= 0.5x", False)
    report.add("x", "informative", 3.0, "us")
    assert [r["status"] for r in report.rows] == ["PASS", "MISS", ""]
    assert "0.400x base" in capsys.readouterr().out


def test_the_iteration_workload_runs_on_otel_rl_and_every_baseline():
    """The shared per-iteration loop (run.py's recording bench) on a few iterations."""
    import otel_rl

    baselines = importlib.import_module("baselines")
    direct = importlib.import_module("direct_prometheus")
    recording = importlib.import_module("bench_recording")
    plain = baselines.PlainOtel()
    try:
        times = recording.iteration_times({"otel_rl": otel_rl, "direct": direct.build(),
                                           "suite": baselines.OriginalPrometheus(), "plain": plain}, n=5, reps=2)
    finally:
        plain.shutdown()
    assert set(times) == {"otel_rl", "direct", "suite", "plain"}
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in times.values())


@pytest.mark.parametrize("script", ["run.py", "resource_metrics.py"])
def test_the_scripts_start(script):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout


def test_series_sets_fill_otel_rl_and_the_direct_registry_alike():
    """workloads.fill_series puts the same label sets in otel-rl's store and in a direct prometheus_client registry."""
    from prometheus_client import generate_latest

    from otel_rl._internal.store import REGISTRY

    workloads = importlib.import_module("workloads")
    direct = importlib.import_module("direct_prometheus")
    handle = workloads.telemetry_for(30)
    try:
        prom = direct.build()
        workloads.fill_series("mixed", 30)
        workloads.fill_series("mixed", 30, prom)
        counts = {name: REGISTRY[name].series_count() for name in
                  ("rl_training_current_iteration", "rl_training_episodes_total", "rl_training_episode_reward")}
        ours, theirs = handle.metrics_text().decode(), generate_latest(prom.registry).decode()
    finally:
        handle.shutdown()
    assert counts == dict.fromkeys(counts, 10)
    for line in ('rl_training_current_iteration{algorithm="PPO",run_id="run-000027"} 27.0',
                 'rl_training_episodes_total{agent_id="agent-000028",algorithm="PPO"} 3.0',
                 'rl_training_episode_reward_count{agent_id="agent-000029",algorithm="PPO"} 1.0'):
        assert line in ours and line in theirs, line
