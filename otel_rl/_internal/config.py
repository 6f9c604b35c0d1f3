"""Configuration: one table of settings, read from a mapping, a YAML file or the environment.

Precedence is one rule for every setting: explicit config, then environment variable, then default. Invalid input
raises :class:`ConfigError` naming the key, the value and what is allowed, before any server or thread starts.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from otel_rl._internal.config_files import MAX_FILE_BYTES, read_small_file
from otel_rl._internal.errors import ConfigError, describe
from otel_rl._internal.redaction import REDACTED, redact, section_is_secret, shown_unknown
from otel_rl._internal.store import DEFAULT_LABEL_VALUE_LIMIT

_logger = logging.getLogger("otel_rl")

EXPORTERS = ("prometheus", "otlp", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("none", "gzip", "deflate")


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_SDK_DISABLED`` is true, read exactly as the OpenTelemetry SDK reads it."""
    return (os.environ if environ is None else environ).get("OTEL_SDK_DISABLED", "").lower().strip() == "true"


@dataclass(frozen=True)
class PrometheusSettings:
    """The pull endpoint serving ``/metrics`` and ``/health``."""

    host: str = "0.0.0.0"
    port: int = 8011
    strict: bool = False  #: raise ConfigError when the port cannot be bound, instead of logging and going on
    linger: float = 0.0  #: seconds shutdown waits for one last scrape, so short runs reach Prometheus
    web_config_file: str | None = None  #: TLS / basic auth, in the Prometheus exporter-toolkit web config format
    #: a Prometheus file_sd target file this process adds its endpoint to (and removes it from at shutdown)
    file_sd: str | None = None


@dataclass(frozen=True)
class OtlpSettings:
    """OTLP push to a collector."""

    endpoint: str | None = None  #: default: localhost:4317 (grpc) or localhost:4318/v1/metrics (http)
    protocol: str = "grpc"
    headers: tuple[tuple[str, str], ...] = ()
    insecure: bool | None = None  #: default: True for http:// endpoints
    timeout: float = 10.0  #: seconds for one export
    export_interval: float = 10.0  #: seconds between exports
    compression: str = "none"
    certificate: str | None = None  #: CA certificate(s) to verify the collector's TLS certificate
    client_certificate: str | None = None  #: this client's certificate, for mTLS
    client_key: str | None = None  #: this client's private key, for mTLS

    def __repr__(self) -> str:
        """Header values (tokens, API keys) and URL passwords never appear in a repr, a log or an error."""
        shown = ", ".join(f"{f.name}={redact('otlp.' + f.name, getattr(self, f.name))}" for f in fields(self))
        return f"OtlpSettings({shown})"

    def resolved_endpoint(self) -> str:
        """The URL the exporter uses; an http/protobuf endpoint without a path gets ``/v1/metrics``."""
        if not self.endpoint:
            return "http://localhost:4317" if self.protocol == "grpc" else "http://localhost:4318/v1/metrics"
        if self.protocol == "http/protobuf" and urlsplit(self.endpoint).path in ("", "/"):
            return with_signal_path(self.endpoint)
        return self.endpoint


def with_signal_path(base: str) -> str:
    """``base`` with ``/v1/metrics`` appended to its path; its query string and fragment stay where they are.

    ``http://c:4318/?k=v`` becomes ``http://c:4318/v1/metrics?k=v`` (not ``...?k=v/v1/metrics``)."""
    parts = urlsplit(base)
    return parts._replace(path=parts.path.rstrip("/") + "/v1/metrics").geturl()


