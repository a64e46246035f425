# Fresh machine: `make run` or `make test` set everything up first (.venv, pinned torch).
PYTHON     ?= python3
VENV       ?= .venv
# The CPU build on this machine's disk; override e.g. TORCH_SPEC="torch==2.13.0+cu126".
TORCH_SPEC ?= torch==2.13.0
PORT       ?= 5000
ARGS       ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.ohlora-installed

.PHONY: setup browser run test test-all ui bench lint format clean-store

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@$(BIN)/python -m pip install -q -e ".[browser]" || \
		echo "note: playwright could not be installed; the review-page browser test will be skipped"
	@touch $(STAMP)

setup: $(STAMP)

# Debian's Chromium for the review-page browser test (never a browser download by playwright).
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		>/dev/null 2>&1; } || \
		echo "note: no /usr/bin/chromium (apt-get install -y chromium); the review-page browser test will be skipped"

run: setup
	$(BIN)/python -m ohlora_eval $(ARGS)

test: setup browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: setup browser
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

# One web worker and no job runner (MLflow's GenAI jobs): 2 processes, not 17, on a small
# machine. The links printed open each experiment's runs in the Model-training view.
UI_STORE = $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}
ui: setup
	@$(BIN)/python -m ohlora_eval.tracking.runs "$(UI_STORE)" $(PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port $(PORT) \
		--workers 1 --backend-store-uri "$(UI_STORE)"

bench: setup
	$(BIN)/python -m ohlora_eval.bench $(ARGS)

# Style, and the layers of docs/architecture.md (import-linter contracts in pyproject.toml).
lint: setup
	$(BIN)/ruff check ohlora_eval tests
	$(BIN)/ruff format --check ohlora_eval tests
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format ohlora_eval tests
	$(BIN)/ruff check --fix ohlora_eval tests

clean-store:
	@echo "This deletes every run in mlruns/ (the MLflow store). Ctrl-C to keep it."; sleep 5
	find mlruns -mindepth 1 ! -name .gitkeep ! -name README.md -exec rm -rf {} +
