"""PromQL snippets for the dashboard's panels, checked against the metric catalog.

Every selector is built by :func:`sel`, which adds ``job=~"$job"`` and a matcher for each template variable whose
label the metric has (:attr:`MetricSpec.labels`), and nothing else: a panel can never filter on a label its metric
lacks (the original dashboard's "Training Errors" defect). The one addition is ``run_id=~"$run_id|"`` on the series
that gain ``run_id`` with the ``per_run_series`` setting (:data:`PER_RUN`): it also matches series without it. A
label the metric lacks raises ``ValueError`` when the dashboard is built, not when someone opens it.
"""

from __future__ import annotations

from otel_rl._internal.catalog import BY_NAME, CATALOG
from otel_rl._internal.resource_catalog import RESOURCE_BY_NAME

__all__ = ["CUSTOM_SELECTOR", "PER_RUN", "VARIABLES", "group_by", "legend", "range_total", "ratio", "resource_sel",
           "sel"]

#: Template variables that filter series, in the order they appear; each filters only metrics with that label.
VARIABLES: tuple[str, ...] = ("algorithm", "run_id", "agent_id")

#: The original series without ``run_id``, which carry it with the ``per_run_series`` setting: they match
#: ``run_id=~"$run_id|"``, the selected run or no run_id at all, so one dashboard serves both modes.
PER_RUN = frozenset(spec.name for spec in CATALOG if "run_id" not in spec.labels)


def sel(name: str, suffix: str = "", **matchers: str) -> str:
    """A selector for ``name + suffix`` filtered by ``$job`` and every variable whose label the metric has.

    ``matchers`` adds fixed equality matchers (``status="failed"``); a label the metric lacks raises ``ValueError``.
    """
    spec = BY_NAME[name]
    parts = ['job=~"$job"']
    parts += [f'{label}=~"${label}"' if label in spec.labels else f'{label}=~"${label}|"'
              for label in VARIABLES if label in spec.labels or (label == "run_id" and name in PER_RUN)]
    for label, value in matchers.items():
        if label not in spec.labels:
            raise ValueError(f"{name} has no label {label!r} (labels: {spec.labels})")
        parts.append(f'{label}="{value}"')
    return f"{name}{suffix}{{{','.join(parts)}}}"


def group_by(name: str, *labels: str) -> str:
    """``by (...)`` over the given labels, checked against the metric's label keys (``job``/``le`` always exist)."""
    spec = BY_NAME[name]
    for label in labels:
        if label not in spec.labels + ("job", "le"):
            raise ValueError(f"{name} has no label {label!r} (labels: {spec.labels})")
    return f"by ({', '.join(labels)})"


def legend(name: str) -> str:
    """A legend naming the metric's own labels (those kept when ``instance`` is aggregated away), else the job."""
    labels = BY_NAME[name].labels
    return " ".join(f"{{{{{label}}}}}" for label in labels) or "{{job}}"


def ratio(name: str, by_labels: tuple[str, ...], window: str | None = None) -> str:
    """Mean observation of histogram ``name``: cumulative ``_sum/_count``, or over ``window`` with ``delta``.

    ``delta`` rather than ``rate``: ``_sum`` decreases when observations are negative (PPO policy losses,
    differential entropy, rewards), which ``rate`` would read as counter resets.
    """
    by = group_by(name, *by_labels)
    if window is None:
        return f"sum {by} ({sel(name, '_sum')}) / (sum {by} ({sel(name, '_count')}) > 0)"
    return (f"sum {by} (delta({sel(name, '_sum')}[{window}]))"
            f" / (sum {by} (delta({sel(name, '_count')}[{window}])) > 0)")


def range_total(name: str, by_labels: tuple[str, ...] = (), **matchers: str) -> str:
    """A counter's value over the dashboard range (its peak, so finished runs still count)."""
    inner = f"max_over_time({sel(name, **matchers)}[$__range])"
    return f"sum {group_by(name, *by_labels)} ({inner})" if by_labels else f"sum({inner})"


def resource_sel(name: str) -> str:
    """A selector for resource metric ``name``: only ``$job`` filters it (it has no run labels)."""
    if name not in RESOURCE_BY_NAME:
        raise ValueError(f"{name} is not a resource metric")
    return f'{name}{{job=~"$job"}}'


#: Every ``otel_rl.record_scalar`` / ``extra_keys`` gauge: their names and labels are yours, so only ``$job`` filters.
CUSTOM_SELECTOR = '{__name__=~"rl_training_custom_.+",job=~"$job"}'