@dataclass(frozen=True)
class Settings:
    """Everything :func:`otel_rl.init_telemetry` needs; build it with :func:`load_settings`."""

    service_name: str = "otel-rl"
    exporters: tuple[str, ...] = ("prometheus",)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    otlp: OtlpSettings = field(default_factory=OtlpSettings)
    resource_attributes: tuple[tuple[str, str], ...] = ()
    cardinality_limit: int = 2000
    label_value_limit: int = DEFAULT_LABEL_VALUE_LIMIT  #: characters a label value keeps (the cut: label_too_long)
    shutdown_timeout: float = 5.0
    resource_metrics: bool = False  #: process, GPU and torch CUDA memory series (docs/resources.md)
    #: ``run_id`` on the original series that lack it (losses, iterations, episodes, ...); off keeps their label
    #: sets exactly those of the original ``prometheus_metrics`` module
    per_run_series: bool = False
    #: "install": otel-rl's provider becomes the OpenTelemetry API's global one; "off": it is left alone
    global_provider: str = "install"
    #: raise on misuse (bad labels, values, arguments; recording with no telemetry) instead of dropping: for tests
    strict: bool = False
    #: glob patterns of result-dict and SB3 logger keys recorded as ``rl_training_custom_<key>`` gauges
    extra_keys: tuple[str, ...] = ()
    #: histogram bucket bounds that replace the catalog's, per metric name (docs/opentelemetry.md)
    buckets: tuple[tuple[str, tuple[float, ...]], ...] = ()
    #: on SIGTERM at its default disposition: make the final export, then die of SIGTERM (docs/collector.md)
    flush_on_sigterm: bool = True


# -- value parsers: each returns the parsed value or raises _Invalid(what is allowed) ------------------------------


class _Invalid(Exception):
    pass


#: Bounds of the durations, in seconds. Below them a reader or server loop would spin (1e-9 s export interval);
#: above them a thread wait overflows or an export could never finish (1e300 s).
TIMEOUT_BOUNDS = (0.01, 3600.0)  #: shutdown_timeout and otlp.timeout
LINGER_BOUNDS = (0.0, 3600.0)  #: prometheus.linger (0: off)
INTERVAL_BOUNDS = (0.1, 86400.0)  #: otlp.export_interval
MAX_CARDINALITY_LIMIT = 1_000_000
#: Bounds of ``label_value_limit``: a longer label would make one series alone near the gRPC message limit.
LABEL_VALUE_LIMIT_BOUNDS = (16, 65536)
#: Most YAML nodes a config file may expand to: an "alias bomb" of a few hundred bytes expands to billions.
MAX_YAML_NODES = 100_000
#: How deep a config file may nest collections. PyYAML composes recursively: checked on its tokens first, a deep
#: document never reaches the recursion limit, where any finalizer that runs would fail too.
MAX_YAML_DEPTH = 100


def _show(value: Any) -> str:
    """``repr(value)`` for an error message: truncated, never raising, always valid UTF-8 (as in drop warnings)."""
    return describe(value)


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: os.fsdecode of non-UTF-8 bytes, or a bad environment
        return False
    return "\x00" not in value


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not _utf8(value):
        raise _Invalid("a non-empty string (UTF-8 text without NUL characters)")
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


def _host(value: Any) -> str:
    allowed = "a host name (labels of at most 63 letters, digits, '-' or '_') or an IPv4/IPv6 address"
    try:
        host = _str(value)
    except _Invalid:
        raise _Invalid(allowed) from None
    if not _valid_hostname(host):
        raise _Invalid(allowed)
    return host


def _endpoint(value: Any) -> str:
    """An OTLP endpoint: an http:// or https:// URL, or the ``host:port`` form gRPC also takes."""
    allowed = "an http:// or https:// URL with a host (e.g. http://localhost:4317), or host:port"
    try:
        endpoint = _str(value)
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
    except (ValueError, _Invalid):
        raise _Invalid(allowed) from None
    return endpoint


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise _Invalid("true or false (also yes/no, on/off, 1/0)")


