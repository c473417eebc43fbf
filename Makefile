# Two commands: `make bench` (set up, run the benchmark matrix on the ci profile, write the
# report) and `make test` (set up, run the tests). Everything is installed from pyproject.toml
# into .venv; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= ci

.PHONY: bench test setup lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,notebooks,dev]'
	touch $(STAMP)

setup: $(STAMP)
	setup/setup.sh

# the test run is recorded (JUnit XML): claims.md confirms a claim resting on tests only if
# they passed in the newest recorded run (results/tests/*.xml)
test: setup
	$(BIN)/python -m pytest -q --junitxml=results/tests/junit.xml

bench: setup
	$(BIN)/sobranie-bench run --profile $(PROFILE) --fresh
	$(BIN)/sobranie-bench report --docs docs
	$(BIN)/sobranie-bench report --only-notebooks

lint: setup
	$(BIN)/ruff check sobranie_bench servers tests
	$(BIN)/mypy sobranie_bench servers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
