# Developer entry points; CI runs `make test` (see .ci/run).
# Everything runs from .venv, which `venv` creates and keeps in step with pyproject.toml.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install: re-install only when pyproject.toml is newer.
STAMP := $(VENV)/.installed

.PHONY: venv up test bench vendor

venv: $(STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "need Python >= 3.11; set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# constraints.txt pins every dependency to the versions the suite was last run with.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

up: venv
	$(BIN)/tradeplane up

test: venv
	$(BIN)/ruff check services operator tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: venv
	$(BIN)/tradeplane bench

# Refresh the vendored Swagger UI behind /docs (needs npm): the files, their sha256 and the
# tarball's integrity go to services/tradeplane/gateway/static/vendor/LOCK.json.
# `make vendor SWAGGER_UI_VERSION=5.x.y` moves to another version.
vendor:
	$(PYTHON) tools/vendor_swagger_ui.py $(SWAGGER_UI_VERSION)
