# Two commands for a fresh machine (Python 3.11 and Java 17 present):
#   make demo   the nightly refresh end to end on generated data, on the embedded local default
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATE   ?= 2026-11-26

.PHONY: demo test test-fast bench clean java

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools<70" wheel
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

java:
	@command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ] || { \
	  echo "error: Java was not found. Spark needs a Java 17 runtime: install one (e.g." \
	       "apt-get install openjdk-17-jre-headless) and put it on PATH or set JAVA_HOME." >&2; exit 1; }

demo: java $(VENV)/.installed
	$(PY) jobs/demo.py --date $(DATE)

test: java $(VENV)/.installed
	$(PY) -m pytest

test-fast: java $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf data .pytest_cache
