"""The Gymnasium wrappers' cost per step, against the bare environment (and gymnasium's own statistics wrapper).

The vector wrapper is measured twice: on ``make_vec`` (CartPole's own NumPy-vectorised env, a cheap step) and on a
real ``SyncVectorEnv`` of 8 ``CartPole-v1`` timed by the thread's CPU, each with its own target.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import harness
from harness import Report, median, mmm, ratios

#: a real SyncVectorEnv x8 step with RecordVectorEpisodeMetrics against the bare one
SYNC_VECTOR_TARGET = 1.03


def single_loop(env: Any, actions: Sequence[int]) -> Callable[[], float]:
    """Seconds per step of ``env`` over ``actions``, resetting at episode ends."""
    env.reset(seed=0)
    step, reset_ = env.step, env.reset

    def run() -> float:
        started = time.perf_counter()
        for action in actions:
            _, _, terminated, truncated, _ = step(action)
            if terminated or truncated:
                reset_()
        return (time.perf_counter() - started) / len(actions)
    return run


def vector_loop(env: Any, actions: Any, clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
    """Seconds per (vector) step of ``env`` over the rows of ``actions`` (vector envs reset by themselves)."""
    env.reset(seed=0)
    step = env.step

    def run() -> float:
        started = clock()
        for row in actions:
            step(row)
        return (clock() - started) / len(actions)
    return run


def vector_times(envs: dict[str, Any], actions: Any, reps: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Interleaved seconds per vector step of each env (warmed up once first)."""
    loops = {name: vector_loop(env, actions, clock) for name, env in envs.items()}
    for loop in loops.values():
        loop()
    return harness.interleave(loops, reps)


def bench(report: Report, quick: bool) -> None:
    import gymnasium as gym
    import numpy as np

    from otel_rl.integrations.gymnasium import RecordEpisodeMetrics, RecordVectorEpisodeMetrics
    from otel_rl.testing import reset

    reset()
    reps = max(harness.size("reps", quick), 7)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, size=harness.size("gym_steps", quick)).tolist()

    envs = {"bare": gym.make("CartPole-v1"),
            "RecordEpisodeMetrics": RecordEpisodeMetrics(gym.make("CartPole-v1"), "PPO", "bench"),
            "gymnasium RecordEpisodeStatistics": gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1"))}
    loops = {k: single_loop(v, actions) for k, v in envs.items()}
    for loop in loops.values():
        loop()
    times = harness.interleave(loops, reps)
    r = median(ratios(times, "RecordEpisodeMetrics", "bare"))
    report.details["gymnasium_single"] = {k: [t * 1e6 for t in v] for k, v in times.items()}
    report.add("gymnasium", "CartPole-v1 step, bare", median(times["bare"]) * 1e6, "us")
    report.add("gymnasium", "CartPole-v1 step, RecordEpisodeMetrics", median(times["RecordEpisodeMetrics"]) * 1e6,
               "us", r, "bare step", "<= 1.02x", r <= 1.02)
    report.add("gymnasium", "CartPole-v1 step, gymnasium RecordEpisodeStatistics (reference)",
               median(times["gymnasium RecordEpisodeStatistics"]) * 1e6, "us",
               median(ratios(times, "gymnasium RecordEpisodeStatistics", "bare")), "bare step")

    # make_vec gives CartPole's own numpy-vectorised env: a cheap step, so the wrapper's share is the largest.
    vactions = rng.integers(0, 2, size=(harness.size("vec_steps", quick), 8))
    venvs = {"bare": gym.make_vec("CartPole-v1", num_envs=8),
             "RecordVectorEpisodeMetrics": RecordVectorEpisodeMetrics(gym.make_vec("CartPole-v1", num_envs=8),
                                                                      "PPO", "bench")}
    vtimes = vector_times(venvs, vactions, reps)
    vr = median(ratios(vtimes, "RecordVectorEpisodeMetrics", "bare"))
    report.details["gymnasium_vector"] = {k: [t * 1e6 for t in v] for k, v in vtimes.items()}
    report.add("gymnasium", "make_vec CartPole-v1 x8 step, bare", median(vtimes["bare"]) * 1e6, "us")
    report.add("gymnasium", "make_vec CartPole-v1 x8 step, RecordVectorEpisodeMetrics",
               median(vtimes["RecordVectorEpisodeMetrics"]) * 1e6, "us", vr, "bare step", "<= 1.02x", vr <= 1.02)
    for env in list(envs.values()) + list(venvs.values()):
        env.close()
    sync_vector(report, quick)


def sync_vector(report: Report, quick: bool) -> None:
    """``RecordVectorEpisodeMetrics`` on a real ``SyncVectorEnv`` of 8 CartPole-v1 (thread CPU per vector step)."""
    import gymnasium as gym
    import numpy as np

    from otel_rl.integrations.gymnasium import RecordVectorEpisodeMetrics
    from otel_rl.testing import reset

    reset()

    def make() -> Any:  # a real SyncVectorEnv: make_vec would give CartPole's own numpy-vectorised env
        return gym.vector.SyncVectorEnv([partial(gym.make, "CartPole-v1") for _ in range(8)])

    actions = np.random.default_rng(0).integers(0, 2, size=(harness.size("sync_vec_steps", quick), 8))
    bare, wrapped = make(), RecordVectorEpisodeMetrics(make(), "PPO", "bench")
    try:
        times = vector_times({"bare": bare, "wrapped": wrapped}, actions, harness.size("heavy_reps", quick),
                             time.thread_time)
    finally:
        bare.close()
        wrapped.close()
    r = ratios(times, "wrapped", "bare")
    report.details["gymnasium_sync_vector"] = {k: [t * 1e6 for t in v] for k, v in times.items()}
    report.add("gymnasium", "SyncVectorEnv CartPole-v1 x8 step, RecordVectorEpisodeMetrics",
               median(times["wrapped"]) * 1e6, "us", median(r), "bare step",
               f"<= {SYNC_VECTOR_TARGET}x", median(r) <= SYNC_VECTOR_TARGET,
               note=f"{mmm(r)}; bare {median(times['bare']) * 1e6:.1f} us")
    reset()
