"""The Gymnasium wrappers: episodes and steps recorded exactly, in every autoreset mode."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from otel_rl import testing
from otel_rl.integrations.gymnasium import RecordEpisodeMetrics, RecordVectorEpisodeMetrics, wrap


class _Countdown(gym.Env):
    """An episode of ``length`` steps with reward -1.5 each (negative on purpose)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 7) -> None:
        self.length = length
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, dtype=np.float32), -1.5, self.t >= self.length, False, {}


def _run_single(env, steps: int) -> int:
    env.reset(seed=0)
    episodes = 0
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            episodes += 1
            env.reset()
    env.close()
    return episodes


def test_single_env_records_each_episode_and_all_steps():
    """Every finished episode counts once with its (negative) return and length; every step is counted."""
    env = RecordEpisodeMetrics(_Countdown(7), algorithm="PPO", agent_id="a0")
    episodes = _run_single(env, 50)
    assert episodes == 7
    assert testing.value("rl_training_episodes_total", algorithm="PPO", agent_id="a0") == 7
    assert testing.value("rl_training_environment_steps_total", algorithm="PPO") == 50
    reward = testing.histogram("rl_training_episode_reward", algorithm="PPO", agent_id="a0")
    assert reward.count == 7 and reward.sum == pytest.approx(7 * 7 * -1.5)
    length = testing.histogram("rl_training_episode_length", algorithm="PPO", agent_id="a0")
    assert length.sum == 49 and length.min == 7 and length.max == 7


def test_single_env_flushes_steps_without_an_episode_end():
    """Steps of an unfinished episode reach the counter every ``flush_every`` steps and on close."""
    env = RecordEpisodeMetrics(_Countdown(10_000), algorithm="A", flush_every=100)
    env.reset()
    for _ in range(250):
        env.step(0)
    assert testing.value("rl_training_environment_steps_total", algorithm="A") == 200
    env.close()
    assert testing.value("rl_training_environment_steps_total", algorithm="A") == 250
    assert testing.value("rl_training_episodes_total", algorithm="A", agent_id="default") is None


def test_single_env_uses_record_episode_statistics_when_present():
    """With RecordEpisodeStatistics below, its episode return is used (rewards rescaled above it do not count)."""
    base = gym.wrappers.RecordEpisodeStatistics(_Countdown(4))
    scaled = gym.wrappers.TransformReward(base, lambda r: r * 10)
    env = RecordEpisodeMetrics(scaled, algorithm="S")
    _run_single(env, 4)
    assert testing.histogram("rl_training_episode_reward", algorithm="S", agent_id="default").sum == -6.0


def _vector(mode: AutoresetMode, lengths=(3, 5)):
    return gym.vector.SyncVectorEnv([lambda n=n: _Countdown(n) for n in lengths], autoreset_mode=mode)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_counts_episodes_lengths_and_steps_in_each_autoreset_mode(mode):
    """Episodes of different lengths in a vector env are recorded exactly; autoreset steps are not env steps."""
    env = RecordVectorEpisodeMetrics(_vector(mode), algorithm="V", agent_id="a")
    env.reset(seed=0)
    for _ in range(30):
        env.step(np.zeros(2, dtype=np.int64))
    env.close()
    if mode == AutoresetMode.NEXT_STEP:
        # env0: episodes of 3 steps + 1 reset step -> 30 // 4 = 7 episodes, 28 steps + 2 left;
        # env1: 5 + 1 -> 5 episodes, 25 steps + 5 = 30 slots, the 5th episode ends at slot 29.
        expected_episodes, expected_steps = 7 + 5, (30 - 7) + (30 - 5)
    else:
        expected_episodes, expected_steps = 30 // 3 + 30 // 5, 60
    assert testing.value("rl_training_episodes_total", algorithm="V", agent_id="a") == expected_episodes
    assert testing.value("rl_training_environment_steps_total", algorithm="V") == expected_steps
    lengths = testing.histogram("rl_training_episode_length", algorithm="V", agent_id="a")
    assert sorted({lengths.min, lengths.max}) == [3, 5]
    rewards = testing.histogram("rl_training_episode_reward", algorithm="V", agent_id="a")
    assert rewards.sum == pytest.approx(-1.5 * lengths.sum)


