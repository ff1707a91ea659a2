# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Needs python3 (>= 3.10), java (17+) and mvn on PATH; everything else is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-cluster unit component integration lint format docs clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,rocksdb]'
	touch $@

demo: setup
	$(BIN)/streams demo

# The tests mostly wait on real processes and one shared broker, so more workers than
# cores pay off; 4 on 2 cores still leaves headroom for the timings tests assert.
# worksteal, because test times differ a thousandfold. Tests marked `alone` run afterwards
# one at a time; both phases always run and the exit status is the worse of the two.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest
PARALLEL := -n $(TEST_WORKERS) --dist worksteal

test: setup
	status=0; \
	$(PYTEST) $(PARALLEL) -m "not alone and not cluster" || status=$$?; \
	$(PYTEST) -m "alone and not cluster" || status=$$?; \
	exit $$status

# The slower proofs on the local 3-node cluster (replication, broker faults, SASL_SSL):
# CI runs them as a step of their own after `make test`.
test-cluster: setup
	$(PYTEST) -m cluster

unit: setup
	$(PYTEST) $(PARALLEL) -m unit

component: setup
	$(PYTEST) $(PARALLEL) -m component

integration: setup
	status=0; \
	$(PYTEST) $(PARALLEL) -m "integration and not alone and not cluster" || status=$$?; \
	$(PYTEST) -m "integration and alone and not cluster" || status=$$?; \
	exit $$status

# The gates CI runs before the tests: ruff's lint and format check, then mypy.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# docs/settings.md's table is generated from streams/settings.py (a test fails on drift).
docs: setup
	$(BIN)/python -m streams.settings --write docs/settings.md

clean:
	-$(BIN)/streams broker stop
	rm -rf $(VENV) .kafka .streams-data .streams-demo deploy/kafka/lib
