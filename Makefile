# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test install install-test web lint typecheck unit bench doap

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

## Install and start the server: host localhost, embedded SQLite in ./data, self-signed TLS; the
## web chat at http://127.0.0.1:5280/chat.
run: install web
	$(BIN)/xmppd serve

## The web chat's files: Converse.js from npm, pinned by web/package-lock.json. Without npm the
## server still runs, and /chat says how to install them.
web:
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix web --no-audit --no-fund --ignore-scripts --loglevel=error; \
	else \
		echo "npm not found: the web chat (/chat) needs Converse.js: install Node.js and npm, then make web"; \
	fi

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

## The side-by-side benchmark (bench/README.md), with this project's environment.
bench: install
	PYTHON=$(abspath $(BIN)/python) bash bench/run.sh
