# The two commands: `make run` and `make test`. Both work with no services running.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
UPSTREAM_PORT ?= 8100
PYTEST_ARGS ?=
BENCH_ARGS ?=
export DEBUG ?= true

.PHONY: run run-two services-set test lint-imports install migrate demo clean bench bench-quick soak screenshots deploy-check audit fuzz

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# `partitions`: the usage table's coming day partitions on PostgreSQL (a no-op on SQLite).
migrate: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py partitions

# The demo's providers point at the fake upstream on 127.0.0.1: loopback base URLs must be allowed.
demo run run-two: export AXONFLOW_ALLOW_PRIVATE_BASE_URLS ?= true
# GET /metrics exists only with a token; the demo's (docs/observability.md).
run run-two: export AXONFLOW_METRICS_TOKEN ?= demo-metrics-token

demo: migrate
	$(PY) manage.py load_demo --upstream http://127.0.0.1:$(UPSTREAM_PORT)

run: demo
	$(PY) manage.py serve --port $(PORT) --upstream-port $(UPSTREAM_PORT)

# Two server processes (PORT and PORT+1) on one PostgreSQL and one Redis, behaving as one
# (README "Several instances"), plus the fake upstream and one health worker.
run-two: services-set demo
	$(PY) manage.py serve --instances 2 --port $(PORT) --upstream-port $(UPSTREAM_PORT)

services-set:
	@if [ -z "$$DATABASE_URL" ] || [ -z "$$REDIS_URL" ]; then \
	  echo "make run-two: set DATABASE_URL (postgres://...) and REDIS_URL (redis://...) first;" \
	    "two instances share one PostgreSQL database and one Redis (SQLite and the in-memory" \
	    "channel layer belong to one process)." >&2; \
	  exit 2; \
	fi

# `check --deploy` under the README's production environment (throwaway keys; DATABASE_URL and
# REDIS_URL as exported): any warning fails. On a real deployment run the check there.
deploy-check: install
	env DEBUG=false ALLOWED_HOSTS=axonflow.example.com AXONFLOW_TRUST_X_FORWARDED_PROTO=true \
	  SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" \
	  AXONFLOW_ENCRYPTION_KEYS="$$($(PY) -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
	  $(PY) manage.py check --deploy --fail-level WARNING

# No installed dependency with a known vulnerability (pip-audit; needs PyPI's vulnerability data).
audit: install
	$(PY) .ci/audit.py $(AUDIT_ARGS)

# The layers first (import-linter, contracts in pyproject.toml): an upward import fails CI.
lint-imports: install
	$(VENV)/bin/lint-imports --no-cache

test: lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

# schemathesis over /api/schema/ with the budget CI runs (tests/test_schemathesis.py; `make test`
# runs 200 cases); FUZZ_CASES=20000 or AXONFLOW_FUZZ_SEED=n for a longer or another run.
FUZZ_CASES ?= 2000
fuzz: install
	AXONFLOW_FUZZ_CASES=$(FUZZ_CASES) $(PY) -m pytest tests/test_schemathesis.py $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

bench-quick: install
	$(PY) bench/run.py --quick $(BENCH_ARGS)

soak: install  # 200 clients for 60 s, 10 % of upstream calls failing (docs/benchmarks.md)
	$(PY) -m bench.soak $(SOAK_ARGS)

# PNGs of the console (login, providers, edit form, board, request log and a trace,
# tokens, routes, audit) into docs/screenshots/, from the demo in headless Chromium.
screenshots: install
	$(PY) bench/screenshots.py

clean:
	rm -rf $(VENV) db.sqlite3* var/ .pytest_cache
