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

.PHONY: venv dev up test bench vendor wheelhouse image

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

# Refresh the vendored browser code (needs npm): Swagger UI behind /docs, lightweight-charts
# and uqr behind the trading UI at /. The files, their sha256 and each tarball's integrity go
# to services/tradeplane/gateway/static/vendor/LOCK.json.
# `make vendor VENDOR_PACKAGES="lightweight-charts@5.x.y"` moves a package to another version.
vendor:
	$(PYTHON) tools/vendor_npm.py $(VENDOR_PACKAGES)

# The image (Dockerfile) installs from a wheelhouse built here, so its build needs no
# network: `make image` (BASE, IMAGE to change the base and the tag). The venv's Python
# builds the wheels and must be CPython 3.11 on Linux, like the image's.
BASE ?= python:3.11-slim
IMAGE ?= tradeplane:dev
wheelhouse: $(RUNTIME_STAMP)
	$(BIN)/python tools/wheelhouse.py build/wheelhouse

image: wheelhouse
	docker build --network none --build-arg BASE=$(BASE) -t $(IMAGE) .
