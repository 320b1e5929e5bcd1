# semcov: `make help` lists every target. The virtual environment is created on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
JOBS ?= 2
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test test-unit test-notebooks paper-figures readme-results grid lab bench clean clean-cache

help: ## List the targets
	@if test -t 1; then on=$$'\033[36m'; off=$$'\033[0m'; else on=; off=; fi; \
	grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*?## "}; {printf "  %s%-16s%s %s\n", on, $$1, off, $$2}'
	@echo "  variables: PROFILE=$(PROFILE) (smoke|default|paper), JOBS=$(JOBS) (parallel training processes)"

setup: $(STAMP) ## Create .venv with the pinned torch/torchvision, Jupyter tools and semcov_lib (editable)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[notebooks,test]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (semcov)" > /dev/null
	touch $(STAMP)

test: setup ## Unit tests, then every notebook under nbval (smoke defaults)
	TQDM_DISABLE=1 $(PY) -m pytest -q tests
	TQDM_DISABLE=1 $(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider notebooks/

test-unit: setup ## Unit tests only
	TQDM_DISABLE=1 $(PY) -m pytest -q tests

test-notebooks: setup ## Notebook tests only (nbval)
	TQDM_DISABLE=1 $(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider notebooks/

paper-figures: setup ## Train every run (progress per run), then execute notebooks 01-06 with papermill (PROFILE=default) into reports/
	$(PY) -m semcov_lib.pipeline --profile $(PROFILE) --jobs $(JOBS)

readme-results: setup ## Copy the last pipeline's results (tables/readme_results.md) into README.md
	$(PY) -m semcov_lib.pipeline --profile $(PROFILE) --readme-results

grid: setup ## Train every run the notebooks need (PROFILE, JOBS), without executing notebooks
	$(PY) -m semcov_lib grid --profile $(PROFILE) --jobs $(JOBS)

bench: setup ## Run the benchmarks in bench/ (prints medians and ratios)
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lab: setup ## Start JupyterLab on 127.0.0.1
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser --allow-root --notebook-dir notebooks

clean: ## Remove generated reports (figures, tables, executed notebooks, runs)
	rm -rf reports/executed reports/runs reports/audits reports/smoke reports/.stamps
	find reports/figures reports/tables -type f ! -name '.gitkeep' -delete 2>/dev/null || true

clean-cache: ## Remove generated benchmarks, image and feature caches (.cache)
	rm -rf .cache
