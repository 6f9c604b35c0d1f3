"""Exporting: CPU per OTLP/HTTP export vs the plain OTel SDK, and a training loop's speed with the collector up/down."""

from __future__ import annotations

import gc
import random
import time
from typing import Any

import harness
from harness import Report, median, mmm, ratios, spread
from otlp_sink import otlp_config, plain_sdk, start_sink, stop
from workloads import populate

#: CPU per export against the plain OTel SDK exporting the same series
CPU_TARGET = 1.0


def export_times(port: int, size: int, reps: int) -> tuple[dict[str, list[float]], int]:
    """Process CPU seconds per OTLP/HTTP ``force_flush`` of about ``size`` series (:func:`workloads.populate`),
    otel-rl ("otel_rl") and the plain OTel SDK ("plain OTel SDK") exporting the same series to the sink on ``port``;
    and the number of label sets."""
    import otel_rl
    from otel_rl.testing import reset

    reset()
    handle = otel_rl.init_telemetry(otlp_config(port, 3600.0, limit=size))
    label_sets = populate(otel_rl, size)
    plain, _ = plain_sdk(port, size)
    populate(plain, size)
    try:
        times = harness.interleave(
            {"otel_rl": harness.timed(lambda: handle.force_flush(30.0), time.process_time),
             "plain OTel SDK": harness.timed(lambda: plain.provider.force_flush(30_000), time.process_time)}, reps)
    finally:
        handle.shutdown()
        plain.shutdown()
    return times, label_sets


def export_cpu(report: Report, quick: bool, port: int) -> None:
    """CPU per export: otel-rl vs the plain OTel SDK (uncapped) with the same exporter and series."""
    for size in harness.size("export_sizes", quick):
        times, label_sets = export_times(port, size, harness.size("export_reps", quick))
        per_export = median(times["otel_rl"])
        r = ratios(times, "otel_rl", "plain OTel SDK")
        report.details[f"export_cpu_s_{size}"] = times
        report.add("export", f"CPU per OTLP/HTTP export, {label_sets} series, otel_rl", per_export * 1e3, "ms",
                   median(r), "plain OTel SDK", f"<= {CPU_TARGET}x", median(r) <= CPU_TARGET,
                   note=f"{mmm(r)}; = {per_export / 10 * 100:.2f}% of a core at the 10 s default interval")
        report.add("export", f"CPU per OTLP/HTTP export, {label_sets} series, plain OTel SDK",
                   median(times["plain OTel SDK"]) * 1e3, "ms")


def throughput(report: Report, quick: bool, port: int) -> None:
    """Training throughput with the collector down vs up (and with no telemetry at all).

    One telemetry handle exports every second to ``port``; the sink behind it is stopped ("collector down":
    connection refused, the exporter retries and gives up) and started again ("collector up") between windows, so
    both states are measured alternately in the same process."""
    import gymnasium as gym

    import otel_rl
    from otel_rl.testing import reset

    reset()
    window, treps = harness.size("throughput_s", quick), harness.size("throughput_reps", quick)
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    rng = random.Random(0)
    actions = [rng.randint(0, 1) for _ in range(4096)]

    def training(seconds: float) -> tuple[float, float]:
        """(iterations per wall second, process CPU seconds per iteration) of a small training loop: a CartPole
        step and its record calls. Process CPU includes the exporter's thread, which holds the GIL while it
        encodes, so it is what the loop loses to exporting, and unlike wall time it ignores other processes."""
        n, i, deadline = 0, 0, time.perf_counter() + seconds
        started, cpu = time.perf_counter(), time.process_time()
        while True:
            for _ in range(256):
                _, reward, terminated, truncated, _ = env.step(actions[i & 4095])
                i += 1
                otel_rl.record_environment_steps("PPO", 1)
                if terminated or truncated:
                    otel_rl.record_episode("PPO", "agent_0", 100.0, 100)
                    env.reset()
                if i % 64 == 0:
                    otel_rl.record_training_iteration("PPO", i, "run-0")
                    otel_rl.record_loss_metrics("PPO", 0.01, 0.5, 1.1)
            n += 256
            if time.perf_counter() >= deadline:
                return n / (time.perf_counter() - started), (time.process_time() - cpu) / n

    interval = 1.0  # ten times the default rate, so every window holds exports
    sink: Any = None
    training(0.3)
    runs: dict[str, list[tuple[float, float]]] = {"no telemetry": [], "collector down": [], "collector up": []}
    for _ in range(treps):
        gc.collect()
        runs["no telemetry"].append(training(window))
    handle = otel_rl.init_telemetry(otlp_config(port, interval))
    try:
        for rep in range(2 * treps):
            order = ("collector down", "collector up") if rep % 2 == 0 else ("collector up", "collector down")
            for state in order:
                if state == "collector up":
                    sink, _ = start_sink(port)
                gc.collect()
                time.sleep(0.05)
                runs[state].append(training(window))
                stop(sink)
                sink = None
        sink, _ = start_sink(port)
        time.sleep(0.1)
        flush_cpu = []
        for _ in range(5):
            t0 = time.process_time()
            handle.force_flush(10.0)
            flush_cpu.append(time.process_time() - t0)
    finally:
        stop(sink)
        handle.shutdown(2.0)
        env.close()
    loop_export = median(flush_cpu)
    report.add("export", "CPU per export of the training loop's own series", loop_export * 1e3, "ms",
               loop_export / interval + 1.0, f"loop time (1 export per {interval:g} s)", "within 2 %",
               loop_export / interval <= 0.02,
               note="the export thread's share of a core, which it takes from the loop through the GIL")
    rates = {k: [r for r, _ in v] for k, v in runs.items()}
    cpu = {k: [c for _, c in v] for k, v in runs.items()}
    # CPU per iteration decides (robust on a shared machine); wall throughput is shown too.
    up_vs_down = median(cpu["collector up"]) / median(cpu["collector down"])
    down_vs_none = median(cpu["collector down"]) / median(cpu["no telemetry"])
    wall_up_vs_down = median([d / u for u, d in zip(rates["collector up"], rates["collector down"])])
    report.details["throughput_it_per_s"] = rates
    report.details["throughput_cpu_us_per_it"] = {k: [c * 1e6 for c in v] for k, v in cpu.items()}
    report.add("export", "training loop, no telemetry (before init)", median(rates["no telemetry"]), "it/s",
               note=f"{median(cpu['no telemetry']) * 1e6:.2f} us CPU/it")
    report.add("export", "training loop, collector down (port closed)", median(rates["collector down"]),
               "it/s", down_vs_none, "no telemetry (CPU/it)",
               note=f"{median(cpu['collector down']) * 1e6:.2f} us CPU/it")
    report.add("export", "training loop, collector up (local sink)", median(rates["collector up"]), "it/s",
               up_vs_down, "collector down (CPU/it)", "(informative)", None,
               note=f"{median(cpu['collector up']) * 1e6:.2f} us CPU/it; wall-time ratio {wall_up_vs_down:.3f} "
                    f"(noisy); spread up {spread(cpu['collector up'])} s, down {spread(cpu['collector down'])} s; "
                    f"export every {interval:g} s; {2 * treps} windows of {window:g} s each")


def bench(report: Report, quick: bool) -> None:
    from otel_rl.testing import reset

    sink, port = start_sink()
    try:
        export_cpu(report, quick, port)
    finally:
        stop(sink)  # the throughput part restarts a sink on the same port for its "collector up" windows
    try:
        throughput(report, quick, port)
    finally:
        reset()