def test_vector_env_uses_the_episode_mask_of_record_episode_statistics():
    """With RecordEpisodeStatistics on the vector env, its info["episode"] under the "_episode" mask is used."""
    inner = gym.wrappers.vector.RecordEpisodeStatistics(_vector(AutoresetMode.NEXT_STEP))
    env = RecordVectorEpisodeMetrics(gym.wrappers.vector.TransformReward(inner, lambda r: r * 100), algorithm="M")
    env.reset(seed=0)
    for _ in range(6):
        env.step(np.zeros(2, dtype=np.int64))
    rewards = testing.histogram("rl_training_episode_reward", algorithm="M", agent_id="default")
    assert rewards.count == 2  # env0 at step 3, env1 at step 5
    assert rewards.sum == pytest.approx(-1.5 * 3 + -1.5 * 5)


def test_wrap_picks_the_vector_wrapper_for_vector_envs():
    """wrap() returns the single or the vector recorder according to the environment."""
    assert isinstance(wrap(_Countdown()), RecordEpisodeMetrics)
    assert isinstance(wrap(_vector(AutoresetMode.NEXT_STEP)), RecordVectorEpisodeMetrics)


def test_real_cartpole_steps_match_the_loop():
    """On real CartPole the counted steps equal the steps taken and episode lengths add up."""
    env = wrap(gym.make("CartPole-v1"), algorithm="C", agent_id="a0")
    episodes = _run_single(env, 600)
    assert testing.value("rl_training_environment_steps_total", algorithm="C") == 600
    assert testing.value("rl_training_episodes_total", algorithm="C", agent_id="a0") == episodes
    assert testing.histogram("rl_training_episode_length", algorithm="C", agent_id="a0").sum <= 600


# -- hostile rewards and infos: dropped and counted, the step passed on unchanged -------------------------------------


class _Scripted(gym.Env):
    """Episodes of 3 steps with a fixed reward and, at the end, a fixed info."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, reward, end_info=None) -> None:
        self.reward, self.end_info, self.t = reward, end_info or {}, 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= 3
        return np.zeros(1, dtype=np.float32), self.reward, done, False, self.end_info if done else {}


BAD_REWARDS = [("none", None, "none"), ("text", "1", "wrong_type"), ("huge_int", 10**400, "inf"),
               ("object", object(), "wrong_type")]


@pytest.mark.parametrize("reward,reason", [r[1:] for r in BAD_REWARDS], ids=[r[0] for r in BAD_REWARDS])
def test_single_env_bad_reward_is_dropped_and_the_step_passes_through(reward, reason):
    """A reward that is no number never raises into env.step(): the result is returned as is, the step and the
    episode still count, the episode's return is dropped and counted with its reason."""
    env = RecordEpisodeMetrics(_Scripted(reward), algorithm="B")
    env.reset()
    for _ in range(6):
        result = env.step(0)
        assert result[1] is reward
        if result[2]:
            env.reset()
    assert testing.value("rl_training_episodes_total", algorithm="B", agent_id="default") == 2
    assert testing.value("rl_training_environment_steps_total", algorithm="B") == 6
    assert testing.histogram("rl_training_episode_length", algorithm="B", agent_id="default").count == 2
    assert testing.histogram("rl_training_episode_reward", algorithm="B", agent_id="default") is None
    assert testing.dropped("rl_training_episode_reward", reason) == 6


def test_single_env_decimal_reward_is_used_as_a_number():
    """A Decimal reward (float + Decimal raises) is converted and recorded."""
    from decimal import Decimal

    env = RecordEpisodeMetrics(_Scripted(Decimal("0.5")), algorithm="D")
    env.reset()
    for _ in range(3):
        env.step(0)
    assert testing.histogram("rl_training_episode_reward", algorithm="D", agent_id="default").sum == 1.5


def test_single_env_malformed_episode_info_falls_back_to_own_figures(caplog):
    """``info["episode"] = "oops"`` is logged once and the wrapper's own return and length are recorded."""
    env = RecordEpisodeMetrics(_Scripted(2.0, {"episode": "oops"}), algorithm="O")
    for _ in range(3):
        env.reset()
        for _ in range(3):
            env.step(0)
    reward = testing.histogram("rl_training_episode_reward", algorithm="O", agent_id="default")
    assert reward.count == 3 and reward.sum == 18.0
    assert len([r for r in caplog.records if "cannot read" in r.getMessage()]) == 1


