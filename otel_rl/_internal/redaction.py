"""Redaction: how a setting's value may be printed in a repr, a log line or an error without showing a secret.

OTLP header values are secret as a whole; URLs lose their user info, query and fragment. Imports only errors.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from otel_rl._internal.errors import describe

REDACTED = "<redacted>"
#: Keys whose values are secret as a whole (an OTLP header value is a token or an API key).
SECRET_KEYS = frozenset({"otlp.headers"})


#: Keys whose values are URLs, so credentials may sit in them with or without a scheme (``user:pw@host:4317``).
URL_KEYS = frozenset({"otlp.endpoint"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def redact(key: str, value: Any) -> str:
    """``repr(value)`` as otel-rl may print it for ``key``: header values and URL credentials replaced."""
    if key in SECRET_KEYS:
        if isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            return repr(tuple((k, REDACTED) for k, _ in value))
        if isinstance(value, Mapping):
            return repr({k: REDACTED for k in value})
        return repr(REDACTED) if value else repr(value)
    if isinstance(value, str) and any(c in value for c in "@?#") and (key in URL_KEYS or "://" in value):
        return describe(redact_url(value))
    return describe(value)


def redact_url(text: str) -> str:
    """``text`` with what may be a credential in a URL replaced: all the user info before the ``@`` (a user name
    cannot be told from a token: ``https://TOKEN@host``, ``TOKEN:@host``), and any query or fragment.

    Deliberately textual, not ``urlsplit``: a password with ``/`` or ``#`` in it would move the split and show.
    When an ``@`` follows a ``?`` or ``#``, which part is the secret is ambiguous, and only the scheme is shown."""
    scheme = _SCHEME.match(text)
    prefix = scheme.group(0) if scheme else ""
    rest = text[len(prefix):]
    at = rest.rfind("@")
    query = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if at >= 0 and 0 <= query < at:
        return prefix + REDACTED
    if at >= 0:
        prefix += REDACTED + "@"
        rest = rest[at + 1:]
        query = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if query >= 0:  # a query or fragment may be a token (``?access_token=...``, or the bare token)
        rest = rest[:query] + rest[query] + REDACTED
    return prefix + rest


def section_is_secret(key: str) -> bool:
    """Values next to a secret key may be a misspelling of it, so unknown keys there are never shown."""
    return any(secret.startswith(key.split(".")[0] + ".") for secret in SECRET_KEYS)


def shown_unknown(value: Any) -> str:
    """An unknown key's value as an error shows it: a number or a boolean as is, anything else only by its type.

    The key may be a misspelled secret (``otlp.hedaers``, ``headers`` outside its section), and a string or mapping
    under it may hold a token; the key's name is what the user needs to fix it.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return f"value {describe(value)}"
    return f"a {type(value).__name__} value, not shown"
