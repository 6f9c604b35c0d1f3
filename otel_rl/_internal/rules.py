"""Prometheus recording and alerting rules for training health, generated from code.

``prometheus/rules/otel-rl.rules.yml`` is the output of :func:`write_rules` (``otel-rl rules``) with the default
:class:`Thresholds`; ``prometheus/rules/tests/otel-rl.rules.test.yml`` unit-tests it with ``promtool test rules``.

Two PromQL details shape the expressions:

* A counter series appears with its first increment already in it (1, not 0), and ``increase`` needs two samples,
  so "a failed run / an error / a dropped NaN" is "increased in the window, or the series is new in the window"
  (:func:`_new_or_increased`).
* ``_sum`` of the policy-loss, entropy and reward histograms decreases when observations are negative; ``rate``
  and ``increase`` would read that as a counter reset, so windowed means use ``delta(_sum) / delta(_count)``.
* Alerts keep ``job`` and ``instance`` (one process) and carry ``algorithm`` and ``run_id``: series without
  ``run_id`` take the one of the process's latest started run (``rl_training_start_timestamp``) through
  :func:`_with_run`, so Alertmanager can group, inhibit and silence per run.

Every alert has a ``runbook_url`` annotation pointing at its section of ``docs/alerting.md``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ALERTS", "RECORDING_RULES", "RUNBOOK_BASE", "Thresholds", "build_rules", "markdown",
           "parse_thresholds", "rules_yaml", "write_rules"]

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

#: Where the runbooks are; an alert's ``runbook_url`` is this plus ``#`` and its lowercased name. The project has
#: no public address yet, so the default is the path in the checkout: pass your own (``otel-rl rules
#: --runbook-base https://.../docs/alerting.md``) for links a person can open from a notification.
RUNBOOK_BASE = "docs/alerting.md"


@dataclass(frozen=True)
class Thresholds:
    """The configurable values of the alerting rules; durations are Prometheus durations (``15m``, ``1h``)."""

    #: RLTrainingStalled: active for at least this long with no new training iteration in it.
    stalled_after: str = "15m"
    #: RLTrainingRunFailed: a run failed within this window.
    failed_window: str = "15m"
    #: RLTrainingErrors: more than ``max_errors`` training errors within ``errors_window``.
    errors_window: str = "5m"
    max_errors: float = 0.0
    #: RLTrainingRewardCollapsed: the mean episode reward fell more than ``reward_drop_fraction`` * |max| below
    #: its maximum over ``reward_window``, for ``reward_for``.
    reward_window: str = "1h"
    reward_drop_fraction: float = 0.5
    reward_for: str = "10m"
    #: RLTrainingNonFiniteLoss: the SDK dropped a NaN/inf loss or entropy within this window.
    non_finite_window: str = "15m"
    #: RLTrainingEntropyCollapsed: mean entropy over ``entropy_window`` below ``entropy_min``, for ``entropy_for``;
    #: never for a continuous-action run, known by a negative entropy observation within ``run_lookback``.
    entropy_window: str = "10m"
    entropy_min: float = 0.05
    entropy_for: str = "5m"
    #: RLTrainingKLDivergenceHigh: the latest KL divergence of a run above ``kl_max`` for ``kl_for`` while its
    #: algorithm has a run active in that process (the policy moves too far per update: learning rate too high, or
    #: too many epochs per batch).
    kl_max: float = 0.05
    kl_for: str = "10m"
    #: RLTrainingNoData: the last ``rl_training_active`` seen within ``no_data_lookback`` was 1, and no sample of
    #: it arrived for ``no_data_after`` (the process died or stopped exporting while training).
    no_data_after: str = "10m"
    no_data_lookback: str = "6h"
    #: How far back an alert looks for the run a process started last (``rl_training_start_timestamp``), whose
    #: ``run_id`` it carries, and for a negative entropy that marks a run as continuous.
    run_lookback: str = "6h"
    #: RLTelemetryValuesDropped: the SDK dropped any value within this window.
    dropped_window: str = "15m"
    #: RLGpuMemoryNearLimit (resource_metrics): a GPU's used memory above this fraction of its size, for
    #: ``gpu_memory_for``.
    gpu_memory_fraction: float = 0.95
    gpu_memory_for: str = "5m"
    #: RLGpuIdleWhileTraining (resource_metrics): mean GPU utilisation over ``gpu_idle_window`` below
    #: ``gpu_idle_utilization`` while the same process has a run active, for ``gpu_idle_for``.
    gpu_idle_window: str = "5m"
    gpu_idle_utilization: float = 0.05
    gpu_idle_for: str = "15m"

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, str) and not _DURATION.match(value):
                raise ValueError(f"Thresholds.{name}={value!r} is not a Prometheus duration (e.g. '15m', '1h')")
        if not 0.0 < self.reward_drop_fraction <= 1.0:
            raise ValueError(f"Thresholds.reward_drop_fraction={self.reward_drop_fraction!r} must be in (0, 1]")
        if self.kl_max <= 0:
            raise ValueError(f"Thresholds.kl_max={self.kl_max!r} must be > 0")
        if self.max_errors < 0:
            raise ValueError(f"Thresholds.max_errors={self.max_errors!r} must be >= 0")
        for name in ("gpu_memory_fraction", "gpu_idle_utilization"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"Thresholds.{name}={getattr(self, name)!r} must be in (0, 1]")


def _num(value: float) -> str:
    """A threshold as PromQL text: ``0``, ``0.05``, never ``0.0``."""
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _new_or_increased(selector: str, window: str, by: str, above: float = 0.0) -> str:
    """Groups ``by`` whose counter grew by more than ``above`` in ``window``, counting series born in the window.

    ``last_over_time`` rather than the bare selector: a run that fails usually ends its process, and a scraped
    series goes stale at once, while the alert should still fire for the whole window.
    """
    return (
        f"(sum by ({by}) (increase({selector}[{window}])) > {_num(above)})\n"
        f"or\n"
        f"(sum by ({by}) (last_over_time({selector}[{window}]) unless {selector} offset {window}) > {_num(above)})"
    )


_FAILED = 'rl_training_runs_total{status="failed"}'
#: The failed counter where it has ``run_id`` (the ``per_run_series`` setting).
_FAILED_RUN = 'rl_training_runs_total{status="failed",run_id!=""}'

#: An alert's own grouping: one process (``job``, ``instance``) and one algorithm in it.
_RUN = "job, instance, algorithm"
_PROCESS = "job, instance"


def _latest_run(on: str, lookback: str) -> str:
    """One series per group ``on`` naming the run the process started last, with value 1."""
    return (f"group by ({_RUN}, run_id) (topk by ({on}) (1, "
            f"last_over_time(rl_training_start_timestamp[{lookback}])))")


def _with_run(expr: str, on: str, lookback: str) -> str:
    """``expr`` (grouped by ``on``) with the ``run_id`` (and, per process, the ``algorithm``) of the process's latest
    run; groups with no started run come through unchanged, without ``run_id``."""
    copied = "run_id" if on == _RUN else "algorithm, run_id"
    return (f"(\n{_indent(expr)}\n)\n"
            f"* on ({on}) group_left ({copied})\n"
            f"{_latest_run(on, lookback)}\n"
            f"or on ({on})\n"
            f"(\n{_indent(expr)}\n)")


def _windowed_mean(name: str, by: str, window: str) -> str:
    return (f"sum by ({by}) (delta({name}_sum[{window}]))\n"
            f"/\n"
            f"(sum by ({by}) (delta({name}_count[{window}])) > 0)")


#: ``record`` name -> (expression, what it is); windows fixed at 5m to match the names.
RECORDING_RULES: dict[str, tuple[str, str]] = {
    "rl_training:environment_steps:rate5m": (
        "sum by (job, algorithm) (rate(rl_training_environment_steps_total[5m]))",
        "Environment steps per second."),
    "rl_training:iterations:rate5m": (
        "sum by (job, algorithm) (rate(rl_training_iterations_total[5m]))",
        "Training iterations per second."),
    "rl_training:episodes:rate5m": (
        "sum by (job, algorithm, agent_id) (rate(rl_training_episodes_total[5m]))",
        "Episodes completed per second."),
    "rl_training:errors:rate5m": (
        "sum by (job, error_type) (rate(rl_training_errors_total[5m]))",
        "Training errors per second."),
    "rl_training:episode_reward:mean5m": (
        _windowed_mean("rl_training_episode_reward", "job, algorithm, agent_id", "5m"),
        "Mean episode reward over 5 minutes (delta, since rewards can be negative)."),
    "rl_training:episode_reward_bucket:rate5m": (
        "sum by (job, algorithm, agent_id, le) (rate(rl_training_episode_reward_bucket[5m]))",
        "Episodes per second per reward bucket (for heatmaps and histogram_quantile)."),
    "rl_training:policy_loss:mean5m": (
        _windowed_mean("rl_training_policy_loss", "job, algorithm", "5m"),
        "Mean policy loss over 5 minutes."),
    "rl_training:value_loss:mean5m": (
        _windowed_mean("rl_training_value_loss", "job, algorithm", "5m"),
        "Mean value loss over 5 minutes."),
    "rl_training:entropy:mean5m": (
        _windowed_mean("rl_training_entropy", "job, algorithm", "5m"),
        "Mean policy entropy over 5 minutes."),
}


@dataclass(frozen=True)
class _Alert:
    name: str
    severity: str
    expr: str
    summary: str
    description: str
    for_: str = ""


def _alerts(t: Thresholds) -> list[_Alert]:
    active = "rl_training_active"
    look = t.run_lookback
    per_run = "job, instance, algorithm, run_id"
    reward_max = f"max by ({per_run}) (max_over_time(rl_training_episode_reward_mean[{t.reward_window}]))"
    losses = ('otel_rl_dropped_values_total{metric=~"rl_training_'
              '(policy_loss|value_loss|entropy|grad_norm|kl_divergence)",reason=~"nan|inf"}')
    entropy = "rl_training_entropy"
    return [
        _Alert(
            "RLTrainingStalled", "warning",
            _with_run(
                f"(\n"
                f"  max by ({_RUN}) (min_over_time({active}[{t.stalled_after}])) == 1\n"
                f"  and on ({_RUN})\n"
                f"  max by ({_RUN}) ({active} offset {t.stalled_after}) == 1\n"
                f")\n"
                f"unless on ({_RUN})\n"
                f"(\n"
                + _indent(_new_or_increased("rl_training_iterations_total", t.stalled_after, _RUN)) +
                "\n)", _RUN, look),
            "{{ $labels.algorithm }} training in {{ $labels.job }} is stalled",
            f"rl_training_active has been 1 for {t.stalled_after} but rl_training_iterations_total did not "
            f"increase in that time on {{{{ $labels.instance }}}}: the training loop is stuck or stopped recording "
            f"iterations."),
        _Alert(
            "RLTrainingRunFailed", "critical",
            # With per_run_series the failed counter names the run that failed: that run_id first, else (the
            # original label sets) the process's latest run, which is a later one if a new run started since.
            f"(\n{_indent(_new_or_increased(_FAILED_RUN, t.failed_window, _RUN + ', run_id'))}\n)\n"
            f"or on ({_RUN})\n"
            + _with_run(_new_or_increased(_FAILED, t.failed_window, _RUN), _RUN, look),
            "{{ $labels.algorithm }} training run failed in {{ $labels.job }}",
            f"{{{{ $value }}}} {{{{ $labels.algorithm }}}} run(s) failed on {{{{ $labels.instance }}}} in the last "
            f"{t.failed_window} (rl_training_runs_total{{status=\"failed\"}}); see rl_training_errors_total for the "
            f"error type."),
        _Alert(
            "RLTrainingErrors", "warning",
            _with_run(_new_or_increased("rl_training_errors_total", t.errors_window, f"{_PROCESS}, error_type",
                                        t.max_errors), _PROCESS, look),
            "Training errors of type {{ $labels.error_type }} in {{ $labels.job }}",
            f"{{{{ $value }}}} training error(s) of type {{{{ $labels.error_type }}}} on {{{{ $labels.instance }}}} "
            f"in the last {t.errors_window} (rl_training_errors_total; alerting above {_num(t.max_errors)})."),
        _Alert(
            "RLTrainingRewardCollapsed", "warning",
            f"max by ({per_run}) (rl_training_episode_reward_mean)\n"
            f"<\n"
            f"{reward_max}\n"
            f"- {_num(t.reward_drop_fraction)} * abs({reward_max})",
            "Mean episode reward of run {{ $labels.run_id }} collapsed",
            f"rl_training_episode_reward_mean of {{{{ $labels.algorithm }}}} run {{{{ $labels.run_id }}}} is "
            f"{{{{ $value }}}}, more than {_num(t.reward_drop_fraction * 100)}% of |max| below its maximum over "
            f"the last {t.reward_window}.",
            t.reward_for),
        _Alert(
            "RLTrainingNonFiniteLoss", "critical",
            _with_run(_new_or_increased(losses, t.non_finite_window, f"{_PROCESS}, metric, reason"), _PROCESS, look),
            "{{ $labels.metric }} is {{ $labels.reason }} in {{ $labels.job }}",
            f"otel-rl dropped {{{{ $value }}}} non-finite ({{{{ $labels.reason }}}}) value(s) of "
            f"{{{{ $labels.metric }}}} on {{{{ $labels.instance }}}} in the last {t.non_finite_window}: training "
            f"has probably diverged."),
        _Alert(
            "RLTrainingEntropyCollapsed", "warning",
            _with_run(
                f"{_windowed_mean(entropy, _RUN, t.entropy_window)}\n"
                f"< {_num(t.entropy_min)}\n"
                f"unless on ({_RUN})\n"
                f"(\n"
                f"  sum by ({_RUN}) (resets({entropy}_sum[{look}]))\n"
                f"  >\n"
                f"  sum by ({_RUN}) (resets({entropy}_count[{look}]))\n"
                f")", _RUN, look),
            "Policy entropy of {{ $labels.algorithm }} collapsed in {{ $labels.job }}",
            f"Mean rl_training_entropy over {t.entropy_window} is {{{{ $value }}}}, below {_num(t.entropy_min)}: "
            f"the policy stopped exploring. (Runs with a negative entropy within {look}, continuous-action "
            f"policies, are left out.)",
            t.entropy_for),
        _Alert(
            "RLTrainingKLDivergenceHigh", "warning",
            # Only while the algorithm trains in that process: the gauge keeps a finished run's last value for as
            # long as the process lives (a notebook, a sweep driver), which would otherwise fire without end.
            f"max by ({per_run}) (rl_training_kl_divergence) > {_num(t.kl_max)}\n"
            f"and on ({_RUN})\n"
            f"max by ({_RUN}) ({active}) == 1",
            "KL divergence of run {{ $labels.run_id }} is high",
            f"rl_training_kl_divergence of {{{{ $labels.algorithm }}}} run {{{{ $labels.run_id }}}} is "
            f"{{{{ $value }}}}, above {_num(t.kl_max)} for {t.kl_for}: each update moves the policy too far "
            f"(learning rate too high, or too many epochs per batch).",
            t.kl_for),
        _Alert(
            "RLTrainingNoData", "critical",
            _with_run(
                f"max by ({_RUN}) (last_over_time({active}[{t.no_data_lookback}])) == 1\n"
                f"unless on ({_RUN})\n"
                f"max by ({_RUN}) (present_over_time({active}[{t.no_data_after}]))", _RUN, look),
            "No data from active {{ $labels.algorithm }} training in {{ $labels.job }}",
            f"The last rl_training_active sample from {{{{ $labels.instance }}}} was 1 (training) but none arrived "
            f"for {t.no_data_after}: the training process died or stopped exporting (or, on the push path, the "
            f"collector stopped writing) without recording the end of the run. While this fires, the other alerts "
            f"of this process are inhibited (alertmanager/alertmanager.yml)."),
        _Alert(
            "RLTelemetryValuesDropped", "info",
            _with_run(_new_or_increased("otel_rl_dropped_values_total", t.dropped_window,
                                        f"{_PROCESS}, metric, reason"), _PROCESS, look),
            "otel-rl dropped values of {{ $labels.metric }} ({{ $labels.reason }})",
            f"otel-rl refused {{{{ $value }}}} value(s) of {{{{ $labels.metric }}}} in the last "
            f"{t.dropped_window} (reason {{{{ $labels.reason }}}}: nan, inf, wrong_type, cardinality_limit, ...); "
            f"the SDK log says which call."),
    ] + _gpu_alerts(t)


#: The labels of one GPU as the resource metrics carry them (docs/resources.md); ``instance`` is left out so that
#: several processes reporting the same GPU give one alert.
_GPU = "job, hw_id, hw_name, gpu_index"


def _gpu_alerts(t: Thresholds) -> list[_Alert]:
    """Alerts on the resource_metrics GPU series; without that setting (or a GPU) they have nothing to match."""
    idle = (f"max by (job, instance, {_GPU.removeprefix('job, ')}) "
            f"(avg_over_time(hw_gpu_utilization[{t.gpu_idle_window}]))\n"
            f"< {_num(t.gpu_idle_utilization)}")
    return [
        _Alert(
            "RLGpuMemoryNearLimit", "warning",
            f"max by ({_GPU}) (hw_gpu_memory_usage)\n"
            f"/\n"
            f"(max by ({_GPU}) (hw_gpu_memory_limit) > 0)\n"
            f"> {_num(t.gpu_memory_fraction)}",
            "GPU {{ $labels.gpu_index }} ({{ $labels.hw_name }}) memory is nearly full in {{ $labels.job }}",
            f"{{{{ $value | humanizePercentage }}}} of the memory of GPU {{{{ $labels.gpu_index }}}} "
            f"({{{{ $labels.hw_id }}}}) is used, above {_num(t.gpu_memory_fraction * 100)}% for "
            f"{t.gpu_memory_for}: the next allocation may fail with CUDA out of memory "
            f"(hw_gpu_memory_usage / hw_gpu_memory_limit).",
            t.gpu_memory_for),
        _Alert(
            "RLGpuIdleWhileTraining", "warning",
            _with_run(
                f"(\n{_indent(_own_gpus(idle))}\n)\n"
                f"and on (job, instance)\n"
                f"max by (job, instance) (rl_training_active) == 1", _PROCESS, t.run_lookback),
            "GPU {{ $labels.gpu_index }} is idle while {{ $labels.job }} trains",
            f"Mean utilisation of GPU {{{{ $labels.gpu_index }}}} ({{{{ $labels.hw_name }}}}) seen by "
            f"{{{{ $labels.instance }}}} was {{{{ $value | humanizePercentage }}}} over {t.gpu_idle_window}, below "
            f"{_num(t.gpu_idle_utilization * 100)}%, for {t.gpu_idle_for} while that process had a training run "
            f"active: the run is probably bound by the environment, the data or the CPU.",
            t.gpu_idle_for),
    ]


def _own_gpus(gpus: str) -> str:
    """``gpus`` (per process and GPU) cut down to the GPUs a process uses where torch says which: NVML reports every
    GPU of the node to every process, so on a shared node most of them belong to others. A process without torch
    CUDA series (no torch, or CUDA not initialised) keeps every GPU."""
    return (f"(\n{_indent(gpus)}\n)\n"
            f"and on (job, instance, hw_id) (torch_cuda_memory_reserved > 0)\n"
            f"or\n"
            f"(\n{_indent(gpus)}\n)\n"
            f"unless on (job, instance) torch_cuda_memory_reserved")


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


#: The alert names, in file order.
ALERTS: tuple[str, ...] = tuple(alert.name for alert in _alerts(Thresholds()))


def build_rules(thresholds: Thresholds | None = None, runbook_base: str = RUNBOOK_BASE) -> dict[str, Any]:
    """The rule file as a dict: a recording group and an alerting group; runbook links start with
    ``runbook_base``."""
    t = thresholds or Thresholds()
    recording = [{"record": name, "expr": expr} for name, (expr, _) in RECORDING_RULES.items()]
    alerting = []
    for alert in _alerts(t):
        rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
        if alert.for_:
            rule["for"] = alert.for_
        rule["labels"] = {"severity": alert.severity}
        rule["annotations"] = {"summary": alert.summary, "description": alert.description,
                               "runbook_url": f"{runbook_base}#{alert.name.lower()}"}
        alerting.append(rule)
    return {"groups": [
        {"name": "otel-rl.recording", "rules": recording},
        {"name": "otel-rl.alerts", "rules": alerting},
    ]}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

_HEADER = ("# Generated by `otel-rl rules` (otel_rl/_internal/rules.py); do not edit by hand.\n"
           "# Load with `rule_files:` in prometheus.yml; check with `promtool check rules`.\n")


def rules_yaml(thresholds: Thresholds | None = None, runbook_base: str = RUNBOOK_BASE) -> str:
    """The rule file's text as committed (a header comment, then YAML)."""
    body = yaml.dump(build_rules(thresholds, runbook_base), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=100000, allow_unicode=True)
    return _HEADER + body


