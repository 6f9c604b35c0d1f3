"""Tiny, dependency-light REINFORCE agent for Gymnasium ``CartPole-v1``.

Pure numpy: a one-hidden-layer softmax policy trained with REINFORCE
(reward-to-go, normalised advantages, Adam) and a linear value baseline fit
by ridge regression on simple observation features.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]
EpisodeStats = list[tuple[float, int]]


class _Adam:
    """Minimal Adam optimiser over a dict of numpy parameters."""

    def __init__(self, params: dict[str, np.ndarray], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Apply one in-place descent step using ``grads``."""
        self.t += 1
        c1, c2 = 1.0 - self.b1 ** self.t, 1.0 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1.0 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1.0 - self.b2) * g * g
            params[k] -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


class PolicyGradientAgent:
    """REINFORCE with a linear value baseline and a tiny tanh-MLP softmax policy.

    Args:
        obs_dim: Size of the (flat) observation vector.
        n_actions: Number of discrete actions.
        hidden: Hidden units of the policy network (0 gives a linear policy).
        lr: Adam learning rate for the policy.
        gamma: Discount used for reward-to-go.
        entropy_coef: Weight of the entropy bonus in the policy loss.
        vf_ridge: L2 regularisation of the least-squares value fit.
        seed: Seeds weight init, action sampling and the first ``env.reset``.
    """

    def __init__(self, obs_dim: int = 4, n_actions: int = 2, hidden: int = 32,
                 lr: float = 0.02, gamma: float = 0.99, entropy_coef: float = 0.0,
                 vf_ridge: float = 1e-2, seed: int = 0) -> None:
        self.obs_dim, self.n_actions, self.hidden = obs_dim, n_actions, hidden
        self.gamma, self.entropy_coef, self.vf_ridge = gamma, entropy_coef, vf_ridge
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.env_seeded = False  # set by collect_batch after the first seeded reset
        if hidden > 0:
            self.params: dict[str, np.ndarray] = {
                "W1": self.rng.normal(0.0, 1.0 / np.sqrt(obs_dim), (obs_dim, hidden)),
                "b1": np.zeros(hidden),
                "W2": self.rng.normal(0.0, 0.01, (hidden, n_actions)),
                "b2": np.zeros(n_actions),
            }
        else:
            self.params = {"W2": self.rng.normal(0.0, 0.01, (obs_dim, n_actions)),
                           "b2": np.zeros(n_actions)}
        self.vf_weights = np.zeros(self._value_features(np.zeros((1, obs_dim))).shape[1])
        self.opt = _Adam(self.params, lr)

    # -- policy -----------------------------------------------------------------
    def _forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (hidden activations or obs, action probabilities) for a batch."""
        p = self.params
        h = np.tanh(obs @ p["W1"] + p["b1"]) if self.hidden > 0 else obs
        logits = h @ p["W2"] + p["b2"]
        logits = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(logits)
        return h, e / e.sum(axis=-1, keepdims=True)

    def act(self, obs: Any) -> int:
        """Sample an action from the current stochastic policy."""
        p = self.params
        x = np.asarray(obs, dtype=np.float64).ravel()
        h = np.tanh(x @ p["W1"] + p["b1"]) if self.hidden > 0 else x
        logits = h @ p["W2"] + p["b2"]
        cdf = np.cumsum(np.exp(logits - logits.max()))
        return min(int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right")),
                   self.n_actions - 1)

    # -- value baseline ---------------------------------------------------------
    @staticmethod
    def _value_features(obs: np.ndarray) -> np.ndarray:
        """Features of the linear value head: [obs, obs**2, 1]."""
        return np.concatenate([obs, obs ** 2, np.ones((obs.shape[0], 1))], axis=1)

    def value(self, obs: np.ndarray) -> np.ndarray:
        """Predicted discounted return for each observation in ``obs``."""
        return self._value_features(np.asarray(obs, dtype=np.float64)) @ self.vf_weights

    def _fit_value(self, obs: np.ndarray, returns: np.ndarray) -> None:
        """Refit the linear value head by ridge regression on this batch."""
        x = self._value_features(obs)
        a = x.T @ x + self.vf_ridge * len(x) * np.eye(x.shape[1])
        self.vf_weights = np.linalg.solve(a, x.T @ returns)

    # -- learning ---------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One REINFORCE step on ``batch`` (keys: obs, actions, returns).

        Returns policy_loss, value_loss (baseline MSE before refitting) and the
        mean policy entropy over the batch.
        """
        obs = np.asarray(batch["obs"], dtype=np.float64)
        actions = np.asarray(batch["actions"], dtype=np.int64)
        returns = np.asarray(batch["returns"], dtype=np.float64)
        n = len(actions)

        values = self.value(obs)
        value_loss = float(np.mean((returns - values) ** 2))
        adv = returns - values
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)

        h, probs = self._forward(obs)
        logp = np.log(probs + 1e-12)
        entropy_each = -(probs * logp).sum(axis=1)
        entropy = float(entropy_each.mean())
        policy_loss = float(-np.mean(logp[np.arange(n), actions] * adv)) - self.entropy_coef * entropy

        # d(loss)/d(logits): policy-gradient term plus entropy-bonus term.
        onehot = np.zeros_like(probs)
        onehot[np.arange(n), actions] = 1.0
        dlogits = -(onehot - probs) * adv[:, None]
        if self.entropy_coef:
            dlogits += self.entropy_coef * probs * (logp + entropy_each[:, None])
        dlogits /= n

        p = self.params
        grads = {"W2": h.T @ dlogits, "b2": dlogits.sum(axis=0)}
        if self.hidden > 0:
            dpre = (dlogits @ p["W2"].T) * (1.0 - h ** 2)
            grads["W1"] = obs.T @ dpre
            grads["b1"] = dpre.sum(axis=0)
        grad_norm = float(np.sqrt(sum(float(np.sum(g ** 2)) for g in grads.values())))
        self.opt.step(p, grads)
        _, new_probs = self._forward(obs)
        kl = float(np.mean(np.sum(probs * (logp - np.log(new_probs + 1e-12)), axis=1)))
        variance = float(np.var(returns))
        explained = 1.0 - float(np.var(returns - values)) / variance if variance > 0 else 0.0

        self._fit_value(obs, returns)
        return {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy, "grad_norm": grad_norm,
                "kl_divergence": kl, "explained_variance": explained, "learning_rate": self.opt.lr,
                "entropy_coefficient": self.entropy_coef}


