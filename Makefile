# Everything runs from local virtual environments made by the first target that needs them;
# only Python 3.11+ is required beforehand. Each set of extras has its own stamp file, so
# `make demo` installs the demo's three packages and nothing else, while `make test`, `make
# lint` and `make docs` install what development needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make test` also runs the in-process suite on these CPython versions, each in .venv-X.Y,
# where pyenv (or pythonX.Y on PATH) has them; it says which ran and which were not found.
MORE_PYTHONS ?= 3.12 3.13

.PHONY: demo test lint docs bench clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

# Development: the test, demo and docs extras.
$(VENV)/.installed: pyproject.toml | $(VENV)/.created
	$(BIN)/python -m pip install --quiet -e '.[test,demo,docs]'
	touch $@

# The demo alone: Starlette, uvicorn and httpx.
$(VENV)/.installed-demo: pyproject.toml | $(VENV)/.created
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

## demo: serve examples/demo.py on http://127.0.0.1:8000 (PORT=N for another port) with uvicorn
demo: $(VENV)/.installed-demo
	$(BIN)/python examples/demo.py

## test: the suite on this Python (in-process and real servers, asyncio and trio), then the
## in-process suite on each of MORE_PYTHONS found
test: $(VENV)/.installed
	tools/test-pythons.sh $(BIN)/python $(MORE_PYTHONS)

## lint: ruff, ruff format and mypy --strict
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## docs: build the documentation site into build/site (mkdocs --strict)
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## bench: every benchmark (in-process, instructions, served, memory), tables and docs/benchmarks.png.
## The served part loads the servers with wrk; without wrk on PATH, as root where apt-get
## exists, it installs Debian's wrk: this asks first on a terminal and says so otherwise.
## LOAD_TOOL=python uses the Python load generator and installs nothing.
LOAD_TOOL ?= auto
bench: $(VENV)/.installed
	@load_tool=$$(tools/bench-load-tool.sh $(LOAD_TOOL)) && \
	$(BIN)/python -m pip install --quiet -e '.[test,demo,docs,bench]' && \
	$(BIN)/python -m benchmarks --load-tool "$$load_tool"

clean:
	rm -rf $(VENV) .venv-* .mypy_cache .ruff_cache .pytest_cache
