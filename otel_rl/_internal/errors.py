"""The ground floor: the errors otel-rl raises and how a value is named in a message. Imports nothing of ours.

Every other module may import this one; it imports none of them, so a setup error can be raised (and a bad value
described) from anywhere without an import circle.
"""

from __future__ import annotations

import reprlib
from typing import Any


class ConfigError(ValueError):
    """A setting is unknown or has a value that is not allowed."""


class StrictModeError(ValueError):
    """Misuse that strict mode (``strict: true`` or ``OTEL_RL_STRICT=1``) raises instead of dropping and counting."""


#: Modules whose values are tensors: never read implicitly (``float()`` on a CUDA or cupy value syncs the device).
TENSOR_MODULES = ("torch", "tensorflow", "jax", "cupy")

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 80


def describe(value: Any) -> str:
    """A short, safe description of a value for a log line.

    Never reads a tensor's data (a CUDA tensor's repr forces a device sync): tensors and arrays are described by
    type, shape, dtype and device. Other values get a truncated repr; a repr that raises (or an int too long to
    print) is described by its type. The result is always valid UTF-8 (lone surrogates are backslash-escaped).
    """
    cls = type(value)
    module = cls.__module__
    if module.startswith(TENSOR_MODULES):
        parts = [f"{module.split('.')[0]}.{cls.__qualname__}"]
        for attr in ("shape", "dtype", "device"):
            try:
                parts.append(f"{attr}={tuple(getattr(value, attr)) if attr == 'shape' else getattr(value, attr)}")
            except Exception:  # noqa: BLE001 (recording never raises)
                pass
        return "<" + " ".join(parts) + ">"
    if cls is int and value.bit_length() > 256:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 (recording never raises)
        text = f"<{cls.__qualname__} object (repr failed)>"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
