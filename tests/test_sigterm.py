"""The final export on SIGTERM (``otel_rl._internal.sigterm``): real subprocesses, a real collector and Prometheus."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import otel_rl
from otel_rl._internal import sigterm

import procs

ROOT = Path(__file__).resolve().parent.parent

#: A training loop that pushes (a long interval: only the final export can bring its totals to Prometheus). A test
#: handler installed after init_telemetry reports how many episodes were recorded, then chains to the previous
#: handler (otel-rl's) as a well-behaved handler does. ``n`` is incremented in the argument list of the record
#: call, after anything else that calls a function: CPython handles signals on function entry and after a call
#: returns (not between an integer addition and the call), so the handler never sees a record counted but not made,
#: and otel-rl's handler postpones the export while the record call runs.
CHILD = textwrap.dedent("""
    import faulthandler, os, signal, sys
    import otel_rl

    faulthandler.dump_traceback_later(45, exit=True)  # a process that did not die: its threads, in the failure

    endpoint, protocol, run, report = sys.argv[1:5]
    otel_rl.init_telemetry({"service_name": "sigterm-test", "exporters": ["otlp"], "shutdown_timeout": 20,
                            "otlp": {"endpoint": endpoint, "protocol": protocol, "export_interval": 3600}})
    previous = signal.getsignal(signal.SIGTERM)
    n = 0

    def report_count(signum, frame):
        with open(report, "w") as f:
            f.write(str(n))
        if callable(previous):
            previous(signum, frame)  # otel-rl's: it may return first, and end the process a moment later
        else:  # a default SIGTERM (without otel-rl's handler)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, report_count)
    print("recording", flush=True)
    while True:
        otel_rl.record_episode("PPO", run, 1.5, n := n + 1)  # nothing that calls between n += 1 and the record
""")


def _episodes(prom: procs.Prometheus, run: str) -> float | None:
    found = prom.query(f'rl_training_episodes_total{{agent_id="{run}"}}')
    return float(found[0]["value"][1]) if found else None


@pytest.mark.integration
def test_sigterm_at_random_moments_exports_exact_totals(tmp_path):
    """A pushing process killed by SIGTERM at a random moment exports exactly what it recorded, then dies of
    SIGTERM (gRPC and HTTP)."""
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    with procs.push_stack() as (_, prom, collector):
        for i, protocol in enumerate(["grpc", "http/protobuf"] * 2):
            endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
            run, report = f"kill-{i}", tmp_path / f"count-{i}"
            child = subprocess.Popen([sys.executable, "-c", CHILD, endpoint, protocol, run, str(report)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
            try:
                assert child.stdout is not None and child.stdout.readline() == "recording\n", child.stderr
                threading.Event().wait(rng.uniform(0.0, 1.5))  # the random moment (not a synchronisation)
                child.send_signal(signal.SIGTERM)
                _, err = child.communicate(timeout=60)
            finally:
                child.kill()
            assert child.returncode == -signal.SIGTERM, (seed, child.returncode, err[-3000:])
            recorded = float(report.read_text())
            assert recorded > 0
            logs = collector.process.output() if collector.process else ""
            seen = procs.wait_until(lambda run=run, n=recorded: _episodes(prom, run) == n and n, 60,
                                    what=f"{recorded:g} episodes of {run} in Prometheus (seed {seed}, "
                                         f"last seen {_episodes(prom, run)}; the process' log: {err[-3000:]}; "
                                         f"the collector's log: {logs})")
            assert seen == recorded
            count = prom.query(f'rl_training_episode_reward_count{{agent_id="{run}"}}')
            assert float(count[0]["value"][1]) == recorded, (seed, count)


def _fresh_sigterm(func):
    """Run ``func`` with SIGTERM at its default disposition, and put the test process's handler back after."""
    saved = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        return func()
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_handler_installed_only_over_the_default():
    """init_telemetry puts its handler on a default SIGTERM and never replaces one that is already there."""
    def mine(signum, frame):  # pragma: no cover (never called)
        pass

    def check():
        handle = otel_rl.init_telemetry({"exporters": ["none"]})
        try:
            assert signal.getsignal(signal.SIGTERM) is sigterm._on_sigterm
        finally:
            handle.shutdown()
        signal.signal(signal.SIGTERM, mine)
        handle = otel_rl.init_telemetry({"exporters": ["none"]})
        try:
            assert signal.getsignal(signal.SIGTERM) is mine
        finally:
            handle.shutdown()

    _fresh_sigterm(check)


def test_handler_can_be_turned_off():
    """flush_on_sigterm: false (OTEL_RL_FLUSH_ON_SIGTERM=false) leaves SIGTERM at its default."""
    def check():
        handle = otel_rl.init_telemetry({"exporters": ["none"], "flush_on_sigterm": False})
        try:
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        finally:
            handle.shutdown()

    _fresh_sigterm(check)


def test_no_handler_from_another_thread():
    """Only the main thread may set a signal handler: from another thread nothing is installed, nothing raises."""
    result: list[bool] = []

    def check():
        thread = threading.Thread(target=lambda: result.append(sigterm.install(lambda: None)))
        thread.start()
        thread.join()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    _fresh_sigterm(check)
    assert result == [False]


