"""The CleanRL-style loop of docs/integrations.md runs as written and records what it says."""

from __future__ import annotations

import re

import pytest
import torch
from scrape import Scrape

import otel_rl

from procs import ROOT, free_port

DOC = ROOT / "docs" / "integrations.md"


def _example(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, f"no example {name!r} in {DOC}"
    return match.group(1)


def test_cleanrl_style_loop_records_iterations_steps_losses_and_signals(monkeypatch):
    """The documented loop, shortened to 2048 steps, exports its iterations, steps, episodes, losses and signals."""
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_HOST", "127.0.0.1")
    monkeypatch.setenv("OTEL_EXPORTER_PROMETHEUS_PORT", str(port))
    code = _example("cleanrl")
    assert "total_timesteps, lr, gamma = 4, 128, 20_000," in code
    namespace: dict = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks train faster on one thread, and the test machine is shared
    try:
        exec(compile(code.replace("20_000", "2_048"), str(DOC), "exec"), namespace)  # noqa: S102 (the doc's example)
    finally:
        torch.set_num_threads(threads)
    assert otel_rl.current().prometheus_port == port

    scrape = Scrape(port)
    run = {"algorithm": "PG", "run_id": "cleanrl-1"}
    assert namespace["global_step"] == 2048
    assert scrape.value("rl_training_environment_steps_total", algorithm="PG") == 2048
    assert scrape.value("rl_training_iterations_total", algorithm="PG") == 4
    assert scrape.value("rl_training_current_iteration", **run) == 4
    assert scrape.value("rl_training_policy_loss_count", algorithm="PG") == 4
    assert scrape.value("rl_training_entropy_count", algorithm="PG") == 4
    assert scrape.value("rl_training_learning_rate", **run) == pytest.approx(2.5e-3)
    assert scrape.value("rl_training_grad_norm", **run) > 0
    assert scrape.value("rl_training_env_steps_per_second", **run) > 0
    assert scrape.value("rl_training_kl_divergence", **run) is not None
    episodes = scrape.value("rl_training_episodes_total", algorithm="PG", agent_id="default")
    assert episodes > 10 and scrape.value("rl_training_episode_length_count", algorithm="PG",
                                          agent_id="default") == episodes
    assert scrape.value("rl_training_runs_total", algorithm="PG", status="completed") == 1
