"""``train_step``, ``training_run`` and ``data_load``: what they record, and that they keep the wrapped code intact."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest

import otel_rl
from otel_rl import testing

H = testing.histogram
V = testing.value


class TrainingBroke(RuntimeError):
    pass


# -- train_step --------------------------------------------------------------------------------------------------------


def test_bare_train_step_counts_each_call_under_default_names():
    """Bare @train_step outside a run counts iterations under algorithm and run_id 'default'."""
    @otel_rl.train_step
    def step():
        return {"episode_reward_mean": 3.0}

    step()
    step()
    assert V("rl_training_iterations_total", algorithm="default") == 2.0
    assert V("rl_training_current_iteration", algorithm="default", run_id="default") == 2.0
    assert V("rl_training_episode_reward_mean", algorithm="default", run_id="default") == 3.0


def test_non_dict_return_only_counts_the_iteration():
    """A step returning something that is not a mapping counts the iteration and records nothing else."""
    values = [None, 1.5, [1, 2], "done"]

    @otel_rl.train_step(algorithm="PPO", run_id="r")
    def step(v):
        return v

    for v in values:
        assert step(v) is v
    assert V("rl_training_iterations_total", algorithm="PPO") == 4.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="r") == 4.0
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="r") is None
    assert testing.value("otel_rl_dropped_values_total", metric="rl_training_episode_reward_mean",
                         reason="wrong_type") is None


def test_exception_counts_a_training_error_and_propagates_the_same_object():
    """An exception adds errors_total{error_type="training_error"} and propagates unchanged, iteration not counted."""
    error = TrainingBroke("diverged")

    @otel_rl.train_step(algorithm="PPO")
    def step():
        raise error

    with pytest.raises(TrainingBroke) as info:
        step()
    assert info.value is error
    assert V("rl_training_errors_total", error_type="training_error") == 1.0
    assert V("rl_training_iterations_total", algorithm="PPO") is None


def test_custom_error_type():
    """train_step(error_type=...) labels the error counter."""
    @otel_rl.train_step(algorithm="PPO", error_type="evaluation_error")
    def step():
        raise ValueError("bad")

    with pytest.raises(ValueError):
        step()
    assert V("rl_training_errors_total", error_type="evaluation_error") == 1.0


async def test_async_train_step():
    """An async step is awaited, its result recorded and returned; its exceptions propagate and count."""
    @otel_rl.train_step(algorithm="PPO", run_id="r")
    async def step(reward):
        await asyncio.sleep(0)
        if reward is None:
            raise TrainingBroke("async failure")
        return {"episode_reward_mean": reward}

    assert inspect.iscoroutinefunction(step)
    assert await step(-600.0) == {"episode_reward_mean": -600.0}
    with pytest.raises(TrainingBroke):
        await step(None)
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="r") == -600.0
    assert V("rl_training_iterations_total", algorithm="PPO") == 1.0
    assert V("rl_training_errors_total", error_type="training_error") == 1.0


def test_train_step_on_a_method():
    """On a method, self is passed through and each instance call counts."""
    class Trainer:
        def __init__(self):
            self.calls = 0

        @otel_rl.train_step(algorithm="SAC", run_id="m")
        def train(self, reward):
            self.calls += 1
            return {"reward_mean": reward}

    trainer = Trainer()
    trainer.train(1.0)
    trainer.train(reward=2.0)
    assert trainer.calls == 2
    assert V("rl_training_iterations_total", algorithm="SAC") == 2.0
    assert V("rl_training_episode_reward_mean", algorithm="SAC", run_id="m") == 2.0


def test_train_step_keeps_name_doc_and_signature():
    """functools.wraps semantics: name, qualname, doc, __wrapped__ and signature of the step are kept."""
    def step(batch: int, *, lr: float = 0.1) -> dict:
        """Run one step."""
        return {}

    for wrapped in (otel_rl.train_step(step), otel_rl.train_step(algorithm="PPO")(step)):
        assert wrapped.__name__ == "step"
        assert wrapped.__doc__ == "Run one step."
        assert wrapped.__wrapped__ is step
        assert inspect.signature(wrapped) == inspect.signature(step)


def test_train_step_inside_training_run_takes_its_names():
    """A train_step without arguments inside a training_run records under the run's algorithm and run_id."""
    @otel_rl.train_step
    def step(i):
        return {"episode_reward_mean": float(i), "env_steps": 10}

    with otel_rl.training_run(algorithm="PPO", run_id="exp-7") as run:
        assert run == otel_rl.RunContext("PPO", "exp-7")
        assert otel_rl.current_run() == run
        for i in range(3):
            step(i)
    assert otel_rl.current_run() is None
    assert V("rl_training_iterations_total", algorithm="PPO") == 3.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="exp-7") == 3.0
    assert V("rl_training_episode_reward_mean", algorithm="PPO", run_id="exp-7") == 2.0
    assert V("rl_training_environment_steps_total", algorithm="PPO") == 30.0
    assert V("rl_training_iterations_total", algorithm="default") is None


