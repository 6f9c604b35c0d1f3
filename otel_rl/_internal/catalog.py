"""The metric catalog: every series otel-rl produces, as data.

Instruments, the Prometheus exposition, the metrics reference, the Grafana dashboard and the alerting rules are
all derived from :data:`ALL_METRICS`. In :data:`CATALOG`, names, label keys, buckets and help texts are those of
the original ``prometheus_metrics`` module (prometheus_client) that otel-rl replaces (facts in
``tests/data/seed-metrics.json``), so dashboards and queries written for it keep working;
:data:`SIGNALS` adds the training signals after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its Prometheus name and type, label keys in order, buckets, help and OTel unit."""

    name: str
    type: MetricType
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()
    unit: str = ""
    group: str = ""
    notes: str = ""
    recorded_by: tuple[str, ...] = field(default=())

    @property
    def family(self) -> str:
        """The Prometheus family name (a counter's name without ``_total``)."""
        if self.type == "counter" and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


_DURATION_BUCKETS = (60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 18000.0, 36000.0)
_REWARD_BUCKETS = (-1000.0, -500.0, -100.0, 0.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0)
_LENGTH_BUCKETS = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
_LOSS_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
_ENTROPY_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
_LOAD_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_AR = ("algorithm", "run_id")
_AA = ("algorithm", "agent_id")

# Order matters: it is the original module's definition order, which is also the exposition order.
CATALOG: tuple[MetricSpec, ...] = (
    MetricSpec("rl_training_runs_total", "counter", ("algorithm", "status"),
               "Total number of training runs started", group="lifecycle",
               notes="status is one of started, completed, failed",
               recorded_by=("record_training_start", "record_training_complete", "record_training_failed")),
    MetricSpec("rl_training_duration_seconds", "histogram", ("algorithm",),
               "Duration of training runs in seconds", _DURATION_BUCKETS, unit="s", group="lifecycle",
               recorded_by=("record_training_complete",)),
    MetricSpec("rl_training_iterations_total", "counter", ("algorithm",),
               "Total number of training iterations", group="lifecycle",
               recorded_by=("record_training_iteration",)),
    MetricSpec("rl_training_episodes_total", "counter", _AA,
               "Total number of episodes completed", group="episodes", recorded_by=("record_episode",)),
    MetricSpec("rl_training_episode_reward", "histogram", _AA,
               "Episode reward distribution", _REWARD_BUCKETS, group="episodes",
               notes="rewards are often negative; negative observations land in the negative buckets",
               recorded_by=("record_episode",)),
    MetricSpec("rl_training_episode_length", "histogram", _AA,
               "Episode length in steps", _LENGTH_BUCKETS, group="episodes", recorded_by=("record_episode",)),
    MetricSpec("rl_training_sharpe_ratio", "gauge", _AA, "Current Sharpe ratio", group="performance",
               recorded_by=("record_performance_metrics",)),
    MetricSpec("rl_training_max_drawdown", "gauge", _AA, "Maximum drawdown percentage", group="performance",
               recorded_by=("record_performance_metrics",)),
    MetricSpec("rl_training_win_rate", "gauge", _AA, "Win rate percentage (0-100)", group="performance",
               notes="given as a fraction (0.65), stored as a percentage (65.0)",
               recorded_by=("record_performance_metrics",)),
    MetricSpec("rl_training_total_return", "gauge", _AA, "Total return percentage", group="performance",
               notes="given as a fraction, stored as a percentage (x100)",
               recorded_by=("record_performance_metrics",)),
    MetricSpec("rl_training_current_iteration", "gauge", _AR, "Current training iteration number",
               group="lifecycle", recorded_by=("record_training_iteration",)),
    MetricSpec("rl_training_episode_reward_mean", "gauge", _AR, "Mean episode reward for current iteration",
               group="episodes", recorded_by=("record_episode_metrics",)),
    MetricSpec("rl_training_episode_length_mean", "gauge", _AR, "Mean episode length for current iteration",
               group="episodes", recorded_by=("record_episode_metrics",)),
    MetricSpec("rl_training_policy_loss", "histogram", ("algorithm",), "Policy loss during training",
               _LOSS_BUCKETS, group="losses", notes="PPO surrogate losses can be negative",
               recorded_by=("record_loss_metrics",)),
    MetricSpec("rl_training_value_loss", "histogram", ("algorithm",), "Value function loss during training",
               _LOSS_BUCKETS, group="losses", recorded_by=("record_loss_metrics",)),
    MetricSpec("rl_training_entropy", "histogram", ("algorithm",), "Policy entropy (exploration measure)",
               _ENTROPY_BUCKETS, group="losses",
               notes="differential entropy of continuous policies can be negative",
               recorded_by=("record_loss_metrics",)),
    MetricSpec("rl_training_data_load_time_seconds", "histogram", (), "Time taken to load training data",
               _LOAD_BUCKETS, unit="s", group="throughput", recorded_by=("record_data_load_time",)),
    MetricSpec("rl_training_environment_steps_total", "counter", ("algorithm",),
               "Total number of environment steps", group="throughput",
               recorded_by=("record_environment_steps",)),
    MetricSpec("rl_training_errors_total", "counter", ("error_type",), "Total number of training errors",
               group="errors", notes="error_type examples: data_error, training_error, evaluation_error, unknown",
               recorded_by=("record_training_failed", "record_training_error")),
    MetricSpec("rl_training_active", "gauge", ("algorithm",),
               "Whether training is currently active (1) or not (0)", group="lifecycle",
               recorded_by=("record_training_start", "record_training_complete", "record_training_failed")),
    MetricSpec("rl_training_start_timestamp", "gauge", _AR, "Unix timestamp when training started",
               group="lifecycle", recorded_by=("record_training_start",)),
)

