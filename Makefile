# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-test demo test lint proto bench compose-demo compose-down

# and the bytecode, ahead of time: every component is a process of its own, and each would
# compile the sources again where PYTHONDONTWRITEBYTECODE is set
install:
	$(PIP) install -q -e .
	$(PYTHON) -m compileall -q taskmaster >/dev/null

install-test:
	$(PIP) install -q -e '.[test]'
	$(PYTHON) -m compileall -q taskmaster >/dev/null
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || \
	    echo "chromium could not be installed: the browser test will say so"; \
	  fi; }

# The stack (embedded PostgreSQL unless TASKMASTER_DATABASE_URL is set) plus JupyterLab.
demo: install
	taskmaster demo

# Lint, types, the walls between the rooms, then unit, integration, end-to-end, chaos and
# notebook tests.
test: install-test lint
	$(PYTHON) -m pytest

# lint-imports checks the contracts of pyproject.toml ([tool.importlinter])
LINT_IMPORTS = $(PYTHON) -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'

lint:
	$(PYTHON) -m ruff check taskmaster tests benchmarks
	$(PYTHON) -m mypy
	$(LINT_IMPORTS) --no-cache

proto:
	$(PYTHON) -m taskmaster.rpc.build

bench: install
	$(PYTHON) -m benchmarks

# The demo guide's compose stack: installs and starts a Docker engine where none runs (as
# root on Debian), builds the images (from Debian's archive where no registry is reachable),
# runs `up --scale worker=3 -d` and waits until the API at http://localhost:8081 is ready.
compose-demo:
	deploy/compose-demo.sh

# Removes it: containers, network, volume, the TaskMaster image; stops a dockerd it started.
compose-down:
	deploy/compose-down.sh
