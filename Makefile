# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test install install-test lint typecheck unit bench doap

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

## Install and start the server: host localhost, embedded SQLite in ./data, self-signed TLS.
run: install
	$(BIN)/xmppd serve

## Install everything and run the whole suite: lint, types, unit, storage (SQLite and
## PostgreSQL), modules and integration tests with slixmpp clients over TCP+TLS.
test: install-test lint typecheck
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check xmppd storage components tests bench

typecheck:
	$(BIN)/mypy

doap:
	$(BIN)/python -m xmppd.doap > xmppd.doap

bench: install
	bash bench/run.sh
