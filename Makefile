# Clawdbot: `make run` starts everything on this machine, `make test` checks everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_REDIS_SOCKET := var/redis-test.sock

.PHONY: run test test-fast scale-test lint typecheck bench clean real-servers

# The console's chart library, from the npm registry against the committed lock (npm ci
# writes node_modules/.package-lock.json; a deleted node_modules is installed again).
NPM_STAMP := node_modules/.package-lock.json

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Clawdbot needs Python 3.11 or newer (found: $$($(PYTHON) --version 2>&1)); set PYTHON=python3.12 for example"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || { echo "The console's chart library comes from npm: install Node.js 18 or newer (e.g. apt-get install npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NPM_STAMP)

run: $(STAMP) $(NPM_STAMP)
	$(BIN)/python -m clawdbot_site.devrun

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# The real inference servers tests/realservers drives (llama-cpp-python's server, vLLM on the
# CPU), each in its own virtualenv under var/servers/ with a tiny model built there. Does
# nothing once installed; pip's caches make a fresh clone's install a few minutes.
real-servers:
	$(PYTHON) tests/realservers/install.py

test: lint typecheck $(STAMP) $(NPM_STAMP) real-servers
	$(BIN)/python manage.py makemigrations --check --dry-run
ifdef REDIS_URL
	$(BIN)/pytest
else
	@mkdir -p var
	$(BIN)/python -m clawdbot_site.embedded_redis $(TEST_REDIS_SOCKET) -- $(BIN)/pytest
endif

# The pure tests alone (no database, Redis or processes): seconds, for the edit-test loop.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

# Scale-out: two gateway processes on one Redis and database (rate limits, node slots and
# queues, /metrics, config propagation, a process killed mid-load) and `clawdbot serve
# --workers N` itself. Part of `make test` too.
SCALE_TESTS := tests/test_scale_out.py tests/test_supervisor.py
scale-test: $(STAMP)
ifdef REDIS_URL
	$(BIN)/pytest -v $(SCALE_TESTS)
else
	@mkdir -p var
	$(BIN)/python -m clawdbot_site.embedded_redis $(TEST_REDIS_SOCKET) -- $(BIN)/pytest -v $(SCALE_TESTS)
endif

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.routing
	$(BIN)/python -m bench.multiturn

clean:
	rm -rf $(VENV) var node_modules .pytest_cache .ruff_cache .mypy_cache
