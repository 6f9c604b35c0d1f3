"""Tests for otel_rl._internal.resources: the opt-in process, GPU and torch CUDA memory series.

Absent sources (psutil, nvidia-ml-py, torch) are simulated the way a user's machine lacks them: the import fails,
in a subprocess that puts ``None`` into ``sys.modules`` before otel_rl starts. NVML values are never faked; on a
machine without an NVIDIA driver the real NVML binding reports that its library is missing.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import otel_rl
from otel_rl._internal.config import ConfigError, load_settings
from otel_rl._internal.resource_catalog import (
    RESOURCE_BY_NAME,
    RESOURCE_METRICS,
    prometheus_label,
    prometheus_name,
)
from otel_rl._internal.resources import ResourceMetrics

import procs

ROOT = Path(__file__).resolve().parent.parent
PROCESS = [spec for spec in RESOURCE_METRICS if spec.source == "process"]
PROCESS_NAMES = {spec.name for spec in PROCESS}


def _families(handle: otel_rl.Telemetry, accept: str = "") -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(handle.metrics_text(accept).decode())}


def _pull(config: dict | None = None) -> otel_rl.Telemetry:
    return otel_rl.init_telemetry({"exporters": ["none"], **(config or {})})


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 (no binding, no library, no driver: no GPU series expected)
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    finally:
        pynvml.nvmlShutdown()


# -- the setting --------------------------------------------------------------------------------------------------


def test_setting_is_off_by_default_and_read_from_config_and_environment():
    """resource_metrics is False unless the config key or OTEL_RL_RESOURCE_METRICS turns it on; config wins."""
    assert load_settings({}, environ={}).resource_metrics is False
    assert load_settings({"resource_metrics": True}, environ={}).resource_metrics is True
    assert load_settings({}, environ={"OTEL_RL_RESOURCE_METRICS": "true"}).resource_metrics is True
    assert load_settings({"resource_metrics": False},
                         environ={"OTEL_RL_RESOURCE_METRICS": "1"}).resource_metrics is False
    assert load_settings({"monitoring": {"resource_metrics": "on"}}, environ={}).resource_metrics is True


def test_bad_setting_value_names_key_value_and_what_is_allowed():
    """A value that is not a boolean raises ConfigError before anything starts."""
    with pytest.raises(ConfigError, match=r"'resource_metrics' has value 'gpu'; allowed: true or false"):
        load_settings({"resource_metrics": "gpu"}, environ={})
    with pytest.raises(ConfigError, match=r"OTEL_RL_RESOURCE_METRICS .* has value 'maybe'"):
        load_settings({}, environ={"OTEL_RL_RESOURCE_METRICS": "maybe"})


# -- the table ----------------------------------------------------------------------------------------------------


def test_names_are_the_collectors_underscore_escaping():
    """Prometheus names and labels replace every character outside [a-zA-Z0-9_] with _, and add no suffix."""
    assert prometheus_name("hw.gpu.memory.usage") == "hw_gpu_memory_usage"
    assert prometheus_name("process.unix.file_descriptor.count") == "process_unix_file_descriptor_count"
    assert prometheus_label("hw.id") == "hw_id" and prometheus_label("gpu.index") == "gpu_index"
    assert len(RESOURCE_BY_NAME) == len(RESOURCE_METRICS)
    for spec in RESOURCE_METRICS:
        assert spec.type == "gauge" and spec.instrument in ("gauge", "updowncounter"), spec.otel_name
        assert not spec.name.endswith(("_total", "_bytes", "_ratio")), spec.name
        assert spec.source == "torch" or spec.semconv, spec.otel_name
        if spec.source == "gpu":
            assert "hw.id" in spec.attributes and "hw.type" in spec.attributes, spec.otel_name


# -- the pull path ------------------------------------------------------------------------------------------------


def test_off_adds_no_resource_series():
    """Without the setting the exposition has no process, GPU or torch family."""
    handle = _pull()
    assert not set(_families(handle)) & set(RESOURCE_BY_NAME)
    assert handle.resource_metrics is None


def test_on_adds_one_series_per_process_metric_with_plausible_values():
    """With the setting the four process gauges appear once each, typed, helped and with real readings."""
    handle = _pull({"resource_metrics": True})
    families = _families(handle)
    for spec in PROCESS:
        family = families[spec.name]
        assert family.type == "gauge" and family.documentation == spec.help, spec.name
        assert len(family.samples) == 1 and family.samples[0].labels == {}, family.samples
    value = {name: families[name].samples[0].value for name in PROCESS_NAMES}
    import psutil

    me = psutil.Process()
    assert 0.5 * me.memory_info().rss <= value["process_memory_usage"] <= 2 * me.memory_info().rss
    assert value["process_thread_count"] >= 1
    assert value["process_unix_file_descriptor_count"] >= 3  # stdin, stdout, stderr at least
    assert 0.0 <= value["process_cpu_utilization"] <= 1.0


def test_cpu_utilisation_follows_work_and_is_bounded():
    """A busy second reads as busier than an idle second; two readings closer than 1 s give the same value."""
    handle = _pull({"resource_metrics": True})

    def cpu() -> float:
        return _families(handle)["process_cpu_utilization"].samples[0].value

    cpu()
    time.sleep(1.05)  # lets CPU_MIN_INTERVAL_S pass, so the next read starts a new interval
    idle = cpu()
    assert cpu() == idle  # within CPU_MIN_INTERVAL_S: a second reader does not reset the interval
    started, cpu_started = time.monotonic(), time.process_time()
    while time.monotonic() < started + 1.05:
        sum(i * i for i in range(1000))
    busy = cpu()
    # What the process really got (a loaded machine gives it less than a whole CPU), measured alongside.
    cpus = len(os.sched_getaffinity(0))
    expected = (time.process_time() - cpu_started) / ((time.monotonic() - started) * cpus)
    assert busy > idle and abs(busy - expected) <= 0.25 * expected + 0.02, (idle, busy, expected, cpus)
    assert busy <= 1.0


def test_openmetrics_exposition_carries_the_same_series():
    """The OpenMetrics rendering has the same resource families and samples as the text one."""
    handle = _pull({"resource_metrics": True})
    text = _families(handle)
    om = {f.name: f for f in text_string_to_metric_families(
        handle.metrics_text("application/openmetrics-text; version=1.0.0").decode().replace("# EOF\n", ""))}
    for name in PROCESS_NAMES:
        assert om[name].type == "gauge" and [s.labels for s in om[name].samples] == [
            s.labels for s in text[name].samples]


def test_gpu_series_exist_exactly_when_nvml_sees_a_gpu(caplog):
    """With a working NVML every GPU metric has one series per device; without, none and one INFO line why."""
    caplog.set_level(logging.INFO, logger="otel_rl")
    handle = _pull({"resource_metrics": True})
    families = _families(handle)
    gpu_names = {spec.name for spec in RESOURCE_METRICS if spec.source == "gpu"}
    reasons = [r.getMessage() for r in caplog.records if "no GPU series" in r.getMessage()]
    if _nvml_works():
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        for name in ("hw_gpu_utilization", "hw_gpu_memory_usage", "hw_gpu_memory_limit"):
            labels = [s.labels for s in families[name].samples]
            assert len(labels) == count and all(set(lab) == {"gpu_index", "hw_id", "hw_name", "hw_type"}
                                                 for lab in labels), labels
        assert not reasons
    else:
        assert not gpu_names & set(families)
        assert len(reasons) == 1, reasons
        assert "NVML is not available" in reasons[0] or "nvidia-ml-py is not installed" in reasons[0]


def test_a_failing_reading_is_left_out_and_logged_once(caplog):
    """A reading that raises yields no point, never an exception into the SDK, and one warning."""
    caplog.set_level(logging.INFO, logger="otel_rl")
    handle = _pull({"resource_metrics": True})
    spec = RESOURCE_BY_NAME["process_thread_count"]
    observe = handle.resource_metrics._callback(spec, lambda: [(1 / 0, {})])
    assert observe(None) == [] and observe(None) == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "process.thread.count" in r.getMessage()]
    assert len(warnings) == 1 and "ZeroDivisionError" in warnings[0].getMessage()


def test_shutdown_and_init_again_keeps_one_series_each():
    """Instruments belong to one MeterProvider: a new init after shutdown has the same single series."""
    _pull({"resource_metrics": True}).shutdown()
    handle = _pull({"resource_metrics": True})
    families = _families(handle)
    assert all(len(families[name].samples) == 1 for name in PROCESS_NAMES)
    assert isinstance(handle.resource_metrics, ResourceMetrics)


# -- absent sources, simulated by a failing import in a subprocess --------------------------------------------------


def _run_without(modules: list[str], body: str) -> dict:
    """Run ``body`` in a fresh interpreter where importing each of ``modules`` fails; return its JSON output."""
    script = textwrap.dedent(f"""
        import json, logging, sys
        for name in {modules!r}:
            sys.modules[name] = None  # `import name` now raises ImportError, as when it is not installed
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append((record.levelname, record.getMessage()))
        logging.getLogger("otel_rl").addHandler(Keep())
        logging.getLogger("otel_rl").setLevel(logging.INFO)
        import otel_rl
        from prometheus_client.parser import text_string_to_metric_families
        handle = otel_rl.init_telemetry({{"exporters": ["none"], "resource_metrics": True}})
        def names():
            return sorted(f.name for f in text_string_to_metric_families(handle.metrics_text().decode()))
        out = {{}}
    """) + textwrap.dedent(body) + textwrap.dedent("""
        out["records"] = records
        handle.shutdown()
        print(json.dumps(out))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_nvml_binding_or_torch_no_error_no_gpu_series_and_one_info_line_each():
    """pynvml and torch not importable: process series only, an INFO line for each missing source, no warning."""
    out = _run_without(["pynvml", "torch"], """
        out["names"] = names()
        out["names_again"] = names()
    """)
    names = set(out["names"])
    assert PROCESS_NAMES <= names and out["names"] == out["names_again"]
    assert not {spec.name for spec in RESOURCE_METRICS if spec.source != "process"} & names
    info = [message for level, message in out["records"] if level == "INFO"]
    assert sum("nvidia-ml-py is not installed (the 'gpu' extra: pip install '.[gpu]')" in m for m in info) == 1, info
    assert sum("torch CUDA memory series appear once" in m for m in info) == 1, info
    assert not [r for r in out["records"] if r[0] in ("WARNING", "ERROR")], out["records"]