def test_explicit_train_step_names_beat_the_enclosing_run():
    """train_step(algorithm=...) keeps its own algorithm inside a run and takes only the missing run_id."""
    @otel_rl.train_step(algorithm="SAC")
    def step():
        return {}

    with otel_rl.training_run("PPO", run_id="outer"):
        step()
    assert V("rl_training_current_iteration", algorithm="SAC", run_id="outer") == 1.0
    assert V("rl_training_iterations_total", algorithm="PPO") is None


def test_iteration_numbers_are_kept_per_run():
    """The iteration counter of one decorated step restarts for each new run_id."""
    @otel_rl.train_step
    def step():
        return {}

    with otel_rl.training_run("PPO", run_id="a"):
        step()
        step()
    with otel_rl.training_run("PPO", run_id="b"):
        step()
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="a") == 2.0
    assert V("rl_training_current_iteration", algorithm="PPO", run_id="b") == 1.0
    assert V("rl_training_iterations_total", algorithm="PPO") == 3.0


# -- training_run ------------------------------------------------------------------------------------------------------


def test_training_run_with_block_completed():
    """A with block records started, active 1 inside, then completed, its duration and active 0."""
    with otel_rl.training_run("PPO", run_id="exp-1"):
        assert V("rl_training_runs_total", algorithm="PPO", status="started") == 1.0
        assert V("rl_training_active", algorithm="PPO") == 1.0
        assert V("rl_training_start_timestamp", algorithm="PPO", run_id="exp-1") == pytest.approx(time.time(), abs=5)
        time.sleep(0.05)
    assert V("rl_training_runs_total", algorithm="PPO", status="completed") == 1.0
    assert V("rl_training_runs_total", algorithm="PPO", status="failed") is None
    assert V("rl_training_active", algorithm="PPO") == 0.0
    duration = H("rl_training_duration_seconds", algorithm="PPO")
    assert duration.count == 1 and 0.05 <= duration.sum < 5


def test_training_run_with_block_failed_reraises():
    """An exception in the block records failed, errors_total{training_error}, active 0 and propagates unchanged."""
    error = TrainingBroke("nan loss")
    with pytest.raises(TrainingBroke) as info:
        with otel_rl.training_run("PPO"):
            raise error
    assert info.value is error
    assert V("rl_training_runs_total", algorithm="PPO", status="failed") == 1.0
    assert V("rl_training_runs_total", algorithm="PPO", status="completed") is None
    assert V("rl_training_errors_total", error_type="training_error") == 1.0
    assert V("rl_training_active", algorithm="PPO") == 0.0
    assert H("rl_training_duration_seconds", algorithm="PPO") is None


def test_training_run_keyboard_interrupt_is_recorded_as_interrupted():
    """A KeyboardInterrupt fails the run with error_type 'interrupted' and still propagates."""
    with pytest.raises(KeyboardInterrupt):
        with otel_rl.training_run("PPO"):
            raise KeyboardInterrupt
    assert V("rl_training_runs_total", algorithm="PPO", status="failed") == 1.0
    assert V("rl_training_errors_total", error_type="interrupted") == 1.0


def test_training_run_decorator():
    """@training_run records each call as a run and returns the function's result."""
    @otel_rl.training_run(algorithm="DQN", run_id="d")
    def train(n):
        """Train n steps."""
        assert otel_rl.current_run() == otel_rl.RunContext("DQN", "d")
        assert V("rl_training_active", algorithm="DQN") == 1.0
        return n * 2

    assert train.__name__ == "train" and train.__doc__ == "Train n steps."
    assert train(2) == 4
    assert train(3) == 6
    assert V("rl_training_runs_total", algorithm="DQN", status="started") == 2.0
    assert V("rl_training_runs_total", algorithm="DQN", status="completed") == 2.0
    assert H("rl_training_duration_seconds", algorithm="DQN").count == 2
    assert V("rl_training_active", algorithm="DQN") == 0.0


