# The README's commands. Each target installs what it needs first, so each works on a fresh clone.
#   make demo   - install, then materialise every asset on the embedded sample
#   make test   - install (incl. chromium / postgres from Debian), then run the test suite
#   make ui     - install, then open the Dagster UI on http://127.0.0.1:3000
# Every install is the locked set in requirements/lock.txt (see scripts/lock.sh to change it).
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# PyTorch first: the CPU build by default (requirements/torch-cpu.txt). CUDA: make setup TORCH_SPEC="torch==2.11.0"
TORCH_SPEC ?= -r requirements/torch-cpu.txt
# The instance (run history, schedules, dagster.yaml) lives in the repo root unless you say otherwise.
export DAGSTER_HOME ?= $(CURDIR)

.PHONY: setup lock lock-check check system-deps demo test ui clean-data

setup: $(VENV)/.installed

# The locked set (requirements/lock.txt, hashes checked) without resolving anything, then torch (whose
# dependencies the lock already holds), then this project without its dependencies; then prove the result is the lock.
$(VENV)/.installed: pyproject.toml requirements/lock.txt requirements/torch-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements/lock.txt
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) scripts/check_environment.py
	touch $@

# Re-compile the lock after editing pyproject.toml; `make lock ARGS=--upgrade` moves every pin (then: make test).
lock: setup
	scripts/lock.sh $(ARGS)

lock-check: setup
	scripts/lock.sh --check

# The code location loads (dg check defs) and the code has no undefined names or unused imports (ruff, pyflakes rules).
check: setup
	. $(VENV)/bin/activate && dg check defs
	$(VENV)/bin/ruff check ww_assets ww_assets_tests benchmarks scripts

system-deps:
	bash scripts/install_system_deps.sh

demo: setup
	$(PY) -m ww_assets.demo

test: setup system-deps
	$(PY) -m pytest

ui: setup
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

clean-data:
	rm -rf data/sample data/images data/scores data/models data/analysis data/plots data/warehouse.duckdb*
