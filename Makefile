# Quick start:  make demo   (set up, then simulate the default federation)
#               make test   (set up, then run the test suite)
VENV ?= .venv
SOURCES := pyproject.toml scripts/setup.sh $(shell find src -name '*.py' 2>/dev/null)
STAMP := $(VENV)/.fedpeft-installed

.PHONY: setup demo test bench

$(STAMP): $(SOURCES)
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/fedpeft simulate

test: setup
	bash scripts/setup-test.sh
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python bench/run_all.py
