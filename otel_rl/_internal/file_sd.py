"""Pull path with several processes: a Prometheus ``file_sd_configs`` target file each process joins and leaves.

Each process serves ``/metrics`` on a port of its own (``prometheus.port: 0`` picks a free one) and adds
``host:port`` to a JSON target file that Prometheus watches; it removes itself on shutdown. This is how Ray's
metrics agents publish their targets. Writes take an exclusive ``flock`` on ``<file>.lock`` and replace the file
atomically, so Prometheus never reads a half-written file and concurrent processes never lose each other's
entries. Entries of processes on this host that died without removing themselves are dropped on the next write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

_logger = logging.getLogger("otel_rl")

#: Meta labels of each target group: visible to relabeling (``__meta_otel_rl_role`` -> ``role``), then dropped.
PID_LABEL = "__meta_otel_rl_pid"
HOST_LABEL = "__meta_otel_rl_host"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(str(path) + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        groups = json.loads(path.read_text(encoding="utf-8") or "[]")
    except FileNotFoundError:
        return []
    except ValueError:
        _logger.warning("otel-rl: %s is not a JSON list of target groups; rewriting it", path)
        return []
    return [g for g in groups if isinstance(g, dict) and isinstance(g.get("targets"), list)] \
        if isinstance(groups, list) else []


def _write(path: Path, groups: list[dict[str, Any]]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(groups, f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: Prometheus sees the old file or the new one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _alive(group: Mapping[str, Any]) -> bool:
    """False for an entry of a process on this host that no longer exists (it was killed before leaving)."""
    labels = group.get("labels") or {}
    if labels.get(HOST_LABEL) != socket.gethostname():
        return True
    try:
        os.kill(int(labels.get(PID_LABEL, "")), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError, OSError):
        return True
    return True


def advertised_address(host: str, port: int) -> str:
    """``host:port`` as Prometheus should reach it: a wildcard bind is advertised under the host's name."""
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def join(path: str | os.PathLike[str], address: str, meta: Mapping[str, str]) -> None:
    """Add this process' target (replacing an older entry of the same address)."""
    file = Path(path)
    group = {"targets": [address],
             "labels": {PID_LABEL: str(os.getpid()), HOST_LABEL: socket.gethostname(),
                        **{"__meta_otel_rl_" + k.removeprefix("rl.").replace(".", "_"): str(v)
                           for k, v in meta.items()}}}
    with _locked(file):
        groups = [g for g in _read(file) if address not in g["targets"] and _alive(g)]
        groups.append(group)
        _write(file, groups)


def leave(path: str | os.PathLike[str], address: str) -> None:
    """Remove this process' target; never raises (it runs at shutdown)."""
    file = Path(path)
    try:
        with _locked(file):
            groups = _read(file)
            kept = [g for g in groups if address not in g["targets"] and _alive(g)]
            if kept != groups:
                _write(file, kept)
    except OSError as exc:
        _logger.warning("otel-rl: could not remove %s from %s: %s", address, file, exc)
