# liqmon: every target sets up what it needs (venv, locked packages, redis-server and
# mosquitto binaries), so `make test` and `make demo` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The exact set installed: requirements/lock.txt (the package) and requirements/dev.txt
# (the package, the test tools, setuptools and uv), both with hashes, written by `make lock`.
LOCK := requirements/lock.txt
DEV_LOCK := requirements/dev.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) $(DEV_LOCK) | cksum | cut -d' ' -f1)

.PHONY: setup binaries test test-unit check lint format demo clean lock check-lock

setup: binaries $(STAMP)

binaries:
	@scripts/ensure-binaries.sh

# --require-hashes: exactly the locked files, nothing resolved at install time. The
# editable install adds only liqmon itself, built by the locked setuptools.
$(STAMP): pyproject.toml $(LOCK) $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

## lock: re-resolve the lock files from pyproject.toml, keeping every pin that still fits;
## `make lock UPGRADE=1` takes the newest releases instead. uv comes from PyPI if missing.
lock:
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet uv; }
	UPGRADE=$(UPGRADE) scripts/lock.sh $(BIN)/uv

## check-lock: fails when pyproject.toml and the lock files disagree
check-lock: setup
	@scripts/lock.sh $(BIN)/uv --check

## test: lint, type-check and the whole suite against real Redis and Mosquitto
test: setup check
	$(BIN)/pytest

## test-unit: the pure core's tests alone (no server), in seconds
test-unit: setup
	$(BIN)/pytest -m unit -q

## check: the lock check, ruff (lint and format), mypy --strict on the package, the feeds and
## the benchmarks, and the import rules of the layers (pyproject.toml, [tool.importlinter])
check: setup check-lock
	$(BIN)/ruff check monitor feeds tests benchmarks
	$(BIN)/ruff format --check monitor feeds tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: setup
	$(BIN)/ruff format monitor feeds tests benchmarks
	$(BIN)/ruff check --fix monitor feeds tests benchmarks

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
	$(BIN)/python -m benchmarks.bench --quick

bench: setup $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.bench --full
