# Two commands: `make bench` (set up, run the benchmark matrix on the ci profile, write the
# report) and `make test` (set up, run the tests); `make calibrate` measures and validates the
# capacity model. Everything is installed from pyproject.toml
# into .venv; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= ci

.PHONY: bench calibrate test setup lint clean

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
	$(BIN)/sobranie-bench report
	$(BIN)/sobranie-bench report --only-notebooks

# The capacity model's calibration (ws and sse: fit points, then held-out points it must
# predict) into results/calibrate, validated, then the report (its plans get error bars and the
# validation table). About 20 minutes; QUICK=1: 8 s trials, about 8. Run it on a quiet machine:
# a fit point whose server waited for a CPU more than 10% of its window is refused.
calibrate: setup
	$(BIN)/sobranie-bench capacity calibrate --out results/calibrate $(if $(QUICK),--quick,)
	$(BIN)/sobranie-bench report

lint: setup
	$(BIN)/ruff check sobranie_bench servers tests
	$(BIN)/mypy sobranie_bench servers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
