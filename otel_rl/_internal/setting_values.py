"""The values of the settings: one parser per kind of value, and the tables of allowed values.

Each parser returns the parsed value or raises :class:`InvalidValue` saying what is allowed; ``config`` adds the key
and the (redacted) value to make the :class:`ConfigError`. A parser that checks a file (the web config) raises
ConfigError itself, naming the key inside the file. Imports errors and, inside the parsers that need them, catalog
(histogram names) and webconfig (the web config file's check).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from otel_rl._internal.errors import describe

EXPORTERS = ("prometheus", "otlp", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("none", "gzip", "deflate")


class InvalidValue(Exception):
    """A value a parser refuses; its message says what is allowed (the caller names the key and the value)."""


#: Bounds of the durations, in seconds. Below them a reader or server loop would spin (1e-9 s export interval);
#: above them a thread wait overflows or an export could never finish (1e300 s).
TIMEOUT_BOUNDS = (0.01, 3600.0)  #: shutdown_timeout and otlp.timeout
LINGER_BOUNDS = (0.0, 3600.0)  #: prometheus.linger (0: off)
INTERVAL_BOUNDS = (0.1, 86400.0)  #: otlp.export_interval
MAX_CARDINALITY_LIMIT = 1_000_000
#: Bounds of ``label_value_limit``: a longer label would make one series alone near the gRPC message limit.
LABEL_VALUE_LIMIT_BOUNDS = (16, 65536)


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: os.fsdecode of non-UTF-8 bytes, or a bad environment
        return False
    return "\x00" not in value


def parse_text(value: Any) -> str:
    """Non-empty UTF-8 text without NUL characters, stripped."""
    if not isinstance(value, str) or not value.strip() or not _utf8(value):
        raise InvalidValue("a non-empty string (UTF-8 text without NUL characters)")
    return value.strip()


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _valid_hostname(host: str) -> bool:
    """A DNS name (RFC 1123 labels of 1-63 letters, digits, ``-``, ``_``; 253 characters at most) or an IP."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def parse_host(value: Any) -> str:
    """A host name or an IP address to bind the endpoint to."""
    allowed = "a host name (labels of at most 63 letters, digits, '-' or '_') or an IPv4/IPv6 address"
    try:
        host = parse_text(value)
    except InvalidValue:
        raise InvalidValue(allowed) from None
    if not _valid_hostname(host):
        raise InvalidValue(allowed)
    return host


def parse_endpoint(value: Any) -> str:
    """An OTLP endpoint: an http:// or https:// URL, or the ``host:port`` form gRPC also takes."""
    allowed = "an http:// or https:// URL with a host (e.g. http://localhost:4317), or host:port"
    try:
        endpoint = parse_text(value)
        if any(c.isspace() or ord(c) < 32 for c in endpoint):
            raise ValueError
        parts = urlsplit(endpoint)  # raises ValueError for "http://[::1"
        if parts.scheme in ("http", "https"):
            parts.port  # noqa: B018 (raises ValueError when out of range)
            if not parts.hostname or not _valid_hostname(parts.hostname):
                raise ValueError
            return endpoint
        host, sep, port = endpoint.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535 or not _valid_hostname(host):
            raise ValueError
    except (ValueError, InvalidValue):
        raise InvalidValue(allowed) from None
    return endpoint


