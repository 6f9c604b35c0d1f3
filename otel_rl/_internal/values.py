"""Values and labels as the store takes them: drop reasons with their hints, :func:`number` (a recorded value as
a finite float, or why it is dropped) and label-value cleaning (UTF-8, carriage returns).

The ground floor of the store: imports only :mod:`otel_rl._internal.errors`.
"""

from __future__ import annotations

import math
import os
from typing import Any

from otel_rl._internal.errors import TENSOR_MODULES


def strict_from_environment() -> bool:
    """Whether ``OTEL_RL_STRICT`` turns strict mode on before (or without) ``init_telemetry``."""
    return os.environ.get("OTEL_RL_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


class Reason(str):
    """Why a value was dropped; the string is the ``reason`` label."""


NONE = Reason("none")
NAN = Reason("nan")
INF = Reason("inf")
WRONG_TYPE = Reason("wrong_type")
TENSOR = Reason("tensor")
NEGATIVE = Reason("negative")
OVER_LIMIT = Reason("cardinality_limit")
BAD_LABELS = Reason("bad_labels")
BAD_NAME = Reason("bad_name")
UNREADABLE = Reason("unreadable_result")
LABEL_TOO_LONG = Reason("label_too_long")

HINTS = {
    NONE: "None is not a number",
    NAN: "NaN is not recorded",
    INF: "infinite values are not recorded",
    WRONG_TYPE: "expected an int, a float or a numpy scalar",
    TENSOR: "tensors are not read implicitly (that could force a device sync); pass tensor.item()",
    NEGATIVE: "counters only go up",
    OVER_LIMIT: "more label sets than the cardinality limit; the value went to the overflow series",
    BAD_LABELS: "the label values do not match the metric's label keys, or one cannot be made a string",
    BAD_NAME: "a name must be a non-empty string of at most 200 characters, and at most 256 names are recorded",
    UNREADABLE: "a train step's result dict could not be read, so its iteration was not recorded (the first "
                "failure's traceback is logged)",
    LABEL_TOO_LONG: "a label value longer than label_value_limit characters was cut to that length; the value "
                    "itself was recorded, under the cut label",
}


def to_number(value: Any) -> float | Reason:
    """Return ``value`` as a finite float, or the reason it cannot be recorded."""
    if value is None:
        return NONE
    if isinstance(value, (str, bytes)):
        return WRONG_TYPE
    module = type(value).__module__
    if module.startswith(TENSOR_MODULES):
        return TENSOR
    if module == "numpy" and getattr(value, "shape", None) not in (None, ()):
        return WRONG_TYPE
    try:
        number = float(value)  # int, bool, float subclasses, numpy scalars and 0-d arrays, Fraction, Decimal
    except OverflowError:  # an int or Fraction beyond the float range (10**400)
        return INF
    except Exception:  # noqa: BLE001 (TypeError, ValueError, or whatever a user's __float__ raises)
        return WRONG_TYPE
    if number != number:
        return NAN
    if number in (math.inf, -math.inf):
        return INF
    return number


def number(value: Any) -> float | Reason:
    """Fast path for the common case; everything else goes through :func:`to_number`."""
    if type(value) is float:
        return value if value - value == 0.0 else (NAN if value != value else INF)
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:  # 10**400
            return INF
    return to_number(value)


def utf8(value: str) -> str:
    """``value`` if it is valid UTF-8 text, else with its lone surrogates backslash-escaped (``\\udcff``)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def clean_key(key: tuple[str, ...]) -> tuple[str, ...]:
    """``key`` itself when every value is valid UTF-8 without a carriage return, else a new key with lone
    surrogates backslash-escaped and each carriage return written as the two characters ``\\r``.

    The exposition formats escape only backslash, quote and line feed: a raw carriage return ends the line for a
    reader with universal newlines, and ``\\r`` is an invalid escape for Prometheus. Stored so, the pull and the
    push path carry the same label."""
    try:
        text = "".join(key)
        text.encode("utf-8")
        if "\r" not in text:
            return key
        return tuple(v.replace("\r", "\\r") for v in key)
    except UnicodeEncodeError:
        return tuple(utf8(v).replace("\r", "\\r") for v in key)
    except Exception:  # noqa: BLE001 (a key that is not a tuple of str: left as it is)
        return key


def label_strings(labels: tuple[Any, ...]) -> tuple[str, ...] | None:
    """Label values as strings, or None when one cannot be made a string (its ``__str__`` raises)."""
    try:
        return tuple(v if type(v) is str else str(v) for v in labels)
    except Exception:  # noqa: BLE001 (recording never raises)
        return None
