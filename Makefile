# The two commands a new user needs (see README):
#   make demo   run the end-to-end demo on the local emulator and Azurite
#   make test   install everything, lint, type-check and run every test
# Both set themselves up: a virtualenv with the pinned Python packages, and Azurite from npm's lock file.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint types install lock bench fuzz chaos clean

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
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

# Recompile the pinned requirement files from the .in files (needs network access to the package index).
lock:
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile --python-version 3.11 --quiet requirements.in -o requirements.txt
	$(VENV)/bin/uv pip compile --python-version 3.11 --quiet requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
