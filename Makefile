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

# transformers 4.x beside the venv (its reader of OpenAI-format TF checkpoints is gone from 5.x, which
# the venv has): tests/test_tf_reader_transformers4.py runs it in a subprocess.
T4 := $(VENV)/transformers4
$(T4)/.installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps --target $(T4) transformers==4.57.1 huggingface_hub==0.36.0 tokenizers==0.22.1
	touch $@

# Two worker processes, each taking whole test files, so that neither process
# compiles every test's XLA programs (their code is never unmapped; one process running the whole
# suite comes near Linux's vm.max_map_count). PARALLEL= runs it in one process.
PARALLEL ?= -n 2 --dist loadfile

test: $(VENV)/.installed $(T4)/.installed
	$(PY) -m ruff check .
	GPT2EASY_TRANSFORMERS4=$(abspath $(T4)) $(PY) -m pytest -q $(PARALLEL)

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" $(PARALLEL)

lint: $(VENV)/.installed
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
