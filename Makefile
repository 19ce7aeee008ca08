# sealroom: `make test` sets up and passes the tests; `make demo` sets up and runs a two-party room.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck unit demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check sdk enclave coordinator tests bench
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy sdk enclave coordinator

unit: setup
	$(VENV)/bin/pytest -m "not slow"

test: lint typecheck unit

demo: setup
	$(VENV)/bin/sealroom demo

bench: setup
	$(PY) bench/run_all.py --slow

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
