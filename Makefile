# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv from requirements files on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint bench clean-venv

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Shakespeare demo (see demo/run_demo.py; knobs: DEMO_STEPS, DEMO_PATH, DEMO_DATA, DEMO_VOCAB, ...).
demo: $(VENV)/.installed
	$(PY) demo/run_demo.py

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
