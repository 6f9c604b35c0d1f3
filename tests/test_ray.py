"""Ray: tasks, actors and Ray Tune trials recording through otel-rl over OTLP into a real collector and Prometheus.

One local Ray cluster (``ray.init(num_cpus=2)``) runs the whole scenario once, in its own driver process; the tests
then check what reached Prometheus: one series per worker process, exact sums, one ``run_id`` per trial.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import procs

ROOT = Path(__file__).resolve().parent.parent
JOB = "otel-rl-ray"

_SCENARIO = """
import json, os, sys, time
import otel_rl

endpoint, job, storage = sys.argv[1:4]
t0 = time.monotonic()
handle = otel_rl.init_telemetry({"exporters": ["otlp"], "service_name": job,
                                 "otlp": {"endpoint": endpoint, "export_interval": 1, "timeout": 5}})
import ray
from ray import tune

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True, configure_logging=False,
         runtime_env={"env_vars": otel_rl.worker_env()})
t_init = time.monotonic() - t0


@ray.remote(num_cpus=0.5)
def play(n):
    for _ in range(n):
        otel_rl.record_episode("PPO", "task", 1.0, 10)
    otel_rl.record_environment_steps("PPO", 10 * n)
    return os.getpid()


@ray.remote(num_cpus=0.5)
class Runner:
    def play(self, n):
        for _ in range(n):
            otel_rl.record_episode("DQN", "actor", 2.0, 20)
        return os.getpid()


pids_tasks = ray.get([play.remote(n) for n in (1, 2, 3, 4, 5)])
runners = [Runner.remote() for _ in range(2)]
pids_actors = ray.get([r.play.remote(n) for r, n in zip(runners, (3, 4))])
t_tasks = time.monotonic() - t0


def trainable(config):
    @otel_rl.train_step
    def step(i):
        return {"training_iteration": i + 1, "episode_reward_mean": float(i), "env_steps": 100}

    with otel_rl.training_run(algorithm="PPO-tune"):
        for i in range(config["iterations"]):
            step(i)
    tune.report({"iterations": config["iterations"], "pid": os.getpid()})


tuner = tune.Tuner(trainable, param_space={"iterations": tune.grid_search([3, 5])},
                   tune_config=tune.TuneConfig(max_concurrent_trials=2),
                   run_config=tune.RunConfig(storage_path=storage, name="otel-rl-tune", verbose=0))
results = tuner.fit()
trials = {r.metrics["trial_id"]: {"iterations": r.metrics["iterations"], "pid": r.metrics["pid"]} for r in results}
t_tune = time.monotonic() - t0
ray.shutdown()
handle.shutdown(timeout=5)
print(json.dumps({"tasks": pids_tasks, "actors": pids_actors, "trials": trials, "driver": os.getpid(),
                  "timing": {"init": t_init, "tasks": t_tasks, "tune": t_tune, "total": time.monotonic() - t0}}))
