# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv on first use and reinstalls when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint docs bench clean bytecode

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
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy

# The docs site; --strict turns a broken link or anchor, or a docstring
# mkdocstrings cannot render, into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint docs bytecode
	$(BIN)/python -m pytest

# Every benchmark, then the report in docs/benchmarks.md and its plots in docs/img
# (the peers are installed by the command): ~30 min; bench-quick ~8 min.
# More options in BENCH_ARGS, e.g. make bench-quick BENCH_ARGS='--only rpc pool'.
.PHONY: bench-quick
bench: bytecode
	$(BIN)/python benchmarks/report.py $(BENCH_ARGS)

bench-quick: bytecode
	$(BIN)/python benchmarks/report.py --quick $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