class _ScriptedVector(gym.vector.VectorEnv):
    """Three sub-environments; sub-environment 0 ends an episode every step; fixed rewards and infos."""

    def __init__(self, rewards, infos=None) -> None:
        self.num_envs = 3
        self.rewards, self.infos = rewards, infos or {}
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, 3)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, 3)

    def reset(self, *, seed=None, options=None):
        return np.zeros((3, 1)), {}

    def step(self, actions):
        return (np.zeros((3, 1)), self.rewards, np.array([True, False, False]), np.zeros(3, dtype=bool),
                self.infos)


@pytest.mark.parametrize("rewards", [
    np.array(["a", "b", "c"], dtype=object), np.array([1.0, 2.0]), np.ones((3, 2)), None, [10**400] * 3,
], ids=["object_strings", "too_short", "two_dimensional", "none", "huge_ints"])
def test_vector_env_bad_rewards_are_dropped_and_the_step_passes_through(rewards):
    """Object-dtype, wrong-shape or missing vector rewards never raise; episodes and steps still count."""
    env = RecordVectorEpisodeMetrics(_ScriptedVector(rewards), algorithm="VB")
    env.reset()
    for _ in range(4):
        result = env.step(np.zeros(3, dtype=np.int64))
        assert result[1] is rewards
    assert testing.value("rl_training_episodes_total", algorithm="VB", agent_id="default") == 4
    assert testing.value("rl_training_environment_steps_total", algorithm="VB") == 12
    assert testing.histogram("rl_training_episode_reward", algorithm="VB", agent_id="default") is None
    assert testing.dropped("rl_training_episode_reward", "none" if rewards is None else "wrong_type") == 4


def test_vector_env_object_array_of_numbers_is_converted():
    """An object array of Decimals converts to floats and is recorded."""
    from decimal import Decimal

    env = RecordVectorEpisodeMetrics(_ScriptedVector(np.array([Decimal(1)] * 3, dtype=object)), algorithm="VO")
    env.reset()
    for _ in range(2):
        env.step(np.zeros(3, dtype=np.int64))
    assert testing.histogram("rl_training_episode_reward", algorithm="VO", agent_id="default").sum == 2.0


def test_vector_env_malformed_episode_info_falls_back_to_own_figures():
    """A vector ``info["episode"]`` that is not RecordEpisodeStatistics' is ignored for the wrapper's own figures."""
    env = RecordVectorEpisodeMetrics(_ScriptedVector(np.full(3, 2.0), {"episode": "oops", "_episode": [1, 0, 0]}),
                                     algorithm="VI")
    env.reset()
    for _ in range(2):
        env.step(np.zeros(3, dtype=np.int64))
    assert testing.histogram("rl_training_episode_reward", algorithm="VI", agent_id="default").sum == 4.0


def _steps_on_metrics(handle, algorithm: str) -> float | None:
    """The environment steps of ``algorithm`` as a scrape of /metrics renders them (the fast renderer)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(handle.metrics_text().decode()):
        for sample in family.samples:
            if sample.name == "rl_training_environment_steps_total" and sample.labels == {"algorithm": algorithm}:
                return sample.value
    return None


def _steps_collected(handle, algorithm: str) -> float | None:
    """The environment steps of ``algorithm`` in an OpenTelemetry collection (what an OTLP export sends)."""
    handle.pull_reader.collect()
    for rm in handle.pull_reader.latest.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "rl_training_environment_steps_total":
                    for point in metric.data.data_points:
                        if point.attributes == {"algorithm": algorithm}:
                            return point.value
    return None


@pytest.mark.parametrize("read", [_steps_on_metrics, _steps_collected], ids=["scrape", "collection"])
def test_steps_of_an_unfinished_episode_reach_every_collection(read):
    """A run that never calls env.close(): the steps held back by the wrappers are flushed before a scrape and
    before an OpenTelemetry collection, single and vector environments alike, without counting any twice."""
    import otel_rl

    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    env = wrap(gym.make("CartPole-v1"), algorithm="single")
    env.reset(seed=0)
    for i in range(5):
        env.step(i % 2)
    venv = wrap(_vector(AutoresetMode.SAME_STEP), algorithm="vector")
    venv.reset(seed=0)
    for _ in range(2):
        venv.step(np.zeros(2, dtype=np.int64))
    assert read(handle, "single") == 5 and read(handle, "vector") == 4
    env.step(0)
    assert read(handle, "single") == 6 and read(handle, "single") == 6


def test_steps_are_in_the_final_values_after_shutdown_without_close():
    """The reviewer's repro: CartPole, 5 steps, shutdown without env.close() keeps the 5 steps."""
    import otel_rl

    handle = otel_rl.init_telemetry({"exporters": ["none"]})
    env = wrap(gym.make("CartPole-v1"), algorithm="ppo")
    env.reset(seed=0)
    for i in range(5):
        env.step(i % 2)
    handle.shutdown(0.5)
    assert _steps_on_metrics(handle, "ppo") == 5


