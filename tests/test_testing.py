"""otel_rl.testing and the ``otel_rl_metrics`` pytest fixture that users' own tests get."""

from __future__ import annotations

from pathlib import Path

import pytest

import otel_rl
from otel_rl import testing

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent


def test_capture_metrics_starts_empty_and_forgets_at_the_end():
    """Values recorded before the block are not seen in it, and the block's values are gone after it."""
    otel_rl.record_training_iteration("PPO", 1)
    with testing.capture_metrics() as captured:
        assert captured.value("rl_training_iterations_total", algorithm="PPO") is None
        otel_rl.record_training_iteration("PPO", 2)
        captured.assert_recorded("rl_training_iterations_total", 1, algorithm="PPO")
        assert captured.series("rl_training_current_iteration") == {(("algorithm", "PPO"), ("run_id", "default")): 2.0}
    assert testing.value("rl_training_iterations_total", algorithm="PPO") is None


def test_assertion_helpers_fail_with_what_was_recorded():
    """assert_recorded and assert_nothing_dropped fail with a message showing the recorded series and drops."""
    with testing.capture_metrics() as captured:
        otel_rl.record_environment_steps("PPO", 10)
        with pytest.raises(AssertionError, match=r"= 5.*it is 10.0.*'algorithm', 'PPO'"):
            captured.assert_recorded("rl_training_environment_steps_total", 5, algorithm="PPO")
        with pytest.raises(AssertionError, match="it is None"):
            captured.assert_recorded("rl_training_environment_steps_total", algorithm="SAC")
        captured.assert_nothing_dropped()
        otel_rl.record_environment_steps("PPO", None)
        with pytest.raises(AssertionError, match=r"\('rl_training_environment_steps_total', 'none'\): 1.0"):
            captured.assert_nothing_dropped()
        with pytest.raises(KeyError, match="label keys"):
            captured.value("rl_training_environment_steps_total", algo="PPO")


def test_the_fixture_works_in_a_users_test_file(pytester, monkeypatch):
    """A user's test using otel_rl_metrics passes, and a wrong expectation fails, with the plugin loaded by name."""
    # Installed, the plugin also loads through its entry point; load it once, by name, whatever the environment.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_user="""
        import otel_rl

        def test_records(otel_rl_metrics):
            otel_rl.record_episode("PPO", "agent_0", 12.5, 30)
            otel_rl_metrics.assert_recorded("rl_training_episodes_total", 1, algorithm="PPO", agent_id="agent_0")
            reward = otel_rl_metrics.histogram("rl_training_episode_reward", algorithm="PPO", agent_id="agent_0")
            assert reward.sum == 12.5

        def test_starts_empty(otel_rl_metrics):
            assert otel_rl_metrics.value("rl_training_episodes_total", algorithm="PPO", agent_id="agent_0") is None

        def test_wrong_expectation(otel_rl_metrics):
            otel_rl.record_training_error("data_error")
            otel_rl_metrics.assert_recorded("rl_training_errors_total", 2, error_type="data_error")
    """)
    result = pytester.runpytest_inprocess("-p", "otel_rl.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)


def test_the_plugin_is_registered_as_a_pytest11_entry_point():
    """pyproject.toml declares the plugin, so an installed otel-rl gives every test session the fixture."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points.pytest11]\notel_rl = "otel_rl.pytest_plugin"\n' in text
