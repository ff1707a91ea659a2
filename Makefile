# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# Needs python3 (>= 3.10), java (17+) and mvn on PATH; everything else is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test unit integration lint format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,rocksdb]'
	touch $@

demo: setup
	$(BIN)/streams demo

test: setup
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest -m "not integration"

integration: setup
	$(BIN)/python -m pytest -m integration

# The gates CI runs before the tests: ruff's lint and format check, then mypy.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	-$(BIN)/streams broker stop
	rm -rf $(VENV) .kafka .streams-data .streams-demo deploy/kafka/lib
