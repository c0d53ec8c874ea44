# The two commands: `make run` and `make test`. Both work with no services running.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
UPSTREAM_PORT ?= 8100
PYTEST_ARGS ?=
BENCH_ARGS ?=
export DEBUG ?= true

.PHONY: run test lint-imports install migrate demo clean bench bench-quick screenshots

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py load_demo --upstream http://127.0.0.1:$(UPSTREAM_PORT)

run: demo
	$(PY) manage.py serve --port $(PORT) --upstream-port $(UPSTREAM_PORT)

# The layers first (import-linter, contracts in pyproject.toml): an upward import fails CI.
lint-imports: install
	$(VENV)/bin/lint-imports --no-cache

test: lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

bench-quick: install
	$(PY) bench/run.py --quick $(BENCH_ARGS)

# PNGs of the console (login, providers, edit form, board, request log and a trace,
# tokens, routes, audit) into docs/screenshots/, from the demo in headless Chromium.
screenshots: install
	$(PY) bench/screenshots.py

clean:
	rm -rf $(VENV) db.sqlite3* var/ .pytest_cache