"""


@pytest.fixture(scope="module")
def ray_run() -> Iterator[tuple[procs.Prometheus, dict]]:
    with procs.push_stack() as (wd, prom, collector):
        script = wd / "ray_scenario.py"
        script.write_text(textwrap.dedent(_SCENARIO))
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
               "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("OTEL_RL_WORKER_CONFIG", None)
        proc = subprocess.run([sys.executable, str(script), collector.grpc_endpoint, JOB, str(wd / "tune")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        yield prom, json.loads(proc.stdout.strip().splitlines()[-1])


def _by_instance(prom: procs.Prometheus, expr: str) -> dict[str, float]:
    return {r["metric"]["instance"]: float(r["value"][1]) for r in prom.query(expr)}


def test_ray_tasks_and_actors_each_push_their_own_series_with_exact_sums(ray_run) -> None:
    prom, run = ray_run
    host = socket.gethostname()
    want: Counter[str] = Counter()
    for pid, n in zip(run["tasks"], (1, 2, 3, 4, 5)):
        want[f"{host}-{pid}"] += n
    for pid, n in zip(run["actors"], (3, 4)):
        want[f"{host}-{pid}"] += n
    expr = f'sum by (instance) (rl_training_episodes_total{{job="{JOB}",algorithm=~"PPO|DQN"}})'
    procs.wait_until(lambda: _by_instance(prom, expr) == dict(want), 30,
                     what=f"one series per worker {dict(want)} (got {_by_instance(prom, expr)})")
    totals = {r["metric"]["algorithm"]: r["value"][1]
              for r in prom.query(f'sum by (algorithm) (rl_training_episodes_total{{job="{JOB}"}})')}
    assert totals == {"PPO": "15", "DQN": "7"}
    steps = prom.query(f'sum(rl_training_environment_steps_total{{job="{JOB}",algorithm="PPO"}})')
    assert steps[0]["value"][1] == "150"
    info = {r["metric"]["instance"]: r["metric"] for r in prom.query(f'target_info{{job="{JOB}"}}')}
    for pid in set(run["tasks"]) | set(run["actors"]):
        labels = info[f"{host}-{pid}"]
        assert labels["rl_process_role"] == "ray-worker" and labels["ray_job_id"] and labels["ray_worker_id"]
        assert labels["process_parent_pid"] == str(run["driver"])
        assert ("ray_actor_id" in labels) == (pid in run["actors"]), labels


def test_ray_tune_trials_keep_distinct_series_with_the_trial_id_as_run_id(ray_run) -> None:
    prom, run = ray_run
    host = socket.gethostname()
    trials = run["trials"]
    assert len(trials) == 2
    starts = prom.query(f'rl_training_start_timestamp{{job="{JOB}",algorithm="PPO-tune"}}')
    assert sorted(s["metric"]["run_id"] for s in starts) == sorted(trials)
    for s in starts:
        assert s["metric"]["instance"] == f"{host}-{trials[s['metric']['run_id']]['pid']}"
    iterations = _by_instance(prom, f'rl_training_iterations_total{{job="{JOB}",algorithm="PPO-tune"}}')
    assert iterations == {f"{host}-{t['pid']}": float(t["iterations"]) for t in trials.values()}
    total = prom.query(f'sum by (algorithm) (rl_training_iterations_total{{job="{JOB}"}})')
    assert [(r["metric"]["algorithm"], r["value"][1]) for r in total] == [("PPO-tune", "8")]
    current = {r["metric"]["run_id"]: r["value"][1]
               for r in prom.query(f'rl_training_current_iteration{{job="{JOB}",algorithm="PPO-tune"}}')}
    assert current == {trial: str(t["iterations"]) for trial, t in trials.items()}
    runs = prom.query(f'sum by (status) (rl_training_runs_total{{job="{JOB}",algorithm="PPO-tune"}})')
    assert {r["metric"]["status"]: r["value"][1] for r in runs} == {"started": "2", "completed": "2"}
    info = {r["metric"]["instance"]: r["metric"] for r in prom.query(f'target_info{{job="{JOB}"}}')}
    for trial, t in trials.items():
        assert info[f"{host}-{t['pid']}"]["ray_trial_id"] == trial


def _run_script(wd: Path, name: str, source: str, *args: str, timeout: float = 300) -> str:
    """Run ``source`` as a script with this checkout on PYTHONPATH; its stdout, after checking it succeeded."""
    script = wd / name
    script.write_text(source)
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("OTEL_RL_WORKER_CONFIG", None)
    proc = subprocess.run([sys.executable, str(script), *args], cwd=wd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout


def _doc_block(path: Path, heading: str) -> str:
    """The first ```python block after ``heading`` in a doc page."""
    text = path.read_text()
    start = text.index("```python\n", text.index(heading + "\n")) + len("```python\n")
    return text[start:text.index("```", start)]


def test_ray_tasks_snippet_of_the_docs_delivers_every_episode() -> None:
    """The Ray tasks snippet of docs/multiprocess.md, run as written (only the collector's address changed), gets
    all 20 episodes its tasks record into Prometheus: each task exports when it returns (``flush_on_return``),
    before ``ray.shutdown()`` ends the workers (the default 10 s export interval never comes)."""
    snippet = _doc_block(ROOT / "docs" / "multiprocess.md", "## Ray tasks and actors")
    assert "http://collector:4317" in snippet
    with procs.push_stack() as (wd, prom, collector):
        out = _run_script(wd, "ray_tasks.py", snippet.replace("http://collector:4317", collector.grpc_endpoint))
        assert "20 episodes" in out, out
        expr = 'sum(rl_training_episodes_total{algorithm="PPO",agent_id="task"})'
        procs.wait_until(lambda: [r["value"][1] for r in prom.query(expr)] == ["20"], 30,
                         what=f"20 episodes in Prometheus (got {prom.query(expr)})")


