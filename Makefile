# idnode — make targets. `make run` and `make test` work on a fresh machine: they create or refresh
# the virtualenv in .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean

INSTALL_LOG := $(VENV)/install.log

# Quiet: pip's output goes to $(INSTALL_LOG), shown (its last 60 lines) only when the install fails.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "idnode: installing into $(VENV) (details in $(INSTALL_LOG)) ..."
	@{ $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e '.[dev,fast]'; } \
	  > $(INSTALL_LOG) 2>&1 || { tail -n 60 $(INSTALL_LOG); echo "idnode: install failed; full log: $(INSTALL_LOG)"; exit 1; }
	@touch $(STAMP)

run: $(STAMP)  ## serve on the embedded defaults (SQLite in ./data, http://127.0.0.1:8000); Ctrl-C stops it
	@$(BIN)/idnode serve

test: $(STAMP)  ## the whole suite against real PostgreSQL and Redis (see tests/conftest.py)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# Locust load test (benchmarks/README.md): one load profile (PROFILE=mixed, scan-campaign, traceability-app,
# enterprise-import, bureau, native) against a node on the embedded defaults in a temporary directory, or on
# PostgreSQL/Redis with BENCH_STORE=postgresql://… BENCH_REDIS=redis://…; report and summary in
# benchmarks/results/<profile>/. Fails when the profile's criterion does. BENCH_DURATION (s), BENCH_USERS
# and BENCH_SPAWN_RATE override the profile's documented load; BENCH_WORKERS the node's worker processes.
PROFILE ?= mixed
BENCH_WORKERS ?= 1
bench: $(STAMP)  ## load test of one profile, about two minutes: make bench [PROFILE=scan-campaign] [BENCH_STORE=…]
	$(BIN)/python -m benchmarks.run_locust --profile $(PROFILE) --workers $(BENCH_WORKERS) \
	  $(if $(BENCH_DURATION),--duration $(BENCH_DURATION)) $(if $(BENCH_USERS),--users $(BENCH_USERS)) \
	  $(if $(BENCH_SPAWN_RATE),--spawn-rate $(BENCH_SPAWN_RATE)) \
	  $(if $(BENCH_STORE),--store '$(BENCH_STORE)') $(if $(BENCH_REDIS),--redis '$(BENCH_REDIS)')

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
