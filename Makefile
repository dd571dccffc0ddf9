# The two commands of the README. Both run the idempotent bootstrap first, so a fresh Debian machine needs
# nothing else.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap demo test lint format

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	$(BIN)/mqinspect demo

test: bootstrap lint
	$(BIN)/python -m pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