@contextlib.contextmanager
def _flushing_all_the_time() -> Iterator[list[int]]:
    """A collection thread calling flush_held_back() in a loop for the duration of the block, then one last
    flush; yields the number of flushes it made (a one-element list, filled in as it goes)."""
    from otel_rl._internal import held_back

    stop = threading.Event()
    flushes = [0]

    def collect() -> None:
        while not stop.is_set():
            held_back.flush_held_back()
            flushes[0] += 1

    thread = threading.Thread(target=collect)
    thread.start()
    try:
        yield flushes
    finally:
        stop.set()
        thread.join()
    held_back.flush_held_back()


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_flushes_from_another_thread_never_lose_or_double_count_steps(vector):
    """A collection thread flushing all the time while the environment steps (and flushes itself at episode ends
    and every few steps): the counter ends exactly at the number of steps taken."""
    if vector:
        env = RecordVectorEpisodeMetrics(_vector(AutoresetMode.SAME_STEP), algorithm="T", flush_every=7)
        per_step = 2
    else:
        env = RecordEpisodeMetrics(_Countdown(13), algorithm="T", flush_every=7)
        per_step = 1
    env.reset(seed=0)
    steps = 20_000
    with _flushing_all_the_time() as flushes:
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.int64) if vector else 0)
            if not vector and (terminated or truncated):
                env.reset()
    assert flushes[0] > 10  # the two threads did overlap
    assert testing.value("rl_training_environment_steps_total", algorithm="T") == steps * per_step


@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_a_flush_adds_its_steps_with_the_flush_lock_free(monkeypatch, vector):
    """In a worker whose first new series is the steps counter, adding the steps starts its telemetry (the store's
    new-series hook): the flush must have released the flush lock by then, or a start that flushes deadlocks."""
    from otel_rl._internal import held_back
    from otel_rl._internal.store import REGISTRY

    free = []

    def hook() -> None:
        got = held_back.flush_lock.acquire(blocking=False)
        if got:
            held_back.flush_lock.release()
        free.append(got)

    if vector:
        env = RecordVectorEpisodeMetrics(_vector(AutoresetMode.SAME_STEP, lengths=(50, 50)), algorithm="HL")
    else:
        env = RecordEpisodeMetrics(_Countdown(50), algorithm="HL")
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(2, dtype=np.int64) if vector else 0)
    monkeypatch.setattr(REGISTRY, "new_series_hook", hook)
    env.flush()  # the steps counter's first series of algorithm="HL"
    monkeypatch.undo()
    assert free and all(free)
    assert testing.value("rl_training_environment_steps_total", algorithm="HL") == 3 * (2 if vector else 1)


def test_reset_forgets_steps_a_live_wrapper_still_holds_back():
    """testing.reset() between tests: a wrapper left open does not bring its earlier steps into the next test."""
    env = RecordEpisodeMetrics(_Countdown(100), algorithm="R")
    env.reset(seed=0)
    for _ in range(3):
        env.step(0)
    testing.reset()
    env.step(0)
    env.flush()
    assert testing.value("rl_training_environment_steps_total", algorithm="R") == 1


# -- the vector wrapper's figures against the sub-environments' own ground truth --------------------------------------


class _RandomEpisodes(gym.Env):
    """Episodes of 1-6 steps with random float rewards, ending terminated or truncated at random. Each sub-environment
    keeps the ground truth: every step it really takes, and the return and length of every episode it finishes."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, seed: int, truth: dict) -> None:
        self.rng = np.random.default_rng(seed)
        self.truth = truth
        self.length = self.t = 0
        self.ret = 0.0

    def reset(self, *, seed=None, options=None):
        self.length, self.t, self.ret = int(self.rng.integers(1, 7)), 0, 0.0  # an unfinished episode is dropped
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        self.truth["steps"] += 1
        reward = float(self.rng.normal(0.3, 2.0))
        self.ret += reward  # the same float64 additions, in the same order, as the wrapper's
        done = self.t >= self.length
        if done:
            self.truth["episodes"].append((self.ret, float(self.t)))
        cut = done and bool(self.rng.integers(0, 2))
        return np.zeros(1, dtype=np.float32), reward, done and not cut, cut, {}


class _DonesAsLists(gym.vector.VectorWrapper):
    """Done flags as Python lists: the wrapper's slow path (np.any) instead of the bytes comparison."""

    def step(self, actions):
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        return obs, rewards, terminated.tolist(), truncated.tolist(), infos


