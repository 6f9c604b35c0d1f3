"""Who this process is: the main process, a forked child, a multiprocessing or Ray worker, a torchrun rank.

:func:`role` and :func:`process_attributes` become resource attributes (``rl.process.role``, ``process.pid``,
``rl.worker.index``, Ray ids) so the processes of one run are told apart. Ray and multiprocessing are looked at only
when the program already imported them.

A plain module: imports only :mod:`otel_rl._internal.worker_settings` (a process handed settings is a child).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from otel_rl._internal.worker_settings import published_parent

_logger = logging.getLogger("otel_rl")

_forked_from: int | None = None  #: the parent's pid in a child forked from a process with telemetry


def mark_forked_child(parent_pid: int) -> None:
    """Called in a child forked from a process with telemetry: its role is ``forked-child`` of ``parent_pid``."""
    global _forked_from
    _forked_from = parent_pid


def _env_int(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value if value.lstrip("-").isdigit() else None


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
    if published_parent() is not None:
        return "child"
    return "main"


def process_attributes() -> dict[str, str]:
    """Resource attributes that tell this process apart: pid, parent, role, worker index, rank, Ray ids."""
    attrs = {"process.pid": str(os.getpid()), "rl.process.role": role()}
    parent = _forked_from or published_parent()
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
