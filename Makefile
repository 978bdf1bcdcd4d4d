# Everything runs from a local virtual environment (.venv) made by the first target that
# needs it; only Python 3.11+ is required beforehand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo,docs]'
	touch $@

## demo: serve examples/demo.py on http://127.0.0.1:8000 with uvicorn
demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

## test: run the test suite (in-process and real servers, asyncio and trio)
test: $(VENV)/.installed
	$(BIN)/python -m pytest

## lint: ruff, ruff format and mypy --strict
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## docs: build the documentation site into build/site (mkdocs --strict)
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## bench: every benchmark (in-process, instructions, served, memory), tables and docs/benchmarks.png
bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,demo,docs,bench]'
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
