"""The public surface: what ``otel_rl`` exports, and the compat module's seed-compatible helper signatures."""

from __future__ import annotations

import ast
import importlib
import inspect
import types
from pathlib import Path

import pytest

import otel_rl
from otel_rl import testing
from otel_rl.compat import prometheus_metrics as compat

import facts

FACTS = facts.load()

PUBLIC = {
    "ALL_METRICS", "CATALOG", "ConfigError", "MetricSpec", "RunContext", "Settings", "Telemetry", "__version__",
    "current", "current_run", "data_load", "flush_on_return", "init_telemetry", "load_settings",
    "record_data_load_time", "record_environment_steps", "record_episode", "record_episode_metrics",
    "record_loss_metrics", "record_performance_metrics", "record_training_complete", "record_training_error",
    "record_training_failed", "record_training_iteration", "record_training_start", "record_training_signals",
    "SIGNALS", "StrictModeError", "meter_provider", "record_scalar",
    "train_step", "training_run", "worker_env",
}


def _seed_signatures() -> dict[str, inspect.Signature]:
    """The helpers' signatures as the facts file writes them, e.g. ``record_training_start(algorithm, run_id=...)``."""
    out = {}
    for helper in FACTS["helpers"]:
        tree = ast.parse(f"def {helper['call']}: pass")
        func = tree.body[0]
        namespace: dict = {}
        exec(compile(ast.Module([func], []), "<facts>", "exec"), namespace)  # trusted facts file
        out[func.name] = inspect.signature(namespace[func.name])
    return out


SEED_SIGNATURES = _seed_signatures()


def test_all_lists_exactly_the_public_names():
    """otel_rl.__all__ is exactly the documented public names, without duplicates."""
    assert len(otel_rl.__all__) == len(set(otel_rl.__all__))
    assert set(otel_rl.__all__) == PUBLIC


def test_a_fresh_interpreter_imports_exactly_the_public_names():
    """In a fresh interpreter (no other test's imports or patches), `from otel_rl import *` binds exactly the
    documented public names, each to a real object, and `otel_rl.__all__` lists exactly those."""
    import json
    import subprocess
    import sys

    code = ("import json, otel_rl\n"
            "namespace = {}\n"
            "exec('from otel_rl import *', namespace)\n"
            "namespace.pop('__builtins__')\n"
            "print(json.dumps({'all': list(otel_rl.__all__), 'star': sorted(namespace),\n"
            "                  'none': sorted(n for n, v in namespace.items() if v is None)}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent))
    found = json.loads(out.stdout)
    assert sorted(found["all"]) == sorted(PUBLIC)
    assert found["star"] == sorted(PUBLIC)
    assert found["none"] == []


def test_no_undeclared_public_attributes():
    """Every non-underscore attribute of otel_rl that is not a submodule is listed in __all__."""
    extra = {name for name, value in vars(otel_rl).items()
             if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert extra <= set(otel_rl.__all__), extra - set(otel_rl.__all__)


def test_public_names_come_from_the_internal_modules():
    """Public callables are defined in otel_rl._internal (the package only re-exports)."""
    for name in otel_rl.__all__:
        value = getattr(otel_rl, name)
        if callable(value) and hasattr(value, "__module__"):
            assert value.__module__.startswith("otel_rl._internal"), (name, value.__module__)


def test_version_is_a_string():
    """__version__ is a non-empty dotted version string."""
    assert isinstance(otel_rl.__version__, str) and otel_rl.__version__[0].isdigit()


def test_testing_module_exports():
    """otel_rl.testing exports reset, value, histogram, dropped and the capture_metrics context manager."""
    assert set(testing.__all__) == {"CapturedMetrics", "capture_metrics", "dropped", "histogram", "reset", "value"}
    for name in testing.__all__:
        assert callable(getattr(testing, name))


def test_the_facts_name_every_compat_helper():
    """The facts file lists the 11 record_* helpers plus start/stop_metrics_server and get_metrics_response."""
    assert set(SEED_SIGNATURES) == {
        "record_training_start", "record_training_complete", "record_training_failed", "record_training_iteration",
        "record_episode", "record_episode_metrics", "record_performance_metrics", "record_loss_metrics",
        "record_data_load_time", "record_environment_steps", "record_training_error",
        "start_metrics_server", "stop_metrics_server", "get_metrics_response",
    }


@pytest.mark.parametrize("name", sorted(SEED_SIGNATURES))
def test_compat_helper_has_the_seed_signature(name):
    """The compat module's helper has the seed's parameter names, kinds and defaults, in order."""
    assert name in compat.__all__
    ours = inspect.signature(getattr(compat, name))
    seed = SEED_SIGNATURES[name]
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
        [(p.name, p.kind, p.default) for p in seed.parameters.values()]


@pytest.mark.parametrize("name", sorted(n for n in SEED_SIGNATURES if n.startswith("record_")))
def test_top_level_record_helpers_are_the_compat_ones(name):
    """otel_rl.record_* and the compat module's record_* are the same functions."""
    assert getattr(otel_rl, name) is getattr(compat, name)


def test_compat_exposes_the_seed_metric_objects():
    """The compat module has one object per seed metric, under the seed's names, with labels()."""
    for fact in FACTS["metrics"]:
        metric = getattr(compat, fact["name"])
        assert fact["name"] in compat.__all__
        assert tuple(metric._labelnames) == tuple(fact["labels"])  # prometheus_client's attribute name
        assert callable(metric.labels)


def test_catalog_matches_the_facts():
    """CATALOG lists the seed metrics in order with the facts' type, labels, buckets and help."""
    assert [spec.name for spec in otel_rl.CATALOG] == [m["name"] for m in FACTS["metrics"]]
    for spec, fact in zip(otel_rl.CATALOG, FACTS["metrics"]):
        assert spec.type == fact["type"]
        assert spec.labels == tuple(fact["labels"])
        assert spec.help == fact["help"]
        assert spec.buckets == tuple(float(b) for b in fact.get("buckets", ()))
    assert [spec.name for spec in otel_rl.ALL_METRICS][-1] == "otel_rl_dropped_values_total"


def test_importing_otel_rl_does_not_import_frameworks():
    """Importing otel_rl pulls in no training framework (torch, ray, stable_baselines3, gymnasium)."""
    import subprocess
    import sys

    code = ("import sys, otel_rl, otel_rl.compat.prometheus_metrics; "
            "print(','.join(m for m in ('torch', 'ray', 'stable_baselines3', 'gymnasium', 'tensorflow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parent.parent))
    assert out.stdout.strip() == ""


def test_compat_module_reimports_cleanly():
    """The compat module can be imported by its dotted path (the one-line migration)."""
    module = importlib.import_module("otel_rl.compat.prometheus_metrics")
    assert module is compat
