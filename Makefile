# zmqstream: `make run` sets up and runs the pipeline; `make test` sets up and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export ZMQSTREAM_WORKERS ?= $(shell nproc)
export ZMQSTREAM_RUN_DIR ?= /tmp/zmqstream-$(shell id -u)

.PHONY: setup python proto frontend bundle package run test test-python test-frontend lint bench clean

setup: python proto frontend bundle  ## everything `run` and `test` need, from a fresh clone

python: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml examples/zmqstream-example-generator/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -e examples/zmqstream-example-generator
	touch $@

proto: python  ## gRPC stubs from services/plugin/protos
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m services.plugin.codegen

frontend:  ## frontend/dist/module.js
	cd frontend && npm ci --no-audit --no-fund && npm run build

bundle: proto  ## build/plugins/<id>: what Grafana loads
	$(PY) -m services.plugin.bundle

package: proto frontend  ## build/<id>-<version>.zip for `grafana cli --pluginUrl … plugins install`
	$(PY) -m services.plugin.package

run: setup  ## the broker and the workers under supervisord, logs on stdout
	mkdir -p $(ZMQSTREAM_RUN_DIR)
	$(VENV)/bin/supervisord -c supervisord.conf

lint: python proto
	$(VENV)/bin/ruff check services tests $(wildcard bench)
	$(VENV)/bin/ruff format --check services tests $(wildcard bench)
	$(VENV)/bin/mypy

test-python: python proto
	$(VENV)/bin/pytest

test-frontend: frontend
	cd frontend && npm run typecheck && npm test && npm run test:browser

test: setup lint test-python test-frontend  ## what CI runs

bench: setup
	$(PY) -m bench

clean:
	rm -rf build $(VENV) services/plugin/_proto frontend/node_modules frontend/dist
