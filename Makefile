# credited: the front door. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
# The interpreter the README names; `make PYTHON=/path/to/python3.11` picks another one.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
PYTEST := $(PY) -m pytest
# Integration and end-to-end tests run on Apache Kafka (jars from Maven Central, cached outside the
# repository); the whole-pipeline journey runs once more on the embedded Tansu broker.
export CREDITED_TEST_BROKER ?= apache

.DEFAULT_GOAL := help

.PHONY: prerequisites help venv demo up test test-unit test-integration test-e2e-embedded lint schemas lock kafka-fetch clean dashboards test-monitoring bench chaos

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "credited needs Python 3.11: $(PYTHON) is not on PATH (make PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==0.13.8
	$(VENV)/bin/uv pip install --python $(PY) -q -r requirements.lock
	$(VENV)/bin/uv pip install --python $(PY) -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP) ## Create .venv with the pinned dependencies

demo: $(STAMP) ## Run the stack on the embedded broker and PostgreSQL with the simulator
	$(VENV)/bin/credited demo

up: $(STAMP) ## Run the stack without the simulator until Ctrl-C
	$(VENV)/bin/credited up

prerequisites: ## Install the Debian tools the tests and the bench use (as root) and check the JDK and Maven, once
	scripts/prerequisites

test: $(STAMP) prerequisites lint ## Lint, every test (CREDITED_TEST_BROKER=apache|embedded|host:port), the journey on Tansu
	scripts/run-tests

test-unit: $(STAMP) ## Unit and contract tests only (no broker, no database)
	$(PYTEST) tests/contracts $$(find tests -type d -name unit)

test-e2e-embedded: $(STAMP) ## The whole-pipeline journey on the embedded Tansu broker
	CREDITED_TEST_BROKER=embedded $(PYTEST) tests/e2e/test_whole_pipeline.py

bench: $(STAMP) prerequisites ## The pipeline at rising rates, each service alone, Bytewax and periodic SQL side by side: docs/benchmarks.md
	$(VENV)/bin/credited bench

chaos: $(STAMP) prerequisites ## 10,000 orders on Apache Kafka while services, broker and PostgreSQL fail; every order checked
	$(VENV)/bin/credited chaos --schedule full --out artifacts/chaos/chaos.json

lint: $(STAMP) ## ruff, mypy --strict, import-linter, schema drift
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m contracts.schemas --check

schemas: $(STAMP) ## Regenerate the committed JSON Schemas of the contracts
	$(PY) -m contracts.schemas

dashboards: $(STAMP) ## Rebuild the Grafana dashboards' JSON (deploy/grafana/dashboards) from their code
	PYTHONPATH=deploy/grafana $(PY) -m credited_dashboards

test-monitoring: $(STAMP) prerequisites ## Alert rules (promtool), Alertmanager (amtool), dashboards and runbooks
	$(PYTEST) tests/deploy_monitoring -m "not e2e"

lock: ## Re-resolve requirements.lock from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra bench --extra local --python-version 3.11 -o requirements.lock

kafka-fetch: ## Download Apache Kafka's jars from Maven Central (cached outside the repo)
	scripts/apache-kafka fetch

clean: ## Remove the virtualenv and local run data
	rm -rf $(VENV) .credited .pytest_cache .mypy_cache .ruff_cache
