"""How much a storm of scrapes slows training: python benchmarks/scrape_storm.py [--clients 50] [--seconds 3] [--quick].

A training-like loop (pure-Python work plus one record_episode per iteration) runs with the /metrics endpoint
serving; its iterations per second are measured with no scraper, then with ``--clients`` scrapers looping GET
/metrics from another process (as Prometheus servers would), alternating (ABAB) so a noisy machine affects both.
The figure is the ratio quiet / storm: 1.0 means scrapes cost training nothing. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import otel_rl  # noqa: E402

SCRAPERS = """
import sys, threading, urllib.request
url, clients = sys.argv[1], int(sys.argv[2])
def loop():
    while True:
        try:
            urllib.request.urlopen(url, timeout=30).read()
        except Exception:
            pass
for _ in range(clients):
    threading.Thread(target=loop, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


def train_recording(seconds: float, series: int) -> float:
    """Iterations per second of a loop that does some Python work and records one episode per iteration."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        total = 0.0
        for i in range(2000):
            total += i * 0.5
        otel_rl.record_episode("PPO", f"run-{done % series}", total % 100.0, 10)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--series", type=int, default=500, help="distinct run ids recorded (the state's size)")
    parser.add_argument("--quick", action="store_true",
                        help="5 clients, 0.5 s windows, 1 repetition, 50 series: a smoke run, not a figure")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.seconds, args.reps, args.series = 5, 0.5, 1, 50
    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {"host": "127.0.0.1", "port": 0}})
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    renders = [0]
    render = handle.scrape.render

    def counted(accept: str = ""):  # how many renders the scrapes cost (shared renders: fewer than scrapes)
        renders[0] += 1
        return render(accept)

    handle.scrape.render = counted  # type: ignore[method-assign]
    while len(handle.metrics_text()) < args.series * 100:  # warm up: every series exists before measuring
        train_recording(0.5, args.series)
    quiet, storm = [], []
    for _ in range(args.reps):
        quiet.append(train_recording(args.seconds, args.series))
        scrapers = subprocess.Popen([sys.executable, "-c", SCRAPERS, url, str(args.clients)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert scrapers.stdout is not None and scrapers.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            scrapes_before = handle.server.scrapes if handle.server else 0
            renders_before = renders[0]
            storm.append(train_recording(args.seconds, args.series))
            scrapes = (handle.server.scrapes if handle.server else 0) - scrapes_before
            rendered = renders[0] - renders_before
        finally:
            scrapers.kill()
            scrapers.wait()
    result = {"clients": args.clients, "series": args.series, "exposition_bytes": len(handle.metrics_text()),
              "quiet_iter_per_s": round(statistics.median(quiet), 1),
              "storm_iter_per_s": round(statistics.median(storm), 1),
              "slowdown": round(statistics.median(quiet) / statistics.median(storm), 2),
              "scrapes_in_last_storm": scrapes, "renders_in_last_storm": rendered}
    handle.shutdown(timeout=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
