"""Strict mode (``strict: true`` or ``OTEL_RL_STRICT=1``): misuse raises in tests and notebooks; the default never
raises."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import otel_rl
from otel_rl import testing
from otel_rl._internal.store import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
LOCAL = {"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}}


@pytest.fixture
def strict():
    handle = otel_rl.init_telemetry({**LOCAL, "strict": True})
    yield handle
    handle.shutdown(timeout=2)


def test_bad_values_raise_and_are_still_counted(strict):
    """A NaN, a string or a negative counter increment raises StrictModeError naming the metric and reason."""
    with pytest.raises(otel_rl.StrictModeError, match=r"rl_training_policy_loss \(reason: nan"):
        otel_rl.record_loss_metrics("PPO", policy_loss=float("nan"))
    with pytest.raises(otel_rl.StrictModeError, match=r"rl_training_environment_steps_total \(reason: negative"):
        otel_rl.record_environment_steps("PPO", -5)
    with pytest.raises(otel_rl.StrictModeError, match="wrong_type"):
        otel_rl.record_episode("PPO", "a", "high", 10)
    with pytest.raises(otel_rl.StrictModeError, match="rl_training_custom_x"):
        otel_rl.record_scalar("x", float("inf"))
    assert testing.dropped("rl_training_policy_loss", "nan") == 1
    assert isinstance(otel_rl.StrictModeError("x"), ValueError)


def test_bad_labels_and_wrong_helper_arguments_raise(strict):
    """A label whose str() fails, a missing or unknown argument, or a bad record_scalar label raises."""
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(otel_rl.StrictModeError, match="bad_labels"):
        otel_rl.record_training_start(Unprintable())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        otel_rl.record_episode("PPO", reward=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        otel_rl.record_loss_metrics("PPO", policy=1.0)  # type: ignore[call-arg]
    with pytest.raises(otel_rl.StrictModeError, match="bad_labels"):
        otel_rl.record_scalar("ok", 1.0, **{"bad-key": "v"})
    with pytest.raises(otel_rl.StrictModeError, match="bad_name"):
        otel_rl.record_scalar("", 1.0)


def test_a_train_step_result_with_a_bad_value_raises(strict):
    """@train_step passes strict errors on instead of logging them."""
    @otel_rl.train_step(algorithm="PPO")
    def step() -> dict:
        return {"policy_loss": float("nan")}

    with pytest.raises(otel_rl.StrictModeError, match="rl_training_policy_loss"):
        step()


def test_recording_without_init_telemetry_raises_under_the_environment_switch():
    """With OTEL_RL_STRICT=1 and no init_telemetry, the first record raises, naming what to call."""
    code = """
        import otel_rl
        try:
            otel_rl.record_episode("PPO", "a", 1.0, 10)
        except otel_rl.StrictModeError as exc:
            print("RAISED:", exc)
        try:
            otel_rl.record_scalar("x", 1.0)
        except otel_rl.StrictModeError as exc:
            print("RAISED:", exc)
        otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
        otel_rl.record_episode("PPO", "b", 1.0, 10)
        print("RECORDED")
    """
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""), "OTEL_RL_STRICT": "1"}
    env.pop("OTEL_RL_WORKER_CONFIG", None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("RAISED: otel-rl (strict mode): rl_training_episodes_total was recorded but "
                               "init_telemetry() has not been called")
    assert lines[1].startswith("RAISED: otel-rl (strict mode): rl_training_custom_x was recorded but")
    assert lines[2] == "RECORDED"


def test_default_mode_never_raises_and_strict_ends_with_its_telemetry():
    """Without strict the same misuse is dropped and counted; strict: true lasts until its telemetry shuts down."""
    otel_rl.record_loss_metrics("PPO", policy_loss=float("nan"))
    otel_rl.record_episode("PPO", reward=1.0)  # type: ignore[call-arg]
    otel_rl.record_scalar("", 1.0)
    assert testing.dropped("rl_training_policy_loss", "nan") == 1
    handle = otel_rl.init_telemetry({**LOCAL, "strict": True})
    assert REGISTRY.strict
    handle.shutdown(timeout=2)
    assert not REGISTRY.strict
    otel_rl.record_loss_metrics("PPO", policy_loss=float("nan"))
    assert testing.dropped("rl_training_policy_loss", "nan") == 2
