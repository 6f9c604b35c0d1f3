"""Reads the figures otel-rl records out of a training iteration's result dict.

Understood forms, nested or flattened with ``/`` as RLlib's ``flatten_dict`` does:

* RLlib old API stack: ``episode_reward_mean``, ``episode_len_mean``,
  ``info/learner/<policy>/learner_stats/<loss>`` (:data:`LOSS_KEYS`), ``num_env_steps_sampled`` (lifetime),
  ``num_env_steps_sampled_this_iter``, ``hist_stats/episode_reward`` and ``hist_stats/episode_lengths``,
  ``custom_metrics``; the training signals ``learner_stats/{cur_lr,kl,grad_gnorm,vf_explained_var,entropy_coeff}``
  and ``num_env_steps_sampled_throughput_per_sec``;
* RLlib new API stack: ``env_runners/episode_return_mean``, ``env_runners/episode_len_mean``,
  ``learners/<module>/<loss>`` (:data:`LOSS_KEYS`), ``num_env_steps_sampled_lifetime``,
  ``env_runners/num_episodes`` (a count only: the new stack reports no per-episode values), the per-episode
  ``(return, length)`` pairs and per-agent ``(agent_id, return, length)`` triples that
  :class:`otel_rl.integrations.rllib.OtelRLCallback` logs under ``env_runners/otel_rl/episodes`` and
  ``env_runners/otel_rl/agent_episodes``; the training signals
  ``learners/<module>/{default_optimizer_learning_rate,mean_kl_loss,vf_explained_var,curr_entropy_coeff,
  gradients_default_optimizer_global_norm,alpha_value}`` and
  ``env_runners/num_env_steps_sampled_lifetime_throughput/throughput_since_last_reduce``;
* plain keys: ``reward_mean``, ``length_mean``, ``policy_loss``, ``value_loss``, ``entropy``, ``env_steps``,
  ``training_iteration``, the training signals by their names (``learning_rate``, ``kl_divergence``,
  ``clip_fraction``, ``explained_variance``, ``grad_norm``, ``env_steps_per_second``, ``entropy_coefficient``,
  ``exploration_rate``) and the trading figures (``sharpe_ratio``, ``max_drawdown``, ``win_rate``,
  ``total_return``), optionally per agent (``{"agent_0": {...}}`` or ``agent_0/sharpe_ratio``).

With several learner modules, each signal is the mean over the modules that report it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_rl._internal.catalog import SIGNAL_NAMES
from otel_rl._internal.store import REGISTRY, WRONG_TYPE

PERFORMANCE_KEYS = ("sharpe_ratio", "max_drawdown", "win_rate", "total_return")
#: Sections of a result dict that group figures; never agent ids.
_SECTIONS = frozenset({"custom_metrics", "env_runners", "info", "learners", "hist_stats", "sampler_results",
                       "evaluation", "timers", "counters", "perf", "config"})
_MISSING = object()


def lookup(result: Mapping[str, Any], path: str) -> Any:
    """``result[path]`` in flat form, else walked through nested mappings; None when absent."""
    value = result.get(path, _MISSING)
    if value is not _MISSING:
        return value
    node: Any = result
    for part in path.split("/"):
        if not _is_mapping(node):
            return None
        node = node.get(part, _MISSING)
        if node is _MISSING:
            return None
    return node


def _first(result: Mapping[str, Any], *paths: str) -> Any:
    for path in paths:
        value = lookup(result, path)
        if value is not None:
            return value
    return None


@dataclass
class ParsedResult:
    """What one iteration reported; None or empty where the result did not say."""

    iteration: Any = None
    reward_mean: Any = None
    length_mean: Any = None
    losses: list[tuple[Any, Any, Any]] = field(default_factory=list)  #: (policy, value, entropy) per learner
    #: The same per learner module (RLlib), by module id.
    module_losses: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)
    env_steps_this_iter: Any = None
    env_steps_lifetime: Any = None
    episodes_this_iter: Any = None
    #: New RLlib API stack without the callback: ``env_runners/num_episodes`` counts episodes whose values it omits.
    episodes_without_values: Any = None
    episode_rewards: list[Any] = field(default_factory=list)
    episode_lengths: list[Any] = field(default_factory=list)
    #: Multi-agent episodes: agent_id -> (returns, lengths) of that agent in this iteration's episodes.
    agent_episodes: dict[str, tuple[list[Any], list[Any]]] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)  #: signal name (``SIGNAL_NAMES``) -> value
    performance: dict[str | None, dict[str, Any]] = field(default_factory=dict)  #: agent_id (None: default)


#: The learner statistics of RLlib's built-in algorithms (both API stacks) that are otel-rl's three losses, per
#: slot in order of preference: (policy loss, value loss, entropy). PPO, APPO and IMPALA (old stack) log
#: ``policy_loss``/``vf_loss``/``entropy``; IMPALA (new stack) logs the batch sums ``pi_loss``/``vf_loss`` beside
#: their means ``mean_pi_loss``/``mean_vf_loss`` (the means win); DQN logs its TD loss as ``qf_loss`` (new stack);
#: SAC logs ``policy_loss``/``qf_loss`` (new stack) and ``actor_loss``/``critic_loss`` (old stack).
LOSS_KEYS: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (
    ("mean_pi_loss", "policy_loss", "actor_loss"),
    ("mean_vf_loss", "vf_loss", "qf_loss", "critic_loss"),
    ("entropy",),
)
_LOSS_KEYS = tuple(key for slot in LOSS_KEYS for key in slot)
#: Learner statistics of both RLlib stacks that are training signals, by otel-rl signal name.
_LEARNER_SIGNALS = {
    "default_optimizer_learning_rate": "learning_rate", "cur_lr": "learning_rate",
    "mean_kl_loss": "kl_divergence", "kl": "kl_divergence",
    "vf_explained_var": "explained_variance",
    "gradients_default_optimizer_global_norm": "grad_norm", "grad_gnorm": "grad_norm",
    "curr_entropy_coeff": "entropy_coefficient", "entropy_coeff": "entropy_coefficient",
    "alpha_value": "entropy_coefficient",  # SAC's learned temperature, both stacks
}
_LEARNER_KEYS = frozenset(_LOSS_KEYS) | frozenset(_LEARNER_SIGNALS)
#: Where the callback of otel_rl.integrations.rllib puts each iteration's finished episodes.
EPISODES_KEY = "env_runners/otel_rl/episodes"
#: ... and each agent's part of them in a multi-agent episode, as ``(agent_id, return, length)``.
AGENT_EPISODES_KEY = "env_runners/otel_rl/agent_episodes"
#: Set on a result whose figures the RLlib callback has recorded, so ``@train_step`` does not record them again.
RECORDED_KEY = "otel_rl_recorded"


def parse_result(result: Mapping[str, Any]) -> ParsedResult:
    """Extract otel-rl's figures from a result dict of either RLlib API stack or plain keys.

    A handful of direct lookups for the fixed keys, then one pass over the top-level keys that only descends into
    the sections holding losses and custom metrics: RLlib results have hundreds of leaves, most of them timers.
    """
    parsed = ParsedResult()
    parsed.iteration = _first(result, "training_iteration", "iteration")
    parsed.reward_mean = _first(result, "env_runners/episode_return_mean", "episode_reward_mean",
                                "env_runners/episode_reward_mean", "reward_mean", "episode_return_mean")
    parsed.length_mean = _first(result, "env_runners/episode_len_mean", "episode_len_mean", "length_mean",
                                "episode_length_mean")
    parsed.env_steps_this_iter = _first(result, "num_env_steps_sampled_this_iter", "env_steps",
                                        "env_runners/num_env_steps_sampled")
    parsed.env_steps_lifetime = _first(result, "num_env_steps_sampled_lifetime", "num_env_steps_sampled",
                                       "env_runners/num_env_steps_sampled_lifetime")
    parsed.episodes_this_iter = _first(result, "episodes_this_iter", "env_runners/num_episodes")
    pairs = _series(lookup(result, EPISODES_KEY), 2)
    rewards = _first(result, "hist_stats/episode_reward", "env_runners/hist_stats/episode_reward")
    lengths = _first(result, "hist_stats/episode_lengths", "env_runners/hist_stats/episode_lengths")
    if pairs is not None:  # exact: every episode of this iteration, from every env runner
        parsed.episode_rewards = [pair[0] for pair in pairs]
        parsed.episode_lengths = [pair[1] for pair in pairs]
        parsed.episodes_this_iter = len(pairs)
        for agent, reward, length in _series(lookup(result, AGENT_EPISODES_KEY), 3) or ():
            rewards_lengths = parsed.agent_episodes.setdefault(str(agent), ([], []))
            rewards_lengths[0].append(reward)
            rewards_lengths[1].append(length)
    elif isinstance(rewards, (list, tuple)):
        parsed.episode_rewards = list(rewards)
        parsed.episode_lengths = list(lengths) if isinstance(lengths, (list, tuple)) else []
    else:
        parsed.episodes_without_values = lookup(result, "env_runners/num_episodes")

    learners: dict[str, dict[str, Any]] = {}
    for key, value in result.items():
        if not isinstance(key, str):
            continue
        head, sep, rest = key.partition("/")
        if head in _SKIPPED:  # config, timers, ...: most of a result's leaves
            continue
        if head == "info":  # old stack: info/learner/<policy>/learner_stats/<stat>
            node = _child(value, "learner") if not sep else value if rest == "learner" else None
            if node is not None and _is_mapping(node):  # "info/learner" may hold anything
                for policy, stats in node.items():
                    _learner_stats(learners, policy, _child(stats, "learner_stats") or stats)
            elif rest.startswith("learner/"):
                _learner_stat(learners, rest[len("learner/"):], value, "learner_stats/")
        elif head == "learners":  # new stack: learners/<module>/<stat>
            if not sep and _is_mapping(value):
                for module, stats in value.items():
                    _learner_stats(learners, module, stats)
            elif sep:
                _learner_stat(learners, rest, value, "")
        elif head == "custom_metrics":
            for path, leaf in leaves(rest if sep else "", value):
                _figure(parsed, path, leaf)
        elif head == "env_runners":  # new stack: figures logged by the env runners, or their custom_metrics
            if sep:
                if rest.endswith(_FIGURE_SUFFIXES):
                    _figure(parsed, rest[len("custom_metrics/"):] if rest.startswith("custom_metrics/") else rest,
                            value)
            elif _is_mapping(value):
                for name in _FIGURE_SUFFIXES:
                    if name in value:
                        _figure(parsed, name, value[name])
                custom = _child(value, "custom_metrics")
                if custom is not None:
                    for path, leaf in leaves("", custom):
                        _figure(parsed, path, leaf)
        elif not sep and _is_mapping(value):  # {"agent_0": {"sharpe_ratio": ...}}
            for name in _FIGURE_SUFFIXES:
                if name in value:
                    _figure(parsed, f"{key}/{name}", value[name])
        elif key.endswith(_FIGURE_SUFFIXES):  # "sharpe_ratio", "agent_1/win_rate"
            _figure(parsed, key, value)

    signals: dict[str, list[Any]] = {}
    for name, losses in learners.items():
        if name != "__all_modules__":
            found = tuple(_first_of(losses, slot) for slot in LOSS_KEYS)
            if any(value is not None for value in found):
                parsed.losses.append(found)
                parsed.module_losses[name] = found
            for stat, signal in _LEARNER_SIGNALS.items():
                if stat in losses:
                    signals.setdefault(signal, []).append(losses[stat])
    for signal, values in signals.items():
        parsed.signals[signal] = values[0] if len(values) == 1 else _mean(values)
    if not parsed.losses:
        plain = (_first(result, "policy_loss"), _first(result, "value_loss", "vf_loss"), _first(result, "entropy"))
        if any(v is not None for v in plain):
            parsed.losses.append(plain)
    throughput = _first(result, "env_runners/num_env_steps_sampled_lifetime_throughput/throughput_since_last_reduce",
                        "num_env_steps_sampled_throughput_per_sec")
    if throughput is not None:
        parsed.signals["env_steps_per_second"] = throughput
    for name in SIGNAL_NAMES:  # plain keys win
        value = result.get(name)
        if value is not None:
            parsed.signals[name] = value
    return parsed


def _first_of(stats: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = stats.get(key)
        if value is not None:
            return value
    return None


def _series(value: Any, width: int) -> list[tuple[Any, ...]] | None:
    """The tuples of an RLlib ``item_series`` of ``width``-tuples, None when absent; malformed items are dropped.

    RLlib's ``MetricsLogger`` hands a series of one item over as that item itself: ``(return, length)`` for
    ``[(return, length)]``, so a tuple whose first element is no tuple is one item.
    """
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # a series made an array on its way
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return None
    if value and not isinstance(value[0], (list, tuple)):
        value = [value]
    items: list[Any] = []
    bad: list[Any] = []
    for item in value:
        (items if isinstance(item, (list, tuple)) and len(item) == width else bad).append(item)
    for item in bad:
        REGISTRY.drop("rl_training_episode_reward", WRONG_TYPE, item)
    return [tuple(item) for item in items]


def _mean(values: list[Any]) -> Any:
    """The mean of the finite numbers among ``values``; the first value when there is none (the store drops it)."""
    finite = []
    for value in values:
        if isinstance(value, (str, bytes, bool)):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            finite.append(number)
    return sum(finite) / len(finite) if finite else values[0]


#: Sections parse_result never reads figures from.
_SKIPPED = _SECTIONS - {"info", "learners", "custom_metrics", "env_runners"}
_FIGURE_SUFFIXES = PERFORMANCE_KEYS + tuple(k + "_mean" for k in PERFORMANCE_KEYS)


_LEAF_TYPES = frozenset({float, int, str, bool, list, tuple, type(None)})


def _is_mapping(value: Any) -> bool:
    # isinstance(x, Mapping) goes through the ABC machinery; result dicts are plain dicts and floats.
    return type(value) is dict or (type(value) not in _LEAF_TYPES and isinstance(value, Mapping))


def _child(value: Any, key: str) -> Mapping[str, Any] | None:
    if _is_mapping(value):
        child = value.get(key)
        if _is_mapping(child):
            return child
    return None


#: How deep :func:`leaves` descends, and how many entries it reads in all: RLlib's custom metrics nest a few
#: levels and hold hundreds of entries, never dozens of levels or a hundred thousand entries.
MAX_DEPTH = 32
MAX_ENTRIES = 100_000
_warned_truncated = False


def leaves(path: str, value: Any) -> list[tuple[str, Any]]:
    """``(path, leaf)`` pairs of a value that may be a nested mapping; paths joined with ``/``.

    A mapping already on the way down (``d["custom_metrics"] = d``) is not entered again, nothing deeper than
    :data:`MAX_DEPTH` levels and no more than :data:`MAX_ENTRIES` entries are read (logged once), so a
    self-referencing, absurdly deep or exponentially shared result costs bounded time and memory.
    """
    global _warned_truncated
    if not _is_mapping(value):
        return [(path, value)]
    out: list[tuple[str, Any]] = []
    stack = [(path + "/" if path else "", value, 1, frozenset((id(value),)))]
    budget = MAX_ENTRIES
    truncated = False
    while stack:
        prefix, node, depth, above = stack.pop()
        for key, child in node.items():
            budget -= 1
            if budget < 0:
                truncated, stack = True, []
                break
            if _is_mapping(child):
                if depth < MAX_DEPTH and id(child) not in above:
                    stack.append((f"{prefix}{key}/", child, depth + 1, above | {id(child)}))
                else:
                    truncated = True
            else:
                out.append((f"{prefix}{key}", child))
    if truncated and not _warned_truncated:
        _warned_truncated = True
        logging.getLogger("otel_rl").warning(
            "otel-rl: a result dict refers to itself, nests deeper than %d levels or holds more than %d entries; "
            "only the part above that was read", MAX_DEPTH, MAX_ENTRIES)
    return out


def _learner_stats(learners: dict[str, dict[str, Any]], name: Any, stats: Any) -> None:
    if _is_mapping(stats):
        for stat in _LEARNER_KEYS:
            if stat in stats:
                learners.setdefault(str(name), {})[stat] = stats[stat]


def _learner_stat(learners: dict[str, dict[str, Any]], path: str, value: Any, stats_prefix: str) -> None:
    name, _, stat = path.partition("/")
    if stats_prefix and stat.startswith(stats_prefix):
        stat = stat[len(stats_prefix):]
    if stat in _LEARNER_KEYS:
        learners.setdefault(name, {})[stat] = value


def _figure(parsed: ParsedResult, path: str, value: Any) -> None:
    """Record a trading figure from ``[<agent>/]<name>[_mean]``; the exact name wins over its ``_mean``."""
    agent, sep, name = path.rpartition("/")
    base = name[:-5] if name.endswith("_mean") else name
    if base not in PERFORMANCE_KEYS:
        return
    target = parsed.performance.setdefault(agent if sep and "/" not in agent else None, {})
    if name == base or base not in target:
        target[base] = value
