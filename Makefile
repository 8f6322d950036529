# The two commands of README.md: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.yaml
# CPU build of torch that pip finds on station/CI disks; a bare "torch" may pull a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0

.PHONY: run test lint install clean

$(BIN)/tigerwatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/tigerwatch

run: install
	$(BIN)/tigerwatch run -c $(CONFIG)

lint: install
	$(BIN)/ruff check daemon tests scripts bench
	$(BIN)/ruff format --check daemon tests scripts bench
	$(BIN)/mypy daemon
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
