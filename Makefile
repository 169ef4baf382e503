# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both bootstrap a local .venv; it is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU wheel of torch on this machine's disk; a plain `torch` would pull a multi-GB CUDA build.
# Override on a CUDA machine: make test TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-interp bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fastmlp train --out runs/demo --force

# One pytest-xdist worker per core (at most 4), torch on one thread
# in each (tests/conftest.py); `.venv/bin/python -m pytest` alone runs them in this process.
# loadgroup: the tests that share an ahead-of-time compile (xdist_group) run on one worker.
test: $(STAMP)
	$(PY) -m pytest -q --numprocesses=auto --maxprocesses=4 --dist loadgroup

bench: $(STAMP)
	$(PY) bench/bench_train.py

clean:
	rm -rf $(VENV) build dist *.egg-info runs .pytest_cache
