"""The metric store: bad values dropped and counted, one warning per kind, thread safety, the cardinality limit."""

from __future__ import annotations

import logging
import os
import threading

import numpy
import pytest
from prometheus_client.parser import text_string_to_metric_families

import otel_rl
from otel_rl import testing
from otel_rl._internal import store
from otel_rl._internal.catalog import OVERFLOW_LABEL
from otel_rl._internal.store import REGISTRY
from otel_rl.compat import prometheus_metrics as compat


class FakeTensor:
    """Looks like a torch tensor to the store: a number-like object from the ``torch`` module."""

    def __float__(self) -> float:  # reading it would force a device sync in real torch
        raise AssertionError("the store must not read a tensor")


FakeTensor.__module__ = "torch"

#: (id, value, expected): a float is recorded as that float; a string is the drop reason.
TABLE = [
    ("none", None, "none"),
    ("nan", float("nan"), "nan"),
    ("plus_inf", float("inf"), "inf"),
    ("minus_inf", float("-inf"), "inf"),
    ("str", "1.5", "wrong_type"),
    ("bytes", b"x", "wrong_type"),
    ("list", [1, 2], "wrong_type"),
    ("dict", {"a": 1}, "wrong_type"),
    ("object", object(), "wrong_type"),
    ("np_float32", numpy.float32(2.5), 2.5),
    ("np_int64", numpy.int64(7), 7.0),
    ("np_0d_array", numpy.array(3.25), 3.25),
    ("np_2_elements", numpy.array([1.0, 2.0]), "wrong_type"),
    ("np_nan", numpy.float64("nan"), "nan"),
    ("fake_torch_tensor", FakeTensor(), "tensor"),
    ("int", 4, 4.0),
    ("bool", True, 1.0),
]
IDS = [row[0] for row in TABLE]


def _record_counter(value):
    otel_rl.record_environment_steps("PPO", value)


def _read_counter():
    return testing.value("rl_training_environment_steps_total", algorithm="PPO")


def _record_gauge(value):
    otel_rl.record_episode_metrics("PPO", "run-1", value, 10.0)


def _read_gauge():
    return testing.value("rl_training_episode_reward_mean", algorithm="PPO", run_id="run-1")


def _record_histogram(value):
    otel_rl.record_data_load_time(value)


def _read_histogram():
    series = testing.histogram("rl_training_data_load_time_seconds")
    return None if series.count == 0 else series.sum


