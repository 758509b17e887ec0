# Everything a new user needs: `make demo` runs the daemon end to end, `make test` runs the
# test suite. Both create the virtualenv (.venv) and install the package into it first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench bench-smoke clean

$(BIN)/pgconnector: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/pgconnector
	$(BIN)/pgconnector demo

lint: $(BIN)/pgconnector
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/pytest

# `make bench` writes bench/RESULTS.md and bench/results.png (about half an hour on 2 cores);
# options go through BENCH_ARGS, e.g. `make bench BENCH_ARGS="--only P3,P5"`.
bench: $(BIN)/pgconnector
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Under a minute; results in /tmp, the committed ones stay.
bench-smoke: $(BIN)/pgconnector
	$(BIN)/python bench/run.py --smoke --output /tmp/pgconnector-bench-smoke.md

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