def test_without_psutil_no_process_series_and_one_warning():
    """psutil not importable: no process series, one WARNING (the setting asked for them) naming how to install the
    extra from the checkout, training metrics fine."""
    out = _run_without(["psutil", "pynvml"], """
        otel_rl.record_training_start("PPO", "r1")
        out["names"] = names()
    """)
    assert not PROCESS_NAMES & set(out["names"]) and "rl_training_active" in out["names"]
    warnings = [message for level, message in out["records"] if level == "WARNING"]
    assert sum("psutil is not installed, so there are no process series (the 'resources' extra: pip install "
               "'.[resources]' from the otel-rl repository root" in m for m in warnings) == 1, out["records"]


def test_torch_imported_without_cuda_gives_no_torch_series_and_never_initialises_cuda():
    """With torch imported but CUDA not initialised, collecting reads nothing from torch and leaves CUDA alone."""
    out = _run_without([], """
        import torch
        out["before"] = torch.cuda.is_initialized()
        out["names"] = names()
        out["names"] = names()
        out["after"] = torch.cuda.is_initialized()
    """)
    assert out["before"] is False and out["after"] is False
    assert not {spec.name for spec in RESOURCE_METRICS if spec.source == "torch"} & set(out["names"])
    assert PROCESS_NAMES <= set(out["names"])


