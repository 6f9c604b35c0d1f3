# otel-rl: the two commands of the README, and the pieces behind them.
#   make demo   - a real CartPole training run exporting metrics on http://localhost:8011/metrics
#   make test   - installs Prometheus, builds the collector (cached), runs the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test venv prometheus collector stack bench generate check-generated clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/otel-rl demo $(DEMO_ARGS)

prometheus:
	bash scripts/install-prometheus.sh >/dev/null

collector:
	@bash scripts/build-collector.sh

test: venv prometheus
	@set -eo pipefail; \
	start=$$(date +%s); \
	collector=$$(bash scripts/build-collector.sh); \
	echo "collector: $$collector (ready after $$(( $$(date +%s) - start )) s)"; \
	OTEL_RL_COLLECTOR="$$collector" $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

stack: venv prometheus
	OTEL_RL_COLLECTOR=$$(bash scripts/build-collector.sh) $(VENV)/bin/otel-rl stack $(STACK_ARGS)

bench: venv
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# Regenerate everything derived from the metric catalog.
generate: venv
	$(VENV)/bin/otel-rl dashboard
	$(VENV)/bin/otel-rl rules
	$(VENV)/bin/otel-rl metrics --output docs/metrics.md

clean:
	rm -rf $(VENV) build dist *.egg-info
