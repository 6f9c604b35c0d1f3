"""The resource metrics of a training run (process, GPU, torch CUDA memory), as data.

Beside the training catalog (:mod:`otel_rl._internal.catalog`) this table drives the observable instruments of
:mod:`otel_rl._internal.resources`, their Prometheus exposition, the metrics reference, the dashboard's
"Resources" row and the GPU rules. Names follow the OpenTelemetry semantic conventions where they exist
(``process.*``, ``hw.gpu.*``, ``hw.power``, ``hw.temperature``); torch's allocator has none, so its series are
named after the torch functions that read them.

On both export paths a name becomes its Prometheus name by the collector's ``UnderscoreEscapingWithoutSuffixes``
translation: characters outside ``[a-zA-Z0-9_:]`` (label keys: ``[a-zA-Z0-9_]``) turn into ``_`` (see
:func:`prometheus_name` and :func:`prometheus_label` for the details) and no unit or ``_total`` suffix is added.
Every instrument is a gauge or an up-down counter, so the Prometheus type is always ``gauge`` and the two paths
cannot disagree on a suffix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Instrument = Literal["gauge", "updowncounter"]
Source = Literal["process", "gpu", "torch"]

#: A run of characters the collector escapes in a metric name: the run becomes one "_" (Go's strings.FieldsFunc
#: split on them, joined by "_"), and one at either end disappears. Underscores themselves are kept as they are.
_NAME_INVALID_RUN = re.compile(r"[^a-zA-Z0-9_:]+")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(otel_name: str) -> str:
    """The Prometheus name of a metric, as the collector's underscore escaping writes it (prometheus/otlptranslator:
    ``my.odd..name-`` -> ``my_odd_name``; a leading digit gets a ``_`` in front)."""
    name = "_".join(part for part in _NAME_INVALID_RUN.split(otel_name) if part)
    return "_" + name if name[:1].isdigit() else name


def prometheus_label(key: str) -> str:
    """The Prometheus label of an attribute key, as the collector's underscore escaping writes it: each escaped
    character becomes ``_`` (``gpu..id`` -> ``gpu__id``), and a key starting with a digit gets ``key_`` in front."""
    label = _LABEL_INVALID.sub("_", key)
    return "key_" + label if label[:1].isdigit() else label


@dataclass(frozen=True)
class ResourceMetricSpec:
    """One resource metric: its OpenTelemetry name, instrument, unit, attribute keys and help."""

    otel_name: str
    instrument: Instrument
    unit: str
    attributes: tuple[str, ...]
    help: str
    source: Source
    semconv: bool = True  #: whether the name is an OpenTelemetry semantic convention
    reads: str = ""  #: where the value comes from, for the reference

    type: Literal["gauge"] = "gauge"  #: the Prometheus type (every instrument here is a gauge there)

    @property
    def name(self) -> str:
        """The Prometheus name (``hw.gpu.utilization`` -> ``hw_gpu_utilization``)."""
        return prometheus_name(self.otel_name)

    @property
    def labels(self) -> tuple[str, ...]:
        """The Prometheus label keys (``hw.id`` -> ``hw_id``)."""
        return tuple(prometheus_label(key) for key in self.attributes)


#: Attributes of every GPU series: the NVML index (as nvidia-smi numbers devices), the UUID (``hw.id``, unique on
#: the host), the product name, and ``hw.type="gpu"`` which the semantic conventions require on hw.* metrics.
GPU_ATTRIBUTES = ("gpu.index", "hw.id", "hw.name", "hw.type")
#: Attributes of the torch series: torch's device (``cuda:0``, numbered after CUDA_VISIBLE_DEVICES) and the
#: device's UUID as ``hw.id``, which joins them to the GPU series.
TORCH_ATTRIBUTES = ("device", "hw.id")

RESOURCE_METRICS: tuple[ResourceMetricSpec, ...] = (
    ResourceMetricSpec("process.cpu.utilization", "gauge", "1", (),
                       "CPU time of this process since the previous reading, divided by the elapsed time and the "
                       "number of CPUs available to the process (0-1)", "process",
                       reads="psutil Process.cpu_times (user + system)"),
    ResourceMetricSpec("process.memory.usage", "updowncounter", "By", (),
                       "Resident memory (RSS) of this process in bytes", "process",
                       reads="psutil Process.memory_info().rss"),
    ResourceMetricSpec("process.thread.count", "updowncounter", "{thread}", (),
                       "Threads of this process", "process", reads="psutil Process.num_threads()"),
    ResourceMetricSpec("process.unix.file_descriptor.count", "updowncounter", "{file_descriptor}", (),
                       "Open file descriptors of this process", "process", reads="psutil Process.num_fds()"),
    ResourceMetricSpec("hw.gpu.utilization", "gauge", "1", GPU_ATTRIBUTES,
                       "Fraction of the last sample period during which a kernel ran on the GPU (0-1)", "gpu",
                       reads="NVML nvmlDeviceGetUtilizationRates().gpu / 100"),
    ResourceMetricSpec("hw.gpu.memory.usage", "updowncounter", "By", GPU_ATTRIBUTES,
                       "GPU memory used in bytes, by every process on the device", "gpu",
                       reads="NVML nvmlDeviceGetMemoryInfo().used"),
    ResourceMetricSpec("hw.gpu.memory.limit", "updowncounter", "By", GPU_ATTRIBUTES,
                       "Size of the GPU memory in bytes", "gpu", reads="NVML nvmlDeviceGetMemoryInfo().total"),
    ResourceMetricSpec("hw.power", "gauge", "W", GPU_ATTRIBUTES,
                       "Power drawn by the GPU in watts", "gpu", reads="NVML nvmlDeviceGetPowerUsage() / 1000"),
    ResourceMetricSpec("hw.temperature", "gauge", "Cel", GPU_ATTRIBUTES,
                       "GPU die temperature in degrees Celsius", "gpu",
                       reads="NVML nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)"),
    ResourceMetricSpec("torch.cuda.memory.allocated", "updowncounter", "By", TORCH_ATTRIBUTES,
                       "CUDA memory held by tensors of this process in bytes (torch caching allocator)", "torch",
                       semconv=False, reads="torch.cuda.memory_allocated(device)"),
    ResourceMetricSpec("torch.cuda.memory.max_allocated", "gauge", "By", TORCH_ATTRIBUTES,
                       "Peak CUDA memory held by tensors of this process in bytes since start or the last "
                       "torch.cuda.reset_peak_memory_stats()", "torch",
                       semconv=False, reads="torch.cuda.max_memory_allocated(device)"),
    ResourceMetricSpec("torch.cuda.memory.reserved", "updowncounter", "By", TORCH_ATTRIBUTES,
                       "CUDA memory reserved by the torch caching allocator of this process in bytes", "torch",
                       semconv=False, reads="torch.cuda.memory_reserved(device)"),
    ResourceMetricSpec("torch.cuda.memory.max_reserved", "gauge", "By", TORCH_ATTRIBUTES,
                       "Peak CUDA memory reserved by the torch caching allocator of this process in bytes", "torch",
                       semconv=False, reads="torch.cuda.max_memory_reserved(device)"),
)

#: By Prometheus name.
RESOURCE_BY_NAME: dict[str, ResourceMetricSpec] = {spec.name: spec for spec in RESOURCE_METRICS}
#: By OpenTelemetry name.
RESOURCE_BY_OTEL_NAME: dict[str, ResourceMetricSpec] = {spec.otel_name: spec for spec in RESOURCE_METRICS}

#: The instrumentation scope of the resource instruments.
SCOPE_NAME = "otel_rl.resources"
