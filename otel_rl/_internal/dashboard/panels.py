"""The dashboard's rows and panels, in order, each derived from a catalog metric's labels and help text.

What each panel shows lives here; how it becomes Grafana JSON (ids, grid, options) is
:mod:`otel_rl._internal.dashboard.grafana`, and every PromQL snippet comes from
:mod:`otel_rl._internal.dashboard.promql`.

Counters and histograms are read in ways that also work for short and finished runs: stat and table panels are
instant queries over the dashboard range (``max_over_time``/``last_over_time`` over ``$__range``), mean losses
are cumulative ``_sum``/``_count`` ratios beside the windowed mean, and only "per second" panels need ``rate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from otel_rl._internal.catalog import BY_NAME
from otel_rl._internal.dashboard.promql import (
    CUSTOM_SELECTOR,
    group_by,
    legend,
    range_total,
    ratio,
    resource_sel,
    sel,
)

__all__ = ["SEED_PANELS", "Panel", "Target", "rows"]

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


@dataclass
class Target:
    """One query of a panel; ``instant`` for stat and table panels, ``fmt`` is Grafana's result format."""

    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"


@dataclass
class Panel:
    """One panel: what it shows and its size in grid units; Grafana options are added when it becomes JSON."""

    title: str
    type: str
    targets: list[Target]
    description: str
    unit: str = "short"
    width: int = 12
    height: int = 8
    extra_options: dict[str, Any] = field(default_factory=dict)
    field_config: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)


def _stat(title: str, expr: str, description: str, unit: str = "short", legend: str = "") -> Panel:
    return Panel(title, "stat", [Target(expr, legend, instant=True)], description, unit, width=4, height=5)


def _ts(title: str, targets: list[Target], description: str, unit: str = "short", **field_config: Any) -> Panel:
    return Panel(title, "timeseries", targets, description, unit, field_config=field_config)


def _gauge_ts(name: str, title: str, unit: str, **field_config: Any) -> Panel:
    spec = BY_NAME[name]
    by = group_by(name, *spec.labels)
    return _ts(title, [Target(f"max {by} ({sel(name)})", legend(name))],
               f"{spec.help} (`{name}`), per {', '.join(spec.labels)}.", unit, **field_config)




def _loss_panel(name: str, title: str) -> Panel:
    spec = BY_NAME[name]
    return _ts(title, [
        Target(ratio(name, ("algorithm",), "$__rate_interval"), "{{algorithm}} mean over $__rate_interval"),
        Target(ratio(name, ("algorithm",)), "{{algorithm}} mean since start"),
    ], f"{spec.help}: mean of the observations (`{name}_sum / {name}_count`), over the last "
       "`$__rate_interval` and since the run started (the latter also shows short and finished runs).")



