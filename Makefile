# featscope: `make demo` runs the main job end to end; `make test` runs the test suite.
# Both create .venv and install the project into it when needed.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FEATSCOPE := $(VENV)/bin/featscope
STAMP := $(VENV)/.featscope-installed
DEMO_DIR ?= demo-data
PYTEST_ARGS ?=

.PHONY: install debian-deps test test-slow demo bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision together, so pip resolves a matching pair (never a stray preinstalled torch).
	$(PY) -m pip install -q torch torchvision
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: redis-server (two workers sharing one Redis queue), postgresql (the catalog
# tests start a throwaway cluster with its initdb/pg_ctl; the service itself is not needed), chromium and
# chromium-driver (the dashboard's end-to-end test drives the system browser; none is downloaded).
debian-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing redis-server (Debian) for the queue tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing postgresql (Debian) for the catalog tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium and chromium-driver (Debian) for the dashboard's browser test"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: install debian-deps
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# The main job: the study reproduced on generated data (pre-training, extraction, every analysis, maps,
# fine-tuning) as worker jobs, then the dashboard at http://127.0.0.1:8050/ until Ctrl-C. A second run is all
# cache hits. DEMO_SERVE=0 does the work and exits; DEMO_PROFILE=tiny|cpu|cuda; DEMO_PORT=8050.
demo: install
	FEATSCOPE_DATA_DIR=$(DEMO_DIR)/featscope bash scripts/demo.sh

bench: install
	$(PY) benchmarks/bench_extract.py

clean:
	rm -rf $(DEMO_DIR) featscope-data .pytest_cache
