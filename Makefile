# Two commands: `make run` (set up, then serve) and `make test` (set up, then the whole suite).
# Both are idempotent: a second run only checks that everything is in place.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: setup run test models chromium bench

setup: $(STAMP) models

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

models: $(STAMP)
	$(PY) scripts/prepare_models.py

# Debian's Chromium for the browser tests; the tests skip loudly if it cannot be installed.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		(apt-get update -q && apt-get install -y -q chromium) >/dev/null 2>&1 \
		|| echo "WARNING: could not install chromium; browser tests will be skipped"; }

run: setup
	$(PY) server.py

test: setup chromium
	$(PY) -m pytest

bench: setup
	$(PY) bench/run_all.py