def test_otel_rl_never_imports_torch():
    """Turning the setting on and collecting does not import torch."""
    out = _run_without([], """
        out["names"] = names()
        out["torch"] = "torch" in sys.modules
    """)
    assert out["torch"] is False and PROCESS_NAMES <= set(out["names"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_forked_child_reads_its_own_process():
    """After fork, the child's process series describe the child (its own RSS grows, the parent's does not).

    Compared within each process: a large test process' RSS right after fork says little (pages the child has not
    touched yet), so the child reads its own series before and after allocating ~200 MiB."""
    handle = _pull({"resource_metrics": True})
    parent_before = _families(handle)["process_memory_usage"].samples[0].value
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: grow by ~200 MiB and report what the exposition says before and after
        try:
            before = _families(handle)["process_memory_usage"].samples[0].value
            ballast = bytearray(200 * 1024 * 1024)
            ballast[::4096] = b"x" * len(ballast[::4096])
            after = _families(handle)["process_memory_usage"].samples[0].value
            import psutil

            own = psutil.Process().memory_info().rss
            os.write(write, json.dumps([before, after, own, len(ballast)]).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_before, child_after, child_own, _ = json.loads(os.read(read, 1000))
    os.waitpid(pid, 0)
    parent_after = _families(handle)["process_memory_usage"].samples[0].value
    assert child_after >= child_before + 150 * 1024 * 1024, (child_before, child_after)
    assert abs(child_after - child_own) < 64 * 1024 * 1024, (child_after, child_own)  # the child's, not a copy
    assert parent_after < parent_before + 100 * 1024 * 1024, (parent_before, parent_after)


# -- both paths, with real processes --------------------------------------------------------------------------------


def _resource_series(items) -> dict[tuple[str, tuple], float]:
    ignored = {"job", "instance", "component", "service", "__name__"}
    return {(name, tuple(sorted((k, v) for k, v in labels.items() if k not in ignored))): value
            for name, labels, value in items}


@pytest.mark.integration
def test_process_series_are_the_same_on_the_pull_and_the_collector_path(tmp_path):
    """One process, both exporters: Prometheus gets the same resource series by scrape and via the collector."""
    port = procs.free_port()
    prom = procs.Prometheus(tmp_path, scrape_targets=[f"127.0.0.1:{port}"])
    collector = procs.Collector(tmp_path, prom.remote_write_url)
    handle = None
    try:
        prom.start()
        collector.start()
        handle = otel_rl.init_telemetry({
            "exporters": ["prometheus", "otlp"], "service_name": "resources-e2e", "resource_metrics": True,
            "prometheus": {"host": "127.0.0.1", "port": port, "strict": True},
            "otlp": {"endpoint": collector.grpc_endpoint, "export_interval": 0.5}})
        selector = '{__name__=~"process_.+|hw_.+|torch_.+"}'
        truth = _resource_series((f.name, s.labels, s.value) for f in text_string_to_metric_families(
            handle.metrics_text().decode()) for s in f.samples if f.name in RESOURCE_BY_NAME)

        def paths():
            found = {"pull": [], "push": []}
            for labels, value in prom.latest(selector, "5m"):
                path = "pull" if labels.get("job") == "wealtharena_rl_training" else "push"
                assert path == "pull" or labels.get("job") == "resources-e2e", labels
                found[path].append((labels["__name__"], labels, value))
            pull, push = _resource_series(found["pull"]), _resource_series(found["push"])
            return (pull, push) if set(pull) == set(push) == set(truth) else None

        pull, push = procs.wait_until(paths, 45, what="resource series on both paths "
                                      f"(truth {sorted(truth)}; logs {collector.process.output()})")
    finally:
        if handle is not None:
            handle.shutdown(timeout=2)
        collector.stop()
        prom.stop()
    assert {name for name, _ in truth} == PROCESS_NAMES | {n for n, _ in truth if not n.startswith("process_")}
    rss = ("process_memory_usage", ())
    assert pull[rss] > 0 and 0.5 < push[rss] / pull[rss] < 2.0, (pull[rss], push[rss])
    assert pull[("process_thread_count", ())] >= 1 and push[("process_thread_count", ())] >= 1


def test_gpu_check_script_passes_with_a_gpu_and_says_why_it_cannot_run_without():
    """scripts/gpu-check.py passes where NVML sees a GPU, and elsewhere exits 2 with a one-line reason."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu-check.py")], capture_output=True,
                            text=True, env=env, timeout=300, check=False)
    if _nvml_works():
        assert result.returncode == 0, result.stdout + result.stderr
        assert "checks passed" in result.stdout and "FAIL" not in result.stdout
    else:
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gpu-check: CANNOT RUN: "), result.stderr


@pytest.mark.integration
def test_labelled_resource_names_translate_the_same_on_both_paths(tmp_path):
    """Every GPU and torch name and attribute key renders on the pull path as the real collector translates it.

    No GPU is needed: the table's instruments are created with placeholder attribute values on an SDK
    MeterProvider that feeds both the pull rendering (``families``) and an OTLP export to the collector.
    """
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter,
    )
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        InMemoryMetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    from otel_rl._internal.families import families

    labelled = [spec for spec in RESOURCE_METRICS if spec.attributes]
    prom = procs.Prometheus(tmp_path)
    collector = procs.Collector(tmp_path, prom.remote_write_url)
    provider = None
    try:
        prom.start()
        collector.start()
        memory = InMemoryMetricReader()
        push = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=collector.grpc_endpoint, insecure=True),
                                             export_interval_millis=500)
        provider = MeterProvider(resource=Resource({"service.name": "names", "service.instance.id": "names-1"}),
                                 metric_readers=[memory, push])
        meter = provider.get_meter("otel_rl.resources")
        for spec in labelled:
            attributes = {key: f"value of {key}" for key in spec.attributes}
            create = (meter.create_observable_gauge if spec.instrument == "gauge"
                      else meter.create_observable_up_down_counter)
            create(spec.otel_name, [lambda options, a=attributes: [Observation(1.5, a)]], spec.unit, spec.help)
        pulled = {(f.name, s.name, tuple(sorted(s.labels.items())), f.type)
                  for f in families(memory.get_metrics_data()) for s in f.samples}
        expected = {(spec.name, spec.name, tuple(sorted((label, f"value of {key}") for label, key in
                                                        zip(spec.labels, spec.attributes))), "gauge")
                    for spec in labelled}
        assert pulled == expected

        def pushed():
            found = {(labels["__name__"], tuple(sorted((k, v) for k, v in labels.items()
                                                       if k not in ("__name__", "job", "instance"))))
                     for labels, _ in prom.latest('{job="names"}', "5m")}
            return found if len(found) >= len(labelled) else None

        found = procs.wait_until(pushed, 30, what=f"labelled series via the collector ({collector.process.output()})")
        assert found == {(name, labels) for name, _, labels, _ in pulled}
    finally:
        if provider is not None:
            provider.shutdown(timeout_millis=2000)
        collector.stop()
        prom.stop()
