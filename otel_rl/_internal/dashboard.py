"""The Grafana dashboard, generated from the metric catalog.

``grafana/dashboards/rl-training.json`` is the output of :func:`write_dashboard` (``otel-rl dashboard``); edit
this module, not the JSON. Every selector is built by :func:`_sel`, which adds ``job=~"$job"`` and a matcher for
each template variable whose label the metric has (:attr:`MetricSpec.labels`), and nothing else: a panel can
never filter on a label its metric lacks (the original dashboard's "Training Errors" defect).

Counters and histograms are read in ways that also work for short and finished runs: stat and table panels are
instant queries over the dashboard range (``max_over_time``/``last_over_time`` over ``$__range``), mean losses
are cumulative ``_sum``/``_count`` ratios beside the windowed mean, and only "per second" panels need ``rate``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_rl._internal.catalog import BY_NAME
from otel_rl._internal.resource_catalog import RESOURCE_BY_NAME

__all__ = [
    "DASHBOARD_UID",
    "SEED_PANELS",
    "VARIABLES",
    "build_dashboard",
    "dashboard_json",
    "markdown",
    "panel_queries",
    "parse_label_values",
    "render_doc",
    "substitute",
    "update_doc",
    "variable_queries",
    "write_dashboard",
]

DASHBOARD_UID = "otel-rl-training"
_DS = {"type": "prometheus", "uid": "${datasource}"}

#: Template variables that filter series, in the order they appear; each filters only metrics with that label.
VARIABLES: tuple[str, ...] = ("algorithm", "run_id", "agent_id")

#: Each panel of the original dashboard -> the panel here that keeps its intent.
SEED_PANELS: dict[str, str] = {
    "Training Runs Total": "Training runs",
    "Active Training": "Active training",
    "Training Iterations": "Training iterations",
    "Episodes Total": "Episodes",
    "Episode Reward Mean (Current)": "Episode reward mean (current iteration)",
    "Episode Length Mean (Current)": "Episode length mean (current iteration)",
    "Current Iteration": "Current iteration",
    "Sharpe Ratio": "Sharpe ratio",
    "Max Drawdown": "Max drawdown",
    "Win Rate": "Win rate",
    "Total Return": "Total return",
    "Training Duration": "Training duration (mean per run)",
    "Episode Reward Distribution": "Episode reward distribution",
    "Policy Loss": "Policy loss",
    "Value Loss": "Value loss",
    "Entropy (Exploration)": "Entropy (exploration)",
    "Training Errors": "Training errors",
    "Environment Steps Rate": "Environment steps per second",
}


def _sel(name: str, suffix: str = "", **matchers: str) -> str:
    """A selector for ``name + suffix`` filtered by ``$job`` and every variable whose label the metric has.

    ``matchers`` adds fixed equality matchers (``status="failed"``); a label the metric lacks raises ``ValueError``.
    """
    spec = BY_NAME[name]
    parts = ['job=~"$job"']
    parts += [f'{label}=~"${label}"' for label in VARIABLES if label in spec.labels]
    for label, value in matchers.items():
        if label not in spec.labels:
            raise ValueError(f"{name} has no label {label!r} (labels: {spec.labels})")
        parts.append(f'{label}="{value}"')
    return f"{name}{suffix}{{{','.join(parts)}}}"


def _by(name: str, *labels: str) -> str:
    """``by (...)`` over the given labels, checked against the metric's label keys (``job``/``le`` always exist)."""
    spec = BY_NAME[name]
    for label in labels:
        if label not in spec.labels + ("job", "le"):
            raise ValueError(f"{name} has no label {label!r} (labels: {spec.labels})")
    return f"by ({', '.join(labels)})"


def _series_labels(name: str) -> tuple[str, ...]:
    """The labels to keep when aggregating away ``instance``: the metric's own labels."""
    return BY_NAME[name].labels


def _legend(name: str) -> str:
    labels = _series_labels(name)
    return " ".join(f"{{{{{label}}}}}" for label in labels) or "{{job}}"


