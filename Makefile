# Two commands: `make run` (set up, then serve) and `make test` (set up, then the whole suite).
# Both are idempotent: a second run only checks that everything is in place.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: setup run test test-fast models chromium nginx cluster cluster-stop bench bench-peers

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

# Debian's nginx (and Prometheus's promtool, to check the scrape configuration) for the cluster.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
		(apt-get update -q && apt-get install -y -q --no-install-recommends nginx) >/dev/null 2>&1 \
		|| echo "WARNING: could not install nginx; the cluster tests will be skipped"; }
	@command -v promtool >/dev/null 2>&1 || { \
		(apt-get install -y -q --no-install-recommends prometheus) >/dev/null 2>&1 \
		|| echo "WARNING: could not install prometheus (promtool); its configuration check will be skipped"; }

# REPLICAS replicas (default 2) on PORT+1.. and nginx on PORT (default 8000); `make cluster-stop` ends them.
cluster: setup nginx
	$(PY) deploy/cluster.py start

cluster-stop:
	$(PY) deploy/cluster.py stop

test: setup chromium nginx
	$(PY) -m pytest

# Seconds, not minutes: the routes in-process on fake engines, and the unit tests (no model, no browser).
test-fast: setup
	$(PY) -m pytest tests/routes tests/unit

# The peers the benchmarks compare against (llama-cpp-python's server, infinity), each in its own
# venv under bench/.peers; one that fails to install is skipped with a warning, never an error.
bench-peers: $(STAMP)
	$(PY) bench/peers.py install

# The README's table: also a server with N_THREADS=1. `make bench BENCH_ARGS=--quick` for a smoke run.
BENCH_ARGS ?= --server-threads 2,1

bench: setup bench-peers
	$(PY) bench/run_all.py $(BENCH_ARGS)
