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

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/sobranie-bench run --profile $(PROFILE) --fresh
	@# the same transports over an emulated 4G link (network namespaces: root, as in CI)
	if [ "$$(id -u)" = 0 ]; then $(BIN)/sobranie-bench run --profile $(PROFILE) --network 4g \
	  --scenarios echo,first-message,reconnect; \
	else echo "make bench: --network 4g needs root: its points are left out"; fi
	$(BIN)/sobranie-bench report
	$(BIN)/sobranie-bench report --only-notebooks

lint: setup
	$(BIN)/ruff check sobranie_bench servers tests
	$(BIN)/mypy sobranie_bench servers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