def _heatmap(name: str, title: str, description: str) -> Panel:
    by = group_by(name, "le")
    return Panel(title, "heatmap", [
        Target(f"sum {by} (increase({sel(name, '_bucket')}[$__rate_interval]))", "{{le}}", fmt="heatmap"),
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


def rows() -> list[tuple[str, list[Panel]]]:
    """``(row title, panels)`` in dashboard order."""
    runs, active = "rl_training_runs_total", "rl_training_active"
    iters, episodes = "rl_training_iterations_total", "rl_training_episodes_total"
    steps, errors = "rl_training_environment_steps_total", "rl_training_errors_total"
    duration, dropped = "rl_training_duration_seconds", "otel_rl_dropped_values_total"
    cur, start = "rl_training_current_iteration", "rl_training_start_timestamp"
    reward_mean = "rl_training_episode_reward_mean"

    runs_table = Panel("Runs", "table", [
        Target(f"max {group_by(cur, 'algorithm', 'run_id')} (last_over_time({sel(cur)}[$__range]))",
               instant=True, fmt="table"),
        Target(f"max {group_by(reward_mean, 'algorithm', 'run_id')} (last_over_time({sel(reward_mean)}[$__range]))",
               instant=True, fmt="table"),
        Target(f"1000 * max {group_by(start, 'algorithm', 'run_id')} (last_over_time({sel(start)}[$__range]))",
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
        _stat("Training runs", range_total(runs, ("status",)),
              "Training runs over the dashboard range, by status (started, completed, failed): the peak of "
              "`rl_training_runs_total`.", legend="{{status}}"),
        _stat("Active training", f"sum(last_over_time({sel(active)}[$__range]))",
              "Runs currently active: the last value of `rl_training_active` (1 while training) in the range."),
        _stat("Training iterations", range_total(iters),
              "Training iterations over the dashboard range (`rl_training_iterations_total`)."),
        _stat("Episodes", range_total(episodes, ("agent_id",)),
              "Episodes completed over the dashboard range, per agent (`rl_training_episodes_total`). A "
              "multi-agent RLlib run counts each episode once for the team (agent `default`) and once per agent "
              "that took part, so the agents are shown apart, never summed.", legend="{{agent_id}}"),
        _stat("Environment steps", range_total(steps),
              "Environment steps over the dashboard range (`rl_training_environment_steps_total`)."),
        _stat("Errors", range_total(errors),
              "Training errors over the dashboard range, all types (`rl_training_errors_total`); only the job "
              "variable filters it."),
        _stat("Training duration (mean per run)",
              f"sum {group_by(duration, 'algorithm')} (max_over_time({sel(duration, '_sum')}[$__range]))"
              f" / (sum {group_by(duration, 'algorithm')} (max_over_time({sel(duration, '_count')}[$__range])) > 0)",
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
            Target(ratio(reward, ("algorithm", "agent_id")), "{{algorithm}} {{agent_id}}"),
        ], "Mean reward of every episode recorded since start, per agent "
           "(`rl_training_episode_reward_sum / _count`)."),
        _heatmap(reward, "Episode reward distribution",
                 "Episodes per reward bucket in each interval (`rl_training_episode_reward_bucket`); "
                 "negative rewards land in the negative buckets. For a multi-agent run choose one Agent (the team, "
                 "`default`, or one agent): with All, team returns and agent returns share the buckets."),
        _heatmap("rl_training_episode_length", "Episode length distribution",
                 "Episodes per length bucket in each interval (`rl_training_episode_length_bucket`). For a "
                 "multi-agent run choose one Agent, as for the reward distribution."),
        _ts("Episodes per second", [
            Target(f"sum {group_by(episodes, 'algorithm', 'agent_id')} (rate({sel(episodes)}[$__rate_interval]))",
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
        _gauge_ts("rl_training_module_loss", "Losses per module (latest update)", "short"),
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
        _gauge_ts("rl_training_tokens_per_second", "Tokens per second (language-model training)", "short"),
        _gauge_ts("rl_training_reward_function_mean", "Reward per reward function (language-model training)",
                  "short"),
    ]

    load = "rl_training_data_load_time_seconds"
    throughput = [
        _ts("Environment steps per second", [
            Target(f"sum {group_by(steps, 'algorithm')} (rate({sel(steps)}[$__rate_interval]))", "{{algorithm}}"),
        ], "Environment steps per second, per algorithm (`rl_training_environment_steps_total`).", "steps/s"),
        _ts("Training iterations per second", [
            Target(f"sum {group_by(iters, 'algorithm')} (rate({sel(iters)}[$__rate_interval]))", "{{algorithm}}"),
        ], "Training iterations per second, per algorithm (`rl_training_iterations_total`).", "short"),
        _ts("Data load time", [
            Target(f"sum({sel(load, '_sum')}) / (sum({sel(load, '_count')}) > 0)", "mean since start"),
            Target(f"histogram_quantile(0.9, sum {group_by(load, 'le')}"
                   f" (rate({sel(load, '_bucket')}[$__rate_interval])))", "p90 over $__rate_interval"),
        ], "Time to load training data (`rl_training_data_load_time_seconds`, no labels besides job).", "s"),
        _ts("Active training over time", [
            Target(f"max {group_by(active, 'algorithm')} ({sel(active)})", "{{algorithm}}"),
        ], "Whether training is active (1) or not (0), per algorithm (`rl_training_active`).", "short",
            min=0, max=1),
    ]

    errors_row = [
        _ts("Training errors", [
            Target(f"sum {group_by(errors, 'error_type')} (increase({sel(errors)}[$__rate_interval]))",
                   "{{error_type}} per $__rate_interval"),
            Target(f"sum {group_by(errors, 'error_type')} ({sel(errors)})", "{{error_type}} since start"),
        ], "Errors by type, per interval and since the process started (`rl_training_errors_total`, which has only "
           "the error_type label: the algorithm, run and agent variables do not filter it).", "short"),
        Panel("Errors by type", "table", [
            Target(range_total(errors, ("error_type",)), instant=True, fmt="table"),
        ], "Errors over the dashboard range by type (`rl_training_errors_total`).", width=6,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                            "renameByName": {"Value": "Errors"}}}]),
        Panel("Values dropped by otel-rl", "table", [
            Target(range_total(dropped, ("metric", "reason")), instant=True, fmt="table"),
        ], "Values otel-rl's recording dropped instead of recording, over the dashboard range, by metric and "
           "reason (`otel_rl_dropped_values_total`: none, nan, inf, wrong_type, tensor, negative counter "
           "increments, cardinality_limit, bad_labels, bad_name, label_too_long, unreadable_result).", width=6,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True},
                                                            "renameByName": {"Value": "Dropped"}}}]),
    ]

    return [
        ("Overview", overview),
        ("Episodes", episodes_row),
        ("Trading performance", performance),
        ("Losses", losses),
        ("Training signals", signals),
        ("Custom", _custom_row()),
        ("Throughput", throughput),
        ("Errors", errors_row),
        ("Resources", _resources_row()),
    ]