#: A loop under a Python tracer (as coverage or a debugger sets one) that sends itself SIGTERM from inside a record
#: call, while that call holds its metric's lock: the final export needs that lock.
TRACED_CHILD = textwrap.dedent("""
    import faulthandler, os, signal, sys
    import otel_rl

    STORE_FILES = tuple(os.path.join("_internal", name) for name in ("metric.py", "histogram.py", "store.py"))

    faulthandler.dump_traceback_later(45, exit=True)

    endpoint, run, report = sys.argv[1:4]
    otel_rl.init_telemetry({"service_name": "sigterm-test", "exporters": ["otlp"], "shutdown_timeout": 20,
                            "otlp": {"endpoint": endpoint, "protocol": "grpc", "export_interval": 3600}})
    n = 0
    sent = False

    def local(frame, event, arg):
        global sent
        lock = getattr(frame.f_locals.get("self"), "lock", None)
        if event == "line" and n >= 1000 and not sent and lock is not None and lock.locked():
            sent = True
            with open(report, "w") as f:
                f.write(str(n))
            os.kill(os.getpid(), signal.SIGTERM)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.endswith(STORE_FILES) else None

    sys.settrace(tracer)
    while True:
        otel_rl.record_episode("PPO", run, 1.5, n := n + 1)
""")


@pytest.mark.integration
def test_sigterm_under_a_tracer_inside_a_record_call_exports_exact_totals(tmp_path):
    """Under a tracer (coverage, a debugger), a SIGTERM inside a record call waits for that call as without one:
    exporting at once would wait on the lock the interrupted call holds, for the whole shutdown_timeout, and lose the
    final export."""
    with procs.push_stack() as (_, prom, collector):
        report = tmp_path / "count"
        child = subprocess.Popen([sys.executable, "-c", TRACED_CHILD, collector.grpc_endpoint, "traced", str(report)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            _, err = child.communicate(timeout=60)
        finally:
            child.kill()
        assert child.returncode == -signal.SIGTERM, (child.returncode, err[-3000:])
        assert "did not succeed" not in err, err[-3000:]
        recorded = float(report.read_text())
        seen = procs.wait_until(lambda: _episodes(prom, "traced") == recorded and recorded, 60,
                                what=f"{recorded:g} episodes in Prometheus (last seen {_episodes(prom, 'traced')}; "
                                     f"the process' log: {err[-3000:]})")
        assert seen == recorded


def test_shutdown_puts_sigterm_back_to_its_default():
    """After shutdown() SIGTERM is at its default again (a Python handler delays SIGTERM until the main thread runs
    Python code, and a library that installs its own only over the default would step aside for nothing); a later
    init_telemetry installs the handler again. A handler installed after otel-rl's is left in place."""
    def mine(signum, frame):  # pragma: no cover (never called)
        pass

    def check():
        handle = otel_rl.init_telemetry({"exporters": ["none"]})
        assert signal.getsignal(signal.SIGTERM) is sigterm._on_sigterm
        handle.shutdown()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        handle = otel_rl.init_telemetry({"exporters": ["none"]})
        assert signal.getsignal(signal.SIGTERM) is sigterm._on_sigterm
        signal.signal(signal.SIGTERM, mine)
        handle.shutdown()
        assert signal.getsignal(signal.SIGTERM) is mine

    _fresh_sigterm(check)


#: A record call that never returns (a tracer stands in for, say, a logging handler stuck on the network), under way
#: when SIGTERM comes: the handler waits for it, and says so on stdout.
STUCK_CHILD = textwrap.dedent("""
    import faulthandler, os, signal, sys, time
    import otel_rl

    STORE_FILES = tuple(os.path.join("_internal", name) for name in ("metric.py", "histogram.py", "store.py"))

    faulthandler.dump_traceback_later(40, exit=True)

    otel_rl.init_telemetry({"service_name": "sigterm-test", "exporters": ["otlp"], "shutdown_timeout": 2,
                            "otlp": {"endpoint": sys.argv[1], "protocol": "grpc", "export_interval": 3600}})

    def local(frame, event, arg):
        lock = getattr(frame.f_locals.get("self"), "lock", None)
        if event == "line" and lock is not None and lock.locked():
            print("stuck", flush=True)
            while sys.gettrace() is tracer:  # until the handler puts its own tracer on, waiting for this call
                time.sleep(0.01)
            print("waiting", flush=True)
            while True:  # the call that never returns: what the test is about
                time.sleep(0.01)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.endswith(STORE_FILES) else None

    sys.settrace(tracer)
    otel_rl.record_episode("PPO", "stuck", 1.5, 1)
""")


def test_a_second_sigterm_ends_a_process_whose_interrupted_call_never_returns():
    """The handler waits for the interrupted record call; if that call never returns, a second SIGTERM exports at
    once (within shutdown_timeout) and the process dies of SIGTERM: a handler that ignored it would leave the process
    deaf to SIGTERM."""
    child = subprocess.Popen([sys.executable, "-c", STUCK_CHILD, f"127.0.0.1:{procs.free_port()}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout is not None and child.stdout.readline() == "stuck\n"
        child.send_signal(signal.SIGTERM)
        assert child.stdout.readline() == "waiting\n"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGTERM, (child.returncode, err[-3000:])
