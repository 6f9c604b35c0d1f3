"""Tests for otel_rl._internal.scalars: ``record_scalar`` and the ``extra_keys`` setting."""

from __future__ import annotations

import logging
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

import otel_rl
from otel_rl import testing
from otel_rl._internal import scalars

LOCAL = {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}}


def custom(handle: otel_rl.Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The rl_training_custom_* samples on /metrics."""
    text = handle.metrics_text().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("rl_training_custom_")}


def test_names_are_made_prometheus_safe_under_one_prefix():
    """A name keeps letters, digits and _; anything else becomes _; the prefix is added once."""
    assert scalars.metric_name("rollout/ep_rew_mean") == "rl_training_custom_rollout_ep_rew_mean"
    assert scalars.metric_name("success rate (%)") == "rl_training_custom_success_rate"
    assert scalars.metric_name("rl_training_custom_x") == "rl_training_custom_x"
    assert scalars.metric_name("9lives") == "rl_training_custom_9lives"


def test_record_scalar_sets_a_gauge_per_label_set_and_keeps_values_recorded_before_init():
    """The last value per label set shows on /metrics, also one recorded before init_telemetry."""
    otel_rl.record_scalar("success_rate", 0.5, algorithm="PPO")
    handle = otel_rl.init_telemetry(LOCAL)
    otel_rl.record_scalar("success_rate", 0.75, algorithm="DQN")
    otel_rl.record_scalar("eval/return", -12, algorithm="PPO", run_id=3)
    assert custom(handle) == {
        ("rl_training_custom_success_rate", (("algorithm", "PPO"),)): 0.5,
        ("rl_training_custom_success_rate", (("algorithm", "DQN"),)): 0.75,
        ("rl_training_custom_eval_return", (("algorithm", "PPO"), ("run_id", "3"))): -12.0,
    }
    otel_rl.record_scalar("success_rate", 0.9, algorithm="PPO")
    assert custom(handle)[("rl_training_custom_success_rate", (("algorithm", "PPO"),))] == 0.9
    testing.reset()
    assert custom(handle) == {}


def test_bad_values_names_and_labels_are_dropped_counted_and_logged_once(caplog):
    """NaN, a string, a tensor-like, a bad name and a bad label key never raise: each is counted by reason."""
    caplog.set_level(logging.WARNING, "otel_rl")
    for _ in range(3):
        otel_rl.record_scalar("loss", float("nan"))
    otel_rl.record_scalar("loss", "high")
    otel_rl.record_scalar("", 1.0)
    otel_rl.record_scalar(None, 1.0)  # type: ignore[arg-type]
    otel_rl.record_scalar("x" * 201, 1.0)
    otel_rl.record_scalar("loss", 1.0, **{"__reserved": "a"})
    assert testing.dropped("rl_training_custom_loss", "nan") == 3
    assert testing.dropped("rl_training_custom_loss", "wrong_type") == 1
    assert testing.dropped("rl_training_custom_refused", "bad_name") == 3
    assert testing.dropped("rl_training_custom_loss", "bad_labels") == 1
    nan_warnings = [r for r in caplog.records if "rl_training_custom_loss (reason: nan" in r.getMessage()]
    assert len(nan_warnings) == 1


def test_names_and_label_sets_are_bounded(monkeypatch):
    """Past MAX_NAMES names a new name is refused and counted; past the cardinality limit a label set goes to the
    overflow series."""
    handle = otel_rl.init_telemetry({**LOCAL, "cardinality_limit": 3})
    for i in range(5):
        otel_rl.record_scalar("per_label", float(i), step=i)
    series = custom(handle)
    assert len([k for k in series if k[0] == "rl_training_custom_per_label"]) == 4
    assert series[("rl_training_custom_per_label", (("otel_metric_overflow", "true"),))] == 4.0
    assert testing.dropped("rl_training_custom_per_label", "cardinality_limit") == 2
    monkeypatch.setattr(scalars, "MAX_NAMES", len(scalars._scalars) + 2)
    for i in range(5):
        otel_rl.record_scalar(f"limited_{i}", 1.0)
    assert testing.dropped("rl_training_custom_refused", "bad_name") == 3
    assert ("rl_training_custom_limited_1", ()) in custom(handle)
    assert ("rl_training_custom_limited_2", ()) not in custom(handle)


def test_extra_keys_of_a_train_step_result_are_recorded_with_algorithm_and_run_id():
    """With extra_keys, numeric result-dict entries whose flattened key matches a pattern become custom gauges
    labelled by the step's algorithm and run; text, lists and unmatched keys are not recorded."""
    handle = otel_rl.init_telemetry({**LOCAL, "extra_keys": ["rollout/*", "my_score"]})

    @otel_rl.train_step(algorithm="PPO", run_id="r1")
    def step(i: int) -> dict:
        return {"rollout": {"success": 0.25 * i, "note": "text", "hist": [1, 2]}, "my_score": 7,
                "other": 3.0, "policy_loss": 0.1}

    step(1)
    step(2)
    labels = (("algorithm", "PPO"), ("run_id", "r1"))
    assert custom(handle) == {("rl_training_custom_rollout_success", labels): 0.5,
                              ("rl_training_custom_my_score", labels): 7.0}


def test_without_extra_keys_nothing_extra_is_recorded():
    """extra_keys is opt-in: by default a result's unknown keys are not recorded."""
    handle = otel_rl.init_telemetry(LOCAL)

    @otel_rl.train_step(algorithm="PPO")
    def step() -> dict:
        return {"rollout/success": 1.0}

    step()
    assert custom(handle) == {}


def test_extra_keys_setting_is_validated():
    """extra_keys takes a list of non-empty patterns, or comma-separated text (OTEL_RL_EXTRA_KEYS)."""
    assert otel_rl.load_settings({"extra_keys": ["rollout/*"]}, environ={}).extra_keys == ("rollout/*",)
    assert otel_rl.load_settings({}, environ={"OTEL_RL_EXTRA_KEYS": "a/*, b"}).extra_keys == ("a/*", "b")
    with pytest.raises(otel_rl.ConfigError, match="config key 'extra_keys' has value .*allowed: a list of glob"):
        otel_rl.load_settings({"extra_keys": [""]}, environ={})
    with pytest.raises(otel_rl.ConfigError, match="extra_keys"):
        otel_rl.load_settings({"extra_keys": 3}, environ={})


def test_a_label_value_that_is_not_utf8_is_escaped_and_keeps_the_scrape_working():
    """os.fsdecode of a byte name gives lone surrogates, which no exposition or OTLP encoder can write: the value is
    recorded backslash-escaped (as the store records them) instead of breaking every scrape."""
    handle = otel_rl.init_telemetry(LOCAL)
    otel_rl.record_loss_metrics("PPO", value_loss=1.0)
    for value in (1.0, 2.0):
        otel_rl.record_scalar("surrogate", value, run=os.fsdecode(b"run-\xff"))
    series = custom(handle)
    assert series == {("rl_training_custom_surrogate", (("run", "run-\\udcff"),)): 2.0}, series
    assert "rl_training_value_loss_count" in handle.metrics_text().decode()


def test_a_label_value_longer_than_label_value_limit_is_cut_as_the_store_cuts_it():
    """record_scalar's labels obey label_value_limit like the catalog's: a megabyte label value would otherwise make
    a single series too large for any collector. The value is kept under the cut label, and the cut is counted."""
    handle = otel_rl.init_telemetry({**LOCAL, "label_value_limit": 16})
    for value in (1.0, 2.0):
        otel_rl.record_scalar("long", value, run="r" * 100_000)
    assert custom(handle) == {("rl_training_custom_long", (("run", "r" * 16),)): 2.0}
    assert testing.dropped("rl_training_custom_long", "label_too_long") == 2