def parse_bool(value: Any) -> bool:
    """A YAML boolean, or its spelling in an environment variable (yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise InvalidValue("true or false (also yes/no, on/off, 1/0)")


def parse_port(value: Any) -> int:
    """A TCP port; 0 lets the system pick a free one."""
    if isinstance(value, bool):
        raise InvalidValue("an integer port from 0 to 65535")
    try:
        port = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise InvalidValue("an integer port from 0 to 65535") from None
    if isinstance(value, float) and value != port or not 0 <= port <= 65535:
        raise InvalidValue("an integer port from 0 to 65535")
    return port


def parse_cardinality_limit(value: Any) -> int:
    """Series a metric may have before new label sets are dropped."""
    allowed = f"a positive integer up to {MAX_CARDINALITY_LIMIT:_}"
    if isinstance(value, bool):
        raise InvalidValue(allowed)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise InvalidValue(allowed) from None
    if not 1 <= number <= MAX_CARDINALITY_LIMIT or isinstance(value, float) and value != number:
        raise InvalidValue(allowed)
    return number


def parse_label_value_limit(value: Any) -> int:
    """Characters a label value keeps."""
    low, high = LABEL_VALUE_LIMIT_BOUNDS
    allowed = f"an integer number of characters from {low} to {high}"
    if isinstance(value, bool):
        raise InvalidValue(allowed)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidValue(allowed) from None
    if not low <= number <= high or isinstance(value, float) and value != number:
        raise InvalidValue(allowed)
    return number


def seconds_parser(bounds: tuple[float, float], scale: float = 1.0) -> Callable[[Any], float]:
    """A duration from ``bounds[0]`` to ``bounds[1]`` seconds (0 means off when it is the lower bound), given in
    seconds, or in milliseconds (``scale=1000``) as the OTEL_* variables give it."""
    low, high = bounds
    unit = "seconds" if scale == 1.0 else "milliseconds"
    allowed = f"a number of {unit} from {low * scale:.10g} to {high * scale:.10g}"
    if low == 0.0:
        allowed += " (0: off)"

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise InvalidValue(allowed)
        try:
            number = float(value) / scale
        except (TypeError, ValueError, OverflowError):
            raise InvalidValue(allowed) from None
        if not low <= number <= high:  # also NaN and +-inf
            raise InvalidValue(allowed)
        return number

    return parse


def choice_parser(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    """A parser of one of ``allowed`` (any case, surrounding spaces ignored)."""
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in allowed:
            raise InvalidValue("one of " + ", ".join(allowed))
        return value.strip().lower()

    return parse


def parse_exporters(value: Any) -> tuple[str, ...]:
    """Exporter names, as a list or comma-separated text; ``none`` alone turns every exporter off."""
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    allowed = "a list of " + ", ".join(EXPORTERS)
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidValue(allowed)
    result: list[str] = []
    for item in items:
        if not isinstance(item, str) or item.strip().lower() not in EXPORTERS:
            raise InvalidValue(allowed)
        name = item.strip().lower()
        if name not in result:
            result.append(name)
    if "none" in result and len(result) > 1:
        raise InvalidValue("'none' alone, or " + allowed)
    return tuple(r for r in result if r != "none")


def parse_patterns(value: Any) -> tuple[str, ...]:
    """Glob patterns (``rollout/*``), as a list or comma-separated text."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    allowed = "a list of glob patterns of keys (e.g. ['rollout/*', 'train/my_*'])"
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and i.strip() and _utf8(i)
                                                       for i in items) or len(items) > 100:
        raise InvalidValue(allowed + ", at most 100")
    return tuple(dict.fromkeys(i.strip() for i in items))


def parse_buckets(value: Any) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """Per-histogram bucket bounds: ``{metric name: [bound, ...]}``, strictly increasing finite numbers."""
    from otel_rl._internal.catalog import BY_NAME

    histograms = [s.name for s in BY_NAME.values() if s.type == "histogram"]
    allowed = ("a mapping of histogram names (" + ", ".join(histograms) + ") to 1-100 strictly increasing "
               "finite numbers")
    if not isinstance(value, Mapping):
        raise InvalidValue(allowed)
    result = []
    for name, bounds in value.items():
        if name not in histograms or not isinstance(bounds, (list, tuple)) or not 1 <= len(bounds) <= 100:
            raise InvalidValue(allowed + f" ({describe(name)} is not)" if name not in histograms else allowed)
        try:
            floats = tuple(float(b) for b in bounds if not isinstance(b, (bool, str)))
        except (TypeError, ValueError, OverflowError):
            raise InvalidValue(allowed) from None
        if len(floats) != len(bounds) or not all(f - f == 0.0 for f in floats) \
                or any(a >= b for a, b in zip(floats, floats[1:])):
            raise InvalidValue(allowed)
        result.append((name, floats))
    return tuple(sorted(result))


def parse_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """A mapping, or the W3C-baggage-like ``k=v,k2=v2`` text of OTEL_RESOURCE_ATTRIBUTES and OTLP headers."""
    allowed = "a mapping of strings, or 'key=value,key2=value2'"
    if isinstance(value, Mapping):
        # Values are scalars: str() of a nested structure could be any size (a YAML alias bomb).
        if not all(isinstance(k, str) and k for k in value) \
                or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            raise InvalidValue(allowed)
        pairs = tuple((k, str(v)) for k, v in value.items())
    elif isinstance(value, str):
        items = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise InvalidValue(allowed)
            items.append((unquote(key.strip()), unquote(val.strip())))
        pairs = tuple(items)
    else:
        raise InvalidValue(allowed)
    if not all(_utf8(k) and _utf8(v) for k, v in pairs):  # they end up in protobuf or gRPC metadata
        raise InvalidValue(allowed + ", as UTF-8 text without NUL characters")
    return pairs


def parse_target_file(value: Any) -> str:
    """The ``prometheus.file_sd`` target file: replaceable and lockable in its directory."""
    allowed = "the path of a JSON file (a regular file, or none yet) in an existing, writable directory"
    path = Path(parse_text(value))
    try:
        # The file is replaced through a temporary ".<name>.XXXXXXXX" beside it and locked through "<name>.lock".
        name_max = os.pathconf(path.parent, "PC_NAME_MAX") if path.parent.is_dir() else 255
        if len(os.fsencode(path.name)) + len(".") + len(".XXXXXXXX") > name_max:
            raise InvalidValue(f"{allowed}, with a file name of at most {name_max - 10} bytes")
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise InvalidValue(allowed)
        if path.exists() and not path.is_file():
            raise InvalidValue(allowed)
    except (OSError, ValueError) as exc:  # a path too long for the system, NUL characters
        raise InvalidValue(f"{allowed} ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    return str(path)


def parse_pem_path(value: Any) -> str:
    """The path of an existing file (a CA certificate, client certificate or key)."""
    path = parse_text(value)
    try:
        found = Path(path).is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise InvalidValue("the path of a readable PEM file")
    return path


def parse_web_config_file(value: Any) -> str:
    """Checked in full here (TLS files, bcrypt hashes), so a broken file fails at init, not at the first scrape."""
    from otel_rl._internal.webconfig import load_web_config

    path = parse_text(value)
    load_web_config(path)  # raises ConfigError naming the key inside the file
    return path
