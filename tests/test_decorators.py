"""``train_step``, ``training_run`` and ``data_load``: what they record, and that they keep the wrapped code intact."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time

import pytest

import otel_rl
from otel_rl import testing

H = testing.histogram
V = testing.value


class TrainingBroke(RuntimeError):
    pass


# -- train_step -------------------------------------------------------------------------------------------------------


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
        await asyncio.sleep(0)  # a real suspension point: the step is awaited, not just called
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


# -- training_run -----------------------------------------------------------------------------------------------------


def test_training_run_with_block_completed():
    """A with block records started, active 1 inside, then completed, its duration and active 0."""
    with otel_rl.training_run("PPO", run_id="exp-1"):
        assert V("rl_training_runs_total", algorithm="PPO", status="started") == 1.0
        assert V("rl_training_active", algorithm="PPO") == 1.0
        assert V("rl_training_start_timestamp", algorithm="PPO", run_id="exp-1") == pytest.approx(time.time(), abs=5)
        time.sleep(0.05)  # the run's duration under test
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
        await asyncio.sleep(0.01)  # the run spans a suspension: its context must survive it
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
    inside: list[str] = []
    both_inside = asyncio.Event()

    async def run(name):
        async with otel_rl.training_run("PPO", run_id=name):
            inside.append(name)
            if len(inside) == 2:
                both_inside.set()
            await both_inside.wait()  # both runs are open at once when each reads its own
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


# -- data_load --------------------------------------------------------------------------------------------------------


def test_data_load_observes_the_duration():
    """@data_load observes each call's duration into rl_training_data_load_time_seconds and returns the result."""
    @otel_rl.data_load
    def load(symbols):
        """Load market data."""
        time.sleep(0.02)  # the load time under test
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
        await asyncio.sleep(0.01)  # the load time under test
        if fail:
            raise TrainingBroke("x")
        return 1

    assert await load() == 1
    with pytest.raises(TrainingBroke):
        await load(fail=True)
    series = H("rl_training_data_load_time_seconds")
    assert series.count == 2 and series.sum >= 0.02


# -- how a run ends: sys.exit, interrupts, generators -----------------------------------------------------------------


@pytest.mark.parametrize("code", [0, None, False])
def test_sys_exit_with_success_inside_training_run_completes_the_run(code):
    """``sys.exit(0)`` / ``sys.exit()`` ends the run as completed (no RLTrainingRunFailed), and still exits."""
    with pytest.raises(SystemExit):
        with otel_rl.training_run("PPO"):
            sys.exit(code)

    @otel_rl.training_run("DQN")
    def run():
        sys.exit(code)

    with pytest.raises(SystemExit):
        run()
    for algorithm in ("PPO", "DQN"):
        assert V("rl_training_runs_total", algorithm=algorithm, status="completed") == 1.0
        assert V("rl_training_runs_total", algorithm=algorithm, status="failed") is None
        assert H("rl_training_duration_seconds", algorithm=algorithm).count == 1


@pytest.mark.parametrize("code", [1, 2, "fatal: out of data"])
def test_sys_exit_with_failure_inside_training_run_is_interrupted(code):
    """``sys.exit(2)`` or ``sys.exit("message")`` fails the run with error_type 'interrupted'."""
    with pytest.raises(SystemExit):
        with otel_rl.training_run("PPO"):
            sys.exit(code)
    assert V("rl_training_runs_total", algorithm="PPO", status="failed") == 1.0
    assert V("rl_training_errors_total", error_type="interrupted") == 1.0


def test_data_load_on_a_generator_times_the_iteration():
    """A loader that yields batches is timed over its iteration (once), not at the call that creates it."""
    @otel_rl.data_load
    def batches(n):
        for i in range(n):
            time.sleep(0.02)  # the load time under test
            yield i
        return "done"

    iterator = batches(3)
    assert inspect.isgenerator(iterator)
    assert H("rl_training_data_load_time_seconds").count == 0  # created, not loaded yet
    assert list(iterator) == [0, 1, 2]
    series = H("rl_training_data_load_time_seconds")
    assert series.count == 1 and series.sum >= 0.06
    partial = batches(10)
    next(partial)
    partial.close()  # a consumer that stops early: timed up to there
    assert H("rl_training_data_load_time_seconds").count == 2


