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

# Locust load test (benchmarks/README.md): a node on the embedded defaults in a temporary directory,
# or on PostgreSQL/Redis with BENCH_STORE=postgresql://… BENCH_REDIS=redis://…; report and summary
# in benchmarks/results/. BENCH_DURATION (s), BENCH_USERS and BENCH_WORKERS change the load.
BENCH_DURATION ?= 60
BENCH_USERS ?= 100
BENCH_WORKERS ?= 1
bench: $(STAMP)  ## load test, under two minutes: make bench [BENCH_STORE=… BENCH_REDIS=…]
	$(BIN)/python -m benchmarks.run_locust --duration $(BENCH_DURATION) --users $(BENCH_USERS) \
	  --workers $(BENCH_WORKERS) $(if $(BENCH_STORE),--store '$(BENCH_STORE)') $(if $(BENCH_REDIS),--redis '$(BENCH_REDIS)')

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