KINDS = {
    "counter": ("rl_training_environment_steps_total", _record_counter, _read_counter),
    "gauge": ("rl_training_episode_reward_mean", _record_gauge, _read_gauge),
    "histogram": ("rl_training_data_load_time_seconds", _record_histogram, _read_histogram),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("label,value,expected", TABLE, ids=IDS)
def test_bad_input_table(kind, label, value, expected, caplog):
    """Each input is recorded exactly or dropped and counted under its reason, never raising, warning once."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    metric, record, read = KINDS[kind]
    record(value)
    record(value)
    if isinstance(expected, float):
        total = expected * 2 if kind != "gauge" else expected
        assert read() == total
        assert testing.value("otel_rl_dropped_values_total", metric=metric, reason="wrong_type") is None
        assert not [r for r in caplog.records if r.name == "otel_rl"]
    else:
        assert read() is None
        assert testing.dropped(metric, expected) == 2.0
        warnings = [r for r in caplog.records if r.name == "otel_rl" and r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert metric in warnings[0].getMessage() and expected in warnings[0].getMessage()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no logged exception either


def test_good_values_after_bad_ones_are_exact():
    """Bad values in between do not disturb the good ones around them."""
    for value in (1.5, None, float("nan"), 2, "3", numpy.float32(0.5), -1):
        otel_rl.record_environment_steps("PPO", value)
    assert testing.value("rl_training_environment_steps_total", algorithm="PPO") == 4.0


def test_one_warning_per_metric_and_reason(caplog):
    """The log warns once per (metric, reason), and again for a new metric or a new reason."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    for _ in range(5):
        otel_rl.record_environment_steps("PPO", None)
        otel_rl.record_environment_steps("PPO", float("nan"))
        otel_rl.record_data_load_time(None)
    warnings = [r.getMessage() for r in caplog.records if r.name == "otel_rl"]
    assert len(warnings) == 3
    assert testing.dropped("rl_training_environment_steps_total", "none") == 5
    assert testing.dropped("rl_training_environment_steps_total", "nan") == 5
    assert testing.dropped("rl_training_data_load_time_seconds", "none") == 5


def test_reset_forgets_the_warnings(caplog):
    """After testing.reset() the first drop of a kind warns again."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    otel_rl.record_data_load_time(None)
    testing.reset()
    otel_rl.record_data_load_time(None)
    assert len([r for r in caplog.records if r.name == "otel_rl"]) == 2


def test_negative_counter_increment_is_dropped():
    """A negative counter increment is dropped with reason negative; the counter keeps its value."""
    otel_rl.record_environment_steps("PPO", 10)
    otel_rl.record_environment_steps("PPO", -3)
    otel_rl.record_environment_steps("PPO", -0.5)
    otel_rl.record_environment_steps("PPO", numpy.int32(-1))
    assert testing.value("rl_training_environment_steps_total", algorithm="PPO") == 10.0
    assert testing.dropped("rl_training_environment_steps_total", "negative") == 3


def test_zero_counter_increment_is_recorded():
    """A zero increment is allowed and creates the series at 0."""
    otel_rl.record_environment_steps("PPO", 0)
    assert testing.value("rl_training_environment_steps_total", algorithm="PPO") == 0.0
    assert testing.dropped("rl_training_environment_steps_total", "negative") == 0


def test_negative_gauge_and_histogram_values_are_kept():
    """Gauges and histograms keep negative values (rewards, losses, entropies)."""
    otel_rl.record_episode_metrics("PPO", "r", -600.0, 10)
    otel_rl.record_loss_metrics("PPO", policy_loss=-0.3, entropy=-2.0)
    assert testing.value("rl_training_episode_reward_mean", algorithm="PPO", run_id="r") == -600.0
    assert testing.histogram("rl_training_policy_loss", algorithm="PPO").sum == -0.3
    assert testing.histogram("rl_training_entropy", algorithm="PPO").counts[0] == 1


def test_histogram_bucket_bounds_are_inclusive():
    """A value equal to a bound counts in that bound's bucket (Prometheus ``le``); above the last goes to +Inf."""
    for value in (-1000.0, -999.0, 0.0, 10000.0, 10000.5):
        otel_rl.record_episode("PPO", "a", value, 10)
    counts = testing.histogram("rl_training_episode_reward", algorithm="PPO", agent_id="a").counts
    assert counts == [1, 1, 0, 1, 0, 0, 0, 0, 1, 1]


def test_non_string_labels_are_stringified():
    """Label values that are not strings are recorded as their str(), like prometheus_client."""
    otel_rl.record_episode_metrics(7, 3, 1.0, 2.0)
    assert testing.value("rl_training_episode_reward_mean", algorithm="7", run_id="3") == 1.0


def test_wrong_number_of_labels_is_dropped_as_bad_labels(caplog):
    """Through the seed's metric objects, a wrong label count is dropped as bad_labels and never raises."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    compat.rl_training_iterations_total.labels("PPO", "extra").inc()
    compat.rl_training_iterations_total.labels(algorithm="PPO", run_id="x").inc()
    compat.rl_training_iterations_total.labels(run_id="x").inc()
    compat.rl_training_iterations_total.labels(algorithm="PPO").inc(2)
    assert testing.value("rl_training_iterations_total", algorithm="PPO") == 2.0
    assert testing.dropped("rl_training_iterations_total", "bad_labels") == 3


def test_seed_metric_objects_keep_prometheus_client_calls():
    """labels(...).inc()/set()/observe() on the compat module's metric objects record like prometheus_client."""
    compat.rl_training_runs_total.labels("PPO", "started").inc()
    compat.rl_training_active.labels(algorithm="PPO").set(1)
    compat.rl_training_episode_reward.labels("PPO", "a").observe(-600)
    assert testing.value("rl_training_runs_total", algorithm="PPO", status="started") == 1.0
    assert testing.value("rl_training_active", algorithm="PPO") == 1.0
    assert testing.histogram("rl_training_episode_reward", algorithm="PPO", agent_id="a").counts[1] == 1
    compat.rl_training_active.labels("PPO").inc()  # gauges take inc, as in prometheus_client
    assert testing.value("rl_training_active", algorithm="PPO") == 2.0


def test_remove_forgets_one_labelled_series():
    """remove(key) forgets that series only; unlabelled metrics keep their single series."""
    counter = REGISTRY.counter("rl_training_errors_total")
    counter.add(("a",), 1.0)
    counter.add(("b",), 1.0)
    counter.remove(("a",))
    counter.remove(("zzz",))
    assert [key for key, _ in counter.snapshot()] == [("b",)]
    loads = REGISTRY.histogram("rl_training_data_load_time_seconds")
    loads.remove(())
    assert [key for key, _ in loads.snapshot()] == [()]


def test_threads_record_exact_totals():
    """8 threads x 5000 record_episode and record_environment_steps calls add up exactly."""
    threads_n, calls = 8, 5000
    barrier = threading.Barrier(threads_n)

    def work(index: int) -> None:
        barrier.wait()
        for i in range(calls):
            otel_rl.record_episode("PPO", f"agent_{index % 2}", -1.0 if i % 2 else 1.0, 10)
            otel_rl.record_environment_steps("PPO", 2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_agent = threads_n // 2 * calls
    for agent in ("agent_0", "agent_1"):
        assert testing.value("rl_training_episodes_total", algorithm="PPO", agent_id=agent) == per_agent
        series = testing.histogram("rl_training_episode_reward", algorithm="PPO", agent_id=agent)
        assert series.count == per_agent and sum(series.counts) == per_agent
        assert series.sum == 0.0
        assert series.counts[3] == per_agent // 2  # the -1.0 rewards, in le="0.0"
        length = testing.histogram("rl_training_episode_length", algorithm="PPO", agent_id=agent)
        assert length.count == per_agent and length.sum == per_agent * 10
    assert testing.value("rl_training_environment_steps_total", algorithm="PPO") == threads_n * calls * 2


@pytest.fixture
def small_limit():
    saved = store.REGISTRY.cardinality_limit
    store.REGISTRY.cardinality_limit = 3
    yield 3
    store.REGISTRY.cardinality_limit = saved


def _series(name: str) -> dict:
    return dict(store.REGISTRY[name].snapshot())


def test_cardinality_limit_sends_new_label_sets_to_one_overflow_series(small_limit):
    """Past the limit, new label sets go to one overflow series, counted as dropped, and no value is lost."""
    for i in range(10):
        otel_rl.record_episode("PPO", f"agent_{i}", float(i), 10)
        otel_rl.record_environment_steps(f"ALG{i}", i + 1)
    episodes = _series("rl_training_episodes_total")
    assert len(episodes) == small_limit + 1
    assert episodes[store.OVERFLOW_KEY] == 7.0
    assert sum(episodes.values()) == 10.0
    rewards = _series("rl_training_episode_reward")
    assert rewards[store.OVERFLOW_KEY].count == 7
    assert sum(s.sum for s in rewards.values()) == float(sum(range(10)))
    steps = _series("rl_training_environment_steps_total")
    assert len(steps) == small_limit + 1
    assert sum(steps.values()) == float(sum(range(1, 11)))
    assert testing.dropped("rl_training_episodes_total", "cardinality_limit") == 7
    assert testing.dropped("rl_training_environment_steps_total", "cardinality_limit") == 7
    # series admitted before the limit keep receiving their own values
    otel_rl.record_episode("PPO", "agent_0", 1.0, 10)
    assert testing.value("rl_training_episodes_total", algorithm="PPO", agent_id="agent_0") == 2.0


def test_cardinality_overflow_is_exposed_with_the_overflow_label(small_limit):
    """The overflow series appears in the exposition with the label otel_metric_overflow="true"."""
    for i in range(5):
        otel_rl.record_episode_metrics("PPO", f"run-{i}", float(i), 1.0)
        otel_rl.record_episode("PPO", f"agent_{i}", -600.0, 10)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(compat.get_metrics_response()) for s in family.samples}
    overflow = ((OVERFLOW_LABEL, "true"),)
    assert samples[("rl_training_episode_reward_mean", overflow)] == 4.0
    assert samples[("rl_training_episode_reward_bucket", (("le", "-500.0"),) + overflow)] == 2.0
    assert samples[("rl_training_episodes_total", overflow)] == 2.0
    assert samples[("otel_rl_dropped_values_total",
                    (("metric", "rl_training_episodes_total"), ("reason", "cardinality_limit")))] == 2.0


def test_cardinality_limit_does_not_apply_to_the_unlabelled_metric(small_limit):
    """The unlabelled data-load histogram always has its one series."""
    for i in range(10):
        otel_rl.record_data_load_time(0.1 * i)
    assert list(_series("rl_training_data_load_time_seconds")) == [()]


def test_number_fast_path():
    """store.number returns floats for ints/floats and the reason for bad values."""
    assert store.number(3) == 3.0 and type(store.number(3)) is float
    assert store.number(-2.5) == -2.5
    assert store.number(float("nan")) == "nan"
    assert store.number(float("-inf")) == "inf"
    assert store.number(None) == "none"
    assert store.number(numpy.array([1])) == "wrong_type"


# -- hostile values and labels ---------------------------------------------------------------------------------------


def _otlp_bytes(handle) -> bytes:
    """The collection encoded as the OTLP exporters encode it (protobuf)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    handle.pull_reader.collect()
    return encode_metrics(handle.pull_reader.latest).SerializeToString()


def test_label_value_with_a_lone_surrogate_never_breaks_metrics_or_otlp(telemetry, caplog):
    """``os.fsdecode(b"run-\\xff")`` as a label: /metrics and the OTLP encoding keep working, values stay distinct."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    otel_rl.record_episode("PPO", "run-\udcff", 1.0, 5)
    otel_rl.record_episode("PPO", "run-\udcfe", 2.0, 5)
    otel_rl.record_episode("PPO", "run-ok", 3.0, 5)
    for _ in range(2):  # every later scrape too, not only the first
        text = telemetry.metrics_text().decode("utf-8")
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "rl_training_episode_reward_sum"]
        assert {s.labels["agent_id"]: s.value for s in samples} == {
            "run-\\udcff": 1.0, "run-\\udcfe": 2.0, "run-ok": 3.0}
    assert b"run-\\udcff" in _otlp_bytes(telemetry)  # the protobuf encoding of the push path works too
    warned = [r for r in caplog.records if "not valid UTF-8" in r.getMessage()]
    assert len(warned) == 3  # once per metric (episodes, reward, length), not per value or scrape


