# otel-rl: the two commands of the README, and the pieces behind them.
#   make demo   - a real CartPole training run exporting metrics on http://localhost:8011/metrics
#   make test   - lint and type check, installs Prometheus and Alertmanager, builds the collector (cached), runs
#                 the whole test suite on the newest OpenTelemetry, then its main part on the oldest supported one
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The oldest supported OpenTelemetry (tests/constraints-oldest.txt), and the tests run against it as well.
VENV_OLDEST ?= .venv-otel-min
OLDEST_TESTS ?= tests/test_producer.py tests/test_readers.py tests/test_store.py tests/test_recording.py tests/test_telemetry.py \
	tests/test_parity.py tests/test_config.py tests/test_decorators.py tests/test_results.py tests/test_compat.py \
	tests/test_testing.py tests/test_collector_e2e.py tests/test_render.py tests/test_server.py tests/test_webconfig.py \
	tests/test_gymnasium.py tests/test_file_sd.py tests/test_provider.py tests/test_scalars.py tests/test_strict.py \
	tests/test_batching.py tests/test_sigterm.py

.PHONY: demo test lint venv venv-oldest prometheus collector stack bench generate clean

# The demo's own small venv: otel-rl with the demo extra (Gymnasium, NumPy, tqdm), not the dev extra's torch and Ray.
VENV_DEMO ?= .venv-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

$(VENV_DEMO)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_DEMO)
	$(VENV_DEMO)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_DEMO)/bin/python -m pip install --quiet -e '.[demo]'
	touch $@

$(VENV_OLDEST)/.installed: pyproject.toml tests/constraints-oldest.txt
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_OLDEST)/bin/python -m pip install --quiet -c tests/constraints-oldest.txt -e '.[test]'
	touch $@

venv-oldest: $(VENV_OLDEST)/.installed

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: $(VENV_DEMO)/.installed
	$(VENV_DEMO)/bin/otel-rl demo $(DEMO_ARGS)

# Prometheus (promtool) and Alertmanager (amtool), from Debian's packages.
prometheus:
	bash scripts/install-prometheus.sh >/dev/null

collector:
	@bash scripts/build-collector.sh

test: lint venv-oldest prometheus
	@set -eo pipefail; \
	start=$$(date +%s); \
	collector=$$(bash scripts/build-collector.sh); \
	echo "collector: $$collector (ready after $$(( $$(date +%s) - start )) s)"; \
	OTEL_RL_COLLECTOR="$$collector" $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); \
	echo "again on the oldest supported versions: $$($(VENV_OLDEST)/bin/python -m pip list 2>/dev/null \
		| grep -E '^(opentelemetry-sdk|prometheus.client) ' | tr -s ' ' | paste -sd, -)"; \
	OTEL_RL_COLLECTOR="$$collector" $(VENV_OLDEST)/bin/python -m pytest -p no:cacheprovider $(OLDEST_TESTS)

stack: $(VENV_DEMO)/.installed prometheus
	OTEL_RL_COLLECTOR=$$(bash scripts/build-collector.sh) $(VENV_DEMO)/bin/otel-rl stack $(STACK_ARGS)

bench: venv
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# Regenerate everything derived from the metric catalog.
generate: venv
	$(VENV)/bin/otel-rl dashboard
	$(VENV)/bin/otel-rl rules
	$(VENV)/bin/otel-rl metrics --output docs/metrics.md
	$(PY) -c "from otel_rl._internal.dashboard import update_doc; update_doc('docs/dashboard.md')"

clean:
	rm -rf $(VENV) $(VENV_OLDEST) $(VENV_DEMO) build dist *.egg-info
