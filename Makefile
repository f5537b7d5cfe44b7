# The README's commands. Each target installs what it needs first, so each works on a fresh clone.
#   make demo   - install, then materialise every asset on the embedded sample
#   make test   - install (incl. chromium / postgres from Debian), then run the test suite
#   make ui     - install, then open the Dagster UI on http://127.0.0.1:3000
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
# CPU build of PyTorch by default. On a CUDA machine: make TORCH_SPEC="torch" (or install your build first).
TORCH_SPEC ?= torch==2.13.0
# The instance (run history, schedules, dagster.yaml) lives in the repo root unless you say otherwise.
export DAGSTER_HOME ?= $(CURDIR)

.PHONY: setup system-deps demo test ui clean-data

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

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
