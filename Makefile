# ml-connector: the two commands (`make run`, `make test`) do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-fast host sandboxes bench setup browser clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

node_modules/.bin/azurite: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch node_modules/.bin/azurite

setup: $(STAMP) node_modules/.bin/azurite

## Chromium from the Debian packages, for the console's browser test (Playwright drives it).
## Non-interactive (CI runs as root with no stdin); as another user it needs password-less sudo.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Chromium (Debian package) for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium </dev/null || \
	  { echo "Could not install Chromium: run 'apt-get install chromium' as root, then make test again" >&2; exit 1; }; }

## Run the connector end to end against the sandboxes (Azurite + Basware + BC sandboxes + app),
## then print the operator console's URL; `make run KEEP=1` keeps everything up until Ctrl+C.
run: setup
	$(PY) -m scripts.run_e2e $(if $(KEEP),--keep)

## Run the test suite (starts its own Azurite and sandboxes).
test: setup browser
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