def test_label_whose_str_raises_is_dropped_as_bad_labels_once(caplog):
    """A label value whose ``__str__`` raises drops the call's values as bad_labels with one warning, no traceback."""
    class Unprintable:
        def __str__(self):
            raise RuntimeError("no str for you")

    caplog.set_level(logging.WARNING, logger="otel_rl")
    for _ in range(5):
        otel_rl.record_episode("PPO", Unprintable(), 1.0, 5)
        otel_rl.record_environment_steps(Unprintable(), 3)
        compat.rl_training_episodes_total.labels(Unprintable(), "a").inc()
    assert testing.dropped("rl_training_episode_reward", "bad_labels") == 5
    assert testing.dropped("rl_training_environment_steps_total", "bad_labels") == 5
    assert testing.dropped("rl_training_episodes_total", "bad_labels") == 10
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len([r for r in caplog.records if "bad_labels" in r.getMessage()]) == 4  # once per metric


class _RaisingFloat:
    def __float__(self):
        raise KeyError("whatever a user's __float__ raises")


@pytest.mark.parametrize("value,reason", [(10**400, "inf"), (-(10**400), "inf"), (_RaisingFloat(), "wrong_type")],
                         ids=["huge_int", "huge_negative_int", "float_raises"])
def test_unconvertible_values_are_counted_and_logged_once(value, reason, caplog):
    """Huge ints and objects whose ``__float__`` raises are dropped with a reason and one warning, no traceback."""
    caplog.set_level(logging.DEBUG, logger="otel_rl")
    for _ in range(10):
        otel_rl.record_environment_steps("PPO", value)
        otel_rl.record_episode_metrics("PPO", "r", value, 1.0)
        otel_rl.record_loss_metrics("PPO", value)
    for metric in ("rl_training_environment_steps_total", "rl_training_episode_reward_mean",
                   "rl_training_policy_loss"):
        assert testing.dropped(metric, reason) == 10
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert len(caplog.records) == 3
    assert all(len(r.getMessage()) < 600 for r in caplog.records)  # 10**400 is not printed in full


