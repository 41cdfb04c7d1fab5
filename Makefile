# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
PIP_NOISE := is ignored: it is neither a file nor a directory
UI_PORT ?= 3000
MLFLOW_PORT ?= 5000
CHROMIUM := /usr/bin/chromium

export EMO_HOME ?= $(CURDIR)/.emo_home
export DAGSTER_HOME := $(EMO_HOME)/dagster
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install constraints lint home browser demo test test-fast ui mlflow-ui bench clean

# pip's local-index notices ("... is ignored") are noise; errors still fail the step (pipefail).
# Reinstalls when pyproject.toml or constraints.txt changes.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[test]' 2>&1 | { grep -v '$(PIP_NOISE)' || true; }
	touch $@

install: $(STAMP)

# constraints.txt: what a clean install of `.[test]` resolves to, every package at one version. Run it
# after changing a dependency in pyproject.toml: a fresh venv in a temporary folder, then `pip check`
# and `pip freeze` (pyproject.toml pins the direct dependencies; this pins everything they bring).
constraints:
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q -e '.[test]' 2>&1 | { grep -v '$(PIP_NOISE)' || true; }; \
	"$$tmp/venv/bin/python" -m pip check; \
	{ echo "# Every package a clean install of '.[test]' brings, at the version it brought: \`make install\`"; \
	  echo "# installs with it (pip install -c $(CONSTRAINTS) -e '.[test]'). Regenerate it with \`make constraints\`"; \
	  echo "# after changing a dependency in pyproject.toml (a fresh venv, pip install -e '.[test]', pip freeze)."; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } > "$$tmp/$(CONSTRAINTS)"; \
	mv "$$tmp/$(CONSTRAINTS)" $(CONSTRAINTS)

lint: install
	$(BIN)/ruff check emo_pipeline emo_pipeline_tests bench

# The instance's storage is created once here: two runs that start together on a fresh DAGSTER_HOME
# would both create it and leave it unusable. Quiet (its progress bar), but a failure shows its output.
home: install
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster instance migrate > /dev/null 2>&1 || $(BIN)/dagster instance migrate

# The synthetic world (written again byte for byte: its content, not its file times, is what the raw
# tables' data versions record), then `emo-pipeline demo`: what is stale or missing in demo_job, a line
# per step, the full event log in $(EMO_HOME)/logs/. A second `make demo` trains nothing.
demo: home
	$(BIN)/emo-pipeline synth --out $(EMO_HOME)/synthetic --scale demo
	$(BIN)/emo-pipeline demo

# Debian's Chromium, for the UI test (emo_pipeline_tests/test_ui.py drives it with Playwright, which
# never downloads a browser of its own), installed only where it is missing. It needs root and never
# calls sudo: as another user, or without apt-get, it says why and the UI test is skipped, for that reason.
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
	  echo "browser: no Chromium at $(CHROMIUM): installing Debian's chromium needs root and this target never calls sudo;"; \
	  echo "browser: the UI test (emo_pipeline_tests/test_ui.py) will be skipped (run 'make browser' as root to enable it)"; \
	  exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "browser: no Chromium at $(CHROMIUM) and no apt-get: the UI test will be skipped (install Chromium there to run it)"; \
	  exit 0; fi; \
	echo "browser: no Chromium at $(CHROMIUM): installing Debian's chromium for the UI test"; \
	apt-get update -q; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	test -x $(CHROMIUM)

# The tests run in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them so that its
# module fixtures are built once; TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Every test, the slow ones and the UI test included (CI runs this through .ci/run).
test: home browser
	$(PYTEST)

# The edit-and-test loop: everything but the tests marked slow or ui (pyproject.toml lists the markers).
test-fast: home
	$(PYTEST) -m "not slow and not ui"

ui: home
	$(BIN)/dagster dev -h 127.0.0.1 -p $(UI_PORT) -w workspace.yaml

mlflow-ui: install
	mkdir -p $(EMO_HOME)/mlflow
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(EMO_HOME)/mlflow/mlflow.db --default-artifact-root $(EMO_HOME)/mlflow/artifacts

bench: install
	$(BIN)/python bench/vg_ingest.py
	$(BIN)/python bench/emotion_object_scores.py

clean:
	rm -rf $(EMO_HOME)