def _port(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid("an integer port from 0 to 65535")
    try:
        port = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise _Invalid("an integer port from 0 to 65535") from None
    if isinstance(value, float) and value != port or not 0 <= port <= 65535:
        raise _Invalid("an integer port from 0 to 65535")
    return port


def _cardinality(value: Any) -> int:
    allowed = f"a positive integer up to {MAX_CARDINALITY_LIMIT:_}"
    if isinstance(value, bool):
        raise _Invalid(allowed)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        raise _Invalid(allowed) from None
    if not 1 <= number <= MAX_CARDINALITY_LIMIT or isinstance(value, float) and value != number:
        raise _Invalid(allowed)
    return number


def _label_value_limit(value: Any) -> int:
    low, high = LABEL_VALUE_LIMIT_BOUNDS
    allowed = f"an integer number of characters from {low} to {high}"
    if isinstance(value, bool):
        raise _Invalid(allowed)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise _Invalid(allowed) from None
    if not low <= number <= high or isinstance(value, float) and value != number:
        raise _Invalid(allowed)
    return number


def _seconds(bounds: tuple[float, float], scale: float = 1.0) -> Callable[[Any], float]:
    """A duration from ``bounds[0]`` to ``bounds[1]`` seconds (0 means off when it is the lower bound), given in
    seconds, or in milliseconds (``scale=1000``) as the OTEL_* variables give it."""
    low, high = bounds
    unit = "seconds" if scale == 1.0 else "milliseconds"
    allowed = f"a number of {unit} from {low * scale:.10g} to {high * scale:.10g}"
    if low == 0.0:
        allowed += " (0: off)"

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise _Invalid(allowed)
        try:
            number = float(value) / scale
        except (TypeError, ValueError, OverflowError):
            raise _Invalid(allowed) from None
        if not low <= number <= high:  # also NaN and +-inf
            raise _Invalid(allowed)
        return number

    return parse


def _choice(allowed: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in allowed:
            raise _Invalid("one of " + ", ".join(allowed))
        return value.strip().lower()

    return parse


def _exporters(value: Any) -> tuple[str, ...]:
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    allowed = "a list of " + ", ".join(EXPORTERS)
    if not isinstance(items, (list, tuple)) or not items:
        raise _Invalid(allowed)
    result: list[str] = []
    for item in items:
        if not isinstance(item, str) or item.strip().lower() not in EXPORTERS:
            raise _Invalid(allowed)
        name = item.strip().lower()
        if name not in result:
            result.append(name)
    if "none" in result and len(result) > 1:
        raise _Invalid("'none' alone, or " + allowed)
    return tuple(r for r in result if r != "none")


def _patterns(value: Any) -> tuple[str, ...]:
    """Glob patterns (``rollout/*``), as a list or comma-separated text."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    allowed = "a list of glob patterns of keys (e.g. ['rollout/*', 'train/my_*'])"
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) and i.strip() and _utf8(i)
                                                       for i in items) or len(items) > 100:
        raise _Invalid(allowed + ", at most 100")
    return tuple(dict.fromkeys(i.strip() for i in items))


def _buckets(value: Any) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """Per-histogram bucket bounds: ``{metric name: [bound, ...]}``, strictly increasing finite numbers."""
    from otel_rl._internal.catalog import BY_NAME

    histograms = [s.name for s in BY_NAME.values() if s.type == "histogram"]
    allowed = ("a mapping of histogram names (" + ", ".join(histograms) + ") to 1-100 strictly increasing "
               "finite numbers")
    if not isinstance(value, Mapping):
        raise _Invalid(allowed)
    result = []
    for name, bounds in value.items():
        if name not in histograms or not isinstance(bounds, (list, tuple)) or not 1 <= len(bounds) <= 100:
            raise _Invalid(allowed + f" ({_show(name)} is not)" if name not in histograms else allowed)
        try:
            floats = tuple(float(b) for b in bounds if not isinstance(b, (bool, str)))
        except (TypeError, ValueError, OverflowError):
            raise _Invalid(allowed) from None
        if len(floats) != len(bounds) or not all(f - f == 0.0 for f in floats) \
                or any(a >= b for a, b in zip(floats, floats[1:])):
            raise _Invalid(allowed)
        result.append((name, floats))
    return tuple(sorted(result))


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """A mapping, or the W3C-baggage-like ``k=v,k2=v2`` text of OTEL_RESOURCE_ATTRIBUTES and OTLP headers."""
    allowed = "a mapping of strings, or 'key=value,key2=value2'"
    if isinstance(value, Mapping):
        # Values are scalars: str() of a nested structure could be any size (a YAML alias bomb).
        if not all(isinstance(k, str) and k for k in value) \
                or not all(isinstance(v, (str, int, float, bool)) for v in value.values()):
            raise _Invalid(allowed)
        pairs = tuple((k, str(v)) for k, v in value.items())
    elif isinstance(value, str):
        items = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise _Invalid(allowed)
            items.append((unquote(key.strip()), unquote(val.strip())))
        pairs = tuple(items)
    else:
        raise _Invalid(allowed)
    if not all(_utf8(k) and _utf8(v) for k, v in pairs):  # they end up in protobuf or gRPC metadata
        raise _Invalid(allowed + ", as UTF-8 text without NUL characters")
    return pairs


def _target_file(value: Any) -> str:
    allowed = "the path of a JSON file (a regular file, or none yet) in an existing, writable directory"
    path = Path(_str(value))
    try:
        # The file is replaced through a temporary ".<name>.XXXXXXXX" beside it and locked through "<name>.lock".
        name_max = os.pathconf(path.parent, "PC_NAME_MAX") if path.parent.is_dir() else 255
        if len(os.fsencode(path.name)) + len(".") + len(".XXXXXXXX") > name_max:
            raise _Invalid(f"{allowed}, with a file name of at most {name_max - 10} bytes")
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise _Invalid(allowed)
        if path.exists() and not path.is_file():
            raise _Invalid(allowed)
    except (OSError, ValueError) as exc:  # a path too long for the system, NUL characters
        raise _Invalid(f"{allowed} ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    return str(path)


def _path(value: Any) -> str:
    path = _str(value)
    try:
        found = Path(path).is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise _Invalid("the path of a readable PEM file")
    return path


def _web_config_file(value: Any) -> str:
    """Checked in full here (TLS files, bcrypt hashes), so a broken file fails at init, not at the first scrape."""
    from otel_rl._internal.webconfig import load_web_config

    path = _str(value)
    load_web_config(path)  # raises ConfigError naming the key inside the file
    return path


# -- the table ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    key: str  #: dotted key in the config mapping
    parse: Callable[[Any], Any]
    env: tuple[str, ...] = ()  #: environment variables, first found wins
    env_parse: Callable[[Any], Any] | None = None  #: when the environment uses another unit (milliseconds)


SETTINGS: tuple[_Setting, ...] = (
    _Setting("service_name", _str, ("OTEL_SERVICE_NAME",)),
    _Setting("exporters", _exporters, ("OTEL_RL_EXPORTERS", "OTEL_METRICS_EXPORTER")),
    _Setting("resource_attributes", _pairs, ("OTEL_RESOURCE_ATTRIBUTES",)),
    _Setting("cardinality_limit", _cardinality, ("OTEL_RL_CARDINALITY_LIMIT",)),
    _Setting("label_value_limit", _label_value_limit, ("OTEL_RL_LABEL_VALUE_LIMIT",)),
    _Setting("shutdown_timeout", _seconds(TIMEOUT_BOUNDS), ("OTEL_RL_SHUTDOWN_TIMEOUT",)),
    _Setting("resource_metrics", _bool, ("OTEL_RL_RESOURCE_METRICS",)),
    _Setting("per_run_series", _bool, ("OTEL_RL_PER_RUN_SERIES",)),
    _Setting("global_provider", _choice(("install", "off")), ("OTEL_RL_GLOBAL_PROVIDER",)),
    _Setting("strict", _bool, ("OTEL_RL_STRICT",)),
    _Setting("extra_keys", _patterns, ("OTEL_RL_EXTRA_KEYS",)),
    _Setting("buckets", _buckets),
    _Setting("flush_on_sigterm", _bool, ("OTEL_RL_FLUSH_ON_SIGTERM",)),
    _Setting("prometheus.host", _host, ("OTEL_EXPORTER_PROMETHEUS_HOST",)),
    _Setting("prometheus.port", _port, ("OTEL_EXPORTER_PROMETHEUS_PORT",)),
    _Setting("prometheus.strict", _bool, ("OTEL_RL_PROMETHEUS_STRICT",)),
    _Setting("prometheus.linger", _seconds(LINGER_BOUNDS), ("OTEL_RL_PROMETHEUS_LINGER",)),
    _Setting("prometheus.web_config_file", _web_config_file, ("OTEL_RL_PROMETHEUS_WEB_CONFIG_FILE",)),
    _Setting("prometheus.file_sd", _target_file, ("OTEL_RL_PROMETHEUS_FILE_SD",)),
    _Setting("otlp.endpoint", _endpoint, ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")),
    _Setting("otlp.protocol", _choice(PROTOCOLS),
             ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")),
    _Setting("otlp.headers", _pairs, ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")),
    _Setting("otlp.insecure", _bool, ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")),
    _Setting("otlp.timeout", _seconds(TIMEOUT_BOUNDS),
             ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
             env_parse=_seconds(TIMEOUT_BOUNDS, 1000.0)),  # the OTEL_* variables give milliseconds
    _Setting("otlp.export_interval", _seconds(INTERVAL_BOUNDS), ("OTEL_METRIC_EXPORT_INTERVAL",),
             env_parse=_seconds(INTERVAL_BOUNDS, 1000.0)),
    _Setting("otlp.compression", _choice(COMPRESSIONS),
             ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")),
    _Setting("otlp.certificate", _path,
             ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")),
    _Setting("otlp.client_certificate", _path,
             ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")),
    _Setting("otlp.client_key", _path,
             ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY")),
)

_BY_KEY = {s.key: s for s in SETTINGS}
_SECTIONS = {"prometheus", "otlp"}
#: Keys of the original ``prometheus_metrics`` module's ``monitoring:`` section that map onto ours.
_ALIASES = {"prometheus_port": "prometheus.port"}


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {_show(key)} is not a string; allowed keys: {', '.join(_BY_KEY)}")
        dotted = prefix + key
        if not prefix and key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                shown = repr(REDACTED) if section_is_secret(dotted + ".") else _show(value)
                raise ConfigError(f"config key {dotted!r} has value {shown}; allowed: a mapping of "
                                  + ", ".join(k for k in _BY_KEY if k.startswith(key + ".")))
            flat.update(_flatten(value, dotted + "."))
            continue
        dotted = _ALIASES.get(dotted, dotted) if not prefix else dotted
        if dotted not in _BY_KEY:
            # Not shown where it may be a misspelled secret ("otlp.hedaers", "headers" outside its section).
            raise ConfigError(f"unknown config key {_show(dotted)} ({shown_unknown(value)}); allowed keys: "
                              + ", ".join(list(_BY_KEY) + list(_ALIASES)))
        flat[dotted] = value
    return flat


def read_config(config: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    """The explicit config as a flat ``{dotted key: raw value}`` mapping.

    A path names a YAML file. When that file (or mapping) has a ``monitoring:`` section, as the original module's
    ``config/production_config.yaml`` does, only that section is read and the rest belongs to the application.
    """
    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        try:
            text = read_small_file(path)
        except ValueError as exc:  # also a NUL in the path
            raise ConfigError(f"config file {_show(str(path))} cannot be read: {exc}; allowed: a regular UTF-8 YAML "
                              f"file of at most {MAX_FILE_BYTES:_} bytes") from None
        loaded = _load_yaml(text, _show(str(path)))
        if loaded is None:
            return {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {_show(str(path))} holds {type(loaded).__name__}; allowed: a mapping")
        config = loaded
    if not isinstance(config, Mapping):
        raise ConfigError(f"config has value {_show(config)}; allowed: a mapping, a YAML file path or None")
    if "monitoring" in config:
        section = config["monitoring"]
        if section is None:
            return {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"config key 'monitoring' has value {_show(section)}; allowed: a mapping")
        # The application's own section: keys otel-rl does not know belong to the application (the original
        # module's trainer read only monitoring.prometheus_port). They are named once, never their values.
        known = {key.split(".")[0] for key in _BY_KEY} | set(_ALIASES)
        others = sorted(str(k) for k in section if k not in known)
        for key in others:  # a near-miss of an otel-rl setting is a typo, not an application key
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
            if close:
                raise ConfigError(f"unknown config key 'monitoring.{_show(key)[1:-1]}'; allowed keys: "
                                  f"{', '.join(sorted(known))} (did you mean {close[0]!r}?)")
        if others:
            _logger.info("otel-rl: ignoring keys of the monitoring: section that are not otel-rl settings: %s",
                         ", ".join(_show(k) for k in others))
        config = {k: v for k, v in section.items() if k in known}
    return _flatten(config)


def _nesting(yaml: Any, text: str) -> int:
    """The deepest nesting of collections in the YAML ``text``, read from its tokens (the scanner does not recurse)."""
    opening = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken, yaml.BlockSequenceStartToken,
               yaml.BlockMappingStartToken)
    closing = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    depth = deepest = 0
    for token in yaml.scan(text, Loader=yaml.SafeLoader):
        if isinstance(token, opening):
            depth += 1
            deepest = max(deepest, depth)
        elif isinstance(token, closing):
            depth -= 1
    return deepest


def _load_yaml(text: str, shown_path: str) -> Any:
    """``yaml.safe_load`` with bounded work: the document, with its aliases expanded, may hold at most
    :data:`MAX_YAML_NODES` nodes (an alias bomb of a few hundred bytes holds billions), and a nesting too deep
    for the parser is an error, not a RecursionError."""
    import yaml

    loader = None
    try:
        if _nesting(yaml, text) > MAX_YAML_DEPTH:
            raise RecursionError
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"config file {shown_path} expands to more than {MAX_YAML_NODES:_} YAML nodes through "
                              "its aliases (*name); allowed: a config without an alias bomb")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:  # problem and position, not PyYAML's snippet of the line (it may hold a token)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {shown_path} is not valid YAML: "
                          f"{getattr(exc, 'problem', None) or type(exc).__name__}{where}") from None
    except RecursionError:
        raise ConfigError(f"config file {shown_path} nests too deeply; allowed: collections at most "
                          f"{MAX_YAML_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (memoised per node: linear time)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_YAML_NODES + 1  # a node that contains itself expands without end
    if isinstance(node.value, list):
        children = [c for pair in node.value for c in pair] if node.value and isinstance(node.value[0], tuple) \
            else node.value
        size = 1
        for child in children:
            size += _expanded_size(child, sizes)
            if size > MAX_YAML_NODES:
                break
    else:
        size = 1
    sizes[id(node)] = size
    return size


def load_settings(config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting: explicit config, then environment, then default. Raises ConfigError."""
    explicit = read_config(config)
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.key in explicit:
            raw, source, parse = explicit[setting.key], f"config key {setting.key!r}", setting.parse
        else:
            name = next((n for n in setting.env if environ.get(n, "").strip()), None)
            if name is None:
                continue
            raw, source = environ[name], f"environment variable {name} (for {setting.key!r})"
            parse = setting.env_parse or setting.parse
            if name == "OTEL_EXPORTER_OTLP_ENDPOINT":
                values["otlp.endpoint_is_base"] = True
        if raw is None:
            continue
        try:
            values[setting.key] = parse(raw)
        except _Invalid as exc:
            raise ConfigError(f"{source} has value {redact(setting.key, raw)}; allowed: {exc}") from None
        except ConfigError as exc:  # a parser that checks a file says what is wrong inside it; name the source too
            if source.startswith("environment variable"):
                raise ConfigError(f"{source}: {exc}") from None
            raise
    return _build(values)


def _build(values: Mapping[str, Any]) -> Settings:
    def section(cls, prefix):
        kwargs = {f.name: values[prefix + f.name] for f in fields(cls) if prefix + f.name in values}
        return cls(**kwargs)

    values = dict(values)
    if values.pop("otlp.endpoint_is_base", False) and values.get("otlp.protocol") == "http/protobuf":
        # The spec: the generic variable is a base URL to which the signal path is appended.
        values["otlp.endpoint"] = with_signal_path(values["otlp.endpoint"])
    top = {k: v for k, v in values.items() if "." not in k}
    settings = Settings(prometheus=section(PrometheusSettings, "prometheus."),
                        otlp=section(OtlpSettings, "otlp."), **top)
    if settings.otlp.protocol == "http/protobuf" and settings.otlp.endpoint is not None \
            and not settings.otlp.endpoint.startswith(("http://", "https://")):
        shown = redact("otlp.endpoint", settings.otlp.endpoint)
        raise ConfigError(f"config key 'otlp.endpoint' has value {shown}; allowed with "
                          "protocol http/protobuf: an http:// or https:// URL")
    if settings.otlp.protocol == "grpc" and settings.otlp.endpoint is not None \
            and "@" in urlsplit(settings.otlp.endpoint).netloc:
        # gRPC has no URL credentials: the exporter would log the URL, password included, and never authenticate.
        shown = redact("otlp.endpoint", settings.otlp.endpoint)
        raise ConfigError(f"config key 'otlp.endpoint' has value {shown}; allowed with protocol grpc: a URL without "
                          "user or password (send credentials as a header: otlp.headers or "
                          "OTEL_EXPORTER_OTLP_HEADERS, e.g. Authorization=Basic%20<base64 user:password>)")
    if (settings.otlp.client_certificate is None) != (settings.otlp.client_key is None):
        given, missing = ("otlp.client_certificate", "otlp.client_key")[::1 if settings.otlp.client_key is None
                                                                          else -1]
        raise ConfigError(f"config key {given!r} is set but {missing!r} is not; allowed: both (mTLS) or neither")
    return settings
