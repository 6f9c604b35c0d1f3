"""Resource metrics: process CPU and memory, GPUs through NVML, torch's CUDA memory, read when a reader collects.

Turned on by the ``resource_metrics`` setting. Every metric of :data:`RESOURCE_METRICS` becomes an observable
instrument on otel-rl's MeterProvider: its callback reads psutil, NVML or torch only while a reader collects (a
scrape of ``/metrics``, an OTLP export), so there is no thread and no cost on the record path. A source that is
missing (psutil, nvidia-ml-py, the NVML library, a GPU, torch, CUDA) is no error: its series are absent and one
INFO line on the ``otel_rl`` logger says why. A callback never raises into the SDK; a reading that fails is logged
once and left out.

otel-rl never imports torch and never initialises CUDA: torch series appear once the application has imported
torch and ``torch.cuda.is_initialized()`` is true. Readings are per process id, so a forked child reads its own
process and initialises NVML again.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_rl._internal.hints import install_hint
from otel_rl._internal.resource_catalog import (
    RESOURCE_METRICS,
    SCOPE_NAME,
    ResourceMetricSpec,
)

_logger = logging.getLogger("otel_rl")

#: The shortest interval the CPU utilisation is computed over; collections closer together (two readers, a burst
#: of scrapes) get the last value instead of a noisy reading over a few milliseconds.
CPU_MIN_INTERVAL_S = 1.0

_Reading = Iterable[tuple[float, dict[str, str]]]


class _Once:
    """Logs each (what, why) once: a failing reading must not flood the log on every scrape."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, level: int, what: str, why: str, message: str, *args: Any) -> None:
        if (what, why) not in self._seen:
            self._seen.add((what, why))
            _logger.log(level, message, *args)


class _ProcessSource:
    """This process through psutil, re-opened after a fork (the pid changes)."""

    def __init__(self, psutil: Any) -> None:
        self._psutil = psutil
        self._pid = -1
        self._process: Any = None
        self._cpu_last = (0.0, 0.0)
        self._cpu_value: float | None = None

    def _handle(self) -> Any:
        pid = os.getpid()
        if pid != self._pid:
            self._process = self._psutil.Process(pid)
            self._pid = pid
            # The first reading is the mean since the process started (as `ps` shows it): two reads microseconds
            # apart would divide a 10 ms clock tick by almost nothing (a reading of 101 was seen).
            try:
                started = time.monotonic() - max(time.time() - self._process.create_time(), 0.0)
            except Exception:  # noqa: BLE001 (no start time: measure from now on)
                started = time.monotonic()
            self._cpu_last = (started, 0.0)
            self._cpu_value = None
        return self._process

    @staticmethod
    def _cpu_seconds(process: Any) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def cpu_utilization(self) -> _Reading:
        process = self._handle()
        now, cpu = time.monotonic(), self._cpu_seconds(process)
        last_time, last_cpu = self._cpu_last
        elapsed = now - last_time
        if elapsed > 0 and (self._cpu_value is None or elapsed >= CPU_MIN_INTERVAL_S):
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            self._cpu_value = min(1.0, max(0.0, (cpu - last_cpu) / (elapsed * max(cpus, 1))))
            self._cpu_last = (now, cpu)
        return [(self._cpu_value, {})] if self._cpu_value is not None else []

    def memory_usage(self) -> _Reading:
        return [(float(self._handle().memory_info().rss), {})]

    def thread_count(self) -> _Reading:
        return [(float(self._handle().num_threads()), {})]

    def file_descriptor_count(self) -> _Reading:
        return [(float(self._handle().num_fds()), {})]

    def readers(self) -> dict[str, Callable[[], _Reading]]:
        readers = {
            "process.cpu.utilization": self.cpu_utilization,
            "process.memory.usage": self.memory_usage,
            "process.thread.count": self.thread_count,
        }
        if hasattr(self._psutil.Process, "num_fds"):  # POSIX only
            readers["process.unix.file_descriptor.count"] = self.file_descriptor_count
        return readers


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _GpuSource:
    """Every GPU NVML sees, with fixed attributes per device (index, UUID, name)."""

    def __init__(self, nvml: Any, once: _Once) -> None:
        self._nvml = nvml
        self._once = once
        self._pid = -1
        self._devices: list[tuple[Any, dict[str, str]]] = []

    @classmethod
    def open(cls, once: _Once) -> _GpuSource | None:
        """The source, or None with one INFO line saying why there are no GPU series."""
        try:
            import pynvml
        except ImportError:
            _logger.info("otel-rl resource metrics: no GPU series, nvidia-ml-py is not installed "
                         "(the 'gpu' extra: pip install '.[gpu]')")
            return None
        source = cls(pynvml, once)
        try:
            devices = source.devices()
        except pynvml.NVMLError as exc:
            _logger.info("otel-rl resource metrics: no GPU series, NVML is not available here (%s)", exc)
            return None
        if not devices:
            source.close()
            _logger.info("otel-rl resource metrics: no GPU series, NVML found no GPU")
            return None
        _logger.info("otel-rl resource metrics: GPU series for %d device(s): %s", len(devices),
                     ", ".join(f"{a['gpu.index']} {a['hw.name']} ({a['hw.id']})" for _, a in devices))
        return source

    def devices(self) -> list[tuple[Any, dict[str, str]]]:
        """Handles and attributes, initialising NVML once per process (again in a forked child)."""
        pid = os.getpid()
        if pid != self._pid:
            nvml = self._nvml
            nvml.nvmlInit()
            devices = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                devices.append((handle, {"gpu.index": str(index), "hw.id": _text(nvml.nvmlDeviceGetUUID(handle)),
                                         "hw.name": _text(nvml.nvmlDeviceGetName(handle)), "hw.type": "gpu"}))
            self._devices, self._pid = devices, pid
        return self._devices

    def _each(self, name: str, read: Callable[[Any], float]) -> Callable[[], _Reading]:
        def reading() -> _Reading:
            points = []
            for handle, attributes in self.devices():
                try:
                    points.append((read(handle), attributes))
                except self._nvml.NVMLError as exc:  # e.g. power readings not supported on this board
                    self._once(logging.INFO, name, str(exc), "otel-rl resource metrics: no %s for GPU %s: %s",
                               name, attributes["gpu.index"], exc)
            return points

        return reading

    def readers(self) -> dict[str, Callable[[], _Reading]]:
        nvml = self._nvml
        return {
            "hw.gpu.utilization": self._each("hw.gpu.utilization",
                                             lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0),
            "hw.gpu.memory.usage": self._each("hw.gpu.memory.usage",
                                              lambda h: float(nvml.nvmlDeviceGetMemoryInfo(h).used)),
            "hw.gpu.memory.limit": self._each("hw.gpu.memory.limit",
                                              lambda h: float(nvml.nvmlDeviceGetMemoryInfo(h).total)),
            "hw.power": self._each("hw.power", lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            "hw.temperature": self._each("hw.temperature",
                                         lambda h: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))),
        }

    def close(self) -> None:
        if self._pid == os.getpid():
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._pid = -1


