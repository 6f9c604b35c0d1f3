"""The demo: a short seeded CartPole run learns, and its series appear on /metrics."""

from __future__ import annotations

import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from otel_rl import CATALOG
from otel_rl.cli import main
from otel_rl.demo.run import run_demo


def test_short_seeded_run_learns_and_exports_every_seed_metric():
    """Eight iterations raise the mean reward, and all 21 seed metrics have samples on the endpoint."""
    scraped: dict[str, list] = {}

    def scrape(iteration, outcome):
        if iteration == 8:
            body = urllib.request.urlopen(f"http://127.0.0.1:{result_port[0]}/metrics", timeout=5).read().decode()
            for family in text_string_to_metric_families(body):
                scraped[family.name] = family.samples

    result_port: list[int] = []
    import otel_rl

    otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
    result_port.append(otel_rl.current().prometheus_port)
    result = run_demo(iterations=8, episodes_per_iter=10, seed=0, inject_failure=True, progress=False,
                      on_iteration=scrape, config={"prometheus": {"host": "127.0.0.1", "port": 0}})
    assert result.iterations == 8 and result.failures_injected == 1
    assert result.reward_means[-1] > result.reward_means[0]
    missing = [spec.name for spec in CATALOG if not scraped.get(spec.family)]
    # rl_training_duration_seconds is observed when the run completes, after the last iteration's scrape.
    assert missing == ["rl_training_duration_seconds"], missing
    iterations = [s for s in scraped["rl_training_iterations"] if s.name == "rl_training_iterations_total"]
    assert iterations[0].value == 8
    errors = {s.labels["error_type"]: s.value for s in scraped["rl_training_errors"] if s.name.endswith("_total")}
    assert errors == {"training_error": 1.0}


def test_same_seed_gives_the_same_rewards():
    """Two runs with the same seed produce identical reward curves."""
    first = run_demo(iterations=3, seed=3, progress=False, config={"exporters": ["none"]})
    second = run_demo(iterations=3, seed=3, progress=False, config={"exporters": ["none"]})
    assert first.reward_means == second.reward_means


def test_cli_demo_runs_and_reports(capsys):
    """`otel-rl demo` trains, serves on the given port and prints the reward summary."""
    assert main(["demo", "--iterations", "3", "--port", "0", "--host", "127.0.0.1", "--linger", "0",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 iterations" in out and "mean episode reward" in out


def test_cli_stack_pushes_the_demo_through_the_collector(monkeypatch, capsys):
    """`otel-rl stack --exit` starts Prometheus, Alertmanager and the collector, the demo's episodes arrive, and it
    prints where Alertmanager is."""
    from procs import collector_binary, free_port

    monkeypatch.setenv("OTEL_RL_COLLECTOR", collector_binary())
    for name in ("OTELCOL_OTLP_GRPC_ENDPOINT", "OTELCOL_OTLP_HTTP_ENDPOINT", "OTELCOL_HEALTH_ENDPOINT"):
        monkeypatch.setenv(name, f"127.0.0.1:{free_port()}")
    am_port = free_port()
    assert main(["stack", "--exit", "--iterations", "3", "--prometheus-port", str(free_port()),
                 "--alertmanager-port", str(am_port)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert f"Alertmanager http://127.0.0.1:{am_port}," in captured.err, captured.err
    found = re.search(r"3 iterations in .* this run recorded (\d+) episodes, Prometheus counts (\d+)\.", out)
    assert found, out
    assert found.group(1) == found.group(2) == "30", out  # after the final flush, all of them (3 x 10 episodes)


def test_stack_finds_its_alertmanager_config_in_the_package():
    """`otel-rl stack` reads the Alertmanager config shipped as package data, identical to alertmanager/'s."""
    from pathlib import Path

    from otel_rl._internal.stack import alertmanager_config

    repo = Path(__file__).resolve().parent.parent / "alertmanager" / "alertmanager.yml"
    with alertmanager_config() as path:
        assert path.read_bytes() == repo.read_bytes()


def test_stack_finds_its_collector_config_in_the_package():
    """`otel-rl stack` reads the collector config shipped as package data, identical to collector/'s."""
    from pathlib import Path

    from otel_rl._internal.stack import collector_config

    repo = Path(__file__).resolve().parent.parent / "collector" / "otelcol-config.yaml"
    with collector_config() as path:
        assert path.read_bytes() == repo.read_bytes()