def _reward_to_go(rewards: list[float], gamma: float) -> np.ndarray:
    """Discounted reward-to-go for one episode."""
    out = np.empty(len(rewards))
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        running = rewards[i] + gamma * running
        out[i] = running
    return out


def collect_batch(env: Any, agent: PolicyGradientAgent, episodes: int,
                  seed: int | None = None) -> tuple[Batch, EpisodeStats]:
    """Run ``episodes`` full episodes with ``agent`` on ``env``.

    The first reset ever done for ``agent`` uses ``seed`` (default
    ``agent.seed``), later resets continue the env's own RNG, so runs are
    deterministic. Returns the batch (obs, actions, rewards, returns) and a
    list of ``(total_reward, length)`` per finished episode.
    """
    obs_buf: list[np.ndarray] = []
    act_buf: list[int] = []
    rew_buf: list[float] = []
    ret_buf: list[np.ndarray] = []
    stats: EpisodeStats = []
    for _ in range(episodes):
        if seed is not None or not agent.env_seeded:
            obs, _ = env.reset(seed=agent.seed if seed is None else seed)
            agent.env_seeded, seed = True, None
        else:
            obs, _ = env.reset()
        rewards: list[float] = []
        done = False
        while not done:
            action = agent.act(obs)
            obs_buf.append(np.asarray(obs, dtype=np.float64).ravel())
            act_buf.append(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            done = bool(terminated or truncated)
        rew_buf.extend(rewards)
        ret_buf.append(_reward_to_go(rewards, agent.gamma))
        stats.append((float(sum(rewards)), len(rewards)))
    batch: Batch = {
        "obs": np.array(obs_buf, dtype=np.float64).reshape(len(obs_buf), -1),
        "actions": np.array(act_buf, dtype=np.int64),
        "rewards": np.array(rew_buf, dtype=np.float64),
        "returns": np.concatenate(ret_buf) if ret_buf else np.empty(0),
    }
    return batch, stats


def train_iteration(env: Any, agent: PolicyGradientAgent,
                    episodes_per_iter: int = 10) -> dict[str, float | int]:
    """Collect one batch, update the agent, return a flat RLlib-style result."""
    started = time.perf_counter()
    batch, stats = collect_batch(env, agent, episodes_per_iter)
    sampling = time.perf_counter() - started
    losses = agent.update(batch)
    rewards = np.array([r for r, _ in stats], dtype=np.float64)
    lengths = np.array([n for _, n in stats], dtype=np.float64)
    return {
        "episode_reward_mean": float(rewards.mean()),
        "episode_reward_min": float(rewards.min()),
        "episode_reward_max": float(rewards.max()),
        "episode_len_mean": float(lengths.mean()),
        "episodes_this_iter": len(stats),
        # Not an RLlib step key on purpose: the demo counts steps with the Gymnasium wrapper.
        "steps_this_iter": int(lengths.sum()),
        "episode_returns": rewards.tolist(),
        "policy_loss": losses["policy_loss"],
        "vf_loss": losses["value_loss"],
        "entropy": losses["entropy"],
        # Training signals, under otel-rl's plain keys.
        "learning_rate": losses["learning_rate"],
        "kl_divergence": losses["kl_divergence"],
        "explained_variance": losses["explained_variance"],
        "grad_norm": losses["grad_norm"],
        "entropy_coefficient": losses["entropy_coefficient"],
        "env_steps_per_second": float(lengths.sum()) / sampling if sampling > 0 else None,
    }
