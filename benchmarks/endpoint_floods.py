"""What floods of hostile clients cost training and scrapes: python benchmarks/endpoint_floods.py [--quick].

A training-like loop (pure-Python work plus one record_episode per iteration) runs with a ``/metrics`` endpoint
that needs basic auth (bcrypt, cost 10). Another process plays the clients: one legitimate scraper (right password,
a scrape every 0.25 s, each one's latency kept) and, depending on the phase,

* ``quiet``: nothing else (the baseline);
* ``password``: ``--clients`` (32) threads sending requests with a new wrong password each, as fast as answered;
* ``idle``: 1,000 connections that send nothing and 300 that send their headers a byte every 0.5 s (slowloris).

Phases alternate (ABBA) within one run, so load from other processes affects all. Figures: training iterations
per second as a ratio flood / quiet per repetition (median, min–max) and the slowdown ``1 - ratio``; the
legitimate scrape's latency (median and max) in each phase, and how long a scrape still unanswered at the end of a
phase had waited. Writes ``results/endpoint_floods.json``
(``endpoint_floods-quick.json`` with ``--quick``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

CLIENTS = r"""
import base64, json, socket, sys, threading, time, urllib.request
port, mode, clients, password = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
url = f"http://127.0.0.1:{port}/metrics"
stop = threading.Event()
latencies, floods = [], [0]

def basic(pw):
    return "Basic " + base64.b64encode(f"prometheus:{pw}".encode()).decode()

inflight = [None]

def scraper():
    request = urllib.request.Request(url, headers={"Authorization": basic(password)})
    while not stop.wait(0.25):
        started = inflight[0] = time.monotonic()
        try:
            urllib.request.urlopen(request, timeout=30).read()
            latencies.append(time.monotonic() - started)
        except Exception as exc:
            latencies.append(-1.0)
        inflight[0] = None

def wrong(n):
    i = 0
    while not stop.is_set():
        i += 1
        request = urllib.request.Request(url, headers={"Authorization": basic(f"wrong-{n}-{i}")})
        try:
            urllib.request.urlopen(request, timeout=30).read()
        except Exception:
            pass
        floods[0] += 1

held = []
if mode == "password":
    for n in range(clients):
        threading.Thread(target=wrong, args=(n,), daemon=True).start()
elif mode == "idle":
    held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(1000)]
    slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(300)]
    def trickle():
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10000
        for byte in request:
            for client in slow:
                try:
                    client.send(bytes([byte]))
                except OSError:
                    pass
            if stop.wait(0.5):
                return
    threading.Thread(target=trickle, daemon=True).start()
threading.Thread(target=scraper, daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
stop.set()
waiting = inflight[0]
print(json.dumps({"latencies": latencies, "flood_requests": floods[0],
                  "unfinished": None if waiting is None else time.monotonic() - waiting}), flush=True)
"""


def _train(seconds: float) -> float:
    """Iterations per second of scrape_storm's recording loop, over 50 series."""
    from scrape_storm import train_recording  # imports otel_rl: only in the process that trains

    return train_recording(seconds, 50)


def _phase(port: int, mode: str, clients: int, password: str, seconds: float) -> tuple[float, list[float], int,
                                                                                      float | None]:
    proc = subprocess.Popen([sys.executable, "-c", CLIENTS, str(port), mode, str(clients), password],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)  # the flood is under way
        rate = _train(seconds)
        proc.stdin.write("\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    return rate, result["latencies"], result["flood_requests"], result["unfinished"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32, help="wrong-password clients")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="1 s phases, 2 repetitions: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.reps = 1.0, 2
    harness.quiet_logs()
    harness.clean_environment()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (soft < 4096 and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))  # the idle flood's 1,300 connections
    import bcrypt
    import yaml

    import otel_rl

    password = "bench-scrape-password"
    with tempfile.TemporaryDirectory() as tmp:
        web = Path(tmp) / "web.yml"
        web.write_text(yaml.safe_dump({"basic_auth_users": {
            "prometheus": bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()}}))
        handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "prometheus": {
            "host": "127.0.0.1", "port": 0, "web_config_file": str(web)}})
        port = handle.prometheus_port
        assert port is not None
        _train(0.5)  # warm up
        modes = ["quiet", "password", "idle"]
        rates: dict[str, list[float]] = {m: [] for m in modes}
        latencies: dict[str, list[float]] = {m: [] for m in modes}
        flood_requests: list[int] = []
        unfinished: dict[str, list[float]] = {m: [] for m in modes}  #: scrapes still waiting when a phase ended
        for rep in range(args.reps):
            for mode in (modes if rep % 2 == 0 else modes[::-1]):
                rate, lat, flooded, waiting = _phase(port, mode, args.clients, password, args.seconds)
                rates[mode].append(rate)
                if waiting is not None:
                    unfinished[mode].append(round(waiting, 2))
                latencies[mode].extend(lat)
                if mode == "password":
                    flood_requests.append(flooded)
        handle.shutdown(timeout=2)
    result: dict[str, object] = {"machine": harness.machine(), "seconds": args.seconds, "reps": args.reps,
                                 "quiet_iter_per_s": round(statistics.median(rates["quiet"]), 1)}
    for mode in modes:
        ok = [x for x in latencies[mode] if x >= 0]
        entry: dict[str, object] = {
            "scrapes": len(latencies[mode]), "failed_scrapes": len(latencies[mode]) - len(ok),
            "scrape_latency_median_s": round(statistics.median(ok), 4) if ok else None,
            "scrape_latency_max_s": round(max(ok), 4) if ok else None,
            "unfinished_scrapes_waiting_s": unfinished[mode]}
        if mode != "quiet":
            ratio = harness.ratios(rates, mode, "quiet")
            entry.update({"iter_per_s": round(statistics.median(rates[mode]), 1),
                          "ratio_to_quiet": harness.mmm(ratio), "slowdown": round(1 - statistics.median(ratio), 3)})
        if mode == "password":
            entry["wrong_password_requests_per_phase"] = flood_requests
        result[mode] = entry
    out = harness.RESULTS / ("endpoint_floods-quick.json" if args.quick else "endpoint_floods.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