@dataclass
class _Target:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"


@dataclass
class _Panel:
    title: str
    type: str
    targets: list[_Target]
    description: str
    unit: str = "short"
    width: int = 12
    height: int = 8
    extra_options: dict[str, Any] = field(default_factory=dict)
    field_config: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)


def _stat(title: str, expr: str, description: str, unit: str = "short", legend: str = "") -> _Panel:
    return _Panel(title, "stat", [_Target(expr, legend, instant=True)], description, unit, width=4, height=5)


def _ts(title: str, targets: list[_Target], description: str, unit: str = "short", **field_config: Any) -> _Panel:
    return _Panel(title, "timeseries", targets, description, unit, field_config=field_config)


def _gauge_ts(name: str, title: str, unit: str, **field_config: Any) -> _Panel:
    spec = BY_NAME[name]
    by = _by(name, *spec.labels)
    return _ts(title, [_Target(f"max {by} ({_sel(name)})", _legend(name))],
               f"{spec.help} (`{name}`), per {', '.join(spec.labels)}.", unit, **field_config)


def _ratio(name: str, by_labels: tuple[str, ...], window: str | None = None) -> str:
    """Mean observation of histogram ``name``: cumulative ``_sum/_count``, or over ``window`` with ``delta``.

    ``delta`` rather than ``rate``: ``_sum`` decreases when observations are negative (PPO policy losses,
    differential entropy, rewards), which ``rate`` would read as counter resets.
    """
    by = _by(name, *by_labels)
    if window is None:
        return f"sum {by} ({_sel(name, '_sum')}) / (sum {by} ({_sel(name, '_count')}) > 0)"
    return (f"sum {by} (delta({_sel(name, '_sum')}[{window}]))"
            f" / (sum {by} (delta({_sel(name, '_count')}[{window}])) > 0)")


def _loss_panel(name: str, title: str) -> _Panel:
    spec = BY_NAME[name]
    return _ts(title, [
        _Target(_ratio(name, ("algorithm",), "$__rate_interval"), "{{algorithm}} mean over $__rate_interval"),
        _Target(_ratio(name, ("algorithm",)), "{{algorithm}} mean since start"),
    ], f"{spec.help}: mean of the observations (`{name}_sum / {name}_count`), over the last "
       "`$__rate_interval` and since the run started (the latter also shows short and finished runs).")


def _range_total(name: str, by_labels: tuple[str, ...] = (), **matchers: str) -> str:
    """A counter's value over the dashboard range (its peak, so finished runs still count)."""
    inner = f"max_over_time({_sel(name, **matchers)}[$__range])"
    return f"sum {_by(name, *by_labels)} ({inner})" if by_labels else f"sum({inner})"


def _heatmap(name: str, title: str, description: str) -> _Panel:
    by = _by(name, "le")
    return _Panel(title, "heatmap", [
        _Target(f"sum {by} (increase({_sel(name, '_bucket')}[$__rate_interval]))", "{{le}}", fmt="heatmap"),
    ], description, "short", extra_options={
        "calculate": False,
        "cellGap": 1,
        "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False, "scale": "exponential",
                  "scheme": "Oranges", "steps": 64},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": False},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": "short"},
    })


