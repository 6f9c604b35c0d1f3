"""The Grafana dashboard, generated from the metric catalog, one module per concern.

- :mod:`.promql`: selectors and aggregations checked against each metric's labels (``VARIABLES``);
- :mod:`.panels`: the rows and panels, what each shows (``SEED_PANELS`` maps the original dashboard's panels);
- :mod:`.grafana`: the Grafana JSON (options, grid layout, template variables) and the file it is written to;
- :mod:`.queries`: the queries read back from the JSON and Grafana's variable substitution, for the tests;
- :mod:`.docs`: the generated tables of docs/dashboard.md.

``grafana/dashboards/rl-training.json`` is the output of :func:`write_dashboard` (``otel-rl dashboard``); edit
these modules, not the JSON. This package re-exports what the CLI, the tests and the docs command use.
"""

from __future__ import annotations

from otel_rl._internal.dashboard.docs import markdown, render_doc, update_doc
from otel_rl._internal.dashboard.grafana import DASHBOARD_UID, build_dashboard, dashboard_json, write_dashboard
from otel_rl._internal.dashboard.panels import SEED_PANELS
from otel_rl._internal.dashboard.promql import PER_RUN, VARIABLES
from otel_rl._internal.dashboard.queries import (
    all_panels,
    panel_queries,
    parse_label_values,
    substitute,
    variable_queries,
)

__all__ = [
    "DASHBOARD_UID",
    "SEED_PANELS",
    "PER_RUN",
    "VARIABLES",
    "all_panels",
    "build_dashboard",
    "dashboard_json",
    "markdown",
    "panel_queries",
    "parse_label_values",
    "render_doc",
    "substitute",
    "update_doc",
    "variable_queries",
    "write_dashboard",
]
