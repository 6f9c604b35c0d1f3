"""Gymnasium wrappers that record every finished episode and count environment steps.

Per finished episode: ``rl_training_episodes_total`` +1, and ``rl_training_episode_reward`` /
``rl_training_episode_length`` observe its return and length, for the wrapper's ``agent_id``. Environment steps
are counted in a plain integer and handed to ``rl_training_environment_steps_total`` once per episode (and every
``flush_every`` steps, on ``reset``, on ``close`` and before every collection: a scrape, an OTLP export, the final
export of ``shutdown``), so a step costs no metric call and no step is lost when ``close`` is never called. A
flush from the collecting thread and one from the stepping thread never count the same steps twice: each takes
its share of the count under the flush lock and adds it to the counter after releasing the lock (a worker's
first add starts its telemetry, which must not run under that lock).

After fork, a child's copy of a wrapper starts its count from the steps the parent had not handed over yet (the
parent hands them over too): wrap environments in the process that steps them, as Ray workers and SB3's
``SubprocVecEnv`` do.

When a ``RecordEpisodeStatistics`` wrapper sits below, its ``info["episode"]`` figures are used (masked by
``info["_episode"]`` for vector environments), so wrappers that rescale rewards above it do not change what is
recorded.

The wrappers never raise into ``env.step()``: a reward that is no number (None, ``"1"``, ``10**400``, an object
array that does not convert, a vector of the wrong shape) is dropped and counted in
``otel_rl_dropped_values_total{metric="rl_training_episode_reward"}`` with one warning, and that episode's return is
not observed (its count and length still are); a Decimal or Fraction reward is used as a float. An
``info["episode"]`` that is not RecordEpisodeStatistics' ``{"r", "l"}`` is logged once and the wrapper's own
figures are used. The step result is always passed on unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from otel_rl._internal.hints import install_hint

try:
    import gymnasium as gym
    import numpy as np
    from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"otel_rl.integrations.gymnasium needs Gymnasium and NumPy: {install_hint('gym')}") from exc

from otel_rl._internal import held_back as _held_back
from otel_rl._internal import recording as _rec
from otel_rl._internal import store as _store
from otel_rl._internal.errors import describe
from otel_rl._internal.store import REGISTRY as _REGISTRY

__all__ = ["RecordEpisodeMetrics", "RecordVectorEpisodeMetrics", "wrap"]

_FLUSH_EVERY = 1000
_add = np.add
_add_env_steps = _rec.add_env_steps
_ndarray = np.ndarray
_BOOL = np.dtype(np.bool_)
_EPISODE_REWARD = "rl_training_episode_reward"  #: where a reward that is no number is counted as dropped


class _Relabelling:
    """What the zero-code instrumentors ask of both recorders (the wrappers below)."""

    _key: tuple[str, str]
    _steps_key: tuple[str]

    def flush(self) -> None:
        raise NotImplementedError

    def relabel(self, algorithm: str) -> None:
        """Record under ``algorithm`` from now on; the steps so far are flushed under the name they were taken
        under. For the zero-code instrumentors, which learn the algorithm's name after making the environment."""
        self.flush()
        self._key = (algorithm, self._key[1])
        self._steps_key = (algorithm,)

    def yield_to_outer(self) -> None:
        """Called on the recorders below when one is made above them: a recorder the script placed keeps
        recording; the zero-code instrumentors' subclasses step aside (see :func:`_take_over`)."""