def _rows() -> list[tuple[str, list[_Panel]]]:
    runs, active = "rl_training_runs_total", "rl_training_active"
    iters, episodes = "rl_training_iterations_total", "rl_training_episodes_total"
    steps, errors = "rl_training_environment_steps_total", "rl_training_errors_total"
    duration, dropped = "rl_training_duration_seconds", "otel_rl_dropped_values_total"
    cur, start = "rl_training_current_iteration", "rl_training_start_timestamp"
    reward_mean = "rl_training_episode_reward_mean"

    runs_table = _Panel("Runs", "table", [
        _Target(f"max {_by(cur, 'algorithm', 'run_id')} (last_over_time({_sel(cur)}[$__range]))",
                instant=True, fmt="table"),
        _Target(f"max {_by(reward_mean, 'algorithm', 'run_id')} (last_over_time({_sel(reward_mean)}[$__range]))",
                instant=True, fmt="table"),
        _Target(f"1000 * max {_by(start, 'algorithm', 'run_id')} (last_over_time({_sel(start)}[$__range]))",
                instant=True, fmt="table"),
    ], "One row per run: last iteration number, last mean episode reward and start time "
       "(`rl_training_current_iteration`, `rl_training_episode_reward_mean`, `rl_training_start_timestamp`).",
        width=20, height=8,
        field_config={"overrides": [
            {"matcher": {"id": "byName", "options": "Value #C"},
             "properties": [{"id": "unit", "value": "dateTimeAsIso"}, {"id": "displayName", "value": "Started"}]},
            {"matcher": {"id": "byName", "options": "Value #A"},
             "properties": [{"id": "displayName", "value": "Iteration"}]},
            {"matcher": {"id": "byName", "options": "Value #B"},
             "properties": [{"id": "displayName", "value": "Reward mean"}]},
        ]},
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "indexByName": {}, "renameByName": {}}},
        ])

    overview = [
        _stat("Training runs", _range_total(runs, ("status",)),
              "Training runs over the dashboard range, by status (started, completed, failed): the peak of "
              "`rl_training_runs_total`.", legend="{{status}}"),
        _stat("Active training", f"sum(last_over_time({_sel(active)}[$__range]))",
              "Runs currently active: the last value of `rl_training_active` (1 while training) in the range."),
        _stat("Training iterations", _range_total(iters),
              "Training iterations over the dashboard range (`rl_training_iterations_total`)."),
        _stat("Episodes", _range_total(episodes),
              "Episodes completed over the dashboard range (`rl_training_episodes_total`)."),
        _stat("Environment steps", _range_total(steps),
              "Environment steps over the dashboard range (`rl_training_environment_steps_total`)."),
        _stat("Errors", _range_total(errors),
              "Training errors over the dashboard range, all types (`rl_training_errors_total`); only the job "
              "variable filters it."),
        _stat("Training duration (mean per run)",
              f"sum {_by(duration, 'algorithm')} (max_over_time({_sel(duration, '_sum')}[$__range]))"
              f" / (sum {_by(duration, 'algorithm')} (max_over_time({_sel(duration, '_count')}[$__range])) > 0)",
              "Mean duration of completed runs, per algorithm (`rl_training_duration_seconds_sum / _count`).",
              unit="s", legend="{{algorithm}}"),
        runs_table,
    ]

    reward = "rl_training_episode_reward"
    episodes_row = [
        _gauge_ts(reward_mean, "Episode reward mean (current iteration)", "short"),
        _gauge_ts("rl_training_episode_length_mean", "Episode length mean (current iteration)", "short"),
        _gauge_ts(cur, "Current iteration", "short"),
        _ts("Episode reward (histogram mean)", [
            _Target(_ratio(reward, ("algorithm", "agent_id")), "{{algorithm}} {{agent_id}}"),
        ], "Mean reward of every episode recorded since start, per agent "
           "(`rl_training_episode_reward_sum / _count`)."),
        _heatmap(reward, "Episode reward distribution",
                 "Episodes per reward bucket in each interval (`rl_training_episode_reward_bucket`); "
                 "negative rewards land in the negative buckets."),
        _heatmap("rl_training_episode_length", "Episode length distribution",
                 "Episodes per length bucket in each interval (`rl_training_episode_length_bucket`)."),
        _ts("Episodes per second", [
            _Target(f"sum {_by(episodes, 'algorithm', 'agent_id')} (rate({_sel(episodes)}[$__rate_interval]))",
                    "{{algorithm}} {{agent_id}}"),
        ], "Episode completion rate per agent (`rl_training_episodes_total`).", "short"),
    ]

    performance = [
        _gauge_ts("rl_training_sharpe_ratio", "Sharpe ratio", "short"),
        _gauge_ts("rl_training_max_drawdown", "Max drawdown", "percent"),
        _gauge_ts("rl_training_win_rate", "Win rate", "percent", min=0, max=100),
        _gauge_ts("rl_training_total_return", "Total return", "percent"),
    ]

    losses = [
        _loss_panel("rl_training_policy_loss", "Policy loss"),
        _loss_panel("rl_training_value_loss", "Value loss"),
        _loss_panel("rl_training_entropy", "Entropy (exploration)"),
    ]

    signals = [
        _gauge_ts("rl_training_learning_rate", "Learning rate", "short"),
        _gauge_ts("rl_training_kl_divergence", "KL divergence (latest update)", "short"),
        _gauge_ts("rl_training_clip_fraction", "Clip fraction (latest update)", "percentunit", min=0, max=1),
        _gauge_ts("rl_training_explained_variance", "Explained variance (latest update)", "short", max=1),
        _gauge_ts("rl_training_grad_norm", "Gradient norm (latest update)", "short"),
        _gauge_ts("rl_training_env_steps_per_second", "Throughput as the framework measures it", "steps/s"),
        _gauge_ts("rl_training_entropy_coefficient", "Entropy coefficient", "short"),
        _gauge_ts("rl_training_exploration_rate", "Exploration rate (epsilon)", "percentunit", min=0, max=1),
    ]

    load = "rl_training_data_load_time_seconds"
    throughput = [
        _ts("Environment steps per second", [
            _Target(f"sum {_by(steps, 'algorithm')} (rate({_sel(steps)}[$__rate_interval]))", "{{algorithm}}"),
        ], "Environment steps per second, per algorithm (`rl_training_environment_steps_total`).", "steps/s"),
        _ts("Training iterations per second", [
            _Target(f"sum {_by(iters, 'algorithm')} (rate({_sel(iters)}[$__rate_interval]))", "{{algorithm}}"),
        ], "Training iterations per second, per algorithm (`rl_training_iterations_total`).", "short"),
        _ts("Data load time", [
            _Target(f"sum({_sel(load, '_sum')}) / (sum({_sel(load, '_count')}) > 0)", "mean since start"),
            _Target(f"histogram_quantile(0.9, sum {_by(load, 'le')} (rate({_sel(load, '_bucket')}[$__rate_interval])))",
                    "p90 over $__rate_interval"),
        ], "Time to load training data (`rl_training_data_load_time_seconds`, no labels besides job).", "s"),
        _ts("Active training over time", [
            _Target(f"max {_by(active, 'algorithm')} ({_sel(active)})", "{{algorithm}}"),
        ], "Whether training is active (1) or not (0), per algorithm (`rl_training_active`).", "short",
            min=0, max=1),
    ]

    errors_row = [
        _ts("Training errors", [
            _Target(f"sum {_by(errors, 'error_type')} (increase({_sel(errors)}[$__rate_interval]))",
                    "{{error_type}} per $__rate_interval"),
            _Target(f"sum {_by(errors, 'error_type')} ({_sel(errors)})", "{{error_type}} since start"),
        ], "Errors by type, per interval and since the process started (`rl_training_errors_total`, which has only "
           "the error_type label: the algorithm, run and agent variables do not filter it).", "short"),
        _Panel("Errors by type", "table", [
            _Target(_range_total(errors, ("error_type",)), instant=True, fmt="table"),
        ], "Errors over the dashboard range by type (`rl_training_errors_total`).", width=6,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                            "renameByName": {"Value": "Errors"}}}]),
        _Panel("Values dropped by otel-rl", "table", [
            _Target(_range_total(dropped, ("metric", "reason")), instant=True, fmt="table"),
        ], "Values the SDK refused to record over the dashboard range, by metric and reason "
           "(`otel_rl_dropped_values_total`: nan, inf, wrong_type, cardinality_limit, ...).", width=6,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                            "renameByName": {"Value": "Dropped"}}}]),
    ]

    return [
        ("Overview", overview),
        ("Episodes", episodes_row),
        ("Trading performance", performance),
        ("Losses", losses),
        ("Training signals", signals),
        ("Throughput", throughput),
        ("Errors", errors_row),
        ("Resources", _resources_row()),
    ]


