"""The dashboard's episode panels on a real Prometheus with an RLlib multi-agent run: the team's episodes (under
the callback's ``agent_id``) and each agent's part of them are shown apart, never summed."""

from __future__ import annotations

import pytest

import otel_rl
from otel_rl._internal.dashboard import build_dashboard, panel_queries, substitute

from procs import Prometheus, wait_until, workdir

pytestmark = pytest.mark.integration



def test_multi_agent_episodes_are_not_summed_with_the_team_total():
    """An RLlib multi-agent result (2 team episodes; agent "0" in both, agent "1" in one) recorded by
    ``train_step``: with Agent (and Job, Run) = All, the Overview "Episodes" stat shows the team and each agent
    apart (2, 2, 1), never their sum (5), which counts each episode up to three times."""
    from otel_rl._internal.results import AGENT_EPISODES_KEY, EPISODES_KEY

    @otel_rl.train_step(algorithm="PPO", run_id="ma")
    def train():
        return {"training_iteration": 1, EPISODES_KEY: [(10.0, 6), (4.0, 3)],
                AGENT_EPISODES_KEY: [("0", 6.0, 6), ("1", 4.0, 6), ("0", 4.0, 3)]}

    with workdir() as tmp:
        telemetry = otel_rl.init_telemetry({"prometheus": {"host": "127.0.0.1", "port": 0}})
        prometheus = Prometheus(tmp, scrape_targets=[f"127.0.0.1:{telemetry.prometheus_port}"])
        prometheus.start()
        try:
            train()
            wait_until(lambda: prometheus.query('rl_training_episodes_total{agent_id="1"}'), 30,
                       what="the per-agent episodes in Prometheus")
            [expr] = [e for title, e in panel_queries(build_dashboard()) if title == "Episodes"]
            concrete = substitute(expr, {"algorithm": "PPO"}, range_="5m")
            shown = wait_until(lambda: prometheus.query(concrete), 30, what="the stat")
            totals = {series["metric"].get("agent_id"): float(series["value"][1]) for series in shown}
            assert totals == {"default": 2.0, "0": 2.0, "1": 1.0}, (concrete, totals)
        finally:
            telemetry.shutdown()
            prometheus.stop()
