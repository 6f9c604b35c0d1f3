"""The ``otel-rl`` command: run the demo, generate the dashboard, rules and metrics reference, run the stack."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from otel_rl._internal.errors import ConfigError
from otel_rl._internal.hints import install_hint
from otel_rl._internal.setting_values import EXPORTERS, PROTOCOLS


class MissingExtraError(SystemExit):
    """An optional dependency of a command is not installed; the message says which extra to install."""


def require_extra(command: str, extra: str, *modules: str) -> None:
    """Exit with one line naming the extra to install when a module that ``command`` needs is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"otel-rl {command}: {', '.join(missing)} not installed; {install_hint(extra)}")


def _demo(args: argparse.Namespace) -> int:
    require_extra("demo", "demo", "gymnasium", "numpy")
    from otel_rl.demo.run import run_demo

    config = _demo_config(args, os.environ)
    if args.otlp_endpoint or args.otlp_protocol or args.export_interval is not None:
        config["otlp"] = {k: v for k, v in {"endpoint": args.otlp_endpoint, "protocol": args.otlp_protocol,
                                             "export_interval": args.export_interval}.items() if v is not None}
    import otel_rl

    handle = otel_rl.init_telemetry(config)  # a bad setting ends here, as one line (see main)
    if handle.server is not None:  # the bound port (also with --port 0); nothing when it could not be bound
        host = handle.settings.prometheus.host
        host = "localhost" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
        print(f"otel-rl demo: metrics on {handle.server.scheme}://{host}:{handle.prometheus_port}/metrics "
              "(health: /health)", file=sys.stderr)
    result = run_demo(iterations=args.iterations, episodes_per_iter=args.episodes, seed=args.seed, config=None,
                      run_id=args.run_id, inject_failure=args.inject_failure, progress=not args.no_progress)
    first = sum(result.reward_means[:5]) / max(len(result.reward_means[:5]), 1)
    last = sum(result.reward_means[-5:]) / max(len(result.reward_means[-5:]), 1)
    print(f"otel-rl demo: {result.iterations} iterations in {result.seconds:.1f} s; mean episode reward "
          f"{first:.1f} (first 5) -> {last:.1f} (last 5)")
    return 0


#: The demo's own defaults where otel-rl's differ, and the variables that override them (as they override
#: otel-rl's): (setting, demo default, variables).
_DEMO_DEFAULTS = (
    ("service_name", "otel-rl-demo", ("OTEL_SERVICE_NAME",)),
    ("prometheus.linger", 15.0, ("OTEL_RL_PROMETHEUS_LINGER",)),
)


def _resource_names_service(environ: Mapping[str, str]) -> bool:
    """Whether OTEL_RESOURCE_ATTRIBUTES gives ``service.name`` (which a service_name setting would override)."""
    pairs = environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    return any(key.strip() == "service.name" for key, _, _ in (pair.partition("=") for pair in pairs))