def _rsel(name: str) -> str:
    """A selector for resource metric ``name``: only ``$job`` filters it (it has no run labels)."""
    if name not in RESOURCE_BY_NAME:
        raise ValueError(f"{name} is not a resource metric")
    return f'{name}{{job=~"$job"}}'


def _resources_row() -> list[_Panel]:
    """Process, GPU and torch CUDA memory series of the ``resource_metrics`` setting (docs/resources.md)."""
    per_process = " One series per process (`instance`); only the job variable filters it."
    per_gpu = (" One series per GPU (`gpu_index`, `hw_id` = UUID, `hw_name`) and reporting process (`instance`); "
               "only the job variable filters it. Empty without an NVIDIA GPU.")
    gpu_legend = "{{instance}} GPU {{gpu_index}} {{hw_name}}"
    torch_legend = "{{instance}} {{device}}"
    return [
        _ts("Process CPU utilisation", [_Target(_rsel("process_cpu_utilization"), "{{instance}}")],
            "CPU time of the training process over wall time and its available CPUs (`process_cpu_utilization`, "
            "0-1)." + per_process, "percentunit", min=0),
        _ts("Process resident memory", [_Target(_rsel("process_memory_usage"), "{{instance}}")],
            "Resident memory of the training process (`process_memory_usage`)." + per_process, "bytes"),
        _ts("Process threads and open files", [
            _Target(_rsel("process_thread_count"), "{{instance}} threads"),
            _Target(_rsel("process_unix_file_descriptor_count"), "{{instance}} file descriptors"),
        ], "Threads (`process_thread_count`) and open file descriptors (`process_unix_file_descriptor_count`) of "
           "the training process." + per_process, "short"),
        _ts("GPU utilisation", [_Target(_rsel("hw_gpu_utilization"), gpu_legend)],
            "Fraction of time a kernel ran on the GPU (`hw_gpu_utilization`, NVML)." + per_gpu, "percentunit",
            min=0, max=1),
        _ts("GPU memory", [
            _Target(_rsel("hw_gpu_memory_usage"), gpu_legend + " used"),
            _Target(_rsel("hw_gpu_memory_limit"), gpu_legend + " size"),
        ], "GPU memory used by all processes on the device and its size (`hw_gpu_memory_usage`, "
           "`hw_gpu_memory_limit`, NVML)." + per_gpu, "bytes"),
        _ts("GPU power and temperature", [
            _Target(_rsel("hw_power"), gpu_legend + " W"),
            _Target(_rsel("hw_temperature"), gpu_legend + " °C"),
        ], "Power draw in watts (`hw_power`) and die temperature in °C (`hw_temperature`), NVML." + per_gpu,
            "short"),
        _ts("Torch CUDA memory", [
            _Target(_rsel("torch_cuda_memory_allocated"), torch_legend + " allocated"),
            _Target(_rsel("torch_cuda_memory_max_allocated"), torch_legend + " peak allocated"),
            _Target(_rsel("torch_cuda_memory_reserved"), torch_legend + " reserved"),
            _Target(_rsel("torch_cuda_memory_max_reserved"), torch_legend + " peak reserved"),
        ], "Memory of torch's CUDA caching allocator in the training process, current and peak "
           "(`torch_cuda_memory_*`). Empty until the process has imported torch and initialised CUDA.", "bytes"),
    ]


def _panel_json(panel: _Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
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
    for row_title, row_panels in _rows():
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
                       "`otel-rl dashboard` from otel_rl/_internal/dashboard.py; do not edit by hand.",
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


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` for every query of every panel, in dashboard order."""
    return [(panel["title"], target["expr"])
            for panel in _all_panels(dashboard) for target in panel.get("targets", [])]


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
    from otel_rl._internal import rules

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
