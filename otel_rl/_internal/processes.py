"""Several processes: fork safety, per-process identity, push settings handed to workers, no silent loss.

- After ``os.fork()`` the child re-creates every lock, starts from an empty store and abandons the parent's
  telemetry without touching it (no export under the parent's identity, no ``shutdown()`` of the parent's HTTP
  server; the inherited listening socket is closed so the port is freed when the parent stops).
- :func:`init_telemetry` in a process that pushes over OTLP (or serves ``/metrics`` with a ``prometheus.file_sd``
  target file) publishes those settings in the environment variable ``OTEL_RL_WORKER_CONFIG``. A descendant
  process (forked, spawned, a Ray worker started after it, a torchrun rank given the variable) that records
  without telemetry of its own starts push telemetry from them on its first record, with its own
  ``service.instance.id`` and its role as resource attributes.
- A process that records but has no exporter of its own logs one warning naming its pid and what to do.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from otel_rl._internal.store import REGISTRY

_logger = logging.getLogger("otel_rl")

#: The environment variable through which a process hands its push settings to the processes it starts.
WORKER_CONFIG_ENV = "OTEL_RL_WORKER_CONFIG"

_hook_lock = threading.Lock()
_forked_from: int | None = None  #: the parent's pid in a child forked from a process with telemetry
_warned = False
_secrets_warned = False  #: warn_omitted_secrets() said it once in this process


# -- identity -------------------------------------------------------------------------------------------------------


def _env_int(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value if value.lstrip("-").isdigit() else None


def _is_publisher(published: dict[str, Any]) -> bool:
    """Whether this process published ``published`` (same pid on the same host)."""
    return published.get("parent") == os.getpid() and published.get("host", socket.gethostname()) \
        == socket.gethostname()


def _published_parent() -> int | None:
    published = _published()
    if published is None or _is_publisher(published):
        return None
    parent = published.get("parent")
    return parent if isinstance(parent, int) else None


def _ray_attributes() -> dict[str, str]:
    """Ray ids of this worker, read only when ray is already imported (never imports it)."""
    ray = sys.modules.get("ray")
    if ray is None:
        return {}
    attrs: dict[str, str] = {}
    try:
        if not ray.is_initialized():
            return {}
        ctx = ray.get_runtime_context()
        if getattr(ctx.worker, "mode", None) != getattr(ray, "WORKER_MODE", 1):
            return {}  # the driver: no worker ids to add
        attrs["ray.job_id"] = str(ctx.get_job_id())
        attrs["ray.node_id"] = str(ctx.get_node_id())
        attrs["ray.worker_id"] = str(ctx.get_worker_id())
        actor = ctx.get_actor_id()  # a task's id is not the process': Ray reuses task workers for other tasks
        if actor:
            attrs["ray.actor_id"] = str(actor)
        trial = ray_trial()
        if trial is not None:
            attrs["ray.trial_id"], attrs["ray.trial_name"] = trial
    except Exception:  # a Ray API that moved must not stop recording
        _logger.debug("otel-rl: could not read Ray's runtime context", exc_info=True)
    return attrs


_class_trial: tuple[str, str] | None = None


def set_trial(trial_id: str, trial_name: str) -> None:
    """This process runs a Tune class trainable (``tune.Tuner(PPO)``): such trials have no Tune session to ask."""
    global _class_trial
    _class_trial = (trial_id, trial_name)


def ray_trial() -> tuple[str, str] | None:
    """``(trial_id, trial_name)`` inside a Ray Tune trial, else None (never imports ray)."""
    session_module = sys.modules.get("ray.train._internal.session")
    if session_module is None:
        return _class_trial
    try:
        session = session_module.get_session()
        if session is None or not getattr(session, "trial_id", None):
            return _class_trial
        return str(session.trial_id), str(getattr(session, "trial_name", "") or session.trial_id)
    except Exception:  # noqa: BLE001 (a Ray API that changed shape: no trial)
        return None


def in_ray_worker() -> bool:
    ray = sys.modules.get("ray")
    try:
        return bool(ray is not None and ray.is_initialized()
                    and ray.get_runtime_context().worker.mode == getattr(ray, "WORKER_MODE", 1))
    except Exception:  # noqa: BLE001 (no Ray worker context: not a Ray worker)
        return False


def role() -> str:
    """What this process is, for the ``rl.process.role`` resource attribute and messages."""
    if in_ray_worker():
        return "ray-worker"
    if _env_int("RANK") is not None:
        return "rank"
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        return "multiprocessing-worker"
    if _forked_from is not None:
        return "forked-child"
    if _published_parent() is not None:
        return "child"
    return "main"


def process_attributes() -> dict[str, str]:
    """Resource attributes that tell this process apart: pid, parent, role, worker index, rank, Ray ids."""
    attrs = {"process.pid": str(os.getpid()), "rl.process.role": role()}
    parent = _forked_from or _published_parent()
    if parent is not None:
        attrs["process.parent_pid"] = str(parent)
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        current = mp.current_process()
        attrs["rl.worker.name"] = current.name
        identity = getattr(current, "_identity", ())
        if identity:
            attrs["rl.worker.index"] = str(identity[-1])
    for env, key in (("RANK", "rl.rank"), ("LOCAL_RANK", "rl.local_rank"), ("WORLD_SIZE", "rl.world_size")):
        value = _env_int(env)
        if value is not None:
            attrs[key] = value
    attrs.update(_ray_attributes())
    return attrs


def instance_id() -> str:
    """``service.instance.id`` of this process: unique per process on a host, as Prometheus' ``instance``."""
    return f"{socket.gethostname()}-{os.getpid()}"