def _expected_histogram(name: str, values: list[float]):
    from otel_rl._internal.store import REGISTRY, HistogramSeries

    bounds = REGISTRY[name].bounds
    series = HistogramSeries(len(bounds))
    for v in values:  # the histogram's own order of additions
        series.counts[__import__("bisect").bisect_left(bounds, v)] += 1
        series.sum += v
        series.min, series.max = min(series.min, v), max(series.max, v)
    return series


@pytest.mark.parametrize("dones", ["arrays", "lists"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_env_matches_the_sub_environments_own_count(mode, dones):
    """Random episode lengths, float rewards, terminations and truncations, full and masked resets, a small
    flush_every: episodes, returns, lengths and environment steps equal what the sub-environments counted
    themselves, bit for bit (a miscount in the fast path or the autoreset bookkeeping fails this)."""
    truth = {"steps": 0, "episodes": []}
    inner = gym.vector.SyncVectorEnv([lambda s=s: _RandomEpisodes(s, truth) for s in range(4)], autoreset_mode=mode)
    env = RecordVectorEpisodeMetrics(inner if dones == "arrays" else _DonesAsLists(inner), algorithm="RE",
                                     flush_every=5)
    rng = np.random.default_rng(1)
    env.reset(seed=0)
    just_ended = np.zeros(4, dtype=bool)
    for step in range(600):
        if step % 97 == 96:
            env.reset()
        elif step % 41 == 40 and mode == AutoresetMode.NEXT_STEP and just_ended.any():
            env.reset(options={"reset_mask": just_ended | (rng.random(4) < 0.3)})  # ended ones among them
        _, _, terminated, truncated, _ = env.step(np.zeros(4, dtype=np.int64))
        just_ended = np.logical_or(terminated, truncated)
    assert testing.value("rl_training_environment_steps_total", algorithm="RE") == truth["steps"]
    assert testing.value("rl_training_episodes_total", algorithm="RE", agent_id="default") == len(truth["episodes"])
    assert len(truth["episodes"]) > 100
    for name, values in (("rl_training_episode_reward", [r for r, _ in truth["episodes"]]),
                         ("rl_training_episode_length", [n for _, n in truth["episodes"]])):
        got, want = testing.histogram(name, algorithm="RE", agent_id="default"), _expected_histogram(name, values)
        assert (got.counts, got.sum, got.count, got.min, got.max) == \
            (want.counts, want.sum, want.count, want.min, want.max), name
    env.close()


def test_masked_reset_after_an_episode_end_counts_the_next_step():
    """Next-step mode: a sub-environment reset with reset_mask right after its episode ended takes a real step next
    (Gymnasium cancels its autoreset), so that step is counted."""
    env = RecordVectorEpisodeMetrics(_vector(AutoresetMode.NEXT_STEP), algorithm="MR")
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(2, dtype=np.int64))  # env0 (3 steps) ends at step 3
    env.reset(options={"reset_mask": np.array([True, False])})
    for _ in range(2):
        env.step(np.zeros(2, dtype=np.int64))
    env.close()
    assert testing.value("rl_training_environment_steps_total", algorithm="MR") == 10


def test_flushes_from_another_thread_in_next_step_mode_never_lose_or_double_count_steps():
    """The autoreset slots of next-step mode with a collection thread flushing all the time: the counter ends at
    exactly the steps the sub-environments took."""
    truth = {"steps": 0, "episodes": []}
    env = RecordVectorEpisodeMetrics(gym.vector.SyncVectorEnv(
        [lambda s=s: _RandomEpisodes(s, truth) for s in range(3)], autoreset_mode=AutoresetMode.NEXT_STEP),
        algorithm="TN", flush_every=7)
    env.reset(seed=0)
    with _flushing_all_the_time() as flushes:
        for step in range(5000):
            env.step(np.zeros(3, dtype=np.int64))
            if step % 500 == 499:
                env.reset()
    assert flushes[0] > 10
    assert testing.value("rl_training_environment_steps_total", algorithm="TN") == truth["steps"]
    assert testing.value("rl_training_episodes_total", algorithm="TN", agent_id="default") == len(truth["episodes"])
