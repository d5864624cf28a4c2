# Saga: `make run` starts the six services, `make test` runs every gate and the suite.
# Both set up everything first (virtualenv from the lock, npm tools, generated code check).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf

.PHONY: run test setup gen lint typecheck proto-check pytest baseline clean

run: setup
	$(PY) -m services.supervisor

test: setup lint pytest

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	# Import roots: the repository (services/, tests/) and the generated code.
	$(PY) -c 'import os, sysconfig; open(os.path.join(sysconfig.get_paths()["purelib"], "saga-roots.pth"), "w").write(os.getcwd() + "\n" + os.path.join(os.getcwd(), "gen", "python") + "\n")'
	# The `saga` CLI, on the virtualenv's PATH.
	printf '#!/bin/sh\nexec "%s" -m clients.cli "$$@"\n' "$(CURDIR)/$(PY)" > $(VENV)/bin/saga
	chmod +x $(VENV)/bin/saga
	touch $@

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

gen: setup
	$(PY) -m tools.gen_protos --out gen/python

lint: setup proto-check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services tools clients

proto-check: setup
	$(BUF) lint
	$(BUF) breaking --against protos/baseline.binpb

# Refresh the breaking-change baseline: only when a contract change has been accepted.
baseline: setup
	$(BUF) build -o protos/baseline.binpb

pytest: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