def test_ray_tasks_snippet_without_flush_on_return_delivers_nothing() -> None:
    """What the docs say the flush is for: the same snippet without ``@otel_rl.flush_on_return`` delivers none of
    its tasks' episodes. The driver records one episode after ``ray.shutdown()`` (its exit flush sends it): once
    that one is in Prometheus, whatever the dead workers could have sent is there too."""
    snippet = _doc_block(ROOT / "docs" / "multiprocess.md", "## Ray tasks and actors")
    assert "@otel_rl.flush_on_return" in snippet
    snippet = snippet.replace("@otel_rl.flush_on_return", "") + '\notel_rl.record_episode("PPO", "driver", 1.0, 1)\n'
    with procs.push_stack() as (wd, prom, collector):
        out = _run_script(wd, "ray_tasks.py", snippet.replace("http://collector:4317", collector.grpc_endpoint))
        assert "20 episodes" in out, out
        procs.wait_until(lambda: prom.query('rl_training_episodes_total{agent_id="driver"}'), 30,
                         what="the driver's episode in Prometheus")
        assert prom.query('rl_training_episodes_total{agent_id="task"}') == []


_TUNE_CLASS = """
import json, sys
import otel_rl

endpoint, storage = sys.argv[1:3]
# The default export interval (10 s): longer than a trial lives, so only the trials' own flushes deliver.
otel_rl.init_telemetry({"exporters": ["otlp"], "service_name": "otel-rl-tune-class", "otlp": {"endpoint": endpoint}})
import ray
from ray import tune
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from otel_rl.integrations.rllib import OtelRLCallback

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
         runtime_env={"env_vars": otel_rl.worker_env()})
config = (PPOConfig()
          .environment("CartPole-v1")
          .env_runners(num_env_runners=0)
          .training(train_batch_size_per_learner=128, minibatch_size=64, num_epochs=1,
                    lr=tune.grid_search([1e-3, 1e-4]))
          .callbacks(OtelRLCallback))
results = tune.Tuner(PPO, param_space=config,
                     run_config=tune.RunConfig(stop={"training_iteration": 2}, storage_path=storage,
                                               name="otel-rl-class", verbose=0)).fit()
trials = {r.metrics["trial_id"]: {"pid": r.metrics["pid"], "iteration": r.metrics["training_iteration"],
                                  "episodes": r.metrics["env_runners"]["num_episodes_lifetime"],
                                  "steps": r.metrics["num_env_steps_sampled_lifetime"]} for r in results}
ray.shutdown()
print(json.dumps(trials))
"""


def test_tune_class_trainable_trials_are_exact_and_labelled_by_trial() -> None:
    """``tune.Tuner(PPO, param_space=config.callbacks(OtelRLCallback))``: each trial's episodes, steps and
    iterations reach Prometheus exactly (the callback exports at the end of each result, before Ray ends the trial's
    actor), under ``run_id`` = the trial id and with ``ray_trial_id`` in the trial process' ``target_info``."""
    with procs.push_stack() as (wd, prom, collector):
        out = _run_script(wd, "tune_class.py", _TUNE_CLASS, collector.grpc_endpoint, str(wd / "tune"))
        trials = json.loads(out.strip().splitlines()[-1])
        host = socket.gethostname()
        assert len(trials) == 2 and all(t["iteration"] == 2 for t in trials.values()), trials
        job = 'job="otel-rl-tune-class",algorithm="PPO"'
        want = {f"{host}-{t['pid']}": float(t["episodes"]) for t in trials.values()}
        assert all(v > 0 for v in want.values())
        expr = f"sum by (instance) (rl_training_episodes_total{{{job}}})"
        procs.wait_until(lambda: _by_instance(prom, expr) == want, 30,
                         what=f"each trial's episodes {want} (got {_by_instance(prom, expr)})")
        steps = _by_instance(prom, f"rl_training_environment_steps_total{{{job}}}")
        assert steps == {f"{host}-{t['pid']}": float(t["steps"]) for t in trials.values()} \
            and set(steps.values()) == {256.0}
        iterations = _by_instance(prom, f"rl_training_iterations_total{{{job}}}")
        assert iterations == {f"{host}-{t['pid']}": 2.0 for t in trials.values()}
        current = {r["metric"]["run_id"]: r["value"][1]
                   for r in prom.query(f"rl_training_current_iteration{{{job}}}")}
        assert current == {trial: "2" for trial in trials}
        info = {r["metric"]["instance"]: r["metric"]
                for r in prom.query('target_info{job="otel-rl-tune-class"}')}
        for trial, t in trials.items():
            assert info[f"{host}-{t['pid']}"]["ray_trial_id"] == trial
