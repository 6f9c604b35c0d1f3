"""The measuring harness every benchmark shares: interleaved same-run ratios, the table, the machine, RSS.

A figure is a median over repetitions; a ratio is candidate / baseline taken per repetition, the two run in the same
process with their order alternating (ABBA), so load from other processes on a shared machine affects both sides.
Importing this module puts ``benchmarks/`` and the repository root on ``sys.path`` (the scripts import their sibling
modules by name); the scripts call :func:`quiet_logs` and :func:`clean_environment` before measuring.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# run.py's sizes, name: (quick, full)
SIZES: dict[str, tuple[Any, Any]] = {
    "reps": (5, 9),
    "recording_iters": (2000, 5000),
    "train_step_calls": (100, 300),
    "gym_steps": (10000, 20000),
    "vec_steps": (1000, 4000),
    "expo_reps": (3, 7),
    "expo_sizes": ((1000, 10000), (1000, 10000)),
    "memory_checkpoints": ((2000, 10000, 100000), (2000, 10000, 100000)),
    "export_reps": (3, 7),
    "throughput_s": (1.0, 2.0),
    "throughput_reps": (4, 8),
    # rows whose one repetition may take seconds at full size (50k-series renders, scrapes, exports, threads)
    "heavy_reps": (2, 5),
    "render_kind_sizes": ((1_000,), (10_000, 50_000)),
    "export_sizes": ((10_000,), (10_000, 50_000)),
    "pause_sizes": ((2_000,), (50_000,)),
    "memory_per_series": (2_000, 50_000),
    "contention_records": (5_000, 100_000),
    "sync_vec_steps": (300, 3000),
    "flush_series": (1_000, 1_000),
    # scaling curves: (sizes, records per repetition) for recording, sizes for render / export / pause
    "curve_record": (((100, 1_000), 20_000), ((100, 1_000, 10_000, 50_000), 200_000)),
    "curve_render": ((500, 1_000), (1_000, 5_000, 20_000)),
    "curve_pause": ((500, 1_000), (1_000, 10_000, 20_000)),
}


def size(name: str, quick: bool) -> Any:
    """run.py's size ``name`` in quick or full mode."""
    return SIZES[name][0 if quick else 1]


def interleave(variants: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Run each variant once per repetition, alternating the order (ABBA); returns the times per variant."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            times[name].append(variants[name]())
    return times


def ratios(times: dict[str, list[float]], candidate: str, baseline: str) -> list[float]:
    """Per-repetition ratios (same repetition, so the same machine state)."""
    return [c / b for c, b in zip(times[candidate], times[baseline])]


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.3g}..{max(values):.3g}"


def mmm(values: list[float], fmt: str = "{:.3g}") -> str:
    """``median [min–max]``."""
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def timed(func: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
    """A variant for :func:`interleave`: one call of ``func``, measured with ``clock``."""
    def run() -> float:
        started = clock()
        func()
        return clock() - started
    return run


class Report:
    """run.py's table: one printed line and one JSON row per figure, plus free-form details."""

    HEADER = f"  {'measure':<52} {'median':>12} {'unit':<8} {'ratio':<34} {'target':<14} status"

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}

    def add(self, bench: str, measure: str, value: float, unit: str, ratio: float | None = None,
            baseline: str = "", target: str = "", passed: bool | None = None, note: str = "") -> None:
        row = {"bench": bench, "measure": measure, "value": round(value, 4), "unit": unit,
               "ratio": None if ratio is None else round(ratio, 4), "baseline": baseline, "target": target,
               "status": "" if passed is None else ("PASS" if passed else "MISS"), "note": note}
        self.rows.append(row)
        ratio_text = "" if ratio is None else f"{ratio:.3f}x {baseline}"
        print(f"  {measure:<52} {value:>12.4g} {unit:<8} {ratio_text:<34} {target:<14} {row['status']}", flush=True)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    import opentelemetry.sdk.version as otel_version
    import prometheus_client

    try:
        load: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "opentelemetry_sdk": otel_version.__version__,
            "prometheus_client": getattr(prometheus_client, "__version__", "0.26.x"), "loadavg_start": load}


def quiet_logs() -> None:
    """Silence otel-rl's and OpenTelemetry's logs: the memory bench drops values on purpose and the export bench
    takes the collector down, and their warnings would break up the table."""
    for name in ("otel_rl", "opentelemetry"):
        logging.getLogger(name).setLevel(60)


def clean_environment() -> None:
    """Benchmarks choose their exporters themselves: a user's OTEL_RL_EXPORTERS must not add one."""
    os.environ.pop("OTEL_RL_EXPORTERS", None)
    os.environ.pop("OTEL_METRICS_EXPORTER", None)


def rss_bytes() -> int:
    """This process' resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_child(script: str | Path, *args: str, timeout: float = 600) -> Any:
    """Run ``python script args...`` in a fresh process (memory figures need one) and parse its last line as JSON."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} {' '.join(args)} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