def test_performance_metrics_that_are_not_a_mapping_are_counted():
    """``record_performance_metrics(..., None)`` drops each trading figure as none, with no traceback."""
    otel_rl.record_performance_metrics("PPO", "a", None)
    otel_rl.record_performance_metrics("PPO", "a", [0.5])
    for name in ("rl_training_sharpe_ratio", "rl_training_max_drawdown", "rl_training_win_rate",
                 "rl_training_total_return"):
        assert testing.dropped(name, "none") == 1 and testing.dropped(name, "wrong_type") == 1


def test_histogram_sum_never_overflows_to_inf():
    """1e308 twice: the second observation would make _sum +Inf, so it is dropped whole and counted as inf."""
    otel_rl.record_loss_metrics("PPO", 1e308)
    otel_rl.record_loss_metrics("PPO", 1e308)
    otel_rl.record_loss_metrics("PPO", -1e308)
    series = testing.histogram("rl_training_policy_loss", algorithm="PPO")
    assert series.sum == 0.0 and series.count == 2 and sum(series.counts) == 2
    assert testing.dropped("rl_training_policy_loss", "inf") == 1


def test_counter_overflow_keeps_the_last_finite_value():
    """A counter increment that would overflow to +Inf is dropped and counted; the counter keeps its value."""
    otel_rl.record_environment_steps("PPO", 1e308)
    otel_rl.record_environment_steps("PPO", 1e308)
    assert _read_counter() == 1e308
    assert testing.dropped("rl_training_environment_steps_total", "inf") == 1


