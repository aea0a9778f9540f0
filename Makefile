# One command per habit, the same for people and CI.  `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help run test check lint format typecheck imports pytest soak demo verify clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed ## Install, migrate, seed the demo alliance and serve on http://127.0.0.1:8000
	$(BIN)/alliance migrate
	$(BIN)/alliance demo
	$(BIN)/alliance admin demo-user
	$(BIN)/alliance serve

test: $(VENV)/.installed-dev check pytest ## Install with dev extras; ruff, mypy, import contracts, tests

check: lint typecheck imports ## Static checks only

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev ## Fix what ruff can fix
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

soak: $(VENV)/.installed-dev ## Nightly tier: model 2,000x100, interop 5,000, L1 100 rounds, worker kills (~50 min)
	HYPOTHESIS_PROFILE=nightly SIGNING_INTEROP_EXAMPLES=5000 L1_ROUNDS=100 $(BIN)/pytest \
		tests/exchange/test_model.py tests/signing/test_interop.py \
		tests/exchange/test_concurrency.py tests/api/test_concurrency_http.py
	WORKER_KILL_POINTS=100 WORKER_KILL_KILLS=50 SETTLEMENT_KILLS=25 POSTGRES_KILLS=20 \
		$(BIN)/pytest -p no:randomly tests/api/test_worker_kill.py \
		tests/settlement/test_killed_run.py tests/api/test_postgres_kill.py

demo: $(VENV)/.installed ## Seed the demo alliance into the configured database
	$(BIN)/alliance migrate
	$(BIN)/alliance demo

verify: $(VENV)/.installed ## Reconcile the ledger
	$(BIN)/alliance verify

clean: ## Remove the virtualenv and caches (keeps .data, the embedded database)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

.PHONY: bench
bench: $(VENV)/.installed-dev ## Benchmark against the machine's own limits (~20 min); writes bench/results/
	$(BIN)/python -m bench.run

.PHONY: screenshots
screenshots: $(VENV)/.installed-dev ## PNG of every console page from the demo alliance, in docs/screenshots/
	$(BIN)/alliance migrate
	$(BIN)/alliance demo
	$(BIN)/python -m console.screenshots
