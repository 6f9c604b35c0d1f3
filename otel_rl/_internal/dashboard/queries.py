"""Reading the dashboard back: its queries, its variables' queries, and Grafana's variable substitution.

For running every panel and variable query against a real Prometheus (``tests/test_dashboard_live.py``) and for
checking the queries against the catalog (``tests/test_dashboard.py``).
"""

from __future__ import annotations

import re
from typing import Any

from otel_rl._internal.dashboard.promql import VARIABLES

__all__ = ["all_panels", "panel_queries", "parse_label_values", "substitute", "variable_queries"]


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel in dashboard order, rows included, with the panels inside collapsed rows after their row."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` for every query of every panel, in dashboard order."""
    return [(panel["title"], target["expr"])
            for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(variable name, query)`` for every query variable, e.g. ``("job", "label_values(..., job)")``."""
    out = []
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            out.append((var["name"], query["query"] if isinstance(query, dict) else query))
    return out


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def parse_label_values(query: str) -> tuple[str, str]:
    """Split ``label_values(selector, label)`` into ``(selector, label)`` (selector may be empty).

    For running a variable query against Prometheus: ``GET /api/v1/label/<label>/values?match[]=<selector>``
    (after :func:`substitute`).
    """
    match = _LABEL_VALUES.match(query.strip())
    if match is None:
        raise ValueError(f"not a label_values(...) query: {query!r}")
    return (match.group("selector") or "").strip(), match.group("label")


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def substitute(expr: str, values: dict[str, str], range_: str = "1h") -> str:
    """Replace the Grafana variables in ``expr`` the way Grafana would, to run it against Prometheus directly.

    ``values`` maps ``job``/``algorithm``/``run_id``/``agent_id`` to a regex; a missing variable, ``"All"``,
    ``"$__all"`` or ``""`` becomes the All value ``.*``. ``$__range`` becomes ``range_``; ``$__rate_interval``
    and ``$__interval`` become ``values["__rate_interval"]``/``values["__interval"]`` (default ``1m``/``15s``).
    An unknown variable raises ``ValueError``.
    """
    defaults = {"__range": range_, "__rate_interval": "1m", "__interval": "15s"}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in defaults:
            return values.get(name) or defaults[name]
        if name == "job" or name in VARIABLES:
            value = values.get(name)
            return ".*" if value in (None, "", "All", "$__all") else value
        raise ValueError(f"unknown variable ${name} in {expr!r}")

    return _VAR.sub(replace, expr)