def _demo_config(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The demo's settings: its flags, then the OTEL_* variables, then the demo's defaults, then otel-rl's.

    Only what a flag gives is explicit config (which wins over the environment), so ``OTEL_RL_EXPORTERS=otlp
    otel-rl demo`` pushes and ``OTEL_EXPORTER_PROMETHEUS_PORT`` moves the endpoint, as for any program.
    """
    config: dict[str, Any] = {}
    prometheus: dict[str, Any] = {}
    if args.exporter:
        config["exporters"] = args.exporter
    for key, value in (("port", args.port), ("host", args.host), ("linger", args.linger)):
        if value is not None:
            prometheus[key] = value
    if args.service_name is not None:
        config["service_name"] = args.service_name
    for key, default, variables in _DEMO_DEFAULTS:
        section, _, name = key.rpartition(".")
        target = prometheus if section == "prometheus" else config
        if name not in target and not any(environ.get(v, "").strip() for v in variables) and \
                not (name == "service_name" and _resource_names_service(environ)):
            target[name] = default
    if prometheus:
        config["prometheus"] = prometheus
    return config


def _dashboard(args: argparse.Namespace) -> int:
    from otel_rl._internal.dashboard import write_dashboard

    write_dashboard(args.output)
    print(f"wrote {args.output}")
    return 0


def _rules(args: argparse.Namespace) -> int:
    from otel_rl._internal.rules import parse_thresholds, write_rules

    try:
        thresholds = parse_thresholds(args.set)
    except ValueError as exc:
        print(f"otel-rl rules: {exc}", file=sys.stderr)
        return 2
    write_rules(args.output, thresholds, args.runbook_base)
    print(f"wrote {args.output}")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from otel_rl._internal.reference import metrics_markdown

    text = metrics_markdown()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


def _stack(args: argparse.Namespace) -> int:
    require_extra("stack", "demo", "gymnasium", "numpy")
    from otel_rl._internal.stack import run_stack

    return run_stack(iterations=args.iterations, seed=args.seed, protocol=args.otlp_protocol or "grpc",
                     prometheus_port=args.prometheus_port, alertmanager_port=args.alertmanager_port,
                     keep=not args.exit)


def _run(args: argparse.Namespace) -> int:
    """Run a command with its Python interpreter instrumented (see otel_rl.instrumentation)."""
    from otel_rl.instrumentation import ROOT_ENV, SIGTERM_ENV

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise SystemExit("otel-rl run: no command given; for example: otel-rl run -- python train.py")
    env = os.environ
    bootstrap = str(Path(__file__).resolve().parent / "_bootstrap")
    env["PYTHONPATH"] = os.pathsep.join([bootstrap, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                       if p and p != bootstrap]])
    env.setdefault(SIGTERM_ENV, "1")
    env.pop(ROOT_ENV, None)  # run from a script that is itself under otel-rl run: this command is a root of its own
    if args.port is not None:
        env["OTEL_EXPORTER_PROMETHEUS_PORT"] = str(args.port)
    if args.exporter:
        env["OTEL_RL_EXPORTERS"] = ",".join(args.exporter)
    if args.otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"] = args.otlp_endpoint
    if args.service_name:
        env["OTEL_SERVICE_NAME"] = args.service_name
    sys.stdout.flush()
    sys.stderr.flush()
    try:  # the command replaces this process: signals and the exit status are the script's own
        os.execvp(command[0], command)
    except OSError as exc:
        raise SystemExit(f"otel-rl run: cannot run {command[0]!r}: {exc.strerror}") from None
    return 0  # pragma: no cover - execvp does not return


def build_parser() -> argparse.ArgumentParser:
    from otel_rl._internal.rules import RUNBOOK_BASE

    parser = argparse.ArgumentParser(prog="otel-rl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train CartPole with a NumPy policy-gradient agent, exporting metrics")
    demo.add_argument("--iterations", type=int, default=100,
                      help="training iterations (default 100: 10-30 s of training, then the linger)")
    demo.add_argument("--episodes", type=int, default=10, help="episodes per iteration (default 10)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the environment and the agent")
    demo.add_argument("--run-id", default=None, help="run_id label (default: cartpole-seed0 for --seed 0)")
    demo.add_argument("--exporter", action="append", choices=[e for e in EXPORTERS if e != "none"],
                      help="repeatable; default OTEL_RL_EXPORTERS / OTEL_METRICS_EXPORTER, else prometheus "
                           "(the endpoint on --port)")
    demo.add_argument("--port", type=int, default=None,
                      help="Prometheus endpoint port (default OTEL_EXPORTER_PROMETHEUS_PORT, else 8011)")
    demo.add_argument("--host", default=None,
                      help="Prometheus endpoint host (default OTEL_EXPORTER_PROMETHEUS_HOST, else 0.0.0.0)")
    demo.add_argument("--linger", type=float, default=None,
                      help="seconds to wait at the end for a last scrape (default OTEL_RL_PROMETHEUS_LINGER, else "
                           "15; 0 to exit at once)")
    demo.add_argument("--otlp-endpoint", default=None, help="OTLP endpoint (with --exporter otlp)")
    demo.add_argument("--otlp-protocol", choices=PROTOCOLS, default=None)
    demo.add_argument("--export-interval", type=float, default=None, help="OTLP export interval in seconds")
    demo.add_argument("--service-name", default=None,
                      help="default OTEL_SERVICE_NAME or service.name of OTEL_RESOURCE_ATTRIBUTES, else otel-rl-demo")
    demo.add_argument("--inject-failure", action="store_true", help="fail one train step (retried)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_demo)

    dashboard = commands.add_parser("dashboard", help="write the Grafana dashboard generated from the catalog")
    dashboard.add_argument("--output", default="grafana/dashboards/rl-training.json")
    dashboard.set_defaults(func=_dashboard)

    rules = commands.add_parser("rules", help="write the Prometheus recording and alerting rules")
    rules.add_argument("--output", default="prometheus/rules/otel-rl.rules.yml")
    rules.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="change a threshold (repeatable), e.g. --set stalled_after=30m; see docs/alerting.md")
    rules.add_argument("--runbook-base", default=RUNBOOK_BASE, metavar="URL",
                       help="where docs/alerting.md is published; each alert links to its section there "
                            f"(default: {RUNBOOK_BASE})")
    rules.set_defaults(func=_rules)

    metrics = commands.add_parser("metrics", help="write the metrics reference (Markdown) from the catalog")
    metrics.add_argument("--output", default="-", help="file path, or - for standard output")
    metrics.set_defaults(func=_metrics)

    stack = commands.add_parser("stack", help="start Prometheus and the collector on loopback and push the demo")
    stack.add_argument("--iterations", type=int, default=60)
    stack.add_argument("--seed", type=int, default=0, help="random seed of the demo run")
    stack.add_argument("--otlp-protocol", choices=PROTOCOLS, default=None)
    stack.add_argument("--prometheus-port", type=int, default=9090)
    stack.add_argument("--alertmanager-port", type=int, default=9093)
    stack.add_argument("--exit", action="store_true",
                       help="stop Prometheus and the collector when the demo ends (default: run until Ctrl-C)")
    stack.set_defaults(func=_stack)

    run = commands.add_parser(
        "run", help="run a Python program with Gymnasium, Stable-Baselines3 and RLlib recorded, no code change",
        description="Run COMMAND (e.g. python train.py) with otel-rl's telemetry started from the OTEL_* "
                    "variables (default: /metrics on port 8011) and Gymnasium, Stable-Baselines3 and RLlib "
                    "instrumented. See docs/opentelemetry.md (zero-code instrumentation).")
    run.add_argument("--port", type=int, default=None, help="Prometheus endpoint port (default 8011)")
    run.add_argument("--exporter", action="append", choices=[e for e in EXPORTERS if e != "none"],
                     help="repeatable; default prometheus, or OTEL_RL_EXPORTERS / OTEL_METRICS_EXPORTER")
    run.add_argument("--otlp-endpoint", default=None, help="OTLP endpoint (with --exporter otlp)")
    run.add_argument("--service-name", default=None, help="service.name (default: OTEL_SERVICE_NAME or otel-rl)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="-- then the command, e.g. -- python train.py")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:  # a setting the user gave: one line, as argparse reports a bad flag
        print(f"otel-rl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
