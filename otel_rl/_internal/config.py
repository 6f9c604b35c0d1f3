"""Configuration: one table of settings, read from a mapping, a YAML file or the environment.

Precedence is one rule for every setting: explicit config, then environment variable, then default. Invalid input
raises :class:`ConfigError` naming the key, the value and what is allowed, before any server or thread starts.
The values themselves are parsed by setting_values. Imports config_files, errors, redaction, setting_values and
store (the default label value limit).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from otel_rl._internal.config_files import MAX_FILE_BYTES, load_yaml, read_small_file
from otel_rl._internal.errors import ConfigError, describe
from otel_rl._internal.redaction import REDACTED, redact, section_is_secret, shown_unknown
from otel_rl._internal.setting_values import (
    COMPRESSIONS,
    INTERVAL_BOUNDS,
    LINGER_BOUNDS,
    PROTOCOLS,
    TIMEOUT_BOUNDS,
    InvalidValue,
    choice_parser,
    parse_bool,
    parse_buckets,
    parse_cardinality_limit,
    parse_endpoint,
    parse_exporters,
    parse_host,
    parse_label_value_limit,
    parse_pairs,
    parse_patterns,
    parse_pem_path,
    parse_port,
    parse_target_file,
    parse_text,
    parse_web_config_file,
    seconds_parser,
)
from otel_rl._internal.store import DEFAULT_LABEL_VALUE_LIMIT

_logger = logging.getLogger("otel_rl")


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


# -- the table ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    key: str  #: dotted key in the config mapping
    parse: Callable[[Any], Any]
    env: tuple[str, ...] = ()  #: environment variables, first found wins
    env_parse: Callable[[Any], Any] | None = None  #: when the environment uses another unit (milliseconds)


SETTINGS: tuple[_Setting, ...] = (
    _Setting("service_name", parse_text, ("OTEL_SERVICE_NAME",)),
    _Setting("exporters", parse_exporters, ("OTEL_RL_EXPORTERS", "OTEL_METRICS_EXPORTER")),
    _Setting("resource_attributes", parse_pairs, ("OTEL_RESOURCE_ATTRIBUTES",)),
    _Setting("cardinality_limit", parse_cardinality_limit, ("OTEL_RL_CARDINALITY_LIMIT",)),
    _Setting("label_value_limit", parse_label_value_limit, ("OTEL_RL_LABEL_VALUE_LIMIT",)),
    _Setting("shutdown_timeout", seconds_parser(TIMEOUT_BOUNDS), ("OTEL_RL_SHUTDOWN_TIMEOUT",)),
    _Setting("resource_metrics", parse_bool, ("OTEL_RL_RESOURCE_METRICS",)),
    _Setting("per_run_series", parse_bool, ("OTEL_RL_PER_RUN_SERIES",)),
    _Setting("global_provider", choice_parser(("install", "off")), ("OTEL_RL_GLOBAL_PROVIDER",)),
    _Setting("strict", parse_bool, ("OTEL_RL_STRICT",)),
    _Setting("extra_keys", parse_patterns, ("OTEL_RL_EXTRA_KEYS",)),
    _Setting("buckets", parse_buckets),
    _Setting("flush_on_sigterm", parse_bool, ("OTEL_RL_FLUSH_ON_SIGTERM",)),
    _Setting("prometheus.host", parse_host, ("OTEL_EXPORTER_PROMETHEUS_HOST",)),
    _Setting("prometheus.port", parse_port, ("OTEL_EXPORTER_PROMETHEUS_PORT",)),
    _Setting("prometheus.strict", parse_bool, ("OTEL_RL_PROMETHEUS_STRICT",)),
    _Setting("prometheus.linger", seconds_parser(LINGER_BOUNDS), ("OTEL_RL_PROMETHEUS_LINGER",)),
    _Setting("prometheus.web_config_file", parse_web_config_file, ("OTEL_RL_PROMETHEUS_WEB_CONFIG_FILE",)),
    _Setting("prometheus.file_sd", parse_target_file, ("OTEL_RL_PROMETHEUS_FILE_SD",)),
    _Setting("otlp.endpoint", parse_endpoint, ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")),
    _Setting("otlp.protocol", choice_parser(PROTOCOLS),
             ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")),
    _Setting("otlp.headers", parse_pairs, ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")),
    _Setting("otlp.insecure", parse_bool, ("OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")),
    _Setting("otlp.timeout", seconds_parser(TIMEOUT_BOUNDS),
             ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
             env_parse=seconds_parser(TIMEOUT_BOUNDS, 1000.0)),  # the OTEL_* variables give milliseconds
    _Setting("otlp.export_interval", seconds_parser(INTERVAL_BOUNDS), ("OTEL_METRIC_EXPORT_INTERVAL",),
             env_parse=seconds_parser(INTERVAL_BOUNDS, 1000.0)),
    _Setting("otlp.compression", choice_parser(COMPRESSIONS),
             ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")),
    _Setting("otlp.certificate", parse_pem_path,
             ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE")),
    _Setting("otlp.client_certificate", parse_pem_path,
             ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")),
    _Setting("otlp.client_key", parse_pem_path,
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
            raise ConfigError(f"config key {describe(key)} is not a string; allowed keys: {', '.join(_BY_KEY)}")
        dotted = prefix + key
        if not prefix and key in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                shown = repr(REDACTED) if section_is_secret(dotted + ".") else describe(value)
                raise ConfigError(f"config key {dotted!r} has value {shown}; allowed: a mapping of "
                                  + ", ".join(k for k in _BY_KEY if k.startswith(key + ".")))
            flat.update(_flatten(value, dotted + "."))
            continue
        dotted = _ALIASES.get(dotted, dotted) if not prefix else dotted
        if dotted not in _BY_KEY:
            # Not shown where it may be a misspelled secret ("otlp.hedaers", "headers" outside its section).
            raise ConfigError(f"unknown config key {describe(dotted)} ({shown_unknown(value)}); allowed keys: "
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
            raise ConfigError(f"config file {describe(str(path))} cannot be read: {exc}; allowed: a regular UTF-8 YAML "
                              f"file of at most {MAX_FILE_BYTES:_} bytes") from None
        loaded = load_yaml(text, f"config file {describe(str(path))}")
        if loaded is None:
            return {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {describe(str(path))} holds {type(loaded).__name__}; allowed: a mapping")
        config = loaded
    if not isinstance(config, Mapping):
        raise ConfigError(f"config has value {describe(config)}; allowed: a mapping, a YAML file path or None")
    if "monitoring" in config:
        section = config["monitoring"]
        if section is None:
            return {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"config key 'monitoring' has value {describe(section)}; allowed: a mapping")
        # The application's own section: keys otel-rl does not know belong to the application (the original
        # module's trainer read only monitoring.prometheus_port). They are named once, never their values.
        known = {key.split(".")[0] for key in _BY_KEY} | set(_ALIASES)
        others = sorted(str(k) for k in section if k not in known)
        for key in others:  # a near-miss of an otel-rl setting is a typo, not an application key
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
            if close:
                raise ConfigError(f"unknown config key 'monitoring.{describe(key)[1:-1]}'; allowed keys: "
                                  f"{', '.join(sorted(known))} (did you mean {close[0]!r}?)")
        if others:
            _logger.info("otel-rl: ignoring keys of the monitoring: section that are not otel-rl settings: %s",
                         ", ".join(describe(k) for k in others))
        config = {k: v for k, v in section.items() if k in known}
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
        except InvalidValue as exc:
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
