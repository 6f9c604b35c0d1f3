#!/usr/bin/env python3
"""Check the resource metrics on a machine with an NVIDIA GPU: python scripts/gpu-check.py [--gib 2]

Starts otel-rl with ``resource_metrics`` on and its endpoint on a free loopback port, runs a small torch CUDA
workload, scrapes ``/metrics`` over HTTP and checks that:

1. there are no torch series before CUDA is initialised, and one GPU series per NVML device;
2. the torch device's ``hw_id`` (UUID) is one of NVML's, so torch and GPU series join;
3. ``hw_gpu_memory_usage`` grows by at least 90 % of a tensor allocated on the device;
4. ``hw_gpu_utilization`` is above 0 while matrix multiplications run;
5. ``torch_cuda_memory_max_allocated`` and ``torch_cuda_memory_allocated`` equal
   ``torch.cuda.max_memory_allocated()`` and ``torch.cuda.memory_allocated()``.

Exit status 0 when every check passes, 1 when one fails, 2 when the machine cannot run the check (no torch, no
nvidia-ml-py, no NVML driver, no CUDA device), each with a one-line reason. Run it from the repository root (or
with otel-rl installed), with torch and the ``gpu`` extra (``pip install '.[gpu]'``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIB = 1024 ** 3


def unable(reason: str) -> None:
    print(f"gpu-check: CANNOT RUN: {reason}", file=sys.stderr)
    sys.exit(2)


def check(ok: bool, what: str, detail: str) -> bool:
    print(f"gpu-check: {'PASS' if ok else 'FAIL'}: {what} ({detail})", flush=True)
    return ok


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {family.name: [(sample.labels, sample.value) for sample in family.samples]
            for family in text_string_to_metric_families(text)}


def value(series: dict, name: str, **labels: str) -> float | None:
    for found, number in series.get(name, []):
        if all(found.get(k) == v for k, v in labels.items()):
            return number
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="GiB to allocate for the memory check (default 2)")
    parser.add_argument("--busy-seconds", type=float, default=3.0, help="seconds of matmuls for utilisation")
    args = parser.parse_args(argv)

    try:
        import pynvml
    except ImportError:
        unable("nvidia-ml-py is not installed (pip install '.[gpu]' in an otel-rl checkout)")
    try:
        pynvml.nvmlInit()
        devices = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        unable(f"NVML is not available ({exc}): this check needs an NVIDIA GPU and its driver")
    if devices == 0:
        unable("NVML found no GPU")
    try:
        import torch
    except ImportError:
        unable("torch is not installed")
    if not torch.cuda.is_available():
        unable("torch sees no CUDA device (CPU-only torch build, or CUDA_VISIBLE_DEVICES hides every GPU)")

    import otel_rl

    handle = otel_rl.init_telemetry({"exporters": ["prometheus"], "resource_metrics": True,
                                     "prometheus": {"host": "127.0.0.1", "port": 0, "strict": True}})
    url = f"http://127.0.0.1:{handle.prometheus_port}/metrics"
    print(f"gpu-check: {devices} GPU(s) seen by NVML, torch {torch.__version__}, scraping {url}", flush=True)
    results = []
    try:
        before_cuda = scrape(url)
        torch_names = [n for n in before_cuda if n.startswith("torch_")]
        results.append(check(not torch.cuda.is_initialized() and not torch_names,
                             "no torch series and CUDA untouched before the workload", f"torch series {torch_names}"))
        gpus = before_cuda.get("hw_gpu_memory_limit", [])
        results.append(check(len(gpus) == devices, "one hw_gpu_memory_limit series per NVML device",
                             f"{[labels for labels, _ in gpus]}"))

        device = torch.device("cuda:0")
        torch.ones(1, device=device)
        torch.cuda.synchronize(device)
        series = scrape(url)
        hw_id = next((labels["hw_id"] for labels, _ in series.get("torch_cuda_memory_allocated", [])
                      if labels.get("device") == "cuda:0"), None)
        nvml_ids = {labels["hw_id"] for labels, _ in series.get("hw_gpu_memory_usage", [])}
        results.append(check(hw_id in nvml_ids, "torch cuda:0 joins a GPU series on hw_id",
                             f"torch hw_id {hw_id!r}, NVML hw_ids {sorted(nvml_ids)}"))
        target = {"hw_id": hw_id} if hw_id in nvml_ids else {"gpu_index": "0"}

        used_before = value(series, "hw_gpu_memory_usage", **target)
        size = int(args.gib * GIB)
        block = torch.empty(size, dtype=torch.uint8, device=device)
        block.fill_(1)
        torch.cuda.synchronize(device)
        time.sleep(0.5)
        used_after = value(scrape(url), "hw_gpu_memory_usage", **target)
        grew = (used_after or 0) - (used_before or 0)
        results.append(check(used_before is not None and grew >= 0.9 * size,
                             f"hw_gpu_memory_usage grows with a {args.gib:g} GiB allocation",
                             f"{used_before} -> {used_after} bytes, +{grew / GIB:.2f} GiB"))

        a = torch.randn(4096, 4096, device=device)
        utilisations: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                number = value(scrape(url), "hw_gpu_utilization", **target)
                if number is not None:
                    utilisations.append(number)
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        end = time.monotonic() + args.busy_seconds
        while time.monotonic() < end:
            for _ in range(20):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize(device)
        stop.set()
        watcher.join(5)
        results.append(check(max(utilisations, default=0.0) > 0, "hw_gpu_utilization > 0 during matmuls",
                             f"max {max(utilisations, default=0.0):.2f} over {len(utilisations)} scrapes"))

        del block
        torch.cuda.synchronize(device)
        series = scrape(url)
        expected_peak, expected_now = torch.cuda.max_memory_allocated(device), torch.cuda.memory_allocated(device)
        peak = value(series, "torch_cuda_memory_max_allocated", device="cuda:0")
        now = value(series, "torch_cuda_memory_allocated", device="cuda:0")
        results.append(check(peak == expected_peak and peak >= size,
                             "torch_cuda_memory_max_allocated == torch.cuda.max_memory_allocated()",
                             f"{peak} vs {expected_peak}"))
        results.append(check(now == expected_now, "torch_cuda_memory_allocated == torch.cuda.memory_allocated()",
                             f"{now} vs {expected_now}"))
        for name in ("hw_power", "hw_temperature", "hw_gpu_memory_limit", "torch_cuda_memory_reserved",
                     "torch_cuda_memory_max_reserved", "process_cpu_utilization", "process_memory_usage"):
            print(f"gpu-check: info: {name} = {series.get(name)}")
    finally:
        handle.shutdown()
    print(f"gpu-check: {'PASS' if all(results) else 'FAIL'}: {sum(results)}/{len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
