# Developer entry points; CI runs `make test` (see .ci/run).
# Everything runs from .venv, which the stamps below keep in step with pyproject.toml.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: re-install only when pyproject.toml or the
# constraints are newer. `make up` needs the runtime only; `make test` and `make bench`
# the dev extras too (linters, type checker, test tools, benchmark peers).
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: venv dev up test bench vendor

venv: $(RUNTIME_STAMP)

dev: $(DEV_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "need Python >= 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	@echo "make: creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# The install also builds the compiled order book (setup.py): a changed .pyx re-installs.
BOOK_SOURCES := setup.py services/tradeplane/domain/_cbook.pyx

# constraints.txt pins every dependency to the versions the suite was last run with.
# pip's own progress is shown: a first install downloads a few hundred MB.
$(RUNTIME_STAMP): pyproject.toml constraints.txt $(BOOK_SOURCES) | $(BIN)/python
	@echo "make: installing tradeplane and its runtime dependencies into $(VENV)"
	$(BIN)/python -m pip install -c constraints.txt -e .
	touch $@

# The dev extras include the runtime: one install serves both stamps.
$(DEV_STAMP): pyproject.toml constraints.txt $(BOOK_SOURCES) | $(BIN)/python
	@echo "make: installing tradeplane with its dev extras into $(VENV)"
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $@ $(RUNTIME_STAMP)

up: $(RUNTIME_STAMP)
	$(BIN)/tradeplane up

test: $(DEV_STAMP)
	$(BIN)/ruff check services operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: $(DEV_STAMP)
	$(BIN)/tradeplane bench

# Refresh the vendored Swagger UI behind /docs (needs npm): the files, their sha256 and the
# tarball's integrity go to services/tradeplane/gateway/static/vendor/LOCK.json.
# `make vendor SWAGGER_UI_VERSION=5.x.y` moves to another version.
vendor:
	$(PYTHON) tools/vendor_swagger_ui.py $(SWAGGER_UI_VERSION)
