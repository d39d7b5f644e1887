# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv on first use and reinstalls when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean bytecode

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Each child process imports corral: with its bytecode cached that is ~35 ms
# faster (an editable install under PYTHONDONTWRITEBYTECODE=1 never caches it).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q src

demo: bytecode
	$(BIN)/python -m corral demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint bytecode
	$(BIN)/python -m pytest

bench: bytecode
	$(BIN)/python benchmarks/interval_workers.py
	$(BIN)/python benchmarks/rpc.py
	$(BIN)/python benchmarks/crash.py
	$(BIN)/python benchmarks/control_loop.py
	$(BIN)/python benchmarks/process.py
	$(BIN)/python benchmarks/pool.py
	$(BIN)/python benchmarks/soak.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