class _TorchSource:
    """torch's caching allocator, read only once the application imported torch and initialised CUDA."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[int, int], dict[str, str]] = {}

    @staticmethod
    def _cuda() -> Any:
        torch = sys.modules.get("torch")  # never imported here: importing torch takes seconds and GBs
        cuda = getattr(torch, "cuda", None)
        if cuda is None or not cuda.is_initialized():  # false in a child forked after CUDA init, too
            return None
        return cuda

    def _device(self, cuda: Any, index: int) -> dict[str, str]:
        key = (os.getpid(), index)
        if key not in self._attributes:
            try:
                uuid = str(cuda.get_device_properties(index).uuid)
                hw_id = uuid if uuid.startswith("GPU-") else "GPU-" + uuid  # NVML's spelling, to join on hw_id
            except Exception:  # noqa: BLE001 (an older torch without uuid: still one fixed value per device)
                hw_id = f"cuda:{index}"
            self._attributes[key] = {"device": f"cuda:{index}", "hw.id": hw_id}
        return self._attributes[key]

    def _each(self, function: str) -> Callable[[], _Reading]:
        def reading() -> _Reading:
            cuda = self._cuda()
            if cuda is None:
                return []
            read = getattr(cuda, function)
            return [(float(read(index)), self._device(cuda, index)) for index in range(cuda.device_count())]

        return reading

    def readers(self) -> dict[str, Callable[[], _Reading]]:
        return {
            "torch.cuda.memory.allocated": self._each("memory_allocated"),
            "torch.cuda.memory.max_allocated": self._each("max_memory_allocated"),
            "torch.cuda.memory.reserved": self._each("memory_reserved"),
            "torch.cuda.memory.max_reserved": self._each("max_memory_reserved"),
        }


class ResourceMetrics:
    """The resource instruments on one MeterProvider; :meth:`close` releases NVML."""

    def __init__(self, provider: MeterProvider, version: str) -> None:
        self._once = _Once()
        self.gpu: _GpuSource | None = None
        readers: dict[str, Callable[[], _Reading]] = {}
        try:
            import psutil
        except ImportError:
            _logger.warning("otel-rl resource metrics: resource_metrics is on but psutil is not installed, so there "
                            "are no process series (the 'resources' extra: %s)", install_hint("resources"))
        else:
            readers.update(_ProcessSource(psutil).readers())
        self.gpu = _GpuSource.open(self._once)
        if self.gpu is not None:
            readers.update(self.gpu.readers())
        torch = _TorchSource()
        readers.update(torch.readers())
        if torch._cuda() is None:
            _logger.info("otel-rl resource metrics: torch CUDA memory series appear once this process has imported "
                         "torch and initialised CUDA (otel-rl does neither itself)")
        meter = provider.get_meter(SCOPE_NAME, version)
        self.specs: list[ResourceMetricSpec] = []
        for spec in RESOURCE_METRICS:
            read = readers.get(spec.otel_name)
            if read is None:
                continue
            create = (meter.create_observable_gauge if spec.instrument == "gauge"
                      else meter.create_observable_up_down_counter)
            create(spec.otel_name, [self._callback(spec, read)], spec.unit, spec.help)
            self.specs.append(spec)

    def _callback(self, spec: ResourceMetricSpec,
                  read: Callable[[], _Reading]) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(options: CallbackOptions) -> list[Observation]:
            try:
                return [Observation(value, attributes) for value, attributes in read()]
            except Exception as exc:  # noqa: BLE001 (a reading must never break a collection)
                self._once(logging.WARNING, spec.otel_name, type(exc).__name__,
                           "otel-rl resource metrics: reading %s failed (%r); it is left out of this and later "
                           "collections until it succeeds", spec.otel_name, exc)
                return []

        observe.__name__ = "observe_" + spec.name
        return observe

    def close(self) -> None:
        if self.gpu is not None:
            self.gpu.close()
