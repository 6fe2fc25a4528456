# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo
ROWS   ?= 10000

.PHONY: install demo serve test test-fast bench bench-spark lint typecheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

$(STAMP): $(PY) pyproject.toml setup.py govern/mask/_hmac.c adapters/spark/pyproject.toml adapters/kubeflow/pyproject.toml adapters/dask/pyproject.toml
	@test -f /usr/include/openssl/sha.h || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq libssl-dev)
	@test -f /usr/share/java/postgresql.jar || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq libpostgresql-jdbc-java)
	@# Debian's Chromium drives the console's browser tests (Playwright never downloads one).
	@test -x /usr/bin/chromium || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq chromium)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[server,client,dev,dp,he,synthetic,monitor]' -e adapters/spark -e adapters/kubeflow -e adapters/dask
	$(PIP) install --quiet --no-deps delta-sharing==1.4.2  # pins pyarrow<=23: see pyproject.toml (dev)
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install govern with every extra the tests need, and the adapters

demo: install ## generate the demo world, check its policy, then serve it on http://127.0.0.1:8000
	$(VENV)/bin/govern demo --dir $(DEMO) --rows $(ROWS)
	$(VENV)/bin/govern policy check $(DEMO)/policies
	cd $(DEMO) && ../$(VENV)/bin/govern policy test
	@echo "API keys: $(DEMO)/keys.json"
	$(VENV)/bin/govern serve --config $(DEMO)/govern.yaml

serve: install ## serve an existing demo world
	$(VENV)/bin/govern serve --config $(DEMO)/govern.yaml

# --dist loadgroup: the Spark adapter's tests share one worker (one JVM); the rest spread as usual.
test: install ## run the whole test suite (slow tests and the adapters' tests included)
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=20  # the slowest: the suite must stay under 15 minutes

test-fast: install
	$(PY) -m pytest -n 2 --dist loadgroup -q -m "not slow"

bench: install ## masking benchmark (2M rows by default; ROWS=... to change)
	$(PY) benchmarks/masking.py --rows $(or $(BENCH_ROWS),2000000) --json benchmarks/results/masking.json

bench-spark: install ## Spark adapter benchmark (local[2]; Tier 2: plan expressions vs hand-written; Tier 1: format("govern") vs unmasked parquet)
	$(PY) benchmarks/spark.py --rows $(or $(BENCH_ROWS),2000000) --json benchmarks/results/spark.json

lint: install ## ruff and mypy over the whole package (CI runs it before the tests)
	$(VENV)/bin/ruff check govern tests benchmarks adapters
	$(VENV)/bin/mypy govern
	$(VENV)/bin/mypy adapters/spark/govern_spark
	$(VENV)/bin/mypy adapters/kubeflow/govern_kubeflow
	$(VENV)/bin/mypy adapters/dask/govern_dask

typecheck: install
	$(VENV)/bin/mypy govern

clean:
	rm -rf $(VENV) build *.egg-info $(DEMO) .pytest_cache
