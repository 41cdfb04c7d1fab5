# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
UI_PORT ?= 3000
MLFLOW_PORT ?= 5000
CHROMIUM := /usr/bin/chromium

export EMO_HOME ?= $(CURDIR)/.emo_home
export DAGSTER_HOME := $(EMO_HOME)/dagster
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: install home browser demo test ui mlflow-ui bench clean

# pip's local-index notices ("... is ignored") are noise; errors still fail the step (pipefail).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]' 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	touch $@

install: $(STAMP)

# The instance's storage is created once here: two runs that start together on a fresh DAGSTER_HOME
# would both create it and leave it unusable.
home: install
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster instance migrate > /dev/null

demo: home
	$(BIN)/emo-pipeline synth --out $(EMO_HOME)/synthetic --scale demo
	$(BIN)/dagster job execute -m emo_pipeline.definitions -j unsharded_job
	$(BIN)/dagster asset materialize -m emo_pipeline.definitions --select vg_emotion_predictions \
	  --partition-range shard_00...shard_15
	$(BIN)/dagster job execute -m emo_pipeline.definitions -j dataset_b_job
	@echo
	@echo "Done. Next:"
	@echo "  make ui          # Dagster UI on http://127.0.0.1:$(UI_PORT)"
	@echo "  $(VENV)/bin/emo-pipeline sql \"SELECT dominant_emotion, count(*) AS images FROM emotion6_labels GROUP BY 1 ORDER BY 2 DESC\""
	@echo "  $(VENV)/bin/emo-pipeline objects --joy 0.7 --surprise 0.3 -k 10"
	@echo "  $(VENV)/bin/emo-pipeline scene --joy 0.8 --surprise 0.2 --out scenes/"
	@echo "  make mlflow-ui   # MLflow on http://127.0.0.1:$(MLFLOW_PORT)"

# Debian's Chromium, for the UI test (emo_pipeline_tests/test_ui.py drives it with Playwright, which
# never downloads a browser of its own). Without apt-get it says so and the UI test is skipped.
browser:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "no $(CHROMIUM) and no apt-get: install Chromium there to run the UI test (skipped until then)"; exit 0; fi; \
	sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	echo "installing Debian's chromium for the UI test"; \
	$$sudo apt-get update -q; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	test -x $(CHROMIUM)

test: home browser
	$(BIN)/python -m pytest

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