#: Training signals beyond the original 21 series: the per-update figures practitioners graph and alert on, as
#: Stable-Baselines3 and RLlib log them. Gauges per run, set to the latest value each time the framework logs it.
SIGNALS: tuple[MetricSpec, ...] = (
    MetricSpec("rl_training_learning_rate", "gauge", _AR, "Current learning rate of the optimizer",
               group="signals", notes="the value of the latest update; with several modules, their mean",
               recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_kl_divergence", "gauge", _AR,
               "KL divergence between the policy before and after the latest update", group="signals",
               notes="SB3 train/approx_kl, RLlib mean_kl_loss (new stack) or kl (old stack)",
               recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_clip_fraction", "gauge", _AR,
               "Fraction of samples whose probability ratio was clipped in the latest update (PPO)",
               group="signals", recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_explained_variance", "gauge", _AR,
               "Explained variance of the value function in the latest update (1 is perfect, 0 or less is no "
               "better than a constant)", group="signals", recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_grad_norm", "gauge", _AR, "Global gradient norm of the latest update",
               group="signals", recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_env_steps_per_second", "gauge", _AR,
               "Training throughput in environment steps per second, as the framework measures it",
               group="signals", recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_entropy_coefficient", "gauge", _AR,
               "Entropy coefficient of the latest update (SAC's learned ent_coef, RLlib's entropy_coeff)",
               group="signals", recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_exploration_rate", "gauge", _AR,
               "Probability of a random action in epsilon-greedy exploration (DQN)", group="signals",
               recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_tokens_per_second", "gauge", _AR,
               "Training throughput in tokens per second (RL post-training of language models)", group="signals",
               notes="TRL: the tokens of the latest logging window over its step time, or transformers' "
                     "train_tokens_per_second where it logs it",
               recorded_by=("record_training_signals",)),
    MetricSpec("rl_training_reward_function_mean", "gauge", _AR + ("reward_function",),
               "Mean reward of one reward function over the latest logging window (TRL GRPO and RLOO)",
               group="signals", notes="the total reward (their weighted sum) is rl_training_episode_reward_mean",
               recorded_by=("otel_rl.integrations.trl",)),
)

#: The keyword of each signal in :func:`otel_rl.record_training_signals`, in catalog order: the signals labelled by
#: run alone (a per-reward-function gauge has one more label and its own setter).
SIGNAL_NAMES: tuple[str, ...] = tuple(spec.name[len("rl_training_"):] for spec in SIGNALS if spec.labels == _AR)

#: otel-rl's own health metric: values otel-rl's recording dropped (None, NaN, inf, wrong type, tensor, negative
#: counter increment, over the cardinality limit, bad labels or name), by metric and reason.
DROPPED_VALUES = MetricSpec(
    "otel_rl_dropped_values_total", "counter", ("metric", "reason"),
    "Values otel-rl dropped instead of recording (non-finite, wrong type, over the cardinality limit)",
    group="sdk", recorded_by=("every record_* helper",),
)

#: Losses per learner module: with several modules (RLlib multi-agent, one policy per agent or group), the
#: original loss histograms, labelled by algorithm only, mix the modules; this keeps each module's apart.
MODULE_LOSS = MetricSpec(
    "rl_training_module_loss", "gauge", ("algorithm", "run_id", "agent_id", "loss"),
    "Loss of each learner module in the latest update", group="losses",
    notes="agent_id is the module (policy) id; loss is one of policy, value, entropy. Set by the RLlib callback "
          "and train_step from learners/<module>/... or info/learner/<policy>/...",
    recorded_by=("train_step",),
)

#: Every metric otel-rl exports: the original 21 first, then the training signals and the per-module losses, then
#: otel-rl's own.
ALL_METRICS: tuple[MetricSpec, ...] = CATALOG + SIGNALS + (MODULE_LOSS, DROPPED_VALUES)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in ALL_METRICS}

#: The label OpenTelemetry uses for the series that collects label sets over the cardinality limit.
OVERFLOW_LABEL = "otel_metric_overflow"