async def test_data_load_on_an_async_generator_times_the_iteration():
    """An async generator loader is timed over its iteration."""
    @otel_rl.data_load
    async def batches(n):
        for i in range(n):
            await asyncio.sleep(0.02)  # the load time under test
            yield i

    assert inspect.isasyncgenfunction(batches)
    assert [b async for b in batches(3)] == [0, 1, 2]
    series = H("rl_training_data_load_time_seconds")
    assert series.count == 1 and series.sum >= 0.06


def test_training_run_on_a_generator_covers_the_iteration():
    """A generator training loop under @training_run starts at the first step and completes when exhausted."""
    @otel_rl.training_run("PPO", run_id="g")
    def train(iterations):
        for i in range(iterations):
            assert otel_rl.current_run() == otel_rl.RunContext("PPO", "g")
            time.sleep(0.02)  # the run's duration under test
            yield {"training_iteration": i}

    loop = train(3)
    assert V("rl_training_runs_total", algorithm="PPO", status="started") is None
    assert len(list(loop)) == 3
    assert V("rl_training_runs_total", algorithm="PPO", status="completed") == 1.0
    assert H("rl_training_duration_seconds", algorithm="PPO").sum >= 0.06

    @otel_rl.training_run("A2C")
    def broken():
        yield 1
        raise TrainingBroke("mid-run")

    with pytest.raises(TrainingBroke):
        list(broken())
    assert V("rl_training_runs_total", algorithm="A2C", status="failed") == 1.0


async def test_training_run_on_an_async_generator_covers_the_iteration():
    """An async generator training loop is one run over its iteration."""
    @otel_rl.training_run("PPO")
    async def train():
        for i in range(2):
            await asyncio.sleep(0.02)  # the run's duration under test
            yield i

    assert [i async for i in train()] == [0, 1]
    assert V("rl_training_runs_total", algorithm="PPO", status="completed") == 1.0
    assert H("rl_training_duration_seconds", algorithm="PPO").sum >= 0.04


def test_train_step_bookkeeping_is_bounded_by_the_cardinality_limit():
    """Per-run counters of train_step keep at most cardinality_limit run ids, the most recent ones."""
    from otel_rl._internal.steps import StepRecorder
    from otel_rl._internal.store import REGISTRY

    @otel_rl.train_step(algorithm="PPO")
    def step(run_id):
        with otel_rl.training_run("PPO", run_id=run_id):
            pass
        return {"num_env_steps_sampled_lifetime": 10}

    (recorder,) = [c.cell_contents for c in step.__closure__ if isinstance(c.cell_contents, StepRecorder)]
    limit, REGISTRY.cardinality_limit = REGISTRY.cardinality_limit, 50
    try:
        for i in range(500):
            with otel_rl.training_run("PPO", run_id=f"run-{i}"):
                step(f"run-{i}")
        assert len(recorder._iterations) == 50 and len(recorder._lifetime_steps) == 50
        assert ("PPO", "run-499") in recorder._iterations and ("PPO", "run-0") not in recorder._iterations
    finally:
        REGISTRY.cardinality_limit = limit


def test_train_step_result_that_cannot_be_parsed_is_logged_once(caplog):
    """A result mapping that raises while being read logs one traceback, not one per step, and never raises."""
    class Hostile(dict):
        def items(self):
            raise RuntimeError("cannot list items")

    @otel_rl.train_step(algorithm="PPO")
    def step():
        return Hostile(episode_reward_mean=1.0)

    caplog.set_level(logging.WARNING, logger="otel_rl")
    for _ in range(20):
        step()
    assert len([r for r in caplog.records if r.exc_info]) == 1


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_label_whose_str_raises_never_raises_from_training_run_or_train_step(caplog):
    """``training_run(x)`` / ``train_step(algorithm=x)`` with an ``x`` whose ``str()`` raises: no exception, one
    warning per metric, the value counted as bad_labels, and the run recorded under a placeholder."""
    caplog.set_level(logging.WARNING, logger="otel_rl")
    for _ in range(2):
        with otel_rl.training_run(_Unprintable(), run_id=_Unprintable()) as run:
            assert run.algorithm == "<unprintable _Unprintable>"

    @otel_rl.train_step(algorithm=_Unprintable(), agent_id=_Unprintable())
    def step():
        return {"policy_loss": 0.5}

    step()
    assert testing.value("rl_training_runs_total", algorithm="<unprintable _Unprintable>", status="completed") == 2
    assert testing.dropped("rl_training_runs_total", "bad_labels") == 4
    assert testing.dropped("rl_training_iterations_total", "bad_labels") == 2
    assert testing.value("rl_training_iterations_total", algorithm="<unprintable _Unprintable>") == 1
    warned = [r for r in caplog.records if "bad_labels" in r.getMessage()]
    assert len(warned) == 2  # one per metric


