# Quick start:  make demo   (set up, then simulate the default federation)
#               make test   (set up, then lint (ruff), type-check (mypy) and run the tests)
#               make faults (the deployment fault-injection tests, minutes: not in make test)
#               make bench  (every script in bench/; BENCH_ARGS=--quick for a smoke run)
VENV ?= .venv
SOURCES := pyproject.toml scripts/setup.sh $(shell find src -name '*.py' 2>/dev/null)
STAMP := $(VENV)/.fedpeft-installed

.PHONY: setup demo test faults bench mutation

$(STAMP): $(SOURCES)
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/fedpeft simulate

test: setup
	bash scripts/setup-test.sh
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The deployment fault-injection tests (institution faults, about 6 minutes on 2 cores; a
# coordinator killed twice and resumed, about 7): kept out of `make test` so the suite
# stays under 15 minutes; see docs/resilience.md.
faults: setup
	$(VENV)/bin/pytest -m faults tests/e2e/test_deployment_faults.py \
		tests/e2e/test_deployment_coordinator_crash.py $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python bench/run_all.py $(BENCH_ARGS)

# Mutation testing of the security core (slow: not part of `make test`); see docs/benchmarks.md.
mutation: setup
	bash scripts/mutation.sh $(VENV)