class _ShapedTensor:
    """A tensor stand-in whose repr (a device sync for a CUDA tensor) must never be called."""

    shape = (2, 3)
    dtype = "float32"
    device = "cuda:0"

    def __repr__(self):
        raise AssertionError("the drop warning must not repr a tensor")

    __str__ = __repr__


_ShapedTensor.__module__ = "torch"


def test_drop_warning_describes_a_tensor_without_reading_it(caplog):
    """The drop warning names a tensor's type, shape, dtype and device and never calls its repr."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    otel_rl.record_loss_metrics("PPO", _ShapedTensor())
    assert testing.dropped("rl_training_policy_loss", "tensor") == 1
    (record,) = caplog.records
    assert "shape=(2, 3)" in record.getMessage() and "cuda:0" in record.getMessage()


def test_histogram_snapshot_reads_in_chunks_and_copies():
    """A snapshot takes the histogram's lock once per chunk of series, and its copies do not move afterwards."""
    from otel_rl._internal.store import Histogram

    hist = store.REGISTRY["rl_training_episode_reward"]
    for i in range(1000):
        hist.observe(("PPO", f"a{i}"), float(i))
    lock, taken = hist.lock, []

    class Counting:
        def __enter__(self):
            taken.append(1)
            return lock.__enter__()

        def __exit__(self, *exc):
            return lock.__exit__(*exc)

    Histogram.lock.__set__(hist, Counting())
    try:
        snapshot = dict(hist.snapshot())
    finally:
        Histogram.lock.__set__(hist, lock)
    assert len(taken) == 4  # 1000 series in chunks of 256
    assert len(snapshot) == 1000 and snapshot[("PPO", "a7")].sum == 7.0 and snapshot[("PPO", "a7")].count == 1
    hist.observe(("PPO", "a7"), 1.0)
    assert snapshot[("PPO", "a7")].count == 1 and sum(snapshot[("PPO", "a7")].counts) == 1
    assert hist.series[("PPO", "a7")].count == 2


