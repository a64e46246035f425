# Fresh machine: `make run` or `make test` set everything up first (.venv, pinned torch).
PYTHON     ?= python3
VENV       ?= .venv
# The CPU build on this machine's disk; override e.g. TORCH_SPEC="torch==2.13.0+cu126".
TORCH_SPEC ?= torch==2.13.0
# experiment=real_faces: the DCGAN's weights ship in this wheel; its dependencies are not needed.
FACES_GAN  ?= gan-face-generate==1.1.1
PORT       ?= 5000
ARGS       ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.ohlora-installed

.PHONY: setup browser run test test-fast test-all ui bench lint format clean-store server server-stop server-user bench-scale

# Set-up says what it installs and about how long each step took on this project's 2-core CPU
# (2026-12-08, packages from a local mirror, other jobs sharing the machine; a download from
# PyPI adds its time), then a line every 4 s while pip (quiet) works: about 2 min in all, once.
# PYTHONWARNINGS hides setuptools' "Editable installation" box (an information-only warning of
# its editable_wheel command that pip shows even with -q); pip's other warnings still show.
ALL_EXTRAS := dev,browser,scale,faces
PIP := PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(BIN)/python -m pip
# $(call installing,<what>,<about how long here>,<command>): its exit status is the command's.
installing = ( echo "setup: $(1) (about $(2) on a 2-core CPU) ..."; t0=$$(date +%s); next=4; \
	( $(3) ) & pid=$$!; \
	while kill -0 $$pid 2>/dev/null; do sleep 1; el=$$(( $$(date +%s) - t0 )); \
	  if [ $$el -ge $$next ] && kill -0 $$pid 2>/dev/null; then \
	    echo "setup: $(1): $$el s"; next=$$(( el + 4 )); fi; done; \
	wait $$pid )

$(STAMP): pyproject.toml
	@echo "setup: installing into $(VENV) (new, or pyproject.toml changed): about 2 min on a 2-core CPU, once"
	@test -x $(BIN)/python || $(call installing,creating $(VENV),5 s,$(PYTHON) -m venv $(VENV))
	@$(call installing,upgrading pip,2 s,$(PIP) install -q --upgrade pip)
	@$(call installing,installing $(TORCH_SPEC),30 s,$(PIP) install -q "$(TORCH_SPEC)")
	@# Everything in one resolve (a minute less than one per extra); where that fails, each
	@# extra on its own, so that what can be installed is.
	@$(call installing,installing ohlora_eval with MLflow/Hydra/Ray/dlib and the test tools,80 s,\
	  $(PIP) install -q -e ".[$(ALL_EXTRAS)]") || { \
	  $(PIP) install -q -e ".[dev]" && { \
	  $(PIP) install -q -e ".[browser]" || \
	    echo "note: playwright could not be installed; the review-page browser test will be skipped"; \
	  $(PIP) install -q -e ".[scale]" || \
	    echo "note: ray/psycopg2 could not be installed; execution=ray and the tests/scale tests will be skipped"; \
	  $(PIP) install -q -e ".[faces]" || \
	    echo "note: the real-faces packages could not be installed; experiment=real_faces will say how"; }; }
	@$(PIP) install -q --no-deps "$(FACES_GAN)" || \
		echo "note: the real-faces GAN could not be installed; experiment=real_faces will say how"
	@touch $(STAMP)
	@echo "setup: done"

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

# The daily tier: a test that starts a screening, a direction fit, a subprocess, a server or a
# browser is skipped when it tries (tests/conftest.py, --fast).
test-fast: setup
	$(BIN)/python -m pytest -q --fast $(PYTEST_ARGS)

test-all: setup browser
	$(BIN)/python -m pytest -q -m "" $(PYTEST_ARGS)

# One web worker and no job runner (MLflow's GenAI jobs): 2 processes, not 17, on a small
# machine. The links printed open each experiment's runs in the Model-training view.
UI_STORE = $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}
ui: setup
	@$(BIN)/python -m ohlora_eval.tracking.ui_links "$(UI_STORE)" $(PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port $(PORT) \
		--workers 1 --backend-store-uri "$(UI_STORE)"

# A team server: PostgreSQL (data in .server/pg, owned by $(PG_USER) when run as root: it
# refuses to run as root) and `mlflow server` on it, artifacts proxied into .server/artifacts,
# both on 127.0.0.1, every database connection with a generated password (.server/secrets),
# every MLflow request with a login (make server prints the admin's; make server-user NAME=...).
# Point every command at it: MLFLOW_TRACKING_URI=http://127.0.0.1:$(PORT) plus
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
SERVER_DIR ?= $(CURDIR)/.server
PG_BIN     ?= /usr/lib/postgresql/15/bin
PG_PORT    ?= 5433
PG_USER    ?= ohlora-pg
SERVER_ARGS = --dir $(SERVER_DIR) --port $(PORT) --pg-port $(PG_PORT) --pg-bin $(PG_BIN) --pg-user $(PG_USER)

server: setup
	@$(BIN)/python -m ohlora_eval.tracking.server start $(SERVER_ARGS)

server-stop:
	@$(BIN)/python -m ohlora_eval.tracking.server stop $(SERVER_ARGS)

# A teammate's account on the running server: make server-user NAME=alice
server-user:
	@$(BIN)/python -m ohlora_eval.tracking.server add-user --name "$(NAME)" $(SERVER_ARGS)

bench: setup
	$(BIN)/python -m ohlora_eval.bench $(ARGS)

# Local vs Ray with 1 and 2 workers, per-worker rates, the driver's per-chunk cost (docs/scaling.md).
bench-scale: setup
	$(BIN)/python -m ohlora_eval.bench.scale $(ARGS)

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