def test_training_run_decorator_failure_reraises():
    """A decorated run that raises is recorded failed with its error_type and the exception propagates."""
    error = TrainingBroke("oom")

    @otel_rl.training_run(algorithm="DQN", error_type="data_error")
    def train():
        raise error

    with pytest.raises(TrainingBroke) as info:
        train()
    assert info.value is error
    assert V("rl_training_runs_total", algorithm="DQN", status="failed") == 1.0
    assert V("rl_training_errors_total", error_type="data_error") == 1.0
    assert V("rl_training_active", algorithm="DQN") == 0.0


async def test_async_training_run_decorator_and_async_with():
    """training_run works as a decorator on coroutines and as ``async with``, completed and failed."""
    @otel_rl.training_run(algorithm="PPO", run_id="async")
    async def train():
        await asyncio.sleep(0.01)
        assert otel_rl.current_run() == otel_rl.RunContext("PPO", "async")
        return "ok"

    assert inspect.iscoroutinefunction(train)
    assert await train() == "ok"
    async with otel_rl.training_run(algorithm="PPO", run_id="async-with"):
        assert V("rl_training_active", algorithm="PPO") == 1.0
    with pytest.raises(TrainingBroke):
        async with otel_rl.training_run(algorithm="PPO"):
            raise TrainingBroke("x")
    assert V("rl_training_runs_total", algorithm="PPO", status="started") == 3.0
    assert V("rl_training_runs_total", algorithm="PPO", status="completed") == 2.0
    assert V("rl_training_runs_total", algorithm="PPO", status="failed") == 1.0
    assert H("rl_training_duration_seconds", algorithm="PPO").count == 2
    assert V("rl_training_active", algorithm="PPO") == 0.0


async def test_concurrent_async_runs_keep_their_own_context():
    """Two concurrent async runs each see their own run in current_run()."""
    seen = {}

    async def run(name):
        async with otel_rl.training_run("PPO", run_id=name):
            await asyncio.sleep(0.01)
            seen[name] = otel_rl.current_run().run_id

    await asyncio.gather(run("a"), run("b"))
    assert seen == {"a": "a", "b": "b"}
    assert V("rl_training_runs_total", algorithm="PPO", status="completed") == 2.0


def test_nested_runs_restore_the_outer_run():
    """After an inner run ends, current_run() is the outer run again."""
    with otel_rl.training_run("PPO", run_id="outer") as outer:
        with otel_rl.training_run("SAC", run_id="inner"):
            assert otel_rl.current_run().run_id == "inner"
        assert otel_rl.current_run() == outer


# -- data_load ---------------------------------------------------------------------------------------------------------


def test_data_load_observes_the_duration():
    """@data_load observes each call's duration into rl_training_data_load_time_seconds and returns the result."""
    @otel_rl.data_load
    def load(symbols):
        """Load market data."""
        time.sleep(0.02)
        return list(symbols)

    assert load("AB") == ["A", "B"]
    assert load.__name__ == "load" and load.__doc__ == "Load market data."
    series = H("rl_training_data_load_time_seconds")
    assert series.count == 1 and 0.02 <= series.sum < 5


def test_data_load_observes_also_when_raising():
    """A data loader that raises is still timed and the exception propagates unchanged."""
    error = OSError("disk gone")

    @otel_rl.data_load()
    def load():
        raise error

    with pytest.raises(OSError) as info:
        load()
    assert info.value is error
    assert H("rl_training_data_load_time_seconds").count == 1


async def test_async_data_load():
    """@data_load on a coroutine times the awaited call, also when it raises."""
    @otel_rl.data_load
    async def load(fail=False):
        await asyncio.sleep(0.01)
        if fail:
            raise TrainingBroke("x")
        return 1

    assert await load() == 1
    with pytest.raises(TrainingBroke):
        await load(fail=True)
    series = H("rl_training_data_load_time_seconds")
    assert series.count == 2 and series.sum >= 0.02
