# Two commands set everything up on a fresh Debian machine with Python 3.11:
#   make run    runs the platform (Redis, API, workers, Flower, demo model)
#   make test   runs lint and the whole test suite against real services
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: run test scale failover soak bench lint format venv system-deps test-deps lambda-package clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: installing python3-venv"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

venv: $(STAMP)

system-deps:
	@command -v redis-server >/dev/null || { \
	  echo "redis-server missing: installing it (apt-get install -y redis-server)"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y redis-server; }

# Debian's chromium drives the admin's browser tests (playwright uses it; it downloads nothing);
# prometheus (with promtool) scrapes the platform and evaluates the alert rules in the tests;
# postgresql's server (deploy/bin/postgres runs it) holds the registry in the PostgreSQL tests;
# h2load (nghttp2-client) is the benchmark's gRPC load generator, as wrk is its REST one.
test-deps: system-deps
	@command -v chromium >/dev/null && command -v wrk >/dev/null && command -v prometheus >/dev/null && \
	  command -v haproxy >/dev/null && command -v h2load >/dev/null && \
	  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  echo "chromium, wrk, h2load, prometheus, haproxy or postgresql missing: installing them (apt-get install -y chromium wrk nghttp2-client prometheus haproxy postgresql)"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium wrk nghttp2-client prometheus haproxy postgresql; }

run: venv system-deps
	$(BIN)/python -m inference_project.local_platform

# mypy: strict over apps/, workers/, inference_project/, inference_common/ (pyproject's [tool.mypy]);
# its incremental cache (.mypy_cache/) makes a second run take seconds.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The second pass runs the registry and lifecycle tests on a PostgreSQL the tests start (--postgres,
# tests/conftest.py); the first runs everything on SQLite.
test: venv test-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest --postgres tests/unit/apps/models_registry tests/integration/test_lifecycle.py

# Benchmark against raw predict and the peers; writes docs/benchmarks.md and docs/benchmarks.png.
# QUICK=1: under 3 minutes, checks the harness (make test runs it), writes bench/results/ only.
bench: venv test-deps
ifdef QUICK
	$(BIN)/python -m bench.run --quick
else
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	$(BIN)/python -m bench.run --docs
	@# What a 100 % shadow rollout costs live p50 (paired runs; its own section of docs/benchmarks.md).
	$(BIN)/python -m bench.shadow --rounds 6 --docs
	@# celery-batches needs celery < 5.7: the mechanism comparison runs in a virtualenv of its own.
	@test -x .venv-mechanisms/bin/python || $(PYTHON) -m venv .venv-mechanisms
	.venv-mechanisms/bin/python -m pip install --quiet -r requirements-dev.txt
	.venv-mechanisms/bin/python -m pip install --quiet celery-batches==0.11
	.venv-mechanisms/bin/python -m bench.batching_mechanisms
endif

# The multi-host harness (root): hosts as network namespaces, 1-8 worker hosts on the simulated
# accelerator, faults 1 and 5; writes docs/scaling.md and docs/scaling.png (quick mode: make test).
scale: venv test-deps
	$(BIN)/python -m bench.scale.run --docs

# The Redis primary SIGKILLed under load with Sentinel (tests/integration/test_sentinel.py); not in
# make test while clients are served again 8-9 s after the kill, close to its 10 s limit (#15).
failover: venv test-deps
	$(BIN)/python -m pytest -m failover tests/integration/test_sentinel.py -s $(PYTEST_ARGS)

# 20,000 mixed requests with random worker kills (SOAK_REQUESTS to change); about 6 minutes.
soak: venv test-deps
	$(BIN)/python -m pytest -m soak tests/integration/test_soak.py -s $(PYTEST_ARGS)

# The Lambda function: handler + python-jenkins, no Django (boto3 is in the Lambda runtime).
lambda-package: venv
	rm -rf build/lambda && mkdir -p build/lambda dist
	$(BIN)/python -m pip install --quiet --target build/lambda -r lambda_trigger/requirements.txt
	cp -r lambda_trigger build/lambda/
	rm -rf build/lambda/lambda_trigger/__pycache__ build/lambda/bin
	cd build/lambda && find . -name '__pycache__' -prune -exec rm -rf {} + && rm -f ../../dist/lambda_trigger.zip && \
	  $(CURDIR)/$(BIN)/python -m zipfile -c ../../dist/lambda_trigger.zip .
	@echo "dist/lambda_trigger.zip: handler lambda_trigger.handler.handler"

clean:
	rm -rf var staticfiles .cache .pytest_cache build dist .venv-mechanisms
