"""What a scrape costs the training thread: the longest pause of a tight recording loop while its process serves one
HTTP ``GET /metrics`` (gzip accepted, as Prometheus asks) to a client in another process.

Baselines in the same run, interleaved (ABBA): prometheus_client's own ``start_http_server`` holding the same series
(:mod:`direct_prometheus`), the same loop for as long as a scrape takes without one (the machine's own noise), and
a busy pure-Python thread instead of the scrape (the floor any Python work in another thread causes through GIL
hand-over). Wall time by nature. :func:`scrape_pauses` also gives :mod:`bench_scaling` its pause curve.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import direct_prometheus
import harness
from harness import Report, median, mmm
from workloads import fill_series, telemetry_for

#: the longest pause a scrape may cause, in milliseconds
TARGET_MS = 20.0


def longest_pause(scrape: Callable[[], Any], record: Callable[[float], Any]) -> float:
    """The longest gap between two record calls of a tight loop while ``scrape`` runs in another thread."""
    stop = threading.Event()
    worst = [0.0]

    def loop() -> None:
        clock = time.perf_counter
        last = clock()
        high = 0.0
        i = 0.0
        while not stop.is_set():
            record(i)
            i += 1.0
            now = clock()
            if now - last > high:
                high = now - last
            last = now
        worst[0] = high

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.05)  # the loop runs at full speed before the scrape starts
    scrape()
    stop.set()
    thread.join()
    return worst[0]


class ScrapeClient:
    """Scrapes a URL when told to, as Prometheus does (``GET``, gzip accepted), from another process: its CPU and
    its GIL are not the benchmark's, so what is measured is what the scraped process pays."""

    _CODE = r"""
import sys, urllib.request
for line in sys.stdin:
    request = urllib.request.Request(line.strip(), headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=120) as response:
        size = len(response.read())
    print(size, flush=True)
"""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self._CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def scrape(self, url: str) -> int:
        """The size of the (compressed) response."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(url + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def busy(seconds: float) -> None:
    """Pure-Python work (no allocation, no C call of note) for ``seconds``."""
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        for i in range(100):
            x += i


def scrape_pauses(client: ScrapeClient, size: int, kind: str, reps: int) -> tuple[dict[str, list[float]], float]:
    """Longest pauses in ms per variant ("otel_rl", "prometheus_client", "idle", "busy") with ``size`` series of
    ``kind``, and how long one HTTP scrape of otel-rl's endpoint took (seconds)."""
    from prometheus_client import start_http_server

    from otel_rl._internal.store import REGISTRY

    handle = telemetry_for(size, exporters=["prometheus"])
    prom_server = None
    try:
        fill_series(kind, size)
        prom = direct_prometheus.build()
        fill_series(kind, size, prom)
        prom_server, _ = start_http_server(0, addr="127.0.0.1", registry=prom.registry)
        ours_url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
        prom_url = f"http://127.0.0.1:{prom_server.server_port}/metrics"
        ours = partial(REGISTRY["rl_training_active"].set, ("PPO",))
        client.scrape(ours_url)
        client.scrape(prom_url)
        started = time.perf_counter()
        client.scrape(ours_url)
        window = time.perf_counter() - started
        # name: (what the process does meanwhile, the record call of the measured loop)
        variants: dict[str, tuple[Callable[[], Any], Callable[[float], Any]]] = {
            "otel_rl": (partial(client.scrape, ours_url), ours),
            "prometheus_client": (partial(client.scrape, prom_url),
                                  prom.metrics["rl_training_active"].labels("PPO").set),
            # the same loop for as long as a scrape takes, without one
            "idle": (partial(time.sleep, window), ours),
            # any pure-Python work in another thread: the GIL hand-over floor
            "busy": (partial(busy, window), ours),
        }
        pauses: dict[str, list[float]] = {name: [] for name in variants}
        for rep in range(reps):
            for name in list(variants) if rep % 2 == 0 else list(variants)[::-1]:
                gc.collect()
                pauses[name].append(longest_pause(*variants[name]) * 1e3)
    finally:
        if prom_server is not None:
            prom_server.shutdown()
            prom_server.server_close()
        handle.shutdown()
    return pauses, window


def bench(report: Report, quick: bool) -> None:
    from otel_rl.testing import reset

    reps = harness.size("heavy_reps", quick)
    client = ScrapeClient()
    try:
        for size in harness.size("pause_sizes", quick):
            for kind in ("mixed", "histogram"):
                ms, window = scrape_pauses(client, size, kind, reps)
                report.details[f"scrape_pause_{kind}_{size}"] = {"ms": ms, "scrape_s": window}
                report.add("scrape_pause", f"longest recording-thread pause, {size // 1000}k-series {kind} HTTP "
                           "scrape", median(ms["otel_rl"]), "ms", None, "", f"<= {TARGET_MS:g} ms",
                           median(ms["otel_rl"]) <= TARGET_MS,
                           note=f"{mmm(ms['otel_rl'])} ms; HTTP scrape {window * 1e3:.0f} ms; prometheus_client's "
                                f"own endpoint: {mmm(ms['prometheus_client'])} ms; no scrape (machine noise): "
                                f"{mmm(ms['idle'])} ms; a busy pure-Python thread instead of the scrape (GIL "
                                f"hand-over floor): {mmm(ms['busy'])} ms")
    finally:
        client.close()
        reset()
