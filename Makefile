# The two commands a new user needs (see README):
#   make demo   run the end-to-end demo on the local emulator and Azurite
#   make test   install everything, lint, type-check and run every test
# Both set themselves up: a virtualenv with the pinned Python packages, and Azurite from npm's lock file.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The real Azure Functions Python worker, which the tests and the demo drive in-process (emulator/functions_worker.py).
# Both wheels declare Python 3.13 but run on 3.11, so they go in without pip's checks; their dependencies are pinned in
# requirements.txt (azure-functions) and requirements-dev.txt (protobuf, azurefunctions-extensions-base). The worker's
# generated FunctionRpc protobuf modules ship only in the v1 runtime's wheel, as a top-level `tests` package, so that
# wheel goes to a folder of its own, never site-packages (where it would shadow this project's `tests`).
WORKER := azure-functions-runtime==1.3.0
WORKER_PROTOS := azure-functions-runtime-v1==1.2.0
WORKER_DIR := $(VENV)/functions-worker

.PHONY: demo test lint types install lock bench fuzz chaos clean

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python $(WORKER)
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python --upgrade --target $(WORKER_DIR) $(WORKER_PROTOS)
	npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

types: $(STAMP)
	$(PY) -m mypy

test: lint types
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m bench

# The long robustness runs; `make test` runs a short profile of each. Both print their counters.
fuzz: $(STAMP)
	$(PY) -m pytest tests/fuzz -q -s -p no:cacheprovider -o timeout=0 --hypothesis-profile=fuzz

chaos: $(STAMP)
	CHAOS_SCHEDULES=$${CHAOS_SCHEDULES:-1000} $(PY) -m pytest tests/chaos -q -s -p no:cacheprovider -o timeout=0

# Recompile the pinned requirement files from pyproject.toml and requirements-dev.in (needs the package index).
lock:
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile --python-version 3.11 --quiet --extra functions pyproject.toml -o requirements.txt
	$(VENV)/bin/uv pip compile --python-version 3.11 --quiet requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