# -- settings handed to workers --------------------------------------------------------------------------------------


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
    """Called by init_telemetry: publish push settings for the processes this one starts (if they can push)."""
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


# -- the first record of a process without telemetry ----------------------------------------------------------------


def _first_new_series() -> None:
    """Registry hook: called (once per process) when the first new series appears.

    Starts push telemetry from the published settings in a worker, or warns that the values go nowhere.
    """
    global _warned
    REGISTRY.new_series_hook = None
    if sys.is_finalizing():  # a wrapper's close() from a __del__ at exit: nothing to start, and no imports work
        return
    from otel_rl._internal import telemetry

    if telemetry.current() is not None:
        return
    with _hook_lock:
        if telemetry.current() is not None:
            return
        config = inherited_config()
        if config is not None:
            warn_omitted_secrets()
            try:
                telemetry.init_telemetry(config)._automatic = True
                _logger.info("otel-rl: process %d (%s) pushes its own metrics with the settings its parent "
                             "published in %s", os.getpid(), role(), WORKER_CONFIG_ENV)
                return
            except Exception as exc:  # noqa: BLE001 (a recording call must never raise)
                _logger.warning("otel-rl: process %d could not start telemetry from %s: %s", os.getpid(),
                                WORKER_CONFIG_ENV, exc)
        kind = role()
        if kind == "main" or _warned:
            return  # a main process may record before init_telemetry(): its values are exported then
        _warned = True
        _logger.warning(
            "otel-rl: process %d (%s) records metrics but has no exporter of its own: its values reach neither "
            "/metrics nor a collector. Push from it over OTLP (init_telemetry with exporters: [otlp] in the "
            "parent hands its settings to its workers, or call init_telemetry in the worker), or record in the "
            "driver through the framework's own channel (otel_rl.integrations.sb3, otel_rl.integrations.rllib). "
            "See docs/multiprocess.md.", os.getpid(), kind)


def arm() -> None:
    REGISTRY.new_series_hook = _first_new_series


# -- fork --------------------------------------------------------------------------------------------------------------


def _after_fork_in_child() -> None:
    global _forked_from, _hook_lock, _warned, _secrets_warned
    _hook_lock = threading.Lock()
    _warned = _secrets_warned = False
    REGISTRY.after_fork_in_child()
    decorators = sys.modules.get("otel_rl._internal.decorators")
    if decorators is not None:
        decorators._after_fork_in_child()
    from otel_rl._internal import telemetry

    parent = telemetry._after_fork_in_child()
    if parent is not None:
        _forked_from = os.getppid()
    arm()


def install() -> None:
    """Register the fork handler once and arm the first-record hook (called when otel_rl is imported)."""
    if getattr(install, "_done", False):
        return
    install._done = True  # type: ignore[attr-defined]
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    arm()


# -- exit of a worker ----------------------------------------------------------------------------------------------


def enroll_worker_exit(telemetry: Any) -> None:
    """Flush a multiprocessing worker's telemetry when it exits.

    A ``multiprocessing`` child leaves through ``os._exit`` after its target returns, so atexit handlers never
    run there; multiprocessing's own finalizers do (unless the worker is terminated, as ``Pool.terminate()`` and
    leaving a ``with Pool()`` block do).
    """
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(telemetry, telemetry.shutdown, exitpriority=10)


def flush_worker(timeout: float | None = None) -> bool:
    """At the end of a training run in a worker process (a Ray Tune trial, a rank): export the final values now.

    Worker processes are often stopped without a normal interpreter exit (Ray kills its actors), which would
    lose the values recorded since the last periodic export. The flush has ``shutdown_timeout`` unless given
    ``timeout``, and counts as done only when values collected after it began were exported (a warning if not).
    Returns False only when such a flush did not get through.
    """
    from otel_rl._internal import telemetry

    current = telemetry.current()
    if current is None or role() == "main" or "otlp" not in current.settings.exporters:
        return True
    timeout = current.settings.shutdown_timeout if timeout is None else timeout
    if not current.force_flush(timeout):
        _logger.warning("otel-rl: process %d could not export its final values within %.1f s", os.getpid(),
                        timeout)
        return False
    return True
