# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint docs install clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tilewise demo

test: $(STAMP)
	$(PY) -m pytest -q tests

# ruff (lint + format check) and mypy (strict on tiling and models); .ci/run runs it after the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# the documentation site (docs/, mkdocs.yml) into site/; --strict fails on a broken link or API page
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/pipeline_efficiency.py
	$(PY) benchmarks/memory_vs_scene.py

clean:
	rm -rf $(VENV) tilewise-demo .pytest_cache .hypothesis .mypy_cache .ruff_cache build dist site
