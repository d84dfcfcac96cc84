# Two commands on a fresh machine: `make train` and `make test`. Both bootstrap .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/base.yaml

.PHONY: venv train pretrained finetune test lint format index bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,plot,serve]'
	touch $(STAMP)

venv: $(STAMP)

## train: index the default corpus and train configs/base.yaml (resumes if stopped)
train: $(STAMP)
	$(PY) -m textgen.train $(CONFIG) $(ARGS)

## pretrained: the run that fine-tuning starts from: configs/base.yaml into runs/base, which is
## what `make train` trains (KJV, public domain; 10 minutes on 2 cores; resumes if stopped)
pretrained: $(STAMP)
	$(PY) -m textgen.train configs/base.yaml $(ARGS)

## finetune: your own small text, from runs/base: `make finetune DATA=my.txt` -> runs/mine
finetune: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make finetune DATA=your.txt [ARGS='key=value ...']"; exit 2; }
	$(PY) -m textgen.train configs/finetune.yaml data.path=$(DATA) $(ARGS)

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
