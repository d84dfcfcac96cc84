# Two commands on a fresh machine: `make train` and `make test`. Both bootstrap .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/base.yaml

.PHONY: venv train test lint format index bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,plot,serve]'
	touch $(STAMP)

venv: $(STAMP)

## train: index the default corpus and train configs/base.yaml (resumes if stopped)
train: $(STAMP)
	$(PY) -m textgen.train $(CONFIG) $(ARGS)

## test: lint, then the whole test suite on 2 workers
test: $(STAMP)
	$(VENV)/bin/ruff check textgen tests scripts
	$(VENV)/bin/ruff format --check textgen tests scripts
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

index: $(STAMP)
	$(PY) -m textgen.index $(CONFIG) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check textgen tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format textgen tests scripts
	$(VENV)/bin/ruff check --fix textgen tests scripts

clean:
	rm -rf $(VENV) runs index .pytest_cache
