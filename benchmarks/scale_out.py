"""Scale-out benchmark: N processes pushing over OTLP into one collector that remote-writes into one Prometheus.

    python benchmarks/scale_out.py [--processes 4 16 64] [--series 1000] [--seconds 30] [--output PATH] [--quick]

Each process runs otel-rl with ``otlp.export_interval`` 1 s and keeps ``--series`` counter series
(``rl_training_environment_steps_total`` with that many ``algorithm`` values) plus one freshness gauge, updating
them all several times a second. For each N it measures, during a steady window:

- the collector's CPU (cores, from /proc) and resident memory, also per 10k data points/s received;
- Prometheus' CPU and memory (for scale, the ingest side);
- the end-to-end delay: ``now - value`` of each process' freshness gauge (set to ``time.time()`` when recorded)
  as Prometheus answers it, which includes the export interval (up to 1 s) and the collector's batch timeout;
- exactness: after every process shut down (final flush), ``sum(rl_training_environment_steps_total)`` in
  Prometheus against the sum of what the processes say they recorded.

Needs ``prometheus`` on PATH and the collector (``OTEL_RL_COLLECTOR`` or ``scripts/build-collector.sh``).
Writes a JSON summary (default ``benchmarks/results/scale_out.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

import procs  # noqa: E402  (the test suite's helpers that start Prometheus and the collector on free ports)

_WORKER = """
import json, sys, time
import otel_rl
from otel_rl._internal.store import REGISTRY

endpoint, job, index, series, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
handle = otel_rl.init_telemetry({"exporters": ["otlp"], "service_name": job, "cardinality_limit": series + 10,
                                 "otlp": {"endpoint": endpoint, "export_interval": 1, "timeout": 10}})
names = [f"a{j:04d}" for j in range(series)]
fresh = REGISTRY["rl_training_start_timestamp"]
total = 0
print("ready", flush=True)
sys.stdin.readline()   # start together
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for name in names:
        otel_rl.record_environment_steps(name, 1)
    total += series
    fresh.set(("freshness", index), time.time())
    time.sleep(0.25)
ok = handle.shutdown(timeout=30)
print(json.dumps({"total": total, "flushed": ok}), flush=True)
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_one(n: int, series: int, seconds: float, workdir: Path) -> dict:
    prom = procs.Prometheus(workdir).start()
    collector = procs.Collector(workdir, prom.remote_write_url).start()
    job = f"scale-{n}"
    idle_rss = _rss_mib(collector.process.proc.pid)  # type: ignore[union-attr]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OTEL_RL_WORKER_CONFIG", None)
    workers: list[subprocess.Popen] = []
    try:
        started = time.monotonic()
        for i in range(n):
            workers.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER, collector.grpc_endpoint, job, str(i), str(series), str(seconds)],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        startup = time.monotonic() - started
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        time.sleep(min(8.0, seconds / 3))  # warm-up: every process exported a few times
        cpid, ppid = collector.process.proc.pid, prom.process.proc.pid  # type: ignore[union-attr]
        c0, p0, t0 = _cpu_seconds(cpid), _cpu_seconds(ppid), time.monotonic()
        delays: list[float] = []
        rss_c: list[float] = []
        rss_p: list[float] = []
        window_end = started + startup + seconds - 2
        while time.monotonic() < window_end:
            now = time.time()
            values = [float(r["value"][1]) for r in
                      prom.query(f'rl_training_start_timestamp{{job="{job}",algorithm="freshness"}}')]
            delays.extend(now - v for v in values)
            rss_c.append(_rss_mib(cpid))
            rss_p.append(_rss_mib(ppid))
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        collector_cores = (_cpu_seconds(cpid) - c0) / elapsed
        prometheus_cores = (_cpu_seconds(ppid) - p0) / elapsed
        # What actually arrived (a saturated machine exports less often than every second): samples per second.
        window = int(elapsed)
        got = prom.query(f'sum(count_over_time(rl_training_environment_steps_total{{job="{job}"}}[{window}s]))')
        delivered = float(got[0]["value"][1]) / window * (series + 1) / series if got else 0.0
        load = os.getloadavg()[0]
        totals = []
        for w in workers:
            out, _ = w.communicate(timeout=120)
            totals.append(json.loads(out.strip().splitlines()[-1]))
        want = sum(t["total"] for t in totals)

        def arrived() -> float | None:
            got = prom.query(f'sum(rl_training_environment_steps_total{{job="{job}"}})')
            value = float(got[0]["value"][1]) if got else 0.0
            return value if value == want else None

        try:
            got_total = procs.wait_until(arrived, 60, what="exact total")
        except AssertionError:
            got = prom.query(f'sum(rl_training_environment_steps_total{{job="{job}"}})')
            got_total = float(got[0]["value"][1]) if got else 0.0
        series_seen = prom.query(f'count(rl_training_environment_steps_total{{job="{job}"}})')
        nominal = n * (series + 1) / 1.0
        points_per_s = delivered or nominal
        delays.sort()
        return {
            "processes": n, "series_per_process": series, "data_points_per_s_nominal": nominal,
            "data_points_per_s": round(points_per_s), "load_average_1m": round(load, 1),
            "startup_s": round(startup, 1), "window_s": round(elapsed, 1),
            "collector_cores": round(collector_cores, 3),
            "collector_cores_per_10k_points_s": round(collector_cores / (points_per_s / 10_000), 3),
            "collector_rss_mib_idle": round(idle_rss, 1), "collector_rss_mib_max": round(max(rss_c), 1),
            "collector_rss_growth_mib_per_10k_points_s": round((max(rss_c) - idle_rss) / (points_per_s / 10_000), 1),
            "prometheus_cores": round(prometheus_cores, 3), "prometheus_rss_mib_max": round(max(rss_p), 1),
            "delay_s_median": round(statistics.median(delays), 2) if delays else None,
            "delay_s_p95": round(delays[int(0.95 * (len(delays) - 1))], 2) if delays else None,
            "delay_s_max": round(delays[-1], 2) if delays else None,
            "recorded_total": want, "prometheus_total": got_total, "exact": got_total == want,
            "series_in_prometheus": int(series_seen[0]["value"][1]) if series_seen else 0,
            "all_flushed": all(t["flushed"] for t in totals),
        }
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.communicate()
        collector.stop()
        prom.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--output", type=Path, help="JSON summary (default benchmarks/results/scale_out.json, "
                                                    "scale_out-quick.json with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="2 processes, 50 series, 8 s: a smoke run that shows the pipeline works, not a figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.processes, args.series, args.seconds = [2], 50, 8.0
    args.output = args.output or HERE / "results" / ("scale_out-quick.json" if args.quick else "scale_out.json")
    results = []
    for n in args.processes:
        with procs.workdir() as wd:
            result = run_one(n, args.series, args.seconds, wd)
        results.append(result)
        print(json.dumps(result), flush=True)
    summary = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
               "cpus": os.cpu_count(), "python": platform.python_version(), "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{'N':>4} {'points/s':>9} {'coll. cores':>11} {'per 10k/s':>9} {'coll. MiB':>9} {'prom cores':>10} "
          f"{'delay p50/p95 s':>16} {'exact':>6}")
    for r in results:
        print(f"{r['processes']:>4} {r['data_points_per_s']:>9.0f} {r['collector_cores']:>11.3f} "
              f"{r['collector_cores_per_10k_points_s']:>9.3f} {r['collector_rss_mib_max']:>9.1f} "
              f"{r['prometheus_cores']:>10.3f} {r['delay_s_median']!s:>7}/{r['delay_s_p95']!s:<8} "
              f"{r['exact']!s:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
