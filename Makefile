# Quick start:  make lab   (set up .venv and open the course)
#               make test  (set up .venv and run every test)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pip arguments for torch, e.g. a CPU-only index (see README.md).
PIP_ARGS ?=

.PHONY: setup lab test notebooks grade release bench clean help
.DEFAULT_GOAL := help

help:
	@echo "make lab        set up .venv and open the course in JupyterLab"
	@echo "make test       set up .venv and run the whole test suite"
	@echo "make notebooks  regenerate notebooks/ from solutions/"
	@echo "make grade NB=path/to/submission.ipynb   grade one notebook"

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt $(PIP_ARGS) -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed

# Jupyter refuses to run as root without --allow-root (containers, cloud shells).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(ROOT_FLAG)

# Every core: one notebook or test module per worker at a time (conftest.py); slowest items last.
test: setup
	$(PY) -m pytest -n auto --durations=15

notebooks: setup
	$(PY) -m grader generate

grade: setup
	@test -n "$(NB)" || { echo "usage: make grade NB=path/to/submission.ipynb"; exit 2; }
	$(PY) -m grader grade "$(NB)" --json "$(basename $(NB)).report.json"

clean:
	rm -rf $(VENV) build *.egg-info
