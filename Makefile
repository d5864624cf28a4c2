# Saga: `make run` starts the six services, `make test` runs every gate and the suite.
# Both set up everything first (virtualenv from the lock, npm tools, generated code check).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf

.PHONY: run test setup console console-test browser gen lint typecheck proto-check pytest baseline lock sbom audit clean

run: setup
	$(PY) -m services.supervisor

test: setup lint console-test pytest

setup: $(VENV)/.installed node_modules/.installed console browser

# The operator console (console/): type-checked, then built by Vite into console/dist, which
# the gateway serves at /console/ (hashed asset names, so rebuilt only when a source changed).
CONSOLE_SOURCES := $(wildcard console/src/*) console/index.html console/vite.config.mts \
	console/tsconfig.json
console: console/dist/index.html

console/dist/index.html: $(CONSOLE_SOURCES) node_modules/.installed
	node_modules/.bin/tsc -p console/tsconfig.json
	node_modules/.bin/vite build console --logLevel warn
	touch $@

# The console's component tests (Vitest, console/tests/*.test.ts, on the pure modules of
# console/src): type-checked, then run in Node, one worker (the machines are shared).
console-test: node_modules/.installed
	node_modules/.bin/tsc -p console/tests/tsconfig.json
	node_modules/.bin/vitest run --root console --maxWorkers 1

# Headless Chromium for the console's browser tests, driven by playwright-core: Debian's
# package, or the build CHROMIUM names (the forge's CI, on Ubuntu, whose apt `chromium` is a snap
# stub, passes the one the locked playwright-core installs). Nothing to do when it is there;
# otherwise apt installs Debian's (root, with the Debian registry reachable) or the build stops
# here saying why. Exported: tests/e2e/test_console.py launches the same one.
DEBIAN_CHROMIUM := /usr/bin/chromium
CHROMIUM ?= $(DEBIAN_CHROMIUM)
export CHROMIUM
browser:
	@test -x "$(CHROMIUM)" || test "$(CHROMIUM)" != $(DEBIAN_CHROMIUM) || { \
		echo "installing chromium for the console's browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; } || \
		{ echo "ERROR: $(CHROMIUM) is missing and apt-get could not install it" \
			"(run as root with the Debian registry reachable: apt-get install chromium" \
			"chromium-driver)" >&2; exit 1; }; }
	@test -x "$(CHROMIUM)" || { echo "ERROR: CHROMIUM=$(CHROMIUM) is not an executable" >&2; exit 1; }

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Every file checked against the sha256 the lock recorded: a release replaced on the index
	# (or a poisoned mirror) fails the install instead of running.
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
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

# Resolve pyproject.toml into the two hashed locks. Versions already in requirements.lock are
# kept unless pyproject.toml pins another (delete a line to let it move); the runtime lock is
# resolved under the full one, so the image runs exactly the versions the suite tested.
LOCK_VENV := .venv-lock
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet \
	--custom-compile-command "make lock"

lock:
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/pip install --quiet --require-hashes -r tools/uv-requirements.txt; }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o requirements.lock
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -c requirements.lock \
		-o requirements-runtime.lock

# A CycloneDX SBOM (JSON) of what the image installs: every package of the runtime lock with
# its version, purl and the sha256 of each of its files.
SBOM ?= sbom.cdx.json
sbom: setup
	$(VENV)/bin/cyclonedx-py requirements requirements-runtime.lock \
		--pyproject pyproject.toml --output-reproducible --of JSON -o $(SBOM)

# Known vulnerabilities in every locked package (asks the advisory database: needs the network,
# so CI runs it, not `make test`). Resolution is the lock's own: nothing is installed.
audit: setup
	$(VENV)/bin/pip-audit --strict --disable-pip -r requirements.lock

pytest: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LOCK_VENV) node_modules console/dist .mypy_cache .ruff_cache .pytest_cache
