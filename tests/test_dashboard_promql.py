"""Tests for otel_rl._internal.dashboard.promql: selectors and aggregations are checked against the catalog."""

from __future__ import annotations

import pytest

from otel_rl._internal.dashboard import promql


def test_sel_filters_job_and_only_the_variables_whose_label_the_metric_has():
    """rl_training_runs_total has algorithm but no run_id/agent_id; rl_training_errors_total has none of them. Both
    gain run_id with per_run_series: their run_id matcher also matches series without one."""
    assert promql.sel("rl_training_runs_total") == (
        'rl_training_runs_total{job=~"$job",algorithm=~"$algorithm",run_id=~"$run_id|"}')
    assert promql.sel("rl_training_errors_total", "_x") == 'rl_training_errors_total_x{job=~"$job",run_id=~"$run_id|"}'
    assert promql.sel("otel_rl_dropped_values_total") == 'otel_rl_dropped_values_total{job=~"$job"}'
    assert promql.sel("rl_training_current_iteration") == (
        'rl_training_current_iteration{job=~"$job",algorithm=~"$algorithm",run_id=~"$run_id"}')


def test_sel_fixed_matcher_must_be_a_label_of_the_metric():
    """A fixed matcher on a label the metric has is added; one it lacks raises ValueError naming the label."""
    assert promql.sel("rl_training_runs_total", status="failed").endswith(',status="failed"}')
    with pytest.raises(ValueError, match="'status'"):
        promql.sel("rl_training_errors_total", status="failed")


def test_group_by_accepts_own_labels_job_and_le_and_rejects_others():
    """``by (...)`` may name the metric's labels, job and le; anything else raises ValueError."""
    assert promql.group_by("rl_training_errors_total", "error_type", "job", "le") == "by (error_type, job, le)"
    with pytest.raises(ValueError, match="'algorithm'"):
        promql.group_by("rl_training_errors_total", "algorithm")


def test_legend_names_the_metric_labels_or_the_job():
    """The legend lists the metric's labels, or the job for a metric without labels."""
    assert promql.legend("rl_training_episode_reward_mean") == "{{algorithm}} {{run_id}}"
    assert promql.legend("rl_training_data_load_time_seconds") == "{{job}}"


def test_ratio_uses_delta_over_a_window_because_sums_of_negative_observations_decrease():
    """The windowed mean divides delta(_sum) by delta(_count), never rate; the cumulative one divides the series."""
    windowed = promql.ratio("rl_training_policy_loss", ("algorithm",), "5m")
    assert "delta(rl_training_policy_loss_sum{" in windowed and "rate(" not in windowed
    assert windowed.endswith("[5m])) > 0)")
    assert promql.ratio("rl_training_policy_loss", ("algorithm",)) == (
        'sum by (algorithm) (rl_training_policy_loss_sum{job=~"$job",algorithm=~"$algorithm",run_id=~"$run_id|"})'
        ' / (sum by (algorithm) (rl_training_policy_loss_count{job=~"$job",algorithm=~"$algorithm",'
        'run_id=~"$run_id|"}) > 0)')


def test_range_total_is_the_peak_over_the_dashboard_range():
    """A counter over the range is max_over_time over $__range, summed (by the given labels)."""
    assert promql.range_total("rl_training_errors_total") == (
        'sum(max_over_time(rl_training_errors_total{job=~"$job",run_id=~"$run_id|"}[$__range]))')
    assert promql.range_total("rl_training_runs_total", ("status",)).startswith("sum by (status) (max_over_time(")


def test_resource_sel_only_filters_job_and_rejects_training_metrics():
    """Resource metrics have no run labels, so only $job filters them; a catalog metric is refused."""
    assert promql.resource_sel("process_cpu_utilization") == 'process_cpu_utilization{job=~"$job"}'
    with pytest.raises(ValueError, match="not a resource metric"):
        promql.resource_sel("rl_training_runs_total")
