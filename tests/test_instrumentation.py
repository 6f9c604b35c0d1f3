"""Zero-code instrumentation: unmodified scripts under ``otel-rl run`` and ``opentelemetry-instrument``.

Each script counts what it trains (the Gymnasium loop its episodes and steps, the SB3 script what SB3's Monitor and
``num_timesteps`` say) and prints it; the endpoint of the same process must show exactly those figures. The
scripts keep ``/metrics`` open after they end (``OTEL_RL_PROMETHEUS_LINGER``) until the test has scraped it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest depends on tomli before 3.11
    import tomli as tomllib

from scrape import Scrape

from procs import ROOT, free_port, http_get, wait_until

PYTHON = sys.executable
INSTRUMENT = shutil.which("opentelemetry-instrument", path=str(Path(PYTHON).parent))

GYM_LOOP = """\
import json

import gymnasium as gym
from opentelemetry import metrics

counter = metrics.get_meter("my.loop").create_counter("my_episodes_total")  # the script's own instrument
env = gym.make("CartPole-v1")
vec = gym.make_vec("CartPole-v1", num_envs=3)
episodes = steps = vec_episodes = vec_steps = 0
for ep in range(7):
    env.reset(seed=ep)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        done = terminated or truncated
    episodes += 1
    counter.add(1)
vec.reset(seed=0)
resetting = 0
for _ in range(120):  # next-step autoreset: the step after an episode's end only resets that sub-environment
    _, _, terminated, truncated, _ = vec.step(vec.action_space.sample())
    vec_steps += 3 - resetting
    ended = terminated | truncated
    vec_episodes += int(ended.sum())
    resetting = int(ended.sum())
print(json.dumps({"episodes": episodes, "steps": steps, "vec_episodes": vec_episodes, "vec_steps": vec_steps}),
      flush=True)
"""

SB3_SCRIPT = """\
import json

import gymnasium as gym
from stable_baselines3 import A2C, PPO

env = gym.make("CartPole-v1")  # made by the script, then handed to SB3
ppo = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
ppo.learn(256)
a2c = A2C("MlpPolicy", "CartPole-v1", n_steps=8, seed=0, device="cpu")  # made by SB3
a2c.learn(200)


def figures(model):
    monitors = model.get_env().envs
    return {"episodes": sum(len(m.get_episode_rewards()) for m in monitors), "steps": model.num_timesteps}


print(json.dumps({"PPO": figures(ppo), "A2C": figures(a2c)}), flush=True)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A directory holding otel-rl's distribution metadata with the entry points pyproject.toml declares, as an
    installed otel-rl carries them: opentelemetry-instrument finds the instrumentors and the configurator there."""
    root = tmp_path_factory.mktemp("site")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = root / "otel_rl-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: otel-rl\nVersion: 0.0.0\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return root


def _env(port: int, extra_path: Path | None = None, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHONPATH"))}
    paths = [str(p) for p in (extra_path, ROOT) if p is not None]
    env.update(PYTHONPATH=os.pathsep.join(paths), OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
               OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1", OTEL_RL_PROMETHEUS_LINGER="120", **more)
    return env


def _run(command: list[str], env: dict[str, str], port: int, cwd: Path, timeout: float = 240.0):
    """Start ``command``, wait for the JSON line the script prints, scrape its endpoint, let it exit."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the script's last act; the linger keeps the endpoint up
        if not line:
            process.wait(timeout=30)
            raise AssertionError(f"the script printed nothing; rc={process.returncode}, "
                                 f"stderr:\n{process.stderr.read() if process.stderr else ''}")
        figures = json.loads(line)
        _wait_shutting_down(port)  # the final values; the linger waits for a scrape that comes after this
        scrape = Scrape(port)
        assert process.wait(timeout=timeout) == 0, process.stderr.read() if process.stderr else ""
        return figures, scrape
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_shutting_down(port: int) -> None:
    wait_until(lambda: json.loads(http_get(f"http://127.0.0.1:{port}/health"))["status"] == "shutting_down",
               timeout=60, what="the script's end (its telemetry shutting down)")


def _commands(installed: Path) -> dict[str, tuple[list[str], Path | None]]:
    return {
        "otel-rl run": ([PYTHON, "-m", "otel_rl", "run", "--", PYTHON], None),
        "opentelemetry-instrument": ([INSTRUMENT or "opentelemetry-instrument", PYTHON], installed),
    }


