"""Tests for otel_rl._internal.dashboard (promql, panels, grafana, queries, docs): the generated Grafana dashboard
and its queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from otel_rl._internal import dashboard as dash
from otel_rl._internal.catalog import ALL_METRICS, BY_NAME, CATALOG
from otel_rl._internal.dashboard.promql import CUSTOM_SELECTOR
from otel_rl._internal.resource_catalog import RESOURCE_BY_NAME, RESOURCE_METRICS

import facts

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = ROOT / "grafana" / "dashboards" / "rl-training.json"
SEED = facts.load()
DOC = ROOT / "docs" / "dashboard.md"

_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_BY = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_GRAFANA_VAR = re.compile(r"\$\{?(\w+)\}?")


@pytest.fixture(scope="module")
def board() -> dict:
    return dash.build_dashboard()


def _content_panels(board: dict) -> list[dict]:
    return [p for p in dash.all_panels(board) if p["type"] != "row"]


def catalog_queries(board: dict) -> list[tuple[str, str]]:
    """Panel queries over catalog and resource metrics: all but the custom row's (checked on its own)."""
    return [(t, e) for t, e in dash.panel_queries(board) if CUSTOM_SELECTOR not in e]


def _spec_for(series: str):
    """The catalog entry of a series name (histogram suffixes stripped), or None."""
    if series in BY_NAME:
        return BY_NAME[series], ""
    if series in RESOURCE_BY_NAME:
        return RESOURCE_BY_NAME[series], ""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series[: -len(suffix)]
        if series.endswith(suffix) and base in BY_NAME and BY_NAME[base].type == "histogram":
            return BY_NAME[base], suffix
    return None, ""


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """``(series name, {label: (op, value)})`` for every ``name{...}`` selector in ``expr``."""
    out = []
    for name, body in _SELECTOR.findall(expr):
        matchers: dict[str, tuple[str, str]] = {}
        pos = 0
        while pos < len(body.strip()):
            m = _MATCHER.match(body, pos)
            assert m, f"cannot parse matchers {body!r} in {expr!r}"
            matchers[m.group(1)] = (m.group(2), m.group(3))
            pos = m.end()
        out.append((name, matchers))
    return out


def metrics_in(expr: str) -> set[str]:
    return {spec.name for name, _ in selectors(expr) if (spec := _spec_for(name)[0]) is not None}


def test_committed_json_is_current(board):
    """The committed dashboard JSON is exactly what build_dashboard() generates."""
    assert DASHBOARD_PATH.exists(), f"{DASHBOARD_PATH} is missing: run `otel-rl dashboard`"
    assert DASHBOARD_PATH.read_text(encoding="utf-8") == dash.dashboard_json(), (
        f"{DASHBOARD_PATH.relative_to(ROOT)} is out of date or hand-edited: run `otel-rl dashboard` "
        "(otel_rl/_internal/dashboard/ is the source)")


def test_write_dashboard_is_stable(tmp_path):
    """write_dashboard writes indented JSON with a trailing newline, identical on every call."""
    a, b = tmp_path / "a.json", tmp_path / "sub" / "b.json"
    dash.write_dashboard(a)
    dash.write_dashboard(b)
    text = a.read_text()
    assert text == b.read_text() and text.endswith("}\n") and text.startswith('{\n  "annotations"')
    assert json.loads(text) == json.loads(json.dumps(dash.build_dashboard()))


def test_modern_schema_and_panel_types(board):
    """Current schema, only timeseries/stat/heatmap/table panels (no deprecated graph) and unique ids."""
    assert board["schemaVersion"] >= 39
    types = {p["type"] for p in dash.all_panels(board)}
    assert "graph" not in types
    assert types <= {"row", "timeseries", "stat", "heatmap", "table"}
    assert {"timeseries", "stat", "heatmap", "table"} <= types
    ids = [p["id"] for p in dash.all_panels(board)]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in _content_panels(board)]
    assert len(titles) == len(set(titles))


def test_rows(board):
    """The rows are overview, episodes, trading performance, losses, training signals, throughput, errors,
    resources, in that order."""
    rows = [p["title"].lower() for p in board["panels"] if p["type"] == "row"]
    assert rows == ["overview", "episodes", "trading performance", "losses", "training signals", "custom",
                    "throughput", "errors", "resources"]


def test_panels_fit_the_grid(board):
    """Panels stay within 24 columns and do not overlap."""
    cells: set[tuple[int, int]] = set()
    for panel in dash.all_panels(board):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_datasource_variable_everywhere(board):
    """A Prometheus datasource variable exists, and every panel, target and query variable uses it."""
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": "${datasource}"}
    for panel in _content_panels(board):
        assert panel["datasource"] == ref, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ref, panel["title"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"] == ref, var["name"]
    assert "${DS_" not in json.dumps(board)


def test_template_variables(board):
    """job, algorithm, run_id and agent_id are multi-select query variables with All = .*, chained on $job."""
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "job", "algorithm", "run_id", "agent_id"]
    queries = dict(dash.variable_queries(board))
    assert queries == {
        "job": "label_values(rl_training_runs_total, job)",
        "algorithm": 'label_values(rl_training_runs_total{job=~"$job"}, algorithm)',
        "run_id": 'label_values(rl_training_current_iteration{job=~"$job",algorithm=~"$algorithm"}, run_id)',
        "agent_id": 'label_values(rl_training_episodes_total{job=~"$job",algorithm=~"$algorithm"}, agent_id)',
    }
    for var in board["templating"]["list"][1:]:
        assert var["multi"] and var["includeAll"] and var["allValue"] == ".*", var["name"]
        selector, label = dash.parse_label_values(queries[var["name"]])
        assert label == var["name"]
        for name, matchers in selectors(selector):
            spec = BY_NAME[name]
            assert label in spec.labels + ("job",)
            assert set(matchers) <= set(spec.labels) | {"job"}


