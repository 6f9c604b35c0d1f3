"""Your own scalars: ``record_scalar`` and the ``extra_keys`` of result dicts and SB3's logger.

Each name becomes one gauge, ``rl_training_custom_<name>`` (the name with every character other than a letter,
digit or ``_`` replaced by ``_``), an observable gauge on otel-rl's MeterProvider (:mod:`otel_rl._internal.provider`)
whose callback reads the last value of each label set kept here. So, like the catalog metrics, a value recorded
before ``init_telemetry`` is exported once it runs, and both export paths show the same series.

Bounded: at most :data:`MAX_NAMES` names and ``cardinality_limit`` label sets per name (past it, the overflow
series ``otel_metric_overflow="true"``). Never raises (outside strict mode): a bad value, name or label is dropped,
counted in ``otel_rl_dropped_values_total`` and logged once.
"""

from __future__ import annotations

import fnmatch
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from otel_rl._internal.catalog import OVERFLOW_LABEL
from otel_rl._internal.provider import PROXY
from otel_rl._internal.results import leaves
from otel_rl._internal.store import (
    BAD_LABELS,
    BAD_NAME,
    LABEL_TOO_LONG,
    OVER_LIMIT,
    REGISTRY,
    describe,
    number,
)
from otel_rl._internal.values import Reason, utf8

PREFIX = "rl_training_custom_"
#: Distinct custom names per process: a loop that formats a step number into the name must not grow without end.
MAX_NAMES = 256
MAX_NAME_LENGTH = 200
#: Where the dropped-values counter files a value whose name was refused (it has no metric name of its own).
REFUSED = PREFIX + "refused"
SCOPE = "otel_rl.custom"

_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OVERFLOW = ((OVERFLOW_LABEL, "true"),)
_SKIP_TYPES = (str, bytes, bool, list, tuple, dict, set, type(None))


def metric_name(name: str) -> str:
    """The gauge a key or name is recorded as: ``rl_training_custom_`` and the name made Prometheus-safe."""
    safe = _UNSAFE.sub("_", name).strip("_")
    if safe.startswith(PREFIX):
        return safe
    return PREFIX + safe


class _Scalar:
    """One custom gauge: the last value per label set, read by its observable instrument's callback."""

    __slots__ = ("name", "values", "__weakref__")

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def observe(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(value, dict(key)) for key, value in list(self.values.items())]


_lock = threading.Lock()
_scalars: dict[str, _Scalar] = {}
#: The names record_scalar was called with -> their gauge (a name and its gauge's name can differ: eval/return).
_by_name: dict[str, _Scalar] = {}
_patterns: tuple[str, ...] = ()


def _scalar(name: Any) -> _Scalar | None:
    """The gauge of ``name`` (made on first use), or None after counting a refused name."""
    scalar = _by_name.get(name) if type(name) is str else None
    if scalar is not None:  # the common case: a name seen before, without the two regular expressions below
        return scalar
    if type(name) is not str or not name or len(name) > MAX_NAME_LENGTH or not _UNSAFE.sub("", name):
        REGISTRY.drop(REFUSED, BAD_NAME, name)
        return None
    full = metric_name(name)
    with _lock:
        scalar = _scalars.get(full)
        if scalar is None:
            if len(_scalars) >= MAX_NAMES:
                REGISTRY.drop(REFUSED, BAD_NAME, name)
                return None
            scalar = _scalar_for(full)
        if len(_by_name) < 4 * MAX_NAMES:  # bounded: many spellings of one gauge (a.b, a/b) take the slow path
            _by_name[name] = scalar
    return scalar


def _scalar_for(full: str) -> _Scalar:
    scalar = _scalars[full] = _Scalar(full)
    PROXY.get_meter(SCOPE).create_observable_gauge(full, [scalar.observe], "", "set by otel_rl.record_scalar")
    return scalar


def record_scalar(name: str, value: float, **labels: Any) -> None:
    """Set the gauge ``rl_training_custom_<name>`` to ``value`` for ``labels`` (label names: letters, digits, _).

    For figures the catalog has no series for: ``record_scalar("success_rate", 0.8, algorithm="PPO")``. Never
    raises: a value that is not a finite number, a bad name or label is dropped, counted and logged once.
    """
    scalar = _scalar(name)
    if scalar is None:
        return
    checked = number(value)
    if type(checked) is Reason:
        REGISTRY.drop(scalar.name, checked, value)
        return
    try:
        key = tuple(sorted((k, v if type(v) is str else str(v)) for k, v in labels.items()))
    except Exception:  # noqa: BLE001 (a label whose __str__ raises)
        key = None
    if key is None or not all(_LABEL.fullmatch(k) and not k.startswith("__") for k, _ in key):
        REGISTRY.drop(scalar.name, BAD_LABELS, labels)
        return
    values = scalar.values
    if key not in values:
        clean = tuple((k, utf8(v)) for k, v in key)
        if clean != key:  # lone surrogates (os.fsdecode of bytes): no exporter can encode them; as the store does
            REGISTRY.warn_once((scalar.name, "label_not_utf8"), "otel-rl: a label value of %s is not valid UTF-8 "
                               "(%s); it is recorded with its lone surrogates backslash-escaped.", scalar.name,
                               describe(labels))
            key = clean
        limit = REGISTRY.label_value_limit
        if any(len(v) > limit for _, v in key):  # cut as the store cuts its labels, so every export stays small
            REGISTRY.drop(scalar.name, LABEL_TOO_LONG, labels)
            key = tuple((k, v[:limit]) for k, v in key)
    if key not in values:
        REGISTRY.run_new_series_hook()  # a worker's first record starts its telemetry from its parent's settings
        if REGISTRY.strict:
            REGISTRY.check_running(scalar.name)
        with _lock:
            if key not in values and len(values) >= REGISTRY.cardinality_limit:
                REGISTRY.drop(scalar.name, OVER_LIMIT, labels)
                key = _OVERFLOW
    values[key] = checked  # type: ignore[assignment]


def set_patterns(patterns: Iterable[str]) -> None:
    """The ``extra_keys`` setting of the running telemetry (empty: no extra keys are recorded)."""
    global _patterns
    _patterns = tuple(patterns)


def record_extra(values: Mapping[str, Any] | Iterable[tuple[str, Any]], **labels: Any) -> None:
    """Record the numeric entries whose key matches an ``extra_keys`` pattern, each with ``labels``.

    Entries that are not scalars (strings, lists, mappings, None, booleans) are skipped: a pattern such as
    ``rollout/*`` may cover text too. A matching NaN or infinite number is dropped and counted as any value.
    """
    patterns = _patterns
    if not patterns:
        return
    items = values.items() if isinstance(values, Mapping) else values
    for key, value in items:
        if type(key) is not str or isinstance(value, _SKIP_TYPES):
            continue
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns):
            record_scalar(key, value, **labels)


def record_extra_result(result: Mapping[str, Any], **labels: Any) -> None:
    """:func:`record_extra` over the leaves of a (nested) result dict, keys joined with ``/``."""
    if _patterns:
        record_extra(leaves("", result), **labels)


def reset() -> None:
    """Forget every value (the gauges stay declared); for tests and forked children."""
    for scalar in list(_scalars.values()):
        scalar.values = {}


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