def _removing_lock(metric, key):
    """A stand-in for ``metric``'s lock that removes ``key`` from the series the first time it is taken, as a
    ``remove()`` in another thread between a snapshot's listing of the keys and its reading of them would."""
    lock = metric.lock

    class Removing:
        def __enter__(self):
            entered = lock.__enter__()
            metric.series.pop(key, None)
            return entered

        def __exit__(self, *exc):
            return lock.__exit__(*exc)

    return lock, Removing()


def test_histogram_snapshot_skips_a_series_removed_while_it_reads():
    """A ``remove()`` racing a snapshot leaves that series out instead of raising KeyError into the collection."""
    from otel_rl._internal.store import Histogram

    hist = store.REGISTRY["rl_training_episode_reward"]
    for i in range(300):
        hist.observe(("PPO", f"a{i}"), float(i))
    lock, removing = _removing_lock(hist, ("PPO", "a299"))
    Histogram.lock.__set__(hist, removing)
    try:
        snapshot = dict(hist.snapshot())
    finally:
        Histogram.lock.__set__(hist, lock)
    assert len(snapshot) == 299 and ("PPO", "a299") not in snapshot and snapshot[("PPO", "a3")].sum == 3.0


def test_same_labels_after_escaping_are_one_series(telemetry):
    """``os.fsdecode(b"run-\\xff")`` and the text ``"run-\\\\udcff"`` have the same exported labels: they are one
    series (one line on /metrics, one point on the OTel path), not two with identical labels."""
    import os

    from prometheus_client.exposition import generate_latest

    otel_rl.record_environment_steps(os.fsdecode(b"run-\xff"), 3)
    otel_rl.record_environment_steps("run-\\udcff", 4)
    otel_rl.record_environment_steps(os.fsdecode(b"run-\xff"), 1)
    fast = telemetry.metrics_text().decode()
    slow = generate_latest(telemetry.scrape.registry).decode()
    for text in (fast, slow):
        lines = [line for line in text.splitlines() if line.startswith("rl_training_environment_steps_total")]
        assert lines == ['rl_training_environment_steps_total{algorithm="run-\\\\udcff"} 8.0'], text
    hist = store.REGISTRY["rl_training_episode_reward"]
    hist.observe(("PPO", "x-\udcff"), 1.0)
    hist.observe(("PPO", "x-\\udcff"), 2.0)
    gauge = store.REGISTRY.gauge("rl_training_sharpe_ratio")
    gauge.set(("PPO", "x-\udcff"), 1.0)
    gauge.set(("PPO", "x-\\udcff"), 2.0)
    assert list(hist.series) == [("PPO", "x-\\udcff")] and hist.series[("PPO", "x-\\udcff")].count == 2
    assert list(gauge.series.items()) == [(("PPO", "x-\\udcff"), 2.0)]
    gauge.remove(("PPO", "x-\udcff"))  # the raw key removes the series it was recorded in
    assert gauge.series_count() == 0


def test_labels_are_the_attributes_without_caching_them():
    """``Metric.labels`` (the scrape's read) gives what ``attributes`` (the export's) gives, and caches nothing: a
    scrape keeps only its text."""
    counter = store.REGISTRY.counter("rl_training_environment_steps_total")
    counter.add(("PPO",), 1.0)
    assert counter.label_dict(("PPO",)) == {"algorithm": "PPO"} and counter.series_count() == 1
    assert counter._attributes == {}
    assert counter.label_dict(store.OVERFLOW_KEY) == {OVERFLOW_LABEL: "true"}
    assert counter.attributes(("PPO",)) is counter.label_dict(("PPO",))  # once cached by the export, shared


