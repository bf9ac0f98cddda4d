# Two commands for a fresh machine (Python 3.11 and Java 17 present):
#   make demo   the nightly refresh end to end on generated data, on the embedded local default
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
AIRFLOW ?= .airflow
DATE   ?= 2026-11-26

.PHONY: demo test test-fast lint package clean java airflow notebook docs class-archive

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools<70" wheel
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# Airflow 3 and its Spark provider in their own environment: the DAG test loads deploy/airflow_dag.py
# with them (Airflow's dependencies would not fit beside the pinned Spark stack)
$(AIRFLOW)/.installed:
	$(PYTHON) -m venv $(AIRFLOW)
	$(AIRFLOW)/bin/python -m pip install --quiet --upgrade pip
	$(AIRFLOW)/bin/python -m pip install --quiet "apache-airflow==3.3.2" "apache-airflow-providers-apache-spark==6.3.4"
	touch $@

airflow: $(AIRFLOW)/.installed

java:
	@command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ] || { \
	  echo "error: Java was not found. Spark needs a Java 17 runtime: install one (e.g." \
	       "apt-get install openjdk-17-jre-headless) and put it on PATH or set JAVA_HOME." >&2; exit 1; }

# the classes Spark loads, dumped once for every later local JVM to map (2.5 s off each start;
# interest/java.py); quick when it is there already, and never required
class-archive: java $(VENV)/.installed
	@$(PY) -m interest.java || echo "warning: no class archive; local jobs start as they would without one" >&2

demo: java $(VENV)/.installed class-archive
	$(PY) jobs/demo.py --date $(DATE)

test: java $(VENV)/.installed $(AIRFLOW)/.installed class-archive
	$(PY) -m pytest

# the walkthrough executed, with its outputs and pictures, written back for readers of the repository
notebook: java $(VENV)/.installed class-archive
	$(PY) notebooks/execute.py

# the configuration reference, generated from the comments beside the fields of interest/config/sections.py
docs: $(VENV)/.installed
	$(PY) -m interest.config > docs/configuration.md

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check interest jobs benchmarks tests deploy
	$(VENV)/bin/ruff format --check interest jobs benchmarks tests deploy
	$(VENV)/bin/mypy

test-fast: java $(VENV)/.installed $(AIRFLOW)/.installed class-archive
	$(PY) -m pytest -m "not slow"

package: dist/interest.zip

dist/interest.zip: $(shell find interest -name '*.py')
	@mkdir -p dist && $(PYTHON) -c "import pathlib, zipfile; z = zipfile.ZipFile('$@', 'w'); \
	  [z.write(p) for p in sorted(pathlib.Path('interest').rglob('*.py'))]; z.close()" && \
	  echo "built $@ (ship it with --py-files)"

clean:
	rm -rf data dist .pytest_cache
