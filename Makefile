# The two commands of the README: `make serve` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: serve test check lint typecheck bench install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# Runs the main job. Until the daemon lands this is the example run over examples/workflows/
# with file stores under ./.abstractruntime/ (the daemon's default place).
serve: $(STAMP)
	@$(PY) examples/serve_example.py

# Every tier: lint, types, kernel unit tests and store conformance, then the subprocess tier.
test: $(STAMP)
	@$(PY) -m ruff check src tests bench examples
	@$(PY) -m mypy
	@$(PY) -m pytest tests/unit -q
	@$(PY) -m pytest tests/e2e -q

check: lint typecheck
lint: $(STAMP)
	@$(PY) -m ruff check src tests bench examples
	@$(PY) -m ruff format --check src
typecheck: $(STAMP)
	@$(PY) -m mypy

# Benchmarks against the published package (installed --no-deps in .bench-venvs/).
bench: $(STAMP)
	@$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .bench-venvs bench/results .pytest_cache .mypy_cache .ruff_cache
