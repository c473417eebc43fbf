# Two commands: `make bench` (set up, run the benchmark matrix on the ci profile, write the
# report, execute the notebooks) and `make test` (set up, run the tests). Everything is
# installed from pyproject.toml into .venv; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= ci
# a failed scenario or notebook is listed first and the report is still written (exit 0);
# `make bench STRICT=1` makes any failure exit non-zero
STRICT ?=
STRICT_FLAG := $(if $(STRICT),--strict)

.PHONY: bench test setup lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,notebooks,dev]'
	touch $(STAMP)

setup: $(STAMP)
	setup/setup.sh

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/sobranie-bench run --profile $(PROFILE) --fresh $(STRICT_FLAG)
	$(BIN)/sobranie-bench run --profile $(PROFILE) --cluster 3 --broker redis \
	    --transports ws,sse,longpoll --scenarios fanout,failover,backplane $(STRICT_FLAG) \
	    || [ -z "$(STRICT)" ]  # its failures are listed in the report; only --strict stops here
	$(BIN)/sobranie-bench report --notebooks $(STRICT_FLAG)

lint: setup
	$(BIN)/ruff check sobranie_bench servers tests
	$(BIN)/mypy sobranie_bench servers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
