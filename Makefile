# The two commands of the README: `make serve` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# What `make serve` needs: the package and its four dependencies (no AbstractCore: a model is
# opt-in, `pip install 'abstractruntime[abstractcore]'`).
STAMP      := $(VENV)/.installed
# What `make test` needs on top: the test tools, the AbstractCore extra its tier exercises, and
# Playwright for the browser tier (it drives the system's chromium; no browser download).
TEST_STAMP := $(VENV)/.installed-test

.PHONY: serve test test-deps test-pythons check lint typecheck bench install clean protocol web screenshots

# The other interpreters the project claims (pyproject's requires-python): `make test` runs the
# unit and e2e tiers on each one it finds (python3.X on PATH, or pyenv's 3.X.*), in its own
# .venv-3.X. Outside CI a missing one is skipped with a line; in CI it is an error.
PYTHONS ?= 3.10 3.11 3.12 3.13
# Tiers that do not depend on the Python version run on the main interpreter only: other
# clients (Node, Neovim), the fresh clone, the docs, and the loops that exercise the operating
# system rather than the interpreter (SIGKILL loops, a full disk, 128 descriptors, faults
# injected then crashed: the unit tier runs the same fault seams on every version), and the
# CLI's own subprocess-heavy tier (its code runs on every version through tests/e2e/test_cli.py
# and the unit tier), and the several-daemons tier on PostgreSQL (its stores and feed run on
# every version through the unit tier), and the browser tier (the page is JavaScript; the
# daemon's side of it, tests/e2e/test_web_http.py, runs on every version). They keep CI's
# whole run under its 15 minutes on 2 cores.
MAIN_ONLY := --ignore=tests/e2e/test_typescript.py --ignore=tests/e2e/test_neovim.py \
	--ignore=tests/e2e/test_fresh_clone.py --ignore=tests/e2e/test_docs.py \
	--ignore=tests/e2e/test_crash_recovery.py --ignore=tests/e2e/test_limits.py \
	--ignore=tests/e2e/test_fault_loop.py --ignore=tests/e2e/test_steering_cli.py \
	--ignore=tests/e2e/test_postgres.py --ignore=tests/e2e/test_web.py

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q -e .
	@touch $@

$(TEST_STAMP): $(STAMP)
	@$(PY) -m pip install -q -e ".[dev,abstractcore,postgres,browser]"
	@touch $@

install: $(STAMP)

# Runs the main job: the daemon of this project (pyproject.toml's [tool.abstractruntime]: the
# workflows of examples/workflows/), on its default unix socket, with file stores under
# ./.abstractruntime/runs/ (Ctrl-C stops it cleanly).
serve: $(STAMP)
	@$(VENV)/bin/abstractruntime serve

# Every tier: lint, types, generated files current, kernel unit tests and store conformance,
# code written for the published package (tests/compat), the daemon in process (tests/daemon),
# then the subprocess tier (daemon on every transport,
# crash loops, editors, TypeScript), then the other Pythons.
test: $(TEST_STAMP) test-deps
	@$(PY) -m ruff check src tests bench examples
	@$(PY) -m mypy
	@$(PY) -m abstractruntime.protocol.spec --check
	@$(PY) -m pytest tests/unit -q -n 2
	@$(PY) -m pytest tests/compat -q -n 2
	@$(PY) -m pytest tests/daemon -q
	@$(PY) -m pytest tests/e2e -q -n 2 --dist loadfile --timeout 300
	@$(MAKE) --no-print-directory test-pythons

test-pythons:
	@main=$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	for v in $(PYTHONS); do \
		[ "$$v" = "$$main" ] && continue; \
		py=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python 2>/dev/null | tail -n 1); \
		[ -n "$$py" ] || py=$$(command -v python$$v); \
		[ -n "$$py" ] && "$$py" -c 'import sys' >/dev/null 2>&1 || py=; \
		if [ -z "$$py" ]; then \
			if [ "$(CI)" = true ]; then echo "Python $$v is missing (CI tests every version we claim)"; exit 1; fi; \
			echo "Python $$v tier skipped: no python$$v found; install Python $$v (e.g. pyenv install $$v)"; continue; \
		fi; \
		venv=.venv-$$v; \
		test -x $$venv/bin/python || $$py -m venv $$venv || exit 1; \
		test $$venv/.installed -nt pyproject.toml || { $$venv/bin/python -m pip install -q -e ".[test,postgres]" && touch $$venv/.installed; } || exit 1; \
		echo "Python $$v: unit, compat, daemon and e2e tiers"; \
		$$venv/bin/python -m pytest tests/unit tests/compat tests/daemon tests/e2e -q -n 2 --dist loadfile --timeout 300 $(MAIN_ONLY) || exit 1; \
	done

# Tools some tiers need beyond Python. In CI (CI=true) they are installed: Debian's neovim, postgresql and
# chromium (as root, or with sudo) and the TypeScript client's npm packages. Elsewhere a tier whose tool is
# missing is skipped with one line naming what to install.
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)
test-deps:
ifeq ($(CI),true)
	@command -v nvim >/dev/null 2>&1 || { echo "installing Debian's neovim"; \
		($(APT) install -y -q neovim || ($(APT) update -q && $(APT) install -y -q neovim)) >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
		echo "installing Debian's postgresql (the tests start a throwaway server of their own)"; \
		($(APT) install -y -q postgresql || ($(APT) update -q && $(APT) install -y -q postgresql)) >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium (the browser tier drives it)"; \
		($(APT) install -y -q chromium || ($(APT) update -q && $(APT) install -y -q chromium)) >/dev/null; }
endif
	@if command -v npm >/dev/null 2>&1; then \
		test clients/typescript/node_modules/.package-lock.json -nt clients/typescript/package-lock.json || \
			npm ci --prefix clients/typescript --no-audit --no-fund --loglevel=error; \
	fi

# Regenerate protocol/openrpc.json, protocol/golden.json and docs/protocol.md.
protocol: $(STAMP)
	@$(PY) -m abstractruntime.protocol.spec

# Rebuild the web page into the package (src/abstractruntime/web/static/) from clients/typescript/web.
web:
	@npm run --prefix clients/typescript build:web

# Retake the screenshots docs/web.md shows, from the browser tier.
screenshots: $(TEST_STAMP)
	@WEB_SCREENSHOTS=docs/web $(PY) -m pytest tests/e2e/test_web.py -q

check: lint typecheck
lint: $(TEST_STAMP)
	@$(PY) -m ruff check src tests bench examples
	@$(PY) -m ruff format --check src
typecheck: $(TEST_STAMP)
	@$(PY) -m mypy

# Benchmarks against the published package (installed --no-deps in .bench-venvs/).
bench: $(TEST_STAMP)
	@$(PY) -m pip install -q -e '.[bench]'
	@$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .venv-3.* .bench-venvs bench/results .pytest_cache .mypy_cache .ruff_cache
