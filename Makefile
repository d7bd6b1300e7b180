# The two commands of the README: `make serve` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: serve test test-deps check lint typecheck bench install clean protocol

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e ".[dev,abstractcore]"
	@touch $(STAMP)

install: $(STAMP)

# Runs the main job: the daemon, on its default unix socket, with file stores under
# ./.abstractruntime/ and the workflows of examples/workflows/ (Ctrl-C stops it cleanly).
serve: $(STAMP)
	@$(VENV)/bin/abstractruntime serve --workflows examples/workflows

# Every tier: lint, types, generated files current, kernel unit tests and store conformance,
# then the subprocess tier (daemon on every transport, crash loops).
test: $(STAMP) test-deps
	@$(PY) -m ruff check src tests bench examples
	@$(PY) -m mypy
	@$(PY) -m abstractruntime.protocol.spec --check
	@$(PY) -m pytest tests/unit -q
	@$(PY) -m pytest tests/e2e -q --timeout 300

# What the editor and TypeScript tiers need beyond Python: Debian's neovim (as root, or with
# sudo), and the TypeScript client's npm packages.
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)
test-deps:
	@command -v nvim >/dev/null 2>&1 || { echo "installing Debian's neovim"; \
		($(APT) install -y -q neovim || ($(APT) update -q && $(APT) install -y -q neovim)) >/dev/null; }
	@test -d clients/typescript/node_modules || npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error

# Regenerate protocol/openrpc.json, protocol/golden.json and docs/protocol.md.
protocol: $(STAMP)
	@$(PY) -m abstractruntime.protocol.spec

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
