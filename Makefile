# Two set-up commands: `make run` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: run test lint typecheck pytest browser screenshots proto clean bench lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Exactly the versions tested (requirements*.lock, written by `make lock`), then tidings itself.
$(STAMP_RUN): pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(STAMP_TEST): pyproject.toml requirements-test.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-test.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[test]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/tidings serve

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP_TEST)
	$(BIN)/mypy src

# The dashboard's browser tests drive the distribution's Chromium (never a downloaded one): as
# root, install it when it is missing; otherwise say how (the tests skip, or fail under CI=true).
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "installing Chromium for the dashboard's browser tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; \
	  else \
	    echo "no $(CHROMIUM): the dashboard's browser tests need it (apt-get install chromium)"; \
	  fi; \
	fi

pytest: $(STAMP_TEST) browser
	$(BIN)/pytest

# The gRPC code in src/tidings/v1/ from proto/ (committed; tests/unit/test_proto.py checks it is fresh).
proto: $(STAMP_TEST)
	PYTHON=$(BIN)/python bash scripts/proto

# The dashboard's screenshots in docs/screenshots/ (shown in the README), from a freshly filled server.
screenshots: $(STAMP_TEST) browser
	$(BIN)/python scripts/screenshots.py

test: lint typecheck pytest

# Benchmarks (bench/README.md); never part of `make test`. Quick run: make bench BENCH_ARGS=--quick
BENCH_ARGS ?=
$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(STAMP_RUN)

bench: $(STAMP_BENCH)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Write the lock files again from pyproject.toml's ranges (after changing a dependency).
lock:
	PYTHON=$(PYTHON) bash scripts/lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
