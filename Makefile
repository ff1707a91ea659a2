# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Needs python3 (>= 3.10), java (17+) and mvn on PATH; everything else is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-cluster test-chaos chaos-cluster unit component integration lint format docs clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
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
	$(PYTEST) $(PARALLEL) -m "not alone and not cluster and not chaos" || status=$$?; \
	$(PYTEST) -m "alone and not cluster and not chaos" || status=$$?; \
	exit $$status

# The slower proofs on the local 3-node cluster (replication, broker faults, SASL_SSL):
# CI runs them as a step of their own after `make test`.
test-cluster: setup
	$(PYTEST) -m cluster

# The Twilio dialer under worker, dialer and Twilio faults (hung requests, a lagging call
# list, 5xx after the call was made, CPS queueing): the short run as a test, then the full
# run, which counts the calls at the fake Twilio. CI runs it as a step of its own.
test-chaos: setup
	$(PYTEST) -m chaos
	$(BIN)/python -m bench.chaos --dialer twilio --leads 600 --businesses 60 --seed 7

# Every broker fault in turn (bench/cluster_faults.py) under load on a 3-node cluster of
# its own, two workers and the simulated dialer; exits 1 on any violation. CI's last step.
CHAOS_CLUSTER_SEED ?= 7
chaos-cluster: setup
	$(BIN)/python -m bench.chaos --cluster --leads 20000 --leads-per-second 10 \
	    --businesses 400 --seed $(CHAOS_CLUSTER_SEED)

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

# docs/settings.md's table is generated from streams/settings.py, docs/contract/ from
# streams/topics.py (a test fails on drift of either).
docs: setup
	$(BIN)/python -m streams.settings --write docs/settings.md
	$(BIN)/python -m streams.schemas --write docs/contract

clean:
	-$(BIN)/streams broker stop
	rm -rf $(VENV) .kafka .streams-data .streams-demo deploy/kafka/lib