def test_removed_and_cleared_series_leave_no_cached_attributes():
    """The attribute cache follows the series through remove() and clear(), and a collection racing a remove
    cannot make it grow with churn."""
    counter = store.REGISTRY.counter("rl_training_environment_steps_total")
    for i in range(5000):
        counter.add((f"run{i}",), 1.0)
        counter.attributes((f"run{i}",))
        counter.remove((f"run{i}",))
        counter.attributes((f"run{i}",))  # what a collection that listed the key before the remove does
    assert counter.series_count() == 0 and len(counter._attributes) <= 2 * 0 + 65
    counter.add(("a",), 1.0)
    counter.attributes(("a",))
    counter.clear()
    assert counter._attributes == {}


def test_cupy_values_are_tensors_not_read():
    """A cupy scalar is a device value like a torch tensor: dropped as a tensor, never converted (a device sync)."""
    tensor = FakeTensor()
    type(tensor).__module__ = "cupy._core.core"
    try:
        assert store.number(tensor) == "tensor"
    finally:
        FakeTensor.__module__ = "torch"


def test_a_failing_new_series_hook_never_raises_into_a_record_and_warns_once(caplog, monkeypatch):
    """The first-record hook (which may start a worker's telemetry) failing leaves the value recorded, raises
    nothing into the training loop and logs one warning with its traceback, however many series follow."""
    calls = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("no telemetry for you")

    caplog.set_level(logging.WARNING, logger="otel_rl")
    monkeypatch.setattr(REGISTRY, "new_series_hook", broken)
    otel_rl.record_episode("PPO", "a", 1.0, 10)
    otel_rl.record_episode("PPO", "b", 1.0, 10)
    assert len(calls) == 6  # once per new series (2 agents x 3 metrics): this hook never disarms itself
    assert testing.value("rl_training_episodes_total", algorithm="PPO", agent_id="a") == 1.0
    warned = [r for r in caplog.records if "first record failed" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_info is not None


def test_a_label_value_longer_than_the_limit_is_cut_and_counted(caplog):
    """A 1 MB label value is recorded under its first label_value_limit characters; each such record counts as
    label_too_long (one warning), and remove() with the long value finds the cut series."""
    long = "m" * 2**20
    with caplog.at_level(logging.WARNING, logger="otel_rl"):
        otel_rl.record_training_error(long)
        otel_rl.record_training_error(long)
        otel_rl.record_episode("PPO", long, 1.0, 2.0)
    errors = REGISTRY.counter("rl_training_errors_total")
    assert errors.snapshot() == [(("m" * store.DEFAULT_LABEL_VALUE_LIMIT,), 2.0)]
    dropped = dict(REGISTRY.dropped.snapshot())
    assert dropped[("rl_training_errors_total", "label_too_long")] == 2.0
    assert dropped[("rl_training_episodes_total", "label_too_long")] == 1.0
    assert sum("label_too_long" in r.getMessage() for r in caplog.records) == 4  # once per metric
    assert all(len(r.getMessage()) < 2000 for r in caplog.records)
    errors.remove((long,))
    assert errors.snapshot() == []


def test_label_value_limit_setting_applies_to_the_store():
    """label_value_limit (OTEL_RL_LABEL_VALUE_LIMIT) is the store's limit once init_telemetry ran."""
    handle = otel_rl.init_telemetry({"exporters": ["none"], "label_value_limit": 16})
    try:
        otel_rl.record_training_error("0123456789abcdefXYZ")
        assert REGISTRY.counter("rl_training_errors_total").snapshot() == [(("0123456789abcdef",), 1.0)]
    finally:
        handle.shutdown()
        REGISTRY.label_value_limit = store.DEFAULT_LABEL_VALUE_LIMIT


def test_a_small_label_value_limit_leaves_the_dropped_counter_s_metric_names_whole():
    """otel_rl_dropped_values_total{metric} names the metric that dropped: with label_value_limit 16 it was cut to
    "rl_training_erro", and the cut itself was counted as a drop of otel_rl_dropped_values_total."""
    handle = otel_rl.init_telemetry({"exporters": ["none"], "label_value_limit": 16})
    try:
        otel_rl.record_training_error("0123456789abcdefXYZ")
        assert dict(REGISTRY.dropped.snapshot()) == {("rl_training_errors_total", "label_too_long"): 1.0}
    finally:
        handle.shutdown()
        REGISTRY.label_value_limit = store.DEFAULT_LABEL_VALUE_LIMIT


@pytest.mark.parametrize("record", ["counter", "gauge", "histogram"])
def test_the_new_series_hook_runs_with_no_metric_lock_held(monkeypatch, record):
    """The hook may start a worker's telemetry, which re-keys the store under the metric locks: it must run with
    none of them held, or the first labelled record in such a worker deadlocks."""
    metric = {"counter": REGISTRY.counter("rl_training_episodes_total"),
              "gauge": REGISTRY.gauge("rl_training_win_rate"),
              "histogram": REGISTRY.histogram("rl_training_episode_length")}[record]
    free = []

    def hook() -> None:
        got = metric.lock.acquire(blocking=False)
        if got:
            metric.lock.release()
        free.append(got)

    monkeypatch.setattr(REGISTRY, "new_series_hook", hook)
    key = ("PPO", "hook-lock")[:len(metric.label_keys)]
    getattr(metric, {"counter": "add", "gauge": "set", "histogram": "observe"}[record])(key, 1.0)
    assert free and all(free)


@pytest.mark.parametrize("value,bucket", [(1e9, 2), (0.5, 1), (-3.0, 0)])
def test_a_first_observation_lands_in_its_bucket_when_the_hook_changes_the_buckets(monkeypatch, value, bucket):
    """The hook may start a worker's telemetry with inherited ``buckets``: the first observation of a new series
    goes into the bucket of the new bounds, never an index of the old ones (which raised IndexError past the end)."""
    histogram = REGISTRY.histogram("rl_training_episode_length")
    monkeypatch.setattr(histogram, "bounds", histogram.bounds)  # the test's rebucket is undone afterwards

    def hook() -> None:
        histogram.rebucket((0.0, 1.0))

    monkeypatch.setattr(REGISTRY, "new_series_hook", hook)
    histogram.observe(("PPO", "rebucketed"), value)
    [(key, series)] = [(k, s) for k, s in histogram.snapshot() if k == ("PPO", "rebucketed")]
    assert len(series.counts) == 3 and series.counts[bucket] == 1 and series.sum == value


def test_a_worker_with_inherited_per_run_series_records_without_hanging():
    """A worker whose parent published per_run_series starts telemetry from its first record; that re-keys the
    store, which deadlocked when the hook ran under the metric lock."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from otel_rl._internal import worker_settings

    root = Path(__file__).resolve().parent.parent
    body = """
import json, os
import otel_rl
from otel_rl._internal import worker_settings
os.environ[worker_settings.WORKER_CONFIG_ENV] = json.dumps(
    {"parent": os.getppid(), "config": {"exporters": ["otlp"], "shutdown_timeout": 1, "per_run_series": True,
                                        "buckets": {"rl_training_episode_length": [1, 10, 100]},
                                        "otlp": {"endpoint": "http://127.0.0.1:9"}}})
otel_rl.record_episode("PPO", "w", 1.0, 10)
handle = otel_rl.current()
print(json.dumps({"started": handle is not None, "per_run": handle is not None and handle.settings.per_run_series}))
handle.shutdown(timeout=1)
"""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(root) + (os.pathsep + path if path else "")}
    env.pop(worker_settings.WORKER_CONFIG_ENV, None)
    proc = subprocess.run([sys.executable, "-c", body], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"started": True, "per_run": True}