def test_every_metric_has_a_panel(board):
    """Each of the 21 seed metrics and otel_rl_dropped_values_total appears in at least one panel."""
    used = set().union(*(metrics_in(expr) for _, expr in dash.panel_queries(board)))
    missing = [spec.name for spec in ALL_METRICS if spec.name not in used]
    assert not missing, f"metrics without a panel: {missing}"
    assert len(CATALOG) == 21


def test_every_resource_metric_has_a_panel_in_the_resources_row(board):
    """Each metric of the resource table appears in a panel of the "Resources" row, and only there."""
    rows, row = {}, None
    for panel in dash.all_panels(board):
        if panel["type"] == "row":
            row = panel["title"]
        else:
            rows[panel["title"]] = row
    used: dict[str, set[str]] = {}
    for title, expr in dash.panel_queries(board):
        for name, _ in selectors(expr):
            if name in RESOURCE_BY_NAME:
                used.setdefault(name, set()).add(rows[title])
    assert set(used) == set(RESOURCE_BY_NAME), f"without a panel: {set(RESOURCE_BY_NAME) - set(used)}"
    assert all(found == {"Resources"} for found in used.values()), used
    assert len(RESOURCE_METRICS) == len(RESOURCE_BY_NAME)


def test_custom_row_shows_every_record_scalar_gauge_filtered_by_job_only(board):
    """The "Custom" row has one panel over every rl_training_custom_* series, filtered by $job alone (their labels
    are the user's, so the run variables cannot filter them)."""
    row, custom = None, []
    for panel in dash.all_panels(board):
        if panel["type"] == "row":
            row = panel["title"]
        elif row == "Custom":
            custom.append(panel)
    assert [p["title"] for p in custom] == ["Your scalars (record_scalar, extra_keys)"]
    [target] = custom[0]["targets"]
    assert target["expr"] == 'max without (instance) ({__name__=~"rl_training_custom_.+",job=~"$job"})'
    assert [t for t, e in dash.panel_queries(board) if CUSTOM_SELECTOR in e] == [custom[0]["title"]]


def test_dropped_values_panel(board):
    """A panel shows otel_rl_dropped_values_total by metric and reason."""
    exprs = [e for _, e in dash.panel_queries(board) if "otel_rl_dropped_values_total" in e]
    assert any(re.search(r"by \(metric, reason\)", e) for e in exprs)


def test_selectors_only_use_labels_the_metric_has(board):
    """No selector filters, and no grouping uses, a label its metric does not carry (job and le aside)."""
    for title, expr in catalog_queries(board):
        found = selectors(expr)
        assert found, f"{title}: no selector in {expr!r}"
        allowed_by: set[str] = {"le"}
        for name, matchers in found:
            spec, suffix = _spec_for(name)
            assert spec is not None, f"{title}: unknown series {name}"
            allowed = set(spec.labels) | {"job"} | ({"le"} if suffix == "_bucket" else set())
            if spec.name in dash.PER_RUN:  # per_run_series adds run_id; the matcher also matches its absence
                allowed.add("run_id")
                assert matchers.get("run_id") == ("=~", "$run_id|"), f"{title}: {name} {matchers}"
            extra = set(matchers) - allowed
            assert not extra, f"{title}: {name} has no label(s) {sorted(extra)} (it has {spec.labels})"
            allowed_by |= set(spec.labels) | {"job"}
        for group in _BY.findall(expr):
            labels = {label.strip() for label in group.split(",") if label.strip()}
            assert labels <= allowed_by, f"{title}: groups by {sorted(labels - allowed_by)} in {expr!r}"


def test_selectors_filter_job_and_every_own_variable(board):
    """Every selector has job=~"$job" and a matcher for each variable whose label its metric has."""
    for title, expr in catalog_queries(board):
        for name, matchers in selectors(expr):
            spec, _ = _spec_for(name)
            assert matchers.get("job") == ("=~", "$job"), f"{title}: {name} not filtered by $job"
            for var in dash.VARIABLES:
                if var in spec.labels:
                    assert matchers.get(var) == ("=~", f"${var}"), f"{title}: {name} not filtered by ${var}"
            if spec.name in dash.PER_RUN:
                assert matchers.get("run_id") == ("=~", "$run_id|"), f"{title}: {name} not filtered by $run_id|"


