# Two commands: `make run` installs what is missing and starts everything in the foreground;
# `make test` installs what the tests need and runs lint, types and the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run install install-test test lint start stop clean

run: install
	$(PY) -m services.launcher

install:
	bash scripts/install.sh

install-test:
	bash scripts/install.sh --test

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services gateway

test: lint
	$(PY) -m pytest

start:
	bash scripts/start_all.sh

stop:
	bash scripts/stop_all.sh

clean:
	rm -rf $(VENV) frontend/node_modules
