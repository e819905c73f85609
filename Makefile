# Two commands on a fresh machine: `make demo`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/dist-ctr train jobs/demo.yaml

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not ray" $(PYTEST_ARGS)

bench: setup
	$(PY) scripts/bench_train.py

clean:
	rm -rf runs .pytest_cache
