# liqmon: every target sets up what it needs (venv, package, redis-server and
# mosquitto binaries), so `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup binaries test check lint format demo clean

setup: binaries $(STAMP)

binaries:
	@scripts/ensure-binaries.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## test: lint, type-check and the whole suite against real Redis and Mosquitto
test: setup check
	$(BIN)/pytest

## check: ruff (lint and format) and mypy --strict on the package
check: setup
	$(BIN)/ruff check monitor feeds tests
	$(BIN)/ruff format --check monitor feeds tests
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format monitor feeds tests
	$(BIN)/ruff check --fix monitor feeds tests

## demo: local Redis and broker, 10,000 positions, a crash and a recovery, live events
demo: setup
	$(BIN)/liqmon demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis artifacts

## bench-quick: issue #6 benchmark at 10k and 100k positions (< 2 minutes); bench: 10k, 100k
## and 1M (about 7 minutes). Own redis-server and mosquitto; report in benchmarks/results/.
.PHONY: bench bench-quick
BENCH_STAMP := $(VENV)/.bench-deps

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet matplotlib || echo "matplotlib unavailable: the report will have no plot"
	@touch $@

bench-quick: setup $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench.py --quick

bench: setup $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench.py --full
