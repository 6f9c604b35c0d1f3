"""The ``otel-rl`` command: clear errors for missing extras, and no jargon in its help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_rl.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", ["demo", "stack"])
def test_missing_extra_is_one_line_naming_the_extra(command):
    """Without gymnasium, `otel-rl demo`/`stack` exit with one line saying how to install the demo extra from the
    checkout (otel-rl is on no package index), no traceback."""
    code = ("import sys; sys.modules['gymnasium'] = None\n"  # what an environment without the extra looks like
            "from otel_rl.cli import main\n"
            f"sys.exit(main([{command!r}]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"otel-rl {command}: gymnasium not installed; pip install '.[demo]' from the otel-rl repository root, or "
        "pip install '/path/to/otel-rl[demo]' (otel-rl is installed from its checkout, not from PyPI)"], done.stderr


def test_help_texts_do_not_say_seed_except_for_the_random_seed():
    """Every help text of every command avoids the word 'seed' other than for the random --seed option."""
    parser = build_parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for sub in action.choices.values():
            help_text = sub.format_help()
            for allowed in ("--seed SEED", "--seed", "random seed", "cartpole-seed0"):
                help_text = help_text.replace(allowed, "")
            texts.append(help_text)
    offending = [t for t in texts if "seed" in t.lower()]
    assert not offending, offending


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "otel_rl", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_bad_setting_is_one_error_line_not_a_traceback():
    """`otel-rl demo --port 99999` exits 2 with the ConfigError text on one line, as argparse reports bad flags."""
    done = _cli("demo", "--port", "99999", "--iterations", "1", "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otel-rl: error: ") and "prometheus.port" in lines[0], lines


def test_export_interval_zero_is_refused_not_ignored():
    """`--export-interval 0` reaches validation: 0 is a value to check, not an unset
    option that falls back to the 10 s default."""
    done = _cli("demo", "--exporter", "otlp", "--export-interval", "0", "--iterations", "1", "--no-progress")
    assert done.returncode == 2 and "otlp.export_interval" in done.stderr, done.stderr


def test_demo_banner_names_the_bound_port():
    """With --port 0 the banner shows the port actually bound, not 0."""
    done = _cli("demo", "--port", "0", "--host", "127.0.0.1", "--iterations", "1", "--episodes", "1",
                "--linger", "0", "--no-progress")
    assert done.returncode == 0, done.stderr
    banner = [line for line in done.stderr.splitlines() if "metrics on" in line]
    assert len(banner) == 1 and "http://127.0.0.1:" in banner[0] and ":0/" not in banner[0], done.stderr


def _demo_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    return subprocess.run([sys.executable, "-m", "otel_rl", "demo", "--no-progress", *args], capture_output=True,
                          text=True, env=clean, timeout=240)


def test_demo_serves_on_the_port_of_the_environment():
    """OTEL_EXPORTER_PROMETHEUS_PORT/HOST and OTEL_RL_PROMETHEUS_LINGER apply to the demo as to any program."""
    from procs import free_port

    port = free_port()
    done = _demo_with({"OTEL_EXPORTER_PROMETHEUS_PORT": str(port), "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                       "OTEL_RL_PROMETHEUS_LINGER": "0"}, "--iterations", "1", "--episodes", "1")
    assert done.returncode == 0, done.stderr
    banner = [line for line in done.stderr.splitlines() if "metrics on" in line]
    assert banner == [f"otel-rl demo: metrics on http://127.0.0.1:{port}/metrics (health: /health)"], done.stderr
    # a flag still wins over the variable
    other = free_port()
    done = _demo_with({"OTEL_EXPORTER_PROMETHEUS_PORT": str(port), "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                       "OTEL_RL_PROMETHEUS_LINGER": "0"}, "--port", str(other), "--iterations", "1", "--episodes", "1")
    assert f"127.0.0.1:{other}/metrics" in done.stderr, done.stderr


@pytest.mark.integration
def test_demo_pushes_when_the_environment_says_otlp():
    """docs/collector.md's `OTEL_RL_EXPORTERS=otlp otel-rl demo` pushes through a real collector into Prometheus
    rather than serving /metrics: every episode of the run arrives, and no endpoint is served."""
    from procs import push_stack, wait_until

    with push_stack() as (_, prom, collector):
        done = _demo_with({"OTEL_RL_EXPORTERS": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.grpc_endpoint,
                           "OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_SERVICE_NAME": "demo-push-test"},
                          "--iterations", "3", "--episodes", "2")
        assert done.returncode == 0, done.stderr
        assert "metrics on" not in done.stderr, done.stderr

        def episodes():
            result = prom.query('sum(rl_training_episodes_total{service_name="demo-push-test"})') or \
                prom.query('sum(rl_training_episodes_total{job="demo-push-test"})')
            return result and float(result[0]["value"][1]) == 6

        wait_until(episodes, 60, what="the demo's 6 episodes in Prometheus")


def test_demo_keeps_the_service_name_of_otel_resource_attributes():
    """``OTEL_RESOURCE_ATTRIBUTES=service.name=...`` names the demo's service, as for any program: the demo's own
    default (otel-rl-demo) applies only when no variable names it (a service_name setting would override it)."""
    from otel_rl._internal.config import load_settings
    from otel_rl._internal.telemetry import _resource
    from otel_rl.cli import _demo_config, build_parser

    args = build_parser().parse_args(["demo"])
    environ = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev, service.name=mine"}
    resource = _resource(load_settings(_demo_config(args, environ), environ))
    assert resource.attributes["service.name"] == "mine"
    assert _demo_config(args, {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev"})["service_name"] == \
        "otel-rl-demo"
    assert _demo_config(build_parser().parse_args(["demo", "--service-name", "flag"]), environ)["service_name"] == \
        "flag"
