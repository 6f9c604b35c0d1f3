"""Push settings handed from a process to the processes it starts, through one environment variable.

:func:`publish` (called when telemetry starts) writes :data:`WORKER_CONFIG_ENV`; a descendant process (forked,
spawned, a Ray worker started after it, a torchrun rank given the variable) reads it with :func:`inherited_config`
and starts push telemetry from it on its first record. :func:`worker_env` hands the same settings, without their
secrets unless asked, to processes started elsewhere.

A plain module: imports nothing of otel-rl's (the settings are read through their attributes).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

_logger = logging.getLogger("otel_rl")

#: The environment variable through which a process hands its push settings to the processes it starts.
WORKER_CONFIG_ENV = "OTEL_RL_WORKER_CONFIG"

_secrets_warned = False  #: warn_omitted_secrets() said it once in this process


def _published() -> dict[str, Any] | None:
    raw = os.environ.get(WORKER_CONFIG_ENV, "").strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        _logger.warning("otel-rl: %s is not valid JSON; ignoring it", WORKER_CONFIG_ENV)
        return None
    return value if isinstance(value, dict) and isinstance(value.get("config"), dict) else None


def _is_publisher(published: dict[str, Any]) -> bool:
    """Whether this process published ``published`` (same pid on the same host)."""
    return published.get("parent") == os.getpid() and published.get("host", socket.gethostname()) \
        == socket.gethostname()


def published_parent() -> int | None:
    """The pid of the ancestor process whose settings this process was handed, when it is not that ancestor."""
    published = _published()
    if published is None or _is_publisher(published):
        return None
    parent = published.get("parent")
    return parent if isinstance(parent, int) else None


def worker_config(settings: Any) -> dict[str, Any] | None:
    """The config a worker of a process with ``settings`` should use, or None when workers cannot export.

    Workers push over OTLP with the same settings; the ``prometheus`` endpoint is kept only with a
    ``prometheus.file_sd`` target file (then on a free port, so every worker adds its own target).
    """
    exporters = [e for e in settings.exporters if e == "otlp"]
    prometheus = asdict(settings.prometheus)
    if "prometheus" in settings.exporters and prometheus.get("file_sd"):
        exporters.append("prometheus")
    if not exporters:
        return None
    config: dict[str, Any] = {
        "service_name": settings.service_name,
        "exporters": exporters,
        "resource_attributes": {k: v for k, v in settings.resource_attributes
                                if k not in ("service.instance.id", "process.pid")},
        "cardinality_limit": settings.cardinality_limit,
        "label_value_limit": settings.label_value_limit,
        "shutdown_timeout": settings.shutdown_timeout,
        "otlp": {k: (dict(v) if k == "headers" else v) for k, v in asdict(settings.otlp).items() if v is not None},
    }
    if getattr(settings, "per_run_series", False):  # workers label their series as the parent does
        config["per_run_series"] = True
    # What the worker's instruments and records need to match the parent's (only where not the default).
    if settings.extra_keys:
        config["extra_keys"] = list(settings.extra_keys)
    if settings.buckets:
        config["buckets"] = {name: list(bounds) for name, bounds in settings.buckets}
    if settings.global_provider != "install":
        config["global_provider"] = settings.global_provider
    if settings.strict:
        config["strict"] = True
    if not settings.flush_on_sigterm:  # a parent that leaves SIGTERM alone means its workers too
        config["flush_on_sigterm"] = False
    if "prometheus" in exporters:
        prometheus["port"] = 0  # every worker on a free port of its own, listed in the target file
        config["prometheus"] = {k: v for k, v in prometheus.items() if v is not None}
    return config


#: The environment variables from which a worker takes OTLP headers that were left out of what it was handed.
HEADERS_ENV = ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")


def _without_secrets(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``config`` without OTLP header values and without the user and password of the endpoint URL.

    Returns the config and what was left out (setting names, never values).
    """
    otlp = dict(config.get("otlp") or {})
    omitted = []
    if otlp.pop("headers", None):
        omitted.append("otlp.headers")
    endpoint = otlp.get("endpoint")
    if isinstance(endpoint, str) and "@" in endpoint:
        try:
            parts = urlsplit(endpoint)
            if parts.username is not None or parts.password is not None:
                otlp["endpoint"] = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
                omitted.append("the user and password in otlp.endpoint")
        except ValueError:
            otlp.pop("endpoint")
            omitted.append("otlp.endpoint")
    return {**config, "otlp": otlp}, omitted


def worker_env(include_secrets: bool = False) -> dict[str, str]:
    """Environment variables that let processes started elsewhere push like this one.

    Pass them where the environment is not inherited: ``ray.init(runtime_env={"env_vars": otel_rl.worker_env()})``
    for a remote Ray cluster, a Kubernetes pod spec, ``torchrun`` on other hosts. Empty when this process has no
    telemetry that workers can copy (pull only, or none).

    Secrets stay out unless ``include_secrets=True``: OTLP header values (bearer tokens, API keys) and the user
    and password of the endpoint URL. Such a runtime env is shown in Ray's dashboard and kept in pod specs; give
    the workers their token through ``OTEL_EXPORTER_OTLP_HEADERS`` from a secret store instead (a worker that
    lacks it says so once).
    """
    published = _published()
    if published is None:
        return {}
    if not include_secrets:
        config, omitted = _without_secrets(published["config"])
        published = {**published, "config": config, "omitted": omitted} if omitted else published
    return {WORKER_CONFIG_ENV: json.dumps(published, sort_keys=True)}


def publish(settings: Any) -> None:
    """Publish push settings for the processes this one starts (if they can push); called when telemetry starts."""
    config = worker_config(settings)
    if config is None:
        return
    os.environ[WORKER_CONFIG_ENV] = json.dumps({"parent": os.getpid(), "host": socket.gethostname(),
                                                "config": config}, sort_keys=True)


def withdraw() -> None:
    """Called when this process' telemetry shuts down: processes started later no longer push."""
    published = _published()
    if published is not None and _is_publisher(published):
        os.environ.pop(WORKER_CONFIG_ENV, None)


def warn_omitted_secrets() -> None:
    """One warning in a worker handed its parent's settings without their secrets and with no headers of its own."""
    global _secrets_warned
    published = _published() or {}
    omitted = published.get("omitted")
    if _secrets_warned or not omitted or _is_publisher(published) \
            or any(os.environ.get(name, "").strip() for name in HEADERS_ENV):
        return
    _secrets_warned = True
    _logger.warning(
        "otel-rl: process %d got its parent's OTLP settings without %s (otel_rl.worker_env() leaves secrets out), "
        "and its environment has no OTEL_EXPORTER_OTLP_HEADERS: a collector that requires authentication will "
        "refuse its exports. Set OTEL_EXPORTER_OTLP_HEADERS in this worker's environment (for instance "
        "Authorization=Bearer%%20<token>, from a secret store), or use worker_env(include_secrets=True) where the "
        "worker's environment is private. See docs/security.md.", os.getpid(), " and ".join(map(str, omitted)))


def inherited_config() -> dict[str, Any] | None:
    """The config published by an ancestor process, when this process is not that ancestor."""
    published = _published()
    if published is None or _is_publisher(published):
        return None
    return published["config"]


def _after_fork_in_child() -> None:
    global _secrets_warned
    _secrets_warned = False  # a forked worker says it once for itself


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
