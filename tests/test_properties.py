"""Property-based tests (Hypothesis): whatever values, labels, result dicts or settings a user passes, recording
never raises or logs a traceback, ``/metrics`` always parses, and bad settings are always a ConfigError naming
the key."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from prometheus_client.parser import text_string_to_metric_families

import otel_rl
from otel_rl import ConfigError, load_settings
from otel_rl._internal.config import SETTINGS
from otel_rl.compat import prometheus_metrics as compat

#: Modest by default so the suite stays fast; OTEL_RL_HYPOTHESIS_EXAMPLES=1000 searches harder.
_EXAMPLES = int(os.environ.get("OTEL_RL_HYPOTHESIS_EXAMPLES", "60"))
FAST = settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(FAST, max_examples=_EXAMPLES * 5)  # loading settings costs microseconds


class _RaisingFloat:
    def __float__(self):
        raise ZeroDivisionError("a user's __float__ that fails")


class _RaisingStr:
    def __str__(self):
        raise UnicodeError("a user's __str__ that fails")

    __repr__ = __str__


class _FakeTensor:
    shape = (3,)
    dtype = "float32"
    device = "cuda:0"

    def __float__(self):
        raise AssertionError("a tensor must not be read")

    def __repr__(self):
        raise AssertionError("a tensor must not be printed")


_FakeTensor.__module__ = "torch"

#: Any text, lone surrogates (os.fsdecode of non-UTF-8 bytes) and control characters included.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)

values = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 5e-324]),
    st.decimals(allow_nan=True, allow_infinity=True), st.fractions(),
    st.just(Fraction(10**400, 3)), st.just(Decimal("1e400")),
    any_text, st.binary(max_size=8),
    st.lists(st.floats(), max_size=3),
    st.builds(np.float32, st.floats(width=32)), st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda xs: np.array(xs), st.lists(st.floats(), max_size=3)),
    st.builds(_RaisingFloat), st.builds(_FakeTensor), st.just(object()),
)
labels = st.one_of(any_text, st.integers(), st.none(), st.floats(), st.builds(_RaisingStr), st.binary(max_size=4))


@contextmanager
def no_tracebacks():
    """Fail when otel-rl logs an error or a traceback (a warning per kind of drop is fine)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("otel_rl")
    handler = Keep(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    bad = [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad[0].getMessage()
    for record in records:
        record.getMessage().encode("utf-8")  # every log line can be written to a UTF-8 log


def _handle():
    return otel_rl.init_telemetry({"exporters": ["none"]})


def assert_exposition_parses() -> None:
    """The Prometheus text parses and the OTLP protobuf encoding of the same collection works.

    (prometheus_client's OpenMetrics parser refuses ``_sum`` next to negative buckets, which otel-rl exposes on
    purpose for the reward histograms; Prometheus itself accepts it. See families.py.)
    """
    handle = _handle()
    families = list(text_string_to_metric_families(handle.metrics_text().decode("utf-8")))
    assert any(f.name == "rl_training_episode_reward" for f in families)
    for family in families:
        for sample in family.samples:
            assert not (sample.name.endswith("_sum") and sample.value in (float("inf"), float("-inf")))
    encode_metrics(handle.pull_reader.latest).SerializeToString()


def _record_everything(label, value) -> None:
    otel_rl.record_training_start(label, label)
    otel_rl.record_training_iteration(label, value, label)
    otel_rl.record_episode(label, label, value, value)
    otel_rl.record_episode_metrics(label, label, value, value)
    otel_rl.record_performance_metrics(label, label, {"sharpe_ratio": value, "win_rate": value,
                                                      "max_drawdown": value, "total_return": value})
    otel_rl.record_performance_metrics(label, label, value)
    otel_rl.record_loss_metrics(label, value, value, value)
    otel_rl.record_data_load_time(value)
    otel_rl.record_environment_steps(label, value)
    otel_rl.record_training_error(label)
    otel_rl.record_training_complete(label, value, label)
    otel_rl.record_training_failed(label, label)
    compat.rl_training_episode_reward.labels(label, label).observe(value)
    compat.rl_training_environment_steps_total.labels(algorithm=label).inc(value)
    compat.rl_training_sharpe_ratio.labels(label, label).set(value)


@FAST
@given(value=values)
def test_any_value_records_without_raising_and_metrics_parse(value):
    """Any value in any numeric argument of every record helper: no exception, no traceback, /metrics parses."""
    _handle()
    with no_tracebacks():
        _record_everything("PPO", value)
    assert_exposition_parses()


@FAST
@given(label=labels, value=st.one_of(st.floats(), st.integers(-1000, 1000)))
def test_any_label_value_records_without_raising_and_metrics_parse(label, value):
    """Any label value (surrogates, NUL, newlines, quotes, objects whose str raises): /metrics and OTLP still work."""
    _handle()
    with no_tracebacks():
        _record_everything(label, value)
    assert_exposition_parses()


_RESULT_KEYS = st.sampled_from([
    "training_iteration", "iteration", "episode_reward_mean", "episode_len_mean", "reward_mean", "length_mean",
    "custom_metrics", "env_runners", "info", "learner", "learner_stats", "learners", "hist_stats",
    "episode_reward", "episode_lengths", "episodes_this_iter", "num_episodes", "policy_loss", "vf_loss",
    "value_loss", "entropy", "num_env_steps_sampled", "num_env_steps_sampled_lifetime",
    "num_env_steps_sampled_this_iter", "env_steps", "sharpe_ratio", "win_rate_mean", "max_drawdown",
    "total_return", "agent_0", "info/learner", "learners/default_policy", "env_runners/episode_return_mean",
    "custom_metrics/agent_1/sharpe_ratio", "hist_stats/episode_reward", "__all_modules__",
]) | any_text
result_dicts = st.recursive(
    values, lambda children: st.dictionaries(_RESULT_KEYS, children, max_size=5) | st.lists(children, max_size=4),
    max_leaves=25,
).filter(lambda r: isinstance(r, dict)) | st.dictionaries(_RESULT_KEYS, values, max_size=8)


@FAST
@given(result=result_dicts, self_reference=st.booleans())
def test_any_result_dict_records_without_raising_and_metrics_parse(result, self_reference):
    """Any result dict, also one that contains itself, is recorded by train_step and returned unchanged."""
    if self_reference:
        result["custom_metrics"] = result
        result["info"] = {"learner": result}

    @otel_rl.train_step(algorithm="PPO", run_id="prop")
    def step():
        return result

    _handle()
    with no_tracebacks():
        assert step() is result
    assert_exposition_parses()


#: Values that broke settings before: checked for every key, then mixed into what Hypothesis generates.
EDGE_VALUES = ["0", "-1", "1e-9", "1e300", "inf", "nan", "8011", "http://[::1", "::1", "localhost:4317",
               "prometheus,otlp", "a=b,c", "grpc", "gzip", "true", "\udcff", "a\x00b", "x" * 70, float("inf"),
               float("-inf"), float("nan"), 1e300, 1e-9, 10**30, -(10**30), [], {}, {"a": {"b": 1}}, [[[]]]]
_config_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
              st.floats(allow_nan=True, allow_infinity=True), any_text, st.sampled_from(EDGE_VALUES)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)


def _check_setting(key: str, value) -> None:
    section, _, name = key.partition(".")
    config = {section: {name: value}} if name else {key: value}
    try:
        load_settings(config, environ={})
    except ConfigError as exc:
        assert key in str(exc)
        str(exc).encode("utf-8")


def test_every_key_with_every_edge_value_is_settings_or_a_config_error():
    """Each known troublemaker for each key: settings, or a ConfigError naming the key; never anything else."""
    for setting in SETTINGS:
        for value in EDGE_VALUES:
            _check_setting(setting.key, value)


@CHEAP
@given(index=st.integers(0, len(SETTINGS) - 1), value=_config_values)
def test_any_config_value_is_accepted_or_a_config_error_naming_the_key(index, value):
    """Any value for any key: load_settings returns settings or raises ConfigError that names the key."""
    _check_setting(SETTINGS[index].key, value)


@CHEAP
@given(index=st.integers(0, len(SETTINGS) - 1), value=any_text.filter(lambda t: t.strip() and "\x00" not in t))
def test_any_environment_value_is_accepted_or_a_config_error_naming_the_variable(index, value):
    """Any text in any environment variable: settings, or a ConfigError that names the variable."""
    setting = SETTINGS[index]
    if not setting.env:
        return
    variable = setting.env[0]
    try:
        load_settings(None, environ={variable: value})
    except ConfigError as exc:
        assert variable in str(exc) and setting.key in str(exc)