class RecordEpisodeMetrics(_Relabelling, gym.Wrapper):
    """Records the episodes and environment steps of a single environment."""

    def __init__(self, env: gym.Env, algorithm: str = "default", agent_id: str = "default",
                 flush_every: int = _FLUSH_EVERY) -> None:
        _reject_sb3_vec_env(env)
        _take_over(env)
        super().__init__(env)
        self._key = (str(algorithm), str(agent_id))
        self._steps_key = (self._key[0],)
        self._flush_every = flush_every
        # Steps since the wrapper was made; only the stepping thread writes it. _flushed (how many of them the
        # counter has) is written only under the flush lock, so a flush from a collection can run at any time.
        self._steps = 0
        self._flushed = 0
        self._next_flush = flush_every
        self._start_episode()
        _held_back.hold_back(self)

    def _start_episode(self) -> None:
        self._return = 0.0
        self._return_valid = True  # False after a step reward that is no number
        self._start = self._steps  # the current episode's first step

    def step(self, action: Any):
        # The hot path: two attribute updates and a comparison; the result tuple is passed on as it is. Nothing
        # here raises into the caller's env.step(): a reward that is no number is dropped and counted instead.
        result = self.env.step(action)
        try:
            self._return += result[1]  # type: ignore[operator]  # SupportsFloat: a number or a numpy scalar
        except Exception:  # noqa: BLE001 (None, "1", Decimal, 10**400, ...: the slow path)
            self._bad_reward(result)
        self._steps += 1
        try:
            if result[2] or result[3]:
                self._end_episode(result[4])
            elif self._steps >= self._next_flush:
                self.flush()
        except Exception:  # noqa: BLE001 (recording never raises)
            _malformed(self, result)
        return result

    def _bad_reward(self, result: Any) -> None:
        reward = result[1] if isinstance(result, tuple) and len(result) > 1 else None
        value = _store.number(reward)
        if type(value) is float:  # a Decimal or Fraction: a number after all
            try:
                self._return += value
                return
            except Exception:  # noqa: BLE001 (recording never raises)
                value = _store.WRONG_TYPE
        # The episode's return is unknown now: it is not observed at the episode's end (its length still is).
        self._return_valid = False
        _REGISTRY.drop(_EPISODE_REWARD, value, reward)  # type: ignore[arg-type]

    def reset(self, **kwargs: Any):
        self.flush()
        self._start_episode()
        return self.env.reset(**kwargs)

    def close(self) -> None:
        self.flush()
        super().close()

    def flush(self) -> None:
        """Hand the steps counted so far to ``rl_training_environment_steps_total`` (safe from any thread)."""
        with _held_back.flushing():  # takes this flush's share; another flush finds only steps taken after it
            steps = self._steps
            pending = steps - self._flushed
            self._flushed = steps
            self._next_flush = steps + self._flush_every
            key = self._steps_key
        if pending:
            _add_env_steps(key, pending)

    def _end_episode(self, info: dict[str, Any]) -> None:
        episode = _episode_info(self, info)
        if episode is not None:
            episode_return, length = episode["r"], episode["l"]
        else:
            episode_return = self._return if self._return_valid else None
            length = self._steps - self._start
        if episode_return is not None:
            _rec.add_episode(self._key, _scalar(episode_return), _scalar(length))
        else:  # its return is unknown: a step reward was no number (counted as dropped when it came)
            _rec.add_episodes(self._key, 1, (), (_scalar(length),))
        self.flush()
        self._start_episode()


