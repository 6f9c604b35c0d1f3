"""The two baselines every benchmark compares otel-rl against, built from the original module's facts file.

* :class:`OriginalPrometheus`: the original module re-created on prometheus_client, with its 21 metrics defined from
  ``shared/reference/seed-metrics.json`` in a private ``CollectorRegistry`` and its helpers doing what the facts
  say they did.
* :class:`PlainOtel`: the same helpers on the plain OpenTelemetry SDK: synchronous Counter / Histogram / Gauge
  instruments, Views with the original buckets, a MeterProvider with an InMemoryMetricReader (or any readers).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
_FACTS_CANDIDATES = (
    _ROOT.parent / "shared" / "reference" / "seed-metrics.json",
    _ROOT / "shared" / "reference" / "seed-metrics.json",
    Path("/work/shared/reference/seed-metrics.json"),
)


def seed_metrics() -> list[dict[str, Any]]:
    """The seed's metric definitions: from the facts file when present, else from otel-rl's catalog (same data)."""
    for path in _FACTS_CANDIDATES:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))["metrics"]
    from otel_rl import ALL_METRICS

    return [{"name": s.name, "type": s.type, "labels": list(s.labels), "help": s.help,
             "buckets": list(s.buckets)} for s in ALL_METRICS if s.name.startswith("rl_training_")]


class OriginalPrometheus:
    """The original prometheus_metrics module on prometheus_client, in its own registry.

    ``keyword_labels=True`` calls ``.labels(algorithm=..., run_id=...)`` as much hand-written code does; the default
    positional ``.labels(a, b)`` is prometheus_client's faster path, so the comparison is the harder one for otel-rl.
    """

    def __init__(self, keyword_labels: bool = False) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.keyword_labels = keyword_labels
        self.m: dict[str, Any] = {}
        for spec in seed_metrics():
            name, labels, doc = spec["name"], spec["labels"], spec["help"]
            if spec["type"] == "counter":
                metric = Counter(name, doc, labels, registry=self.registry)
            elif spec["type"] == "gauge":
                metric = Gauge(name, doc, labels, registry=self.registry)
            else:
                metric = Histogram(name, doc, labels, registry=self.registry, buckets=spec["buckets"])
            self.m[name] = metric
        m = self.m
        self._perf = {"sharpe_ratio": (m["rl_training_sharpe_ratio"], 1.0),
                      "max_drawdown": (m["rl_training_max_drawdown"], 1.0),
                      "win_rate": (m["rl_training_win_rate"], 100.0),
                      "total_return": (m["rl_training_total_return"], 100.0)}

    def _l(self, metric: Any, **labels: str) -> Any:
        if self.keyword_labels:
            return metric.labels(**labels)
        return metric.labels(*labels.values())

    # The seed's helpers, as the facts file describes them.
    def record_training_start(self, algorithm: str, run_id: str = "default") -> None:
        self._l(self.m["rl_training_runs_total"], algorithm=algorithm, status="started").inc()
        self._l(self.m["rl_training_active"], algorithm=algorithm).set(1)
        self._l(self.m["rl_training_start_timestamp"], algorithm=algorithm, run_id=run_id).set(time.time())

    def record_training_iteration(self, algorithm: str, iteration: int, run_id: str = "default") -> None:
        self._l(self.m["rl_training_iterations_total"], algorithm=algorithm).inc()
        self._l(self.m["rl_training_current_iteration"], algorithm=algorithm, run_id=run_id).set(iteration)

    def record_episode(self, algorithm: str, agent_id: str, reward: float, length: float) -> None:
        self._l(self.m["rl_training_episodes_total"], algorithm=algorithm, agent_id=agent_id).inc()
        self._l(self.m["rl_training_episode_reward"], algorithm=algorithm, agent_id=agent_id).observe(reward)
        self._l(self.m["rl_training_episode_length"], algorithm=algorithm, agent_id=agent_id).observe(length)

    def record_episode_metrics(self, algorithm: str, run_id: str, reward_mean: float, length_mean: float) -> None:
        self._l(self.m["rl_training_episode_reward_mean"], algorithm=algorithm, run_id=run_id).set(reward_mean)
        self._l(self.m["rl_training_episode_length_mean"], algorithm=algorithm, run_id=run_id).set(length_mean)

    def record_performance_metrics(self, algorithm: str, agent_id: str, metrics: dict[str, float]) -> None:
        for key, (gauge, scale) in self._perf.items():
            if key in metrics:
                self._l(gauge, algorithm=algorithm, agent_id=agent_id).set(metrics[key] * scale)

    def record_loss_metrics(self, algorithm: str, policy_loss: float | None = None, value_loss: float | None = None,
                            entropy: float | None = None) -> None:
        if policy_loss is not None:
            self._l(self.m["rl_training_policy_loss"], algorithm=algorithm).observe(policy_loss)
        if value_loss is not None:
            self._l(self.m["rl_training_value_loss"], algorithm=algorithm).observe(value_loss)
        if entropy is not None:
            self._l(self.m["rl_training_entropy"], algorithm=algorithm).observe(entropy)

    def record_environment_steps(self, algorithm: str, steps: int) -> None:
        self._l(self.m["rl_training_environment_steps_total"], algorithm=algorithm).inc(steps)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class PlainOtel:
    """The original module's helpers on the plain OpenTelemetry SDK (sync instruments, Views with its buckets)."""

    def __init__(self, readers: list[Any] | None = None, cardinality_limit: int | None = None) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

        specs = seed_metrics()
        views = [View(instrument_name=s["name"], aggregation=ExplicitBucketHistogramAggregation(s["buckets"]))
                 for s in specs if s["type"] == "histogram"]
        if readers is None:
            kwargs = {}
            if cardinality_limit is not None:
                from opentelemetry.sdk.metrics import Counter, Gauge, Histogram

                kwargs["cardinality_limits"] = {k: cardinality_limit for k in (Counter, Gauge, Histogram)}
            readers = [InMemoryMetricReader(**kwargs)]
        self.readers = readers
        self.provider = MeterProvider(metric_readers=readers, views=views, shutdown_on_exit=False)
        meter = self.provider.get_meter("seed-baseline")
        self.m: dict[str, Any] = {}
        for s in specs:
            make = {"counter": meter.create_counter, "gauge": meter.create_gauge,
                    "histogram": meter.create_histogram}[s["type"]]
            self.m[s["name"]] = make(s["name"], description=s["help"])
        m = self.m
        self._perf = {"sharpe_ratio": (m["rl_training_sharpe_ratio"], 1.0),
                      "max_drawdown": (m["rl_training_max_drawdown"], 1.0),
                      "win_rate": (m["rl_training_win_rate"], 100.0),
                      "total_return": (m["rl_training_total_return"], 100.0)}

    def record_training_iteration(self, algorithm: str, iteration: int, run_id: str = "default") -> None:
        self.m["rl_training_iterations_total"].add(1, {"algorithm": algorithm})
        self.m["rl_training_current_iteration"].set(iteration, {"algorithm": algorithm, "run_id": run_id})

    def record_episode(self, algorithm: str, agent_id: str, reward: float, length: float) -> None:
        attributes = {"algorithm": algorithm, "agent_id": agent_id}
        self.m["rl_training_episodes_total"].add(1, attributes)
        self.m["rl_training_episode_reward"].record(reward, attributes)
        self.m["rl_training_episode_length"].record(length, attributes)

    def record_episode_metrics(self, algorithm: str, run_id: str, reward_mean: float, length_mean: float) -> None:
        attributes = {"algorithm": algorithm, "run_id": run_id}
        self.m["rl_training_episode_reward_mean"].set(reward_mean, attributes)
        self.m["rl_training_episode_length_mean"].set(length_mean, attributes)

    def record_performance_metrics(self, algorithm: str, agent_id: str, metrics: dict[str, float]) -> None:
        attributes = {"algorithm": algorithm, "agent_id": agent_id}
        for key, (gauge, scale) in self._perf.items():
            if key in metrics:
                gauge.set(metrics[key] * scale, attributes)

    def record_loss_metrics(self, algorithm: str, policy_loss: float | None = None, value_loss: float | None = None,
                            entropy: float | None = None) -> None:
        attributes = {"algorithm": algorithm}
        if policy_loss is not None:
            self.m["rl_training_policy_loss"].record(policy_loss, attributes)
        if value_loss is not None:
            self.m["rl_training_value_loss"].record(value_loss, attributes)
        if entropy is not None:
            self.m["rl_training_entropy"].record(entropy, attributes)

    def record_environment_steps(self, algorithm: str, steps: int) -> None:
        self.m["rl_training_environment_steps_total"].add(steps, {"algorithm": algorithm})

    def shutdown(self) -> None:
        self.provider.shutdown()