def test_only_known_grafana_variables(board):
    """Queries use only $job, $algorithm, $run_id, $agent_id, $__range, $__rate_interval and $__interval."""
    known = {"job", "algorithm", "run_id", "agent_id", "__range", "__rate_interval", "__interval"}
    for title, expr in dash.panel_queries(board) + dash.variable_queries(board):
        assert set(_GRAFANA_VAR.findall(expr)) <= known, title


def test_short_runs_are_covered(board):
    """Stat and table panels read whole-range values; no panel relies only on rate()."""
    for panel in _content_panels(board):
        exprs = [t["expr"] for t in panel["targets"]]
        if panel["type"] in ("stat", "table"):
            assert all("$__range" in e for e in exprs), panel["title"]
            assert all(t["instant"] for t in panel["targets"]), panel["title"]
        assert not any("[5m]" in e for e in exprs), panel["title"]
    losses = {title: [e for t, e in dash.panel_queries(board) if t == title]
              for title in ("Policy loss", "Value loss", "Entropy (exploration)")}
    for title, exprs in losses.items():
        assert any("[" not in e for e in exprs), f"{title} has no cumulative _sum/_count mean"


def test_units(board):
    """Percent for trading percentages, seconds for durations, steps/s for env steps, short elsewhere."""
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in _content_panels(board)}
    assert units["Win rate"] == units["Max drawdown"] == units["Total return"] == "percent"
    assert units["Training duration (mean per run)"] == units["Data load time"] == "s"
    assert units["Environment steps per second"] == "steps/s"
    assert units["Sharpe ratio"] == units["Episodes"] == "short"
    assert all(units.values())


def test_seed_panels_keep_their_intent(board):
    """Each of the seed's 18 panels maps to a panel here that reads the same series."""
    titles = {p["title"] for p in _content_panels(board)}
    queries = dash.panel_queries(board)
    assert len(dash.SEED_PANELS) == 18
    seed_panels = SEED["original_dashboard"]["panels"]
    assert {p["title"] for p in seed_panels} == set(dash.SEED_PANELS)
    for seed_panel in seed_panels:
        ours = dash.SEED_PANELS[seed_panel["title"]]
        assert ours in titles, f"{seed_panel['title']} -> {ours}: no such panel"
        seed_series = {name for name, _ in _SELECTOR.findall(seed_panel["expr"])}
        our_series = {name for t, e in queries if t == ours for name, _ in _SELECTOR.findall(e)}
        assert seed_series <= our_series, f"{ours} does not read {seed_series - our_series}"


def test_training_errors_not_filtered_by_algorithm(board):
    """The seed's defect is gone: the errors panels filter only on job (and on the run, which they have with
    per_run_series)."""
    for title, expr in dash.panel_queries(board):
        for name, matchers in selectors(expr):
            if name == "rl_training_errors_total":
                assert set(matchers) == {"job", "run_id"}, title


def test_substitute():
    """substitute() replaces every Grafana variable; All and missing values become .*."""
    expr = 'rate(x{job=~"$job",algorithm=~"${algorithm}",run_id=~"$run_id"}[$__rate_interval]) ' \
           "+ max_over_time(x[$__range]) + y[$__interval]"
    out = dash.substitute(expr, {"job": "demo", "algorithm": "All"}, range_="2h")
    assert out == 'rate(x{job=~"demo",algorithm=~".*",run_id=~".*"}[1m]) + max_over_time(x[2h]) + y[15s]'
    assert "[30s]" in dash.substitute("x[$__rate_interval]", {"__rate_interval": "30s"})
    with pytest.raises(ValueError, match="unknown variable"):
        dash.substitute("x{a=~'$nope'}", {})


def test_parse_label_values():
    """label_values(selector, label) splits into its selector and label."""
    assert dash.parse_label_values('label_values(m{job=~"$job"}, run_id)') == ('m{job=~"$job"}', "run_id")
    assert dash.parse_label_values("label_values(job)") == ("", "job")
    with pytest.raises(ValueError):
        dash.parse_label_values("query_result(up)")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `make test` (it installs Prometheus, which ships promtool)")
    return path


def test_queries_are_valid_promql(board, tmp_path):
    """Every panel query, with variables substituted, parses as PromQL (checked by promtool as recording rules)."""
    rules = [{"record": f"dashboard:query:{i}", "expr": dash.substitute(expr, {})}
             for i, (_, expr) in enumerate(dash.panel_queries(board))]
    for name, query in dash.variable_queries(board):
        selector, _ = dash.parse_label_values(query)
        rules.append({"record": f"dashboard:variable:{name}", "expr": dash.substitute(selector, {})})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_doc_is_current():
    """docs/dashboard.md's generated panel and rule tables match the code."""
    text = DOC.read_text(encoding="utf-8")
    assert "<!-- BEGIN GENERATED: panels -->" in text and "<!-- BEGIN GENERATED: rules -->" in text
    assert dash.render_doc(text) == text, (
        "docs/dashboard.md is out of date: run "
        "python -c \"from otel_rl._internal.dashboard import update_doc; update_doc('docs/dashboard.md')\"")
    for panel in _content_panels(dash.build_dashboard()):
        assert f"| {panel['title']} |" in text