class RecordVectorEpisodeMetrics(_Relabelling, VectorWrapper):
    """Records the episodes and environment steps of a vector environment, in any autoreset mode."""

    def __init__(self, env: VectorEnv, algorithm: str = "default", agent_id: str = "default",
                 flush_every: int = _FLUSH_EVERY) -> None:
        _reject_sb3_vec_env(env)
        _take_over(env)
        super().__init__(env)
        self._key = (str(algorithm), str(agent_id))
        mode = self.env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        # In next-step mode the step after an episode's end only resets that sub-environment: it is no step of
        # any episode, so it counts neither in the length nor in the environment steps.
        self._next_step_reset = mode == AutoresetMode.NEXT_STEP or mode == AutoresetMode.NEXT_STEP.value
        self._n = self.num_envs
        self._returns = np.zeros(self._n, dtype=np.float64)
        # Sub-environments whose current return is unknown (a reward that was no number): their returns are not
        # observed when their episodes end, their lengths still are. Usually empty.
        self._invalid: set[int] = set()
        # Vector steps since the wrapper was made: the only per-step update. Episode lengths are steps since
        # their start, and the environment steps are n * _t less the autoreset slots.
        self._t = 0
        self._zeros = bytes(self._n)  # a bool array of no episode end, as bytes
        self._indices = range(self._n)
        self._starts = [0] * self._n  # a list: read and written one sub-environment at a time
        # (autoreset slots so far, including those of the coming step; the step _t at which the last episodes
        # ended; their sub-environments): one tuple, replaced whole, so that a flush from a collecting thread
        # reads a consistent state. The coming step's slots are no steps yet: flush() adds them back while _t is
        # still that step.
        self._resets: tuple[int, int, list[int]] = (0, -1, [])
        # What the steps counter already has (written only under the flush lock, so a flush from a collection
        # can run at any time), and the vector step of the next flush without an episode end.
        self._steps_key = (self._key[0],)
        self._steps_flushed = 0
        self._flush_interval = -(-flush_every // max(self._n, 1))  # vector steps of up to flush_every steps
        self._flush_t = self._flush_interval
        _held_back.hold_back(self)

    def step(self, actions: Any):
        # The hot path: one in-place add, the done arrays' bytes compared with zeros and one integer increment;
        # the result tuple is passed on as it is. Nothing here raises into the caller's env.step(): a reward that
        # is no number is dropped and counted instead.
        result = self.env.step(actions)
        try:
            rewards, terminated, truncated = result[1], result[2], result[3]
        except Exception:  # noqa: BLE001 (not the 5-tuple of the Gymnasium API)
            _malformed(self, result)
            return result
        try:
            _add(self._returns, rewards, self._returns)  # out= as a keyword costs more
        except Exception:  # noqa: BLE001 (object dtype, wrong shape, None: the slow path)
            self._bad_rewards(rewards)
        t = self._t = self._t + 1
        try:
            if type(terminated) is _ndarray and type(truncated) is _ndarray and terminated.dtype is _BOOL \
                    and truncated.dtype is _BOOL:  # comparing the raw bytes with zeros is 6x faster than any()
                ends, cuts = terminated.tobytes(), truncated.tobytes()
                zeros = self._zeros
                if ends == zeros and cuts == zeros:
                    if t >= self._flush_t:
                        self.flush()
                    return result
                indices = [i for i in self._indices if ends[i] or cuts[i]]  # no further array operation
            elif np.any(terminated) or np.any(truncated):
                indices = np.flatnonzero(np.logical_or(terminated, truncated)).tolist()
            else:
                if t >= self._flush_t:
                    self.flush()
                return result
            self._finish(indices, result[4])
        except Exception:  # noqa: BLE001 (recording never raises)
            _malformed(self, result)
        return result

    def _bad_rewards(self, rewards: Any) -> None:
        try:  # an object array of numbers is fine once converted
            values = np.asarray(rewards, dtype=np.float64)
            if rewards is not None and values.shape in ((), (self._n,)):
                self._returns += values
                return
        except Exception:  # noqa: BLE001 (recording never raises)
            pass
        # These returns are unknown now: not observed when their episodes end (their lengths still are).
        self._invalid.update(self._indices)
        _REGISTRY.drop(_EPISODE_REWARD, _store.NONE if rewards is None else _store.WRONG_TYPE, rewards)

    def _finish(self, indices: list[int], infos: Any) -> None:
        # Episodes end every few steps of a CartPole x8: per sub-environment scalar work beats array operations.
        episode: Any = _episode_info(self, infos) if infos else None  # no call for the usual empty info
        mask = infos.get("_episode") if episode is not None else None
        returns, starts, t, key, invalid = self._returns, self._starts, self._t, self._key, self._invalid
        rewards: list[float] = []  # the returns known of the finished episodes, and their lengths
        lengths: list[float] = []
        own = returns.tolist()  # one array call for every return, not one per finished episode
        next_start = t + 1 if self._next_step_reset else t  # in next-step mode the coming step only resets
        for i in indices:
            from_info = False
            if mask is not None:
                try:
                    if mask[i]:
                        episode_return, length = float(episode["r"][i]), float(episode["l"][i])
                        from_info = True
                except Exception:  # noqa: BLE001 (figures that do not fit the sub-environments: use the wrapper's own)
                    _malformed(self, infos)
                    mask = None
            if not from_info:
                episode_return, length = own[i], float(t - starts[i])
            if from_info or i not in invalid:
                rewards.append(episode_return)
            lengths.append(length)
            returns[i] = 0.0
            starts[i] = next_start
            if invalid:
                invalid.discard(i)
        if len(rewards) == 1 == len(lengths):  # the usual case: one episode ended, its return known
            _rec.add_episode(key, rewards[0], lengths[0])
        else:
            _rec.add_episodes(key, len(indices), rewards, lengths)
        if self._next_step_reset:
            self._resets = (self._resets[0] + len(indices), t, indices)
        self.flush()

    def reset(self, **kwargs: Any):
        self.flush()
        options = kwargs.get("options") or {}
        mask = options.get("reset_mask") if isinstance(options, dict) else None
        if mask is None:
            self._returns[:] = 0.0
            self._starts = [self._t] * self._n
            self._invalid.clear()
            resets, ended_at, pending = self._resets
            # The autoreset slots of the coming step do not come: the environment is reset instead.
            self._resets = (resets - len(pending) if ended_at == self._t else resets, -1, [])
        else:
            self._returns[mask] = 0.0
            masked = np.flatnonzero(mask).tolist()
            for i in masked:
                self._starts[i] = self._t
                self._invalid.discard(i)
            resets, ended_at, pending = self._resets
            if ended_at == self._t:  # a sub-environment reset now takes a real step next, not an autoreset
                kept = [i for i in pending if i not in masked]
                self._resets = (resets - (len(pending) - len(kept)), ended_at, kept)
        return self.env.reset(**kwargs)

    def close(self, **kwargs: Any) -> None:
        self.flush()
        super().close(**kwargs)

    def flush(self) -> None:
        """Hand the steps counted so far to ``rl_training_environment_steps_total`` (safe from any thread)."""
        with _held_back.flushing():  # takes this flush's share; another flush finds only steps taken after it
            t = self._t  # read before _resets: slots counted for a later step only lower the figure
            resets, ended_at, pending = self._resets
            steps = self._n * t - resets + (len(pending) if ended_at == t else 0)
            # A flush from another thread may read a figure a step behind: the counter only takes what is new.
            new = steps - self._steps_flushed
            if new > 0:
                self._steps_flushed = steps
            self._flush_t = t + self._flush_interval
            key = self._steps_key
        if new > 0:
            _add_env_steps(key, float(new))


def wrap(env: Any, algorithm: str = "default", agent_id: str = "default", **kwargs: Any):
    """Wrap a single or vector environment with the matching recorder."""
    if isinstance(env, VectorEnv):
        return RecordVectorEpisodeMetrics(env, algorithm, agent_id, **kwargs)
    return RecordEpisodeMetrics(env, algorithm, agent_id, **kwargs)


def _take_over(env: Any) -> None:
    """A recorder that zero-code instrumentation put below (:mod:`otel_rl._internal.instrumentors`) stops
    recording: this one records, so a script written for otel-rl counts each episode once under ``otel-rl run``
    too."""
    for _ in range(100):
        if env is None:
            return
        if isinstance(env, (RecordEpisodeMetrics, RecordVectorEpisodeMetrics)):
            env.yield_to_outer()
        env = getattr(env, "env", None)


def _reject_sb3_vec_env(env: Any) -> None:
    """A Stable-Baselines3 ``VecEnv`` is no Gymnasium environment: say what to use instead of failing inside."""
    if any(cls.__name__ == "VecEnv" and cls.__module__.startswith("stable_baselines3")
           for cls in type(env).__mro__):
        raise TypeError(
            f"otel-rl's Gymnasium wrappers take a gymnasium.Env or gymnasium.vector.VectorEnv, not the "
            f"Stable-Baselines3 VecEnv {type(env).__name__}: pass "
            "callback=otel_rl.integrations.sb3.OtelRLCallback() to model.learn() instead (it records the episodes "
            "of every sub-environment), or wrap each sub-environment before the VecEnv is built")


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.ndarray) and value.size == 1 else value


def _episode_info(wrapper: Any, info: Any) -> Any:
    """``info["episode"]`` when it is the ``{"r": ..., "l": ...}`` of RecordEpisodeStatistics, else None (the
    wrapper's own figures are used; anything else there is logged once)."""
    if not info or not isinstance(info, Mapping):
        return None
    episode = info.get("episode")
    if episode is None:
        return None
    if isinstance(episode, Mapping) and "r" in episode and "l" in episode:
        return episode
    _malformed(wrapper, info)
    return None


def _malformed(wrapper: Any, what: Any) -> None:
    """Log once per wrapper class that a step result or info did not have the expected form."""
    _REGISTRY.warn_once(
        (type(wrapper).__name__, "malformed_step"),
        "otel-rl: %s got a step result or info it cannot read (%s); the step is passed on unchanged and the "
        "wrapper's own episode figures are used where it can. Logged once.", type(wrapper).__name__,
        describe(what))
