"""Reads the figures otel-rl records out of a training iteration's result dict.

Understood forms, nested or flattened with ``/`` as RLlib's ``flatten_dict`` does:

* RLlib old API stack: ``episode_reward_mean``, ``episode_len_mean``,
  ``info/learner/<policy>/learner_stats/{policy_loss,vf_loss,entropy}``, ``num_env_steps_sampled`` (lifetime),
  ``num_env_steps_sampled_this_iter``, ``hist_stats/episode_reward`` and ``hist_stats/episode_lengths``,
  ``custom_metrics``;
* RLlib new API stack: ``env_runners/episode_return_mean``, ``env_runners/episode_len_mean``,
  ``learners/<module>/{policy_loss,vf_loss,entropy}``, ``num_env_steps_sampled_lifetime``;
* plain keys: ``reward_mean``, ``length_mean``, ``policy_loss``, ``value_loss``, ``entropy``, ``env_steps``,
  ``training_iteration`` and the trading figures (``sharpe_ratio``, ``max_drawdown``, ``win_rate``,
  ``total_return``), optionally per agent (``{"agent_0": {...}}`` or ``agent_0/sharpe_ratio``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
        if not isinstance(node, Mapping):
            return None
        node = node.get(part, _MISSING)
        if node is _MISSING:
            return None
    return node


def subtree(result: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Everything under ``prefix`` as a flat ``{"a/b": value}`` dict, from nested and flat forms."""
    out: dict[str, Any] = {}
    nested = lookup(result, prefix)
    if isinstance(nested, Mapping):
        _flatten(nested, "", out)
    start = prefix + "/"
    for key, value in result.items():
        if isinstance(key, str) and key.startswith(start):
            if isinstance(value, Mapping):
                _flatten(value, key[len(start):] + "/", out)
            else:
                out[key[len(start):]] = value
    return out


def _flatten(node: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        if isinstance(value, Mapping):
            _flatten(value, f"{prefix}{key}/", out)
        else:
            out[f"{prefix}{key}"] = value


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
    env_steps_this_iter: Any = None
    env_steps_lifetime: Any = None
    episode_rewards: list[Any] = field(default_factory=list)
    episode_lengths: list[Any] = field(default_factory=list)
    performance: dict[str | None, dict[str, Any]] = field(default_factory=dict)  #: agent_id (None: default)


def parse_result(result: Mapping[str, Any]) -> ParsedResult:
    """Extract otel-rl's figures from a result dict of either RLlib API stack or plain keys."""
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

    for prefix, stats in (("info/learner", "learner_stats/"), ("learners", "")):
        learners: dict[str, dict[str, Any]] = {}
        for key, value in subtree(result, prefix).items():
            name, _, rest = key.partition("/")
            if stats and rest.startswith(stats):
                rest = rest[len(stats):]
            if rest in ("policy_loss", "vf_loss", "entropy"):
                learners.setdefault(name, {})[rest] = value
        for name, losses in learners.items():
            if name == "__all_modules__":
                continue
            parsed.losses.append((losses.get("policy_loss"), losses.get("vf_loss"), losses.get("entropy")))
    if not parsed.losses:
        plain = (_first(result, "policy_loss"), _first(result, "value_loss", "vf_loss"), _first(result, "entropy"))
        if any(v is not None for v in plain):
            parsed.losses.append(plain)

    rewards = _first(result, "hist_stats/episode_reward", "env_runners/hist_stats/episode_reward")
    lengths = _first(result, "hist_stats/episode_lengths", "env_runners/hist_stats/episode_lengths")
    if isinstance(rewards, (list, tuple)):
        parsed.episode_rewards = list(rewards)
        parsed.episode_lengths = list(lengths) if isinstance(lengths, (list, tuple)) else []

    _performance(result, parsed)
    return parsed


def _performance(result: Mapping[str, Any], parsed: ParsedResult) -> None:
    sources = [result]
    for prefix in ("custom_metrics", "env_runners/custom_metrics", "env_runners"):
        node = lookup(result, prefix)
        if isinstance(node, Mapping):
            sources.append(node)
        flat = subtree(result, prefix) if prefix == "custom_metrics" else {}
        if flat:
            sources.append(flat)
    for source in sources:
        for key, value in source.items():
            if not isinstance(key, str) or key.partition("/")[0] in _SECTIONS:
                continue
            if isinstance(value, Mapping):  # {"agent_0": {"sharpe_ratio": ...}}
                figures = {k: _mean(value, k) for k in PERFORMANCE_KEYS if _mean(value, k) is not None}
                if figures:
                    parsed.performance.setdefault(key, {}).update(figures)
                continue
            agent, sep, name = key.rpartition("/")
            base = name[:-5] if name.endswith("_mean") else name
            if base in PERFORMANCE_KEYS and (name == base or name == base + "_mean"):
                target = parsed.performance.setdefault(agent if sep and "/" not in agent else None, {})
                if name == base or base not in target:
                    target[base] = value


def _mean(node: Mapping[str, Any], key: str) -> Any:
    value = node.get(key)
    return node.get(key + "_mean") if value is None else value
