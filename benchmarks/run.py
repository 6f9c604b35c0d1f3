"""otel-rl performance suite: python benchmarks/run.py [--quick] [--only NAME ...] [--output PATH | --stdout].

Every figure is a median over several repetitions, and every ratio is taken against a baseline measured in the
same process and run, with baseline and candidate interleaved (ABBA order) so that a noisy machine affects both.
Prints a table and writes a JSON summary (default ``benchmarks/results/latest.json``). Not part of the test suite:
the exit status is 0 whether targets pass or miss (``--strict`` makes a miss exit 1).
One module per family (the harness they share: harness.py); ``scaling`` runs only when named in ``--only``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import harness

#: benchmark name: the module whose ``bench(report, quick)`` measures it
MODULES = {"recording": "bench_recording", "train_step": "bench_train_step", "gymnasium": "bench_gymnasium",
           "exposition": "bench_exposition", "scrape_pause": "bench_scrape_pause", "memory": "bench_memory",
           "thread_contention": "bench_thread_contention", "flush": "bench_flush", "export": "bench_export",
           "resources": "resource_metrics", "scaling": "bench_scaling"}
BENCHES = tuple(MODULES)
#: run only when named in --only: curves over many sizes, informative rows only
ON_REQUEST = ("scaling",)
DEFAULT = tuple(name for name in BENCHES if name not in ON_REQUEST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and smaller sizes (about 2 minutes)")
    parser.add_argument("--only", nargs="+", choices=BENCHES,
                        help=f"run only these benchmarks (default: all but {', '.join(ON_REQUEST)})")
    parser.add_argument("--output", default=str(harness.RESULTS / "latest.json"), help="JSON summary path")
    parser.add_argument("--stdout", action="store_true", help="print the JSON summary instead of writing it")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    harness.clean_environment()
    harness.quiet_logs()
    report = harness.Report()
    info = harness.machine()
    print(f"otel-rl benchmarks ({'quick' if args.quick else 'full'}): {info['nproc']} CPUs, {info['cpu']}, "
          f"Python {info['python']}, load {info['loadavg_start']}")
    print(harness.Report.HEADER)
    started = time.perf_counter()
    for name in args.only or DEFAULT:
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(MODULES[name]).bench(report, args.quick)
        report.details.setdefault("bench_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    elapsed = time.perf_counter() - started
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "mode": "quick" if args.quick else "full", "seconds": round(elapsed, 1), "machine": info,
               "results": report.rows, "details": report.details}
    misses = [r for r in report.rows if r["status"] == "MISS"]
    print(f"done in {elapsed:.0f} s: {sum(r['status'] == 'PASS' for r in report.rows)} PASS, {len(misses)} MISS")
    text = json.dumps(summary, indent=1, default=str)
    if args.stdout:
        print(text)
    else:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        print(f"summary: {path}")
    return 1 if args.strict and misses else 0


if __name__ == "__main__":
    sys.exit(main())