def _custom_row() -> list[Panel]:
    """Your own scalars: ``otel_rl.record_scalar`` and the ``extra_keys`` setting (docs/opentelemetry.md)."""
    return [
        Panel("Your scalars (record_scalar, extra_keys)", "timeseries", [
            Target(f"max without (instance) ({CUSTOM_SELECTOR})", "{{__name__}} {{algorithm}} {{run_id}}"),
        ], "Every `rl_training_custom_*` gauge: set by `otel_rl.record_scalar(name, value, **labels)` and by the "
           "`extra_keys` setting (result-dict and Stable-Baselines3 logger keys). Their labels are yours, so only "
           "the job variable filters them.", width=24, height=8),
    ]


def _resources_row() -> list[Panel]:
    """Process, GPU and torch CUDA memory series of the ``resource_metrics`` setting (docs/resources.md)."""
    per_process = " One series per process (`instance`); only the job variable filters it."
    per_gpu = (" One series per GPU (`gpu_index`, `hw_id` = UUID, `hw_name`) and reporting process (`instance`); "
               "only the job variable filters it. Empty without an NVIDIA GPU.")
    gpu_legend = "{{instance}} GPU {{gpu_index}} {{hw_name}}"
    torch_legend = "{{instance}} {{device}}"
    return [
        _ts("Process CPU utilisation", [Target(resource_sel("process_cpu_utilization"), "{{instance}}")],
            "CPU time of the training process over wall time and its available CPUs (`process_cpu_utilization`, "
            "0-1)." + per_process, "percentunit", min=0),
        _ts("Process resident memory", [Target(resource_sel("process_memory_usage"), "{{instance}}")],
            "Resident memory of the training process (`process_memory_usage`)." + per_process, "bytes"),
        _ts("Process threads and open files", [
            Target(resource_sel("process_thread_count"), "{{instance}} threads"),
            Target(resource_sel("process_unix_file_descriptor_count"), "{{instance}} file descriptors"),
        ], "Threads (`process_thread_count`) and open file descriptors (`process_unix_file_descriptor_count`) of "
           "the training process." + per_process, "short"),
        _ts("GPU utilisation", [Target(resource_sel("hw_gpu_utilization"), gpu_legend)],
            "Fraction of time a kernel ran on the GPU (`hw_gpu_utilization`, NVML)." + per_gpu, "percentunit",
            min=0, max=1),
        _ts("GPU memory", [
            Target(resource_sel("hw_gpu_memory_usage"), gpu_legend + " used"),
            Target(resource_sel("hw_gpu_memory_limit"), gpu_legend + " size"),
        ], "GPU memory used by all processes on the device and its size (`hw_gpu_memory_usage`, "
           "`hw_gpu_memory_limit`, NVML)." + per_gpu, "bytes"),
        _ts("GPU power and temperature", [
            Target(resource_sel("hw_power"), gpu_legend + " W"),
            Target(resource_sel("hw_temperature"), gpu_legend + " °C"),
        ], "Power draw in watts (`hw_power`) and die temperature in °C (`hw_temperature`), NVML." + per_gpu,
            "short"),
        _ts("Torch CUDA memory", [
            Target(resource_sel("torch_cuda_memory_allocated"), torch_legend + " allocated"),
            Target(resource_sel("torch_cuda_memory_max_allocated"), torch_legend + " peak allocated"),
            Target(resource_sel("torch_cuda_memory_reserved"), torch_legend + " reserved"),
            Target(resource_sel("torch_cuda_memory_max_reserved"), torch_legend + " peak reserved"),
        ], "Memory of torch's CUDA caching allocator in the training process, current and peak "
           "(`torch_cuda_memory_*`). Empty until the process has imported torch and initialised CUDA.", "bytes"),
    ]

