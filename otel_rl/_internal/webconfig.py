"""TLS and basic auth for ``/metrics``, read from a Prometheus exporter-toolkit web configuration file.

The file format is the one every Prometheus exporter (and Prometheus itself) reads with ``--web.config.file``, so
an operator's existing file works here::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional (mTLS)
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...   # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':\\n')

Everything is checked once at start (``ConfigError`` naming the key, the value and what is allowed). A setting of
the format that Python's ``ssl`` module cannot honour is refused rather than silently ignored. A file is parsed
once: the parsed object is kept while the file and the TLS files it names keep their bytes. Imports config_files,
errors and hints.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_rl._internal.config_files import MAX_FILE_BYTES, file_sha256, load_yaml, read_small_file
from otel_rl._internal.errors import ConfigError, describe
from otel_rl._internal.hints import install_hint

#: exporter-toolkit ``client_auth_type`` values Python's ssl module can enforce, and how.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
#: Keys of the format that are accepted and need nothing from this server.
_ACCEPTED_NOOP = {"tls_server_config": {"prefer_server_cipher_suites"}, "http_server_config": {"http2"}}
#: Keys of the format this server cannot honour; refused so a file never looks more secure than it is.
_UNSUPPORTED = {
    "tls_server_config": {"cert", "key", "client_ca", "cipher_suites", "curve_preferences", "client_allowed_sans"},
}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
#: Keys whose values an error shows (file paths, version and mode names); any other value is shown by its type.
_SHOWN = {"tls_server_config." + key for key in _TLS_KEYS}
_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
#: bcrypt checks run at once. Each takes a CPU core for tens of milliseconds by design; without this bound, a flood
#: of wrong passwords would take every core from training. Remembered good credentials need no check.
AUTH_CHECKS = 1
#: Seconds a request waits for a check; past it (a flood of wrong passwords) it gets 401 without one.
AUTH_WAIT = 2.0
#: Share of one core that failed checks may take: after a failed check its slot rests (idle) this many times as
#: long as the check took, so a flood of wrong passwords uses at most a quarter of one core.
AUTH_REST = 3.0
#: Good credentials remembered (by HMAC, never in clear); past it the oldest is forgotten.
AUTH_CACHE_SIZE = 1024
_dummy: list[bytes] = []


def _dummy_hash() -> bytes:
    """Compared against when the user is unknown, so a wrong user name takes as long as a wrong password."""
    if not _dummy:
        import bcrypt

        _dummy.append(bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(10)))
    return _dummy[0]


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration: an SSL context (or None for plain HTTP) and the basic-auth users."""

    path: str
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  #: user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)  #: http_server_config.headers, added to responses
    _cache: dict[tuple[str, bytes], bool] = field(default_factory=dict, repr=False, compare=False)
    _checks: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(AUTH_CHECKS),
                                                repr=False, compare=False)
    _cache_key: bytes = field(default_factory=lambda: os.urandom(32), repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __repr__(self) -> str:  # never the hashes
        return (f"WebConfig(path={self.path!r}, tls={self.ssl_context is not None}, "
                f"users={sorted(self.users)!r})")

    def _key(self, user: str, password: str) -> tuple[str, bytes]:
        return user, hmac.new(self._cache_key, password.encode("utf-8"), hashlib.sha256).digest()

    def known(self, header: str | None) -> bool:
        """Whether ``header`` holds credentials already checked good: no bcrypt needed (microseconds)."""
        credentials = _credentials(header)
        if credentials is None:
            return False
        with self._lock:
            return bool(self._cache.get(self._key(*credentials)))

    def authorized(self, header: str | None) -> bool:
        """True when no users are configured, or ``header`` (an ``Authorization`` value) names one correctly.

        bcrypt is slow by design (tens of ms); a successful check is remembered, keyed by an HMAC of the
        password with a per-process random key (the password itself is never kept), so each scrape costs a hash.
        At most :data:`AUTH_CHECKS` checks run at once, a failed one rests its slot :data:`AUTH_REST` times as long
        as it took, and a request that waited :data:`AUTH_WAIT` seconds for a slot is refused unchecked: a flood of
        wrong passwords takes at most a quarter of one core from training.
        """
        if not self.users:
            return True
        credentials = _credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        key = self._key(user, password)
        with self._lock:
            if self._cache.get(key):
                return True
        import bcrypt

        hashed = self.users.get(user)
        if not self._checks.acquire(timeout=AUTH_WAIT):
            return False
        started = time.monotonic()
        ok = False
        try:
            ok = bcrypt.checkpw(password.encode("utf-8"), hashed or _dummy_hash()) and hashed is not None
        except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
            return False
        finally:
            if not ok:
                time.sleep((time.monotonic() - started) * AUTH_REST)
            self._checks.release()
        if ok:
            with self._lock:
                if len(self._cache) >= AUTH_CACHE_SIZE:  # bounded: many distinct good passwords cannot grow it
                    del self._cache[next(iter(self._cache))]
                self._cache[key] = True
        return ok


def _credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of a basic-auth ``Authorization`` value; None when it is not one."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _error(path: str, key: str, value: Any, allowed: str, ours: bool = False) -> ConfigError:
    """The error for ``key``. Only the values of the TLS file and version keys are shown (paths and names, what the
    user needs to fix them), or a description of ours (``ours``); any other value is shown by its type: an unknown
    key may be a misspelled ``basic_auth_users`` holding hashes or a plain password, ``tls_server_config.key`` an
    inline private key, a misplaced section anything."""
    if ours or key in _SHOWN and isinstance(value, (str, int, float, bool, type(None))):
        shown = "value " + describe(value)
    else:
        shown = f"a {type(value).__name__} value (not shown)"
    return ConfigError(f"prometheus.web_config_file {path!r}: key {key!r} has {shown}; allowed: {allowed}")


def load_web_config(path: str) -> WebConfig:
    """Read and check a web configuration file; raises ConfigError naming the key, the value and what is allowed.

    Parsed once: while the file and the TLS files it names keep their bytes, every call returns the same object
    (its SSL context, and its remembered good credentials), and a changed file or a rotated certificate is parsed
    again."""
    try:
        text = read_small_file(path)
    except ValueError as exc:
        raise ConfigError(f"prometheus.web_config_file {path!r} cannot be read ({exc}); allowed: the path of a "
                          f"readable YAML web configuration file, a regular file of at most {MAX_FILE_BYTES:_} "
                          "bytes") from None
    key = (path, os.path.realpath(path))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    with _parsed_lock:
        kept = _parsed.get(key)
    if kept is not None and kept.digest == digest and all(file_sha256(f) == d for f, d in kept.tls_files):
        return kept.config
    data = load_yaml(text, f"prometheus.web_config_file {path!r}")
    base = Path(path).resolve().parent
    # Hashed before they are loaded: a certificate rotated in between is parsed again on the next call.
    tls_files = tuple((f, file_sha256(f)) for f in _tls_files(base, data))
    config = _parse(path, base, data)
    if all(d is not None for _, d in tls_files):
        with _parsed_lock:
            _parsed.pop(key, None)
            while len(_parsed) >= PARSED_KEPT:
                del _parsed[next(iter(_parsed))]
            _parsed[key] = _Parsed(digest, tls_files, config)
    return config


def _parse(path: str, base: Path, data: Any) -> WebConfig:
    """The checked WebConfig of a file's YAML ``data`` (relative file names are relative to ``base``)."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _error(path, "", data, "a mapping with tls_server_config, basic_auth_users, http_server_config")
    for key in data:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise _error(path, str(key), data[key], "tls_server_config, basic_auth_users, http_server_config")
    context = _tls(path, base, data.get("tls_server_config"))
    users = _users(path, data.get("basic_auth_users"))
    headers = _http(path, data.get("http_server_config"))
    return WebConfig(path=path, ssl_context=context, users=users, headers=headers)


@dataclass(frozen=True)
class _Parsed:
    """A parsed web config and what it was parsed from."""

    digest: bytes  #: SHA-256 of the web config file
    tls_files: tuple[tuple[str, bytes | None], ...]  #: its certificate, key and CA files, with their SHA-256
    config: WebConfig


#: Web configs parsed, by path as given and as resolved; the oldest is forgotten past this many.
PARSED_KEPT = 16
_parsed: dict[tuple[str, str], _Parsed] = {}
_parsed_lock = threading.Lock()


def forget_parsed() -> None:
    """Forget every parsed web config, so the next :func:`load_web_config` parses its file (tests call it)."""
    with _parsed_lock:
        _parsed.clear()


def _after_fork_in_child() -> None:
    """A child parses its own: a parent thread may have held the lock, or a parsed config's locks, at fork."""
    global _parsed_lock
    _parsed_lock = threading.Lock()
    _parsed.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _tls_files(base: Path, data: Any) -> list[str]:
    """The files ``tls_server_config`` names, resolved as :func:`_file` resolves them (before any is checked)."""
    section = data.get("tls_server_config") if isinstance(data, Mapping) else None
    if not isinstance(section, Mapping):
        return []
    names = (section.get(key) for key in ("cert_file", "key_file", "client_ca_file"))
    return [str(base / name) for name in names if isinstance(name, str) and name]


def _file(path: str, base: Path, key: str, value: Any) -> str:
    """A file named in the web config; relative paths are relative to the config file, as in exporter-toolkit."""
    if not isinstance(value, str) or not value:
        raise _error(path, key, value, "the path of a readable PEM file")
    resolved = base / value
    if not resolved.is_file():
        raise _error(path, key, value, "the path of a readable PEM file (relative to the web config file)")
    return str(resolved)


def _tls(path: str, base: Path, section: Any) -> ssl.SSLContext | None:
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise _error(path, "tls_server_config", section, "a mapping")
    for key in section:
        if key in _UNSUPPORTED["tls_server_config"]:
            raise _error(path, f"tls_server_config.{key}", section[key],
                         "not set: otel-rl's endpoint (Python's ssl module) cannot honour it; supported keys: "
                         + ", ".join(sorted(_TLS_KEYS)))
        if key not in _TLS_KEYS and key not in _ACCEPTED_NOOP["tls_server_config"]:
            raise _error(path, f"tls_server_config.{key}", section[key], ", ".join(sorted(_TLS_KEYS)))
    if "cert_file" not in section or "key_file" not in section:
        raise _error(path, "tls_server_config", "missing cert_file or key_file", "both cert_file and key_file",
                     ours=True)
    cert = _file(path, base, "tls_server_config.cert_file", section["cert_file"])
    key = _file(path, base, "tls_server_config.key_file", section["key_file"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise _error(path, "tls_server_config.key_file", section["key_file"],
                     f"a private key matching cert_file {section['cert_file']!r} ({exc})") from None
    versions = {}
    for which in ("min_version", "max_version"):
        value = section.get(which, "TLS12" if which == "min_version" else None)
        if value is None:
            continue
        if value not in TLS_VERSIONS:
            raise _error(path, f"tls_server_config.{which}", value, ", ".join(TLS_VERSIONS))
        versions[which] = TLS_VERSIONS[value]
    try:
        context.minimum_version = versions["min_version"]
        if "max_version" in versions:
            context.maximum_version = versions["max_version"]
    except (ValueError, ssl.SSLError) as exc:
        raise _error(path, "tls_server_config.min_version", section.get("min_version"), str(exc)) from None
    if "max_version" in versions and versions["max_version"] < versions["min_version"]:
        raise _error(path, "tls_server_config.max_version", section["max_version"], "at least min_version")
    auth = section.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise _error(path, "tls_server_config.client_auth_type", auth,
                     ", ".join(CLIENT_AUTH) + " (RequestClientCert and RequireAnyClientCert ask for a certificate "
                     "without verifying it, which Python's ssl module cannot do)")
    context.verify_mode = CLIENT_AUTH[auth]
    if "client_ca_file" in section:
        ca = _file(path, base, "tls_server_config.client_ca_file", section["client_ca_file"])
        try:
            context.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as exc:
            raise _error(path, "tls_server_config.client_ca_file", section["client_ca_file"],
                         f"a PEM file of CA certificates ({exc})") from None
    elif auth != "NoClientCert":
        raise _error(path, "tls_server_config.client_ca_file", None,
                     f"a CA file: client_auth_type {auth} verifies client certificates against it")
    return context


def _users(path: str, section: Any) -> dict[str, bytes]:
    if section is None:
        return {}
    if not isinstance(section, Mapping) or not section:
        raise _error(path, "basic_auth_users", section, "a mapping of user name to bcrypt hash")
    users = {}
    for user, hashed in section.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(f"prometheus.web_config_file {path!r}: key 'basic_auth_users' has user name "
                              f"{user!r}; allowed: a non-empty string without ':'")
        if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            raise ConfigError(f"prometheus.web_config_file {path!r}: key 'basic_auth_users.{user}' has a value "
                              "that is not a bcrypt hash (value not shown); allowed: a bcrypt hash, e.g. from "
                              "`htpasswd -nBC 10 \"\" | tr -d ':\\n'` (it asks for the password)")
        users[user] = hashed.encode("ascii")
    try:
        import bcrypt  # noqa: F401
    except ImportError:
        raise ConfigError(f"prometheus.web_config_file {path!r}: basic_auth_users needs the bcrypt package; "
                          f"install it with: {install_hint('security')}") from None
    return users


def _http(path: str, section: Any) -> dict[str, str]:
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise _error(path, "http_server_config", section, "a mapping")
    for key in section:
        if key not in ("headers", "http2"):
            raise _error(path, f"http_server_config.{key}", section[key], "headers, http2")
    headers = section.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and k and "\n" not in k + v and "\r" not in k + v
            for k, v in headers.items()):
        raise _error(path, "http_server_config.headers", headers, "a mapping of header name to one-line value")
    return dict(headers)
