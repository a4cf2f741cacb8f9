# zmqstream: `make run` sets up and runs the pipeline; `make test` sets up and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export ZMQSTREAM_WORKERS ?= $(shell nproc)
export ZMQSTREAM_RUN_DIR ?= /tmp/zmqstream-$(shell id -u)

.PHONY: setup python proto frontend bundle package run ctl stop install test test-tools test-python test-frontend lint bench bench-quick clean

setup: python proto frontend bundle  ## everything `run` and `test` need, from a fresh clone

python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml examples/zmqstream-example-generator/pyproject.toml examples/zmqstream-example-source/pyproject.toml bench/generators/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -e examples/zmqstream-example-generator
	$(PY) -m pip install --quiet -e examples/zmqstream-example-source
	$(PY) -m pip install --quiet -e bench/generators  # `burn`, the scaling benchmark's CPU-bound generator
	touch $@

proto: python  ## gRPC stubs from services/packaging/protos
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m services.packaging.codegen

frontend: frontend/dist/module.js  ## built again only when its sources or packages changed
FRONTEND_SOURCES := $(shell find frontend/src frontend/scripts -type f 2>/dev/null) $(wildcard frontend/*.json frontend/*.mjs) deploy/plugin/plugin.json
frontend/node_modules/.package-lock.json: frontend/package-lock.json  ## npm ci only when the lock file changed
	cd frontend && npm ci --no-audit --no-fund
frontend/dist/module.js: frontend/node_modules/.package-lock.json $(FRONTEND_SOURCES)
	cd frontend && npm run build

GRAFANA13 := frontend/compat/grafana13
$(GRAFANA13)/node_modules/.package-lock.json: $(GRAFANA13)/package-lock.json  ## the Grafana 13 (React 19) set the tests also run against
	cd $(GRAFANA13) && npm ci --no-audit --no-fund

bundle: proto  ## build/plugins/<id>: what Grafana loads
	$(PY) -m services.packaging.bundle

package: proto frontend  ## build/<id>-<version>.zip for `grafana cli --pluginUrl … plugins install`
	$(PY) -m services.packaging.package

SUPERVISORCTL := $(VENV)/bin/supervisorctl -c supervisord.conf

run: setup  ## the broker and the workers under supervisord, logs on stdout, then a "ready" summary
	$(PY) -m services.common.rundir  # create it private, or refuse one another user planted
	$(PY) -m services.install.ready & $(VENV)/bin/supervisord -c supervisord.conf --user $$(id -u)

ctl:  ## supervisorctl on the pipeline `make run` started (same ZMQSTREAM_RUN_DIR): make ctl ARGS='restart recorder'
	$(SUPERVISORCTL) $(or $(ARGS),status)

stop:  ## stop the pipeline `make run` started
	$(SUPERVISORCTL) shutdown

install:  ## the system install for a Grafana installed as a service (as root; see deploy/install.sh)
	bash deploy/install.sh

lint: python proto
	$(VENV)/bin/ruff check services tests $(wildcard bench)
	$(VENV)/bin/ruff format --check services tests $(wildcard bench)
	$(VENV)/bin/mypy

test-python: python proto
	$(VENV)/bin/pytest

CHROMIUM_PATH ?= /usr/bin/chromium
test-tools:  ## what `make test` needs beyond `make setup`, named at once (.ci/run installs them)
	@missing=(); command -v npm >/dev/null || missing+=("npm (apt-get install nodejs npm)"); \
	[ -x "$(CHROMIUM_PATH)" ] || missing+=("chromium at $(CHROMIUM_PATH), for the frontend's screenshot test (apt-get install chromium, or set CHROMIUM_PATH)"); \
	if (($${#missing[@]})); then printf 'make test: missing %s\n' "$${missing[@]}" >&2; echo 'make test: .ci/run installs them (as root)' >&2; exit 1; fi

test-frontend: frontend $(GRAFANA13)/node_modules/.package-lock.json
	cd frontend && npm run typecheck && npm test && npm run test:grafana13 && npm run test:browser

test: test-tools setup lint bench-quick test-frontend test-python  ## what CI runs (pytest last: its summary closes the log)

bench: python proto  ## every benchmark, full size: the table in BENCHMARKS.md
	$(PY) -m bench

bench-quick: python proto  ## the same benchmarks, short and small (CI runs this; no target is enforced)
	$(PY) -m bench --quick

clean:
	rm -rf build $(VENV) services/plugin/_proto frontend/node_modules frontend/dist $(GRAFANA13)/node_modules
