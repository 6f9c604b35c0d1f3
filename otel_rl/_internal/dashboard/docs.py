"""The generated sections of docs/dashboard.md: the table of panels and their PromQL, and the recording rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from otel_rl._internal import rules
from otel_rl._internal.dashboard.grafana import build_dashboard

__all__ = ["markdown", "render_doc", "update_doc"]


def markdown(dashboard: dict[str, Any] | None = None) -> str:
    """A Markdown table of every panel (row, title, type, unit, metrics and PromQL), for docs/dashboard.md."""
    dashboard = dashboard or build_dashboard()
    lines = ["| Row | Panel | Type | Unit | PromQL |", "|---|---|---|---|---|"]
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        exprs = "<br>".join(f"`{t['expr'].replace('|', chr(92) + '|')}`" for t in panel["targets"])
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        lines.append(f"| {row} | {panel['title']} | {panel['type']} | {unit} | {exprs} |")
    return "\n".join(lines) + "\n"


_SECTION = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[a-z]+) -->\n).*?(<!-- END GENERATED: (?P=name) -->)", re.S)


def render_doc(text: str) -> str:
    """``text`` (docs/dashboard.md) with its generated sections (``panels``, ``rules``) brought up to date."""
    sections = {"panels": markdown(), "rules": rules.markdown()}

    def replace(match: re.Match[str]) -> str:
        return match.group(1) + sections[match.group("name")] + match.group(3)

    return _SECTION.sub(replace, text)


def update_doc(path: str | Path) -> bool:
    """Rewrite the generated sections of the Markdown file at ``path``; return whether it changed."""
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = render_doc(old)
    if new != old:
        path.write_text(new, encoding="utf-8")
    return new != old
