# ml-connector: the two commands (`make run`, `make test`) do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-fast host sandboxes bench setup clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch node_modules/.bin/azurite

setup: $(STAMP) node_modules/.bin/azurite

## Run the connector end to end against the sandboxes (Azurite + Basware + BC sandboxes + app).
run: setup
	$(PY) -m scripts.run_e2e

## Run the test suite (starts its own Azurite and sandboxes).
test: setup
	$(PY) -m pytest -q

## The fast tiers for the edit loop: unit (seconds), then unit + integration without the running app.
test-unit: setup
	$(PY) -m pytest -q tests/unit
test-fast: setup
	$(PY) -m pytest -q -m "not e2e"

## Run the app (local Functions host) against whatever endpoints local.settings.json / the environment name.
host: setup
	$(PY) -m devhost

## Start both sandboxes in the foreground (Basware on 7081, BC on 7082).
sandboxes: setup
	$(PY) -m scripts.sandboxes

## Benchmarks (print figures; see bench/RESULTS.md).
bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) node_modules .azurite .run
