"""Configuration: one table of settings, read from a mapping, a YAML file or the environment.

Precedence is one rule for every setting: explicit config, then environment variable, then default. Invalid input
raises :class:`ConfigError` naming the key, the value and what is allowed, before any server or thread starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

EXPORTERS = ("prometheus", "otlp", "console", "none")
PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("none", "gzip", "deflate")


class ConfigError(ValueError):
    """A setting is unknown or has a value that is not allowed."""


@dataclass(frozen=True)
class PrometheusSettings:
    """The pull endpoint serving ``/metrics`` and ``/health``."""

    host: str = "0.0.0.0"
    port: int = 8011
    strict: bool = False  #: raise ConfigError when the port cannot be bound, instead of logging and going on
    linger: float = 0.0  #: seconds shutdown waits for one last scrape, so short runs reach Prometheus
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
    certificate: str | None = None

    def resolved_endpoint(self) -> str:
        """The URL the exporter uses; an http/protobuf endpoint without a path gets ``/v1/metrics``."""
        if not self.endpoint:
            return "http://localhost:4317" if self.protocol == "grpc" else "http://localhost:4318/v1/metrics"
        if self.protocol == "http/protobuf" and urlsplit(self.endpoint).path in ("", "/"):
            return self.endpoint.rstrip("/") + "/v1/metrics"
        return self.endpoint


@dataclass(frozen=True)
class Settings:
    """Everything :func:`otel_rl.init_telemetry` needs; build it with :func:`load_settings`."""

    service_name: str = "otel-rl"
    exporters: tuple[str, ...] = ("prometheus",)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    otlp: OtlpSettings = field(default_factory=OtlpSettings)
    resource_attributes: tuple[tuple[str, str], ...] = ()
    cardinality_limit: int = 2000
    shutdown_timeout: float = 5.0


# -- value parsers: each returns the parsed value or raises _Invalid(what is allowed) ------------------------------


class _Invalid(Exception):
    pass


def _str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("a non-empty string")
    return value.strip()


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise _Invalid("true or false")


def _port(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid("an integer port from 0 to 65535")
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise _Invalid("an integer port from 0 to 65535") from None
    if isinstance(value, float) and value != port or not 0 <= port <= 65535:
        raise _Invalid("an integer port from 0 to 65535")
    return port


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid("a positive integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _Invalid("a positive integer") from None
    if number < 1 or isinstance(value, float) and value != number:
        raise _Invalid("a positive integer")
    return number


def _seconds(allow_zero: bool) -> Callable[[Any], float]:
    allowed = "a number of seconds >= 0" if allow_zero else "a number of seconds > 0"

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise _Invalid(allowed)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _Invalid(allowed) from None
        if not (number >= 0 if allow_zero else number > 0) or number == float("inf"):
            raise _Invalid(allowed)
        return number

    return parse


def _millis_as_seconds(value: Any) -> float:
    """The OTEL_* variables give durations in milliseconds."""
    try:
        return _seconds(False)(float(value) / 1000.0)
    except (TypeError, ValueError, _Invalid):
        raise _Invalid("a number of milliseconds > 0") from None


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


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """A mapping, or the W3C-baggage-like ``k=v,k2=v2`` text of OTEL_RESOURCE_ATTRIBUTES and OTLP headers."""
    allowed = "a mapping of strings, or 'key=value,key2=value2'"
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and k for k in value):
            raise _Invalid(allowed)
        return tuple((k, str(v)) for k, v in value.items())
    if isinstance(value, str):
        pairs = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, val = part.partition("=")
            if not sep or not key.strip():
                raise _Invalid(allowed)
            pairs.append((unquote(key.strip()), unquote(val.strip())))
        return tuple(pairs)
    raise _Invalid(allowed)


def _target_file(value: Any) -> str:
    path = Path(_str(value))
    if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise _Invalid("the path of a JSON file in an existing, writable directory")
    return str(path)


def _path(value: Any) -> str:
    path = _str(value)
    if not Path(path).is_file():
        raise _Invalid("the path of a readable PEM file")
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
    _Setting("cardinality_limit", _positive_int, ("OTEL_RL_CARDINALITY_LIMIT",)),
    _Setting("shutdown_timeout", _seconds(False), ("OTEL_RL_SHUTDOWN_TIMEOUT",)),
    _Setting("prometheus.host", _str, ("OTEL_EXPORTER_PROMETHEUS_HOST",)),
    _Setting("prometheus.port", _port, ("OTEL_EXPORTER_PROMETHEUS_PORT",)),
    _Setting("prometheus.strict", _bool, ("OTEL_RL_PROMETHEUS_STRICT",)),
    _Setting("prometheus.linger", _seconds(True), ("OTEL_RL_PROMETHEUS_LINGER",)),
    _Setting("prometheus.file_sd", _target_file, ("OTEL_RL_PROMETHEUS_FILE_SD",)),
    _Setting("otlp.endpoint", _str, ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")),
    _Setting("otlp.protocol", _choice(PROTOCOLS),
             ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")),
    _Setting("otlp.headers", _pairs, ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")),
    _Setting("otlp.insecure", _bool, ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")),
    _Setting("otlp.timeout", _seconds(False), ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
             env_parse=_millis_as_seconds),
    _Setting("otlp.export_interval", _seconds(False), ("OTEL_METRIC_EXPORT_INTERVAL",),
             env_parse=_millis_as_seconds),
    _Setting("otlp.compression", _choice(COMPRESSIONS),
             ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")),
    _Setting("otlp.certificate", _path,
             ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")),
)

_BY_KEY = {s.key: s for s in SETTINGS}
_SECTIONS = {"prometheus", "otlp"}
#: Keys of the seed's ``monitoring:`` section that map onto ours.
_ALIASES = {"prometheus_port": "prometheus.port"}


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {key!r} is not a string; allowed keys: {', '.join(_BY_KEY)}")
        dotted = prefix + key
        if not prefix and key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {dotted!r} has value {value!r}; allowed: a mapping of "
                                  + ", ".join(k for k in _BY_KEY if k.startswith(key + ".")))
            flat.update(_flatten(value, dotted + "."))
            continue
        dotted = _ALIASES.get(dotted, dotted) if not prefix else dotted
        if dotted not in _BY_KEY:
            raise ConfigError(f"unknown config key {dotted!r} (value {value!r}); allowed keys: "
                              + ", ".join(list(_BY_KEY) + list(_ALIASES)))
        flat[dotted] = value
    return flat


def read_config(config: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    """The explicit config as a flat ``{dotted key: raw value}`` mapping.

    A path names a YAML file. When that file (or mapping) has a ``monitoring:`` section, as the seed's
    ``config/production_config.yaml`` does, only that section is read and the rest belongs to the application.
    """
    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        import yaml

        path = Path(config)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
        if loaded is None:
            return {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {str(path)!r} holds {type(loaded).__name__}; allowed: a mapping")
        config = loaded
    if not isinstance(config, Mapping):
        raise ConfigError(f"config has value {config!r}; allowed: a mapping, a YAML file path or None")
    if "monitoring" in config:
        section = config["monitoring"]
        if section is None:
            return {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"config key 'monitoring' has value {section!r}; allowed: a mapping")
        config = section
    return _flatten(config)


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
            raise ConfigError(f"{source} has value {raw!r}; allowed: {exc}") from None
    return _build(values)


def _build(values: Mapping[str, Any]) -> Settings:
    def section(cls, prefix):
        kwargs = {f.name: values[prefix + f.name] for f in fields(cls) if prefix + f.name in values}
        return cls(**kwargs)

    values = dict(values)
    if values.pop("otlp.endpoint_is_base", False) and values.get("otlp.protocol") == "http/protobuf":
        # The spec: the generic variable is a base URL to which the signal path is appended.
        values["otlp.endpoint"] = values["otlp.endpoint"].rstrip("/") + "/v1/metrics"
    top = {k: v for k, v in values.items() if "." not in k}
    settings = Settings(prometheus=section(PrometheusSettings, "prometheus."),
                        otlp=section(OtlpSettings, "otlp."), **top)
    if settings.otlp.protocol == "http/protobuf" and settings.otlp.endpoint is not None \
            and not settings.otlp.endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"config key 'otlp.endpoint' has value {settings.otlp.endpoint!r}; allowed with "
                          "protocol http/protobuf: an http:// or https:// URL")
    return settings