async def test_flush_on_return_flushes_after_each_call_also_on_error(monkeypatch):
    """``flush_on_return`` (bare, called, on a coroutine function, as a ``with`` block) exports the worker's values
    once per call when it ends, also when it raises, and returns or raises what the function does."""
    from otel_rl._internal import lifecycle

    flushes = []
    monkeypatch.setattr(lifecycle, "flush_worker", lambda: flushes.append(1) or True)

    @otel_rl.flush_on_return
    def task(n):
        if n < 0:
            raise ValueError(n)
        return n * 2

    @otel_rl.flush_on_return()
    async def atask(n):
        return n + 1

    assert task(2) == 4 and len(flushes) == 1
    with pytest.raises(ValueError):
        task(-1)
    assert len(flushes) == 2
    assert await atask(1) == 2 and len(flushes) == 3
    with otel_rl.flush_on_return():
        pass
    assert len(flushes) == 4
    assert task.__name__ == "task"


_DEAD_COLLECTOR_TASKS = """
import json, os, sys, time
import otel_rl

otel_rl.init_telemetry({"exporters": ["otlp"], "shutdown_timeout": 1,
                        "otlp": {"endpoint": sys.argv[1], "export_interval": 60, "timeout": 10}})

@otel_rl.flush_on_return
def task(i):
    otel_rl.record_training_iteration("PPO", i, "task")
    return i

started = time.monotonic()
for i in range(4):
    task(i)
print(json.dumps({"elapsed": time.monotonic() - started}), flush=True)
os._exit(0)  # no exit flush: only the tasks' flushes are timed
"""


def test_flush_on_return_holds_up_one_task_not_every_task_when_the_collector_is_dead(tmp_path):
    """A worker (RANK set) pushing to a collector that accepts and never answers: the first task's flush waits its
    shutdown_timeout (1 s) and fails; the next three tasks do not wait again (before: 1 s each, 4 s in all)."""
    import json
    import socket
    import subprocess

    from procs import ROOT

    blackhole = socket.socket()  # the kernel accepts connections; nothing ever answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    try:
        script = tmp_path / "tasks.py"
        script.write_text(_DEAD_COLLECTOR_TASKS)
        env = {**__import__("os").environ, "RANK": "1", "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, str(script), f"http://127.0.0.1:{blackhole.getsockname()[1]}"],
                             capture_output=True, text=True, timeout=120, env=env)
    finally:
        blackhole.close()
    assert out.returncode == 0, out.stderr
    elapsed = json.loads(out.stdout.strip().splitlines()[-1])["elapsed"]
    assert 0.9 <= elapsed < 2.5, (elapsed, out.stderr)
    assert out.stderr.count("no longer exports when a flush_on_return function returns") == 1, out.stderr


async def test_flush_on_return_on_a_generator_flushes_when_it_ends_not_when_it_is_created(monkeypatch):
    """A streaming Ray task is a generator function: its values are recorded while it is iterated, so the flush
    comes when the generator is exhausted (sync and async), not when calling it creates the generator."""
    from otel_rl._internal import lifecycle

    flushes = []
    monkeypatch.setattr(lifecycle, "flush_worker", lambda: flushes.append(1) or True)

    @otel_rl.flush_on_return
    def stream(n):
        yield from range(n)
        return "done"

    @otel_rl.flush_on_return
    async def astream(n):
        for i in range(n):
            yield i

    gen = stream(2)
    assert flushes == [] and next(gen) == 0 and flushes == []
    assert list(gen) == [1] and len(flushes) == 1
    assert inspect.isgeneratorfunction(stream) and stream.__name__ == "stream"
    assert [i async for i in astream(3)] == [0, 1, 2] and len(flushes) == 2
    assert inspect.isasyncgenfunction(astream)