def write_rules(path: str | Path, thresholds: Thresholds | None = None, runbook_base: str = RUNBOOK_BASE) -> None:
    """Write the rule file to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rules_yaml(thresholds, runbook_base), encoding="utf-8")


def parse_thresholds(pairs: list[str]) -> Thresholds:
    """:class:`Thresholds` from ``name=value`` strings (``otel-rl rules --set stalled_after=30m``); an unknown name
    or a bad value raises ValueError naming it."""
    fields = asdict(Thresholds())
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"--set {pair!r}: expected name=value with name one of {', '.join(fields)}")
        if isinstance(fields[name], str):
            values[name] = value.strip()
        else:
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"--set {pair!r}: {name} takes a number") from None
    return Thresholds(**values)


def _cell(text: str) -> str:
    return "`" + " ".join(text.split()).replace("|", "\\|") + "`"


def markdown(thresholds: Thresholds | None = None) -> str:
    """Markdown tables of the recording rules and the alerts, for docs/dashboard.md."""
    t = thresholds or Thresholds()
    lines = ["| Recording rule | Meaning | PromQL |", "|---|---|---|"]
    lines += [f"| `{name}` | {meaning} | {_cell(expr)} |" for name, (expr, meaning) in RECORDING_RULES.items()]
    lines += ["", "| Alert | Severity | For | Summary | PromQL |", "|---|---|---|---|---|"]
    for alert in _alerts(t):
        summary = alert.summary.replace("|", "\\|")
        lines.append(f"| `{alert.name}` | {alert.severity} | {alert.for_ or '-'} | {summary} | {_cell(alert.expr)} |")
    lines += ["", "| Threshold | Default |", "|---|---|"]
    lines += [f"| `{name}` | `{value}` |" for name, value in asdict(t).items()]
    return "\n".join(lines) + "\n"