@pytest.mark.integration
@pytest.mark.parametrize("how", ["otel-rl run", "opentelemetry-instrument"])
def test_unmodified_gymnasium_loop(how: str, installed: Path, tmp_path: Path) -> None:
    """Episodes and steps of gym.make and gym.make_vec environments, exact; the script's own counter too, on the
    same endpoint (one MeterProvider)."""
    if how == "opentelemetry-instrument" and INSTRUMENT is None:
        pytest.fail("opentelemetry-instrumentation is not installed (the dev extra has it)")
    script = tmp_path / "loop.py"
    script.write_text(GYM_LOOP)
    prefix, path = _commands(installed)[how]
    port = free_port()
    figures, scrape = _run([*prefix, str(script)], _env(port, path), port, tmp_path)
    assert figures["episodes"] == 7 and figures["vec_episodes"] > 0
    labels = {"algorithm": "default", "agent_id": "default"}
    assert scrape.value("rl_training_episodes_total", **labels) == figures["episodes"] + figures["vec_episodes"]
    assert scrape.value("rl_training_environment_steps_total", algorithm="default") \
        == figures["steps"] + figures["vec_steps"]
    assert scrape.value("my_episodes_total") == figures["episodes"]


@pytest.mark.integration
@pytest.mark.parametrize("how", ["otel-rl run", "opentelemetry-instrument"])
def test_unmodified_sb3_script(how: str, installed: Path, tmp_path: Path) -> None:
    """SB3's own figures (Monitor's episodes, num_timesteps, rollouts) on the endpoint, for an environment the script
    made (recorded by the Gymnasium wrapper under the algorithm's name) and one SB3 made (by the callback)."""
    if how == "opentelemetry-instrument" and INSTRUMENT is None:
        pytest.fail("opentelemetry-instrumentation is not installed (the dev extra has it)")
    script = tmp_path / "train.py"
    script.write_text(SB3_SCRIPT)
    prefix, path = _commands(installed)[how]
    port = free_port()
    figures, scrape = _run([*prefix, str(script)], _env(port, path), port, tmp_path)
    for algorithm, rollouts in (("PPO", 256 // 64), ("A2C", 200 // 8)):
        expected = figures[algorithm]
        assert expected["episodes"] > 0
        assert scrape.value("rl_training_episodes_total", algorithm=algorithm, agent_id="default") \
            == expected["episodes"], algorithm
        assert scrape.value("rl_training_environment_steps_total", algorithm=algorithm) == expected["steps"]
        assert scrape.value("rl_training_iterations_total", algorithm=algorithm) == rollouts
        assert scrape.value("rl_training_runs_total", algorithm=algorithm, status="completed") == 1
    assert scrape.value("rl_training_episodes_total", algorithm="default") is None  # nothing under another name


@pytest.mark.integration
def test_disabled_instrumentations(installed: Path, tmp_path: Path) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=gymnasium: the loop runs, nothing wraps its environments."""
    script = tmp_path / "loop.py"
    script.write_text(GYM_LOOP)
    port = free_port()
    figures, scrape = _run([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, str(script)],
                           _env(port, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="flask, gymnasium"), port, tmp_path)
    assert figures["episodes"] == 7
    assert scrape.value("rl_training_episodes_total") is None
    assert scrape.value("my_episodes_total") == 7  # the telemetry itself is still there


@pytest.mark.integration
def test_sigterm_under_otel_rl_run_exports_the_final_values(tmp_path: Path) -> None:
    """SIGTERM ends the script through sys.exit: the shutdown runs (here: the linger serves the last values)."""
    script = tmp_path / "loop.py"
    script.write_text(GYM_LOOP + "import time\ntime.sleep(600)\n")
    port = free_port()
    process = subprocess.Popen([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, str(script)], env=_env(port),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        figures = json.loads(process.stdout.readline())
        process.send_signal(signal.SIGTERM)
        _wait_shutting_down(port)
        scrape = Scrape(port)
        assert scrape.value("rl_training_episodes_total", algorithm="default", agent_id="default") \
            == figures["episodes"] + figures["vec_episodes"]
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_uninstrument_restores_gymnasium_and_sb3() -> None:
    import gymnasium
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    from otel_rl.instrumentation import GymnasiumInstrumentor, StableBaselines3Instrumentor, auto_wrapper_classes

    make, make_vec, learn = gymnasium.make, gymnasium.make_vec, OnPolicyAlgorithm.learn
    GymnasiumInstrumentor().instrument()
    StableBaselines3Instrumentor().instrument()
    try:
        assert gymnasium.make is not make and OnPolicyAlgorithm.learn is not learn
        env = gymnasium.make("CartPole-v1")
        assert isinstance(env, auto_wrapper_classes()[0])
        env.close()
    finally:
        GymnasiumInstrumentor().uninstrument()
        StableBaselines3Instrumentor().uninstrument()
    assert (gymnasium.make, gymnasium.make_vec, OnPolicyAlgorithm.learn) == (make, make_vec, learn)
    assert not isinstance(gymnasium.make("CartPole-v1"), auto_wrapper_classes()[0])


def test_run_without_a_command_says_how() -> None:
    result = subprocess.run([PYTHON, "-m", "otel_rl", "run"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode != 0 and "otel-rl run -- python train.py" in result.stderr


def test_rllib_config_gets_the_callback_once() -> None:
    """The callback is added to a config's own callbacks, to a frozen config through a copy, and never twice."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.callbacks.callbacks import RLlibCallback
    from ray.rllib.utils import force_list

    from otel_rl._internal.instrumentors import _with_rllib_callback
    from otel_rl.integrations.rllib import OtelRLCallback

    class Mine(RLlibCallback):
        pass

    assert _with_rllib_callback(PPOConfig()).callbacks_class is OtelRLCallback
    config = PPOConfig().callbacks(Mine)
    config.freeze()
    added = _with_rllib_callback(config)
    assert added is not config and force_list(added.callbacks_class) == [Mine, OtelRLCallback] and added._is_frozen
    assert _with_rllib_callback(added) is added


def test_instrumentors_work_without_opentelemetry_instrumentation() -> None:
    """otel-rl run needs no opentelemetry-instrumentation: the instrumentors fall back to otel-rl's own base."""
    code = """
import sys
import textwrap
sys.modules["opentelemetry.instrumentation"] = None  # as if it were not installed
import gymnasium
from otel_rl import instrumentation as zc
from otel_rl._internal import patching
assert patching.InstrumentorBase is patching.FallbackInstrumentorBase
assert isinstance(zc.GymnasiumInstrumentor(), patching.FallbackInstrumentorBase)
make = gymnasium.make
zc.GymnasiumInstrumentor().instrument()
assert zc.GymnasiumInstrumentor() is zc.GymnasiumInstrumentor()
assert isinstance(gymnasium.make("CartPole-v1"), zc.auto_wrapper_classes()[0])
zc.GymnasiumInstrumentor().uninstrument()
assert gymnasium.make is make
print("ok")
"""
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "ok", result.stderr


def test_a_recorder_the_script_adds_takes_over_from_the_zero_code_one() -> None:
    """wrap(gymnasium.make(...)) under zero-code: the episodes and steps count once."""
    import gymnasium

    from otel_rl._internal.store import REGISTRY
    from otel_rl.instrumentation import GymnasiumInstrumentor
    from otel_rl.integrations.gymnasium import wrap

    def counted(name: str, algorithm: str) -> float:
        return sum(v for labels, v in REGISTRY.counter(name).snapshot() if labels[0] == algorithm)

    GymnasiumInstrumentor().instrument()
    try:
        env = wrap(gymnasium.make("CartPole-v1"), algorithm="zc-take-over")
        vec = wrap(gymnasium.make_vec("CartPole-v1", num_envs=2), algorithm="zc-take-over-vec")
    finally:
        GymnasiumInstrumentor().uninstrument()
    before = (counted("rl_training_episodes_total", "default"),
              counted("rl_training_environment_steps_total", "default"))
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        steps, done = steps + 1, terminated or truncated
    vec.reset(seed=0)
    for _ in range(5):
        vec.step(vec.action_space.sample())
    vec.close()
    assert counted("rl_training_episodes_total", "zc-take-over") == 1
    assert counted("rl_training_environment_steps_total", "zc-take-over") == steps
    assert counted("rl_training_environment_steps_total", "zc-take-over-vec") == 10
    env.close()
    assert (counted("rl_training_episodes_total", "default"),
            counted("rl_training_environment_steps_total", "default")) == before  # the zero-code recorders yielded


@pytest.mark.integration
def test_children_leave_the_port_and_the_scripts_own_init_takes_over(tmp_path: Path) -> None:
    """A python child of the script starts no telemetry of its own (the parent's port stays the parent's); an
    init_telemetry() of the script with other settings replaces the start-up telemetry."""
    script = tmp_path / "own.py"
    port, other = free_port(), free_port()
    script.write_text(textwrap.dedent(f"""
        import json, socket, subprocess, sys, time
        import otel_rl
        child = subprocess.run([sys.executable, "-c", "import otel_rl; print(otel_rl.current())"],
                               capture_output=True, text=True)
        started = otel_rl.current()
        began = time.monotonic()
        mine = otel_rl.init_telemetry({{"prometheus": {{"port": {other}, "host": "127.0.0.1", "linger": 120}}}})
        otel_rl.record_training_iteration("own", 1)
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
            first_closed = False
        except ConnectionRefusedError:
            first_closed = True
        print(json.dumps({{"child": child.stdout.strip(), "replaced": mine is not started,
                          "first_closed": first_closed, "fast": time.monotonic() - began < 30}}), flush=True)
    """))
    figures, scrape = _run([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, str(script)], _env(port), other, tmp_path,
                           timeout=60)
    # fast: replacing the start-up telemetry does not wait out its linger (120 s here): it served the same store
    assert figures == {"child": "None", "replaced": True, "first_closed": True, "fast": True}
    assert scrape.value("rl_training_iterations_total", algorithm="own") == 1


RLLIB_SCRIPT = """\
import json

import ray
from ray.rllib.algorithms.ppo import PPOConfig

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
config = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
          .training(train_batch_size_per_learner=256, minibatch_size=64, num_epochs=1))
algo = config.build_algo()
episodes = 0
for _ in range(2):
    result = algo.train()
    episodes += result["env_runners"]["num_episodes"]
algo.stop()
ray.shutdown()
print(json.dumps({"episodes": episodes, "steps": result["num_env_steps_sampled_lifetime"]}), flush=True)
"""


@pytest.mark.integration
def test_unmodified_rllib_script(tmp_path: Path) -> None:
    """RLlib's own figures (episodes of each result, lifetime steps, iterations) on the endpoint, exact: the
    environments RLlib makes are left to the callback the instrumentor adds."""
    script = tmp_path / "rllib_train.py"
    script.write_text(RLLIB_SCRIPT)
    port = free_port()
    figures, scrape = _run([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, str(script)], _env(port), port, tmp_path)
    assert figures["episodes"] > 0
    assert scrape.value("rl_training_episodes_total", algorithm="PPO", agent_id="default") == figures["episodes"]
    assert scrape.value("rl_training_environment_steps_total", algorithm="PPO") == figures["steps"]
    assert scrape.value("rl_training_iterations_total", algorithm="PPO") == 2
    assert scrape.value("rl_training_episodes_total", algorithm="default") is None


def test_start_up_imports_no_framework() -> None:
    """The instrumentors patch a framework when the program imports it: a Python process that never does (one of
    Ray's own, a helper script) does not pay for importing torch, Ray or Gymnasium at start-up."""
    code = "import sys; print([m for m in ('torch', 'ray', 'gymnasium', 'stable_baselines3') if m in sys.modules])"
    env = _env(free_port(), OTEL_RL_EXPORTERS="none")
    done = subprocess.run([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_learn_gets_the_callback_once() -> None:
    """A learn() given an OtelRLCallback (alone, in a list, in a CallbackList) is left as it is; otherwise one is
    added next to the script's own callbacks, by keyword or by position."""
    from stable_baselines3.common.callbacks import CallbackList, EveryNTimesteps

    from otel_rl._internal.instrumentors import _learning
    from otel_rl.integrations.sb3 import OtelRLCallback

    seen: list = []
    learn = _learning(lambda self, total, callback=None: seen.append(callback))
    mine, other = OtelRLCallback(), EveryNTimesteps(10, None)
    for given in (mine, [other, mine], CallbackList([other, mine])):
        learn(object(), 10, callback=given)
        assert seen.pop() is given
    learn(object(), 10)
    assert isinstance(seen.pop(), OtelRLCallback)
    learn(object(), 10, other)
    added = seen.pop()
    assert added[0] is other and isinstance(added[1], OtelRLCallback) and len(added) == 2
    learn(object(), 10, callback=[other])
    added = seen.pop()
    assert added[0] is other and isinstance(added[1], OtelRLCallback)


def test_learn_keeps_a_function_callback() -> None:
    """SB3 takes a plain function as callback (it wraps it in ConvertCallback); next to otel-rl's it must still be
    one, not a bare function inside a CallbackList (which fails at learn's start)."""
    from stable_baselines3 import PPO

    from otel_rl.instrumentation import StableBaselines3Instrumentor

    calls: list[int] = []

    def every_step(locals_: dict, globals_: dict) -> bool:
        calls.append(1)
        return True

    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    StableBaselines3Instrumentor().instrument()
    try:
        model.learn(32, callback=every_step)
    finally:
        StableBaselines3Instrumentor().uninstrument()
    assert len(calls) == 32


def test_descendants_import_otel_rl_only_with_a_framework(tmp_path: Path) -> None:
    """A Python the script starts (pip, a helper, another interpreter) inherits the bootstrap: it imports otel_rl
    (some 0.2 s, and a message on stderr where otel_rl is missing) only once it imports a framework to instrument."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import json, subprocess, sys
        plain = subprocess.run([sys.executable, "-c", "import sys; print('otel_rl' in sys.modules)"],
                               capture_output=True, text=True)
        gym = subprocess.run([sys.executable, "-c", "import sys, gymnasium; "
                              "print('otel_rl' in sys.modules, hasattr(gymnasium.make, '__wrapped__'))"],
                             capture_output=True, text=True)
        print(json.dumps({"plain": [plain.stdout.strip(), plain.stderr], "gym": [gym.stdout.strip(), gym.stderr]}))
    """))
    done = subprocess.run([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, str(script)], capture_output=True,
                          text=True, env=_env(free_port(), OTEL_RL_EXPORTERS="none"), timeout=180)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["plain"] == ["False", ""]
    assert figures["gym"] == ["True True", ""]  # gymnasium.make patched


def test_instrumentation_dependencies_are_the_extras() -> None:
    """Each instrumentor declares the versions pyproject.toml's extra supports, upper bound included (what
    opentelemetry-instrumentation's dependency check compares with the installed distribution)."""
    from packaging.requirements import Requirement

    from otel_rl.instrumentation import INSTRUMENTORS

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {Requirement(r).name: Requirement(r).specifier for e in ("demo", "sb3", "rllib") for r in extras[e]}
    for instrumentor in INSTRUMENTORS.values():
        for dependency in instrumentor().instrumentation_dependencies():
            requirement = Requirement(dependency)
            assert requirement.specifier == declared[requirement.name], dependency


def test_a_framework_that_is_not_installed_is_skipped_quietly(monkeypatch, caplog) -> None:
    """Under ``otel-rl run`` with opentelemetry-instrumentation installed, a framework the environment lacks (Ray in
    a Gymnasium-only venv) is not instrumented and logs no error (it would, in every Python the script starts)."""
    import logging

    from otel_rl.instrumentation import INSTRUMENTORS, RLlibInstrumentor, instrument_installed

    monkeypatch.setattr(RLlibInstrumentor, "_instruments", ("otel-rl-no-such-framework >= 1",))
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "gymnasium,stable_baselines3")
    caplog.set_level(logging.DEBUG)
    try:
        instrument_installed()
        assert not RLlibInstrumentor().is_instrumented_by_opentelemetry
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        for instrumentor in INSTRUMENTORS.values():
            if instrumentor().is_instrumented_by_opentelemetry:
                instrumentor().uninstrument()


def test_the_environments_own_sitecustomize_still_runs_and_is_the_module(tmp_path: Path) -> None:
    """A sitecustomize the environment had (here on PYTHONPATH) runs once under ``otel-rl run`` and stays what
    ``import sitecustomize`` gives: its names, and a function of it that pickles by reference."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import sys\nsys.own_runs = RUNS = getattr(sys, 'own_runs', 0) + 1\n\n\n"
                                          "def hello():\n    return 'hello'\n")
    code = ("import pickle, sys, sitecustomize; "
            "print(sys.own_runs, sitecustomize.RUNS, pickle.loads(pickle.dumps(sitecustomize.hello))())")
    env = _env(free_port(), OTEL_RL_EXPORTERS="none")
    env["PYTHONPATH"] += os.pathsep + str(own)
    done = subprocess.run([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "1 1 hello"), done.stderr


def test_otel_rl_run_inside_a_zero_code_script_starts_its_own_telemetry() -> None:
    """``otel-rl run`` started by a script that runs under zero-code itself (the variable marking the root is
    inherited) asked for telemetry: its command is a root of its own, not a silent descendant."""
    code = "import otel_rl; print(otel_rl.current() is not None)"
    env = _env(free_port(), OTEL_RL_EXPORTERS="none", OTEL_RL_ZERO_CODE_ROOT="1")
    done = subprocess.run([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr


@pytest.mark.integration
def test_sigterm_under_otel_rl_run_lets_a_record_call_finish(tmp_path: Path) -> None:
    """A SIGTERM that lands inside record_episode (the episode counted, its reward and length not yet observed)
    ends the script once that call returns: the final values show whole episodes, as otel-rl's own handler does.

    The signal is sent from a stand-in for the reward histogram compiled under otel-rl's directory, so it counts
    as otel-rl's code: deterministic, where a real SIGTERM lands there only sometimes."""
    script = tmp_path / "record.py"
    script.write_text(textwrap.dedent("""
        import os
        import otel_rl
        from otel_rl._internal import recording

        hook = '''
        import os, signal

        class Reward:
            def __init__(self, real):
                self.real = real

            def observe(self, key, value):
                os.kill(os.getpid(), signal.SIGTERM)
                return self.real.observe(key, value)
        '''
        namespace = {}
        exec(compile(hook, os.path.join(os.path.dirname(otel_rl.__file__), "_test_hook.py"), "exec"), namespace)
        otel_rl.record_episode("PPO", "a", 1.0, 10)
        otel_rl.record_episode("PPO", "a", 1.0, 10)
        recording._episode_reward = namespace["Reward"](recording._episode_reward)
        otel_rl.record_episode("PPO", "a", 1.0, 10)
        print("not reached", flush=True)
    """))
    port = free_port()
    process = subprocess.Popen([PYTHON, "-m", "otel_rl", "run", "--", PYTHON, str(script)], env=_env(port),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_shutting_down(port)
        scrape = Scrape(port)
        figures = [scrape.value(name, algorithm="PPO", agent_id="a") for name in (
            "rl_training_episodes_total", "rl_training_episode_reward_count", "rl_training_episode_length_count")]
        assert figures == [3, 3, 3]
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        assert process.stdout is not None and process.stdout.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_unsupported_framework_version_is_not_patched(monkeypatch, caplog) -> None:
    """opentelemetry-instrument calls instrument(skip_dep_check=True) after checking only a distribution's
    ``instruments`` extra (otel-rl has none): the instrumentor itself refuses a version outside its range, and says
    so, rather than patch a Gymnasium it was not written for."""
    import logging

    import gymnasium

    from otel_rl.instrumentation import GymnasiumInstrumentor

    original = gymnasium.make
    monkeypatch.setattr(GymnasiumInstrumentor, "_instruments", ("gymnasium >= 99, < 100",))
    caplog.set_level(logging.WARNING, logger="otel_rl")
    GymnasiumInstrumentor().instrument(skip_dep_check=True)
    try:
        assert gymnasium.make is original
        assert any("otel-rl supports <100,>=99" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        GymnasiumInstrumentor().uninstrument()
    assert gymnasium.make is original


def test_a_root_that_cannot_import_otel_rl_still_makes_its_children_descendants(tmp_path: Path) -> None:
    """The script's interpreter cannot import otel_rl (here: a broken otel_rl earlier on its path): it says so,
    and the Python processes it starts (which may be able to) still know they are not the root."""
    broken = tmp_path / "broken" / "otel_rl"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('not this interpreter')\n")
    env = _env(free_port(), OTEL_RL_EXPORTERS="none")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "otel_rl" / "_bootstrap"), str(broken.parent), str(ROOT)])
    code = "import os; print(os.environ.get('OTEL_RL_ZERO_CODE_ROOT') == str(os.getpid()))"
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.strip() == "True", done.stderr
    assert "cannot import otel_rl (not this interpreter)" in done.stderr
