"""Grafana JSON for the dashboard: panel options, the grid layout, the template variables, the file.

``grafana/dashboards/rl-training.json`` is the output of :func:`write_dashboard` (``otel-rl dashboard``); change
the panels in :mod:`otel_rl._internal.dashboard.panels`, not the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otel_rl._internal.dashboard.panels import Panel, rows

__all__ = ["DASHBOARD_UID", "build_dashboard", "dashboard_json", "write_dashboard"]

DASHBOARD_UID = "otel-rl-training"
_DS = {"type": "prometheus", "uid": "${datasource}"}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, target in enumerate(panel.targets):
        targets.append({
            "datasource": dict(_DS),
            "editorMode": "code",
            "expr": target.expr,
            "format": target.fmt,
            "instant": target.instant,
            "legendFormat": target.legend or "__auto",
            "range": not target.instant,
            "refId": chr(ord("A") + i),
        })
    defaults: dict[str, Any] = {"unit": panel.unit}
    overrides = panel.field_config.get("overrides", [])
    defaults.update({k: v for k, v in panel.field_config.items() if k != "overrides"})
    if panel.type == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "auto",
                              "spanNulls": False}
        options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif panel.type == "stat":
        options = {"colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                   "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "textMode": "auto"}
        defaults["noValue"] = "0"
    elif panel.type == "table":
        options = {"cellHeight": "sm", "showHeader": True}
    else:
        options = {}
    options.update(panel.extra_options)
    result: dict[str, Any] = {
        "datasource": dict(_DS),
        "description": panel.description,
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "id": panel_id,
        "options": options,
        "targets": targets,
        "title": panel.title,
        "type": panel.type,
    }
    if panel.transformations:
        result["transformations"] = panel.transformations
    return result


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "datasource": dict(_DS),
        "definition": query,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }


def _templating() -> list[dict[str, Any]]:
    return [
        {"current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
         "name": "datasource", "options": [], "query": "prometheus", "refresh": 1, "regex": "",
         "skipUrlSync": False, "type": "datasource"},
        _variable("job", "Job", "label_values(rl_training_runs_total, job)"),
        _variable("algorithm", "Algorithm", 'label_values(rl_training_runs_total{job=~"$job"}, algorithm)'),
        _variable("run_id", "Run",
                  'label_values(rl_training_current_iteration{job=~"$job",algorithm=~"$algorithm"}, run_id)'),
        _variable("agent_id", "Agent",
                  'label_values(rl_training_episodes_total{job=~"$job",algorithm=~"$algorithm"}, agent_id)'),
    ]


def build_dashboard() -> dict[str, Any]:
    """The dashboard as a dict, ready for ``json.dumps`` (Grafana schemaVersion 39)."""
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row_title, row_panels in rows():
        panels.append({"collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": next_id,
                       "panels": [], "title": row_title, "type": "row"})
        next_id += 1
        y += 1
        x, row_height = 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "description": "Reinforcement-learning training metrics exported by otel-rl. Generated by "
                       "`otel-rl dashboard` from otel_rl/_internal/dashboard/; do not edit by hand.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["otel-rl", "reinforcement-learning", "training"],
        "templating": {"list": _templating()},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "RL Training",
        "uid": DASHBOARD_UID,
        "version": 1,
        "weekStart": "",
    }


def dashboard_json() -> str:
    """The dashboard's JSON text as committed: indent 2, keys in build order, trailing newline."""
    return json.dumps(build_dashboard(), indent=2, ensure_ascii=False) + "\n"


def write_dashboard(path: str | Path) -> None:
    """Write the dashboard JSON to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dashboard_json(), encoding="utf-8")
