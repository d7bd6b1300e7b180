# The two commands of the README: `make serve` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# What `make serve` needs: the package and its four dependencies (no AbstractCore: a model is
# opt-in, `pip install 'abstractruntime[abstractcore]'`).
STAMP      := $(VENV)/.installed
# What `make test` needs on top: the test tools and the AbstractCore extra its tier exercises.
TEST_STAMP := $(VENV)/.installed-test

.PHONY: serve test test-deps check lint typecheck bench install clean protocol

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q -e .
	@touch $@

$(TEST_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e ".[dev,abstractcore]"
	@touch $@

install: $(STAMP)

# Runs the main job: the daemon of this project (pyproject.toml's [tool.abstractruntime]: the
# workflows of examples/workflows/), on its default unix socket, with file stores under
# ./.abstractruntime/runs/ (Ctrl-C stops it cleanly).
serve: $(STAMP)
	@$(VENV)/bin/abstractruntime serve

# Every tier: lint, types, generated files current, kernel unit tests and store conformance,
# then the subprocess tier (daemon on every transport, crash loops, editors, TypeScript).
test: $(TEST_STAMP) test-deps
	@$(PY) -m ruff check src tests bench examples
	@$(PY) -m mypy
	@$(PY) -m abstractruntime.protocol.spec --check
	@$(PY) -m pytest tests/unit -q -n 2
	@$(PY) -m pytest tests/e2e -q --timeout 300

# Tools some tiers need beyond Python. In CI (CI=true) they are installed: Debian's neovim (as
# root, or with sudo) and the TypeScript client's npm packages. Elsewhere a tier whose tool is
# missing is skipped with one line naming what to install.
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)
test-deps:
ifeq ($(CI),true)
	@command -v nvim >/dev/null 2>&1 || { echo "installing Debian's neovim"; \
		($(APT) install -y -q neovim || ($(APT) update -q && $(APT) install -y -q neovim)) >/dev/null; }
endif
	@if command -v npm >/dev/null 2>&1; then \
		test clients/typescript/node_modules/.package-lock.json -nt clients/typescript/package-lock.json || \
			npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error; \
	fi

# Regenerate protocol/openrpc.json, protocol/golden.json and docs/protocol.md.
protocol: $(STAMP)
	@$(PY) -m abstractruntime.protocol.spec

check: lint typecheck
lint: $(TEST_STAMP)
	@$(PY) -m ruff check src tests bench examples
	@$(PY) -m ruff format --check src
typecheck: $(TEST_STAMP)
	@$(PY) -m mypy

# Benchmarks against the published package (installed --no-deps in .bench-venvs/).
bench: $(TEST_STAMP)
	@$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .bench-venvs bench/results .pytest_cache .mypy_cache .ruff_cache
