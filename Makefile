# Two commands: `make bench` (set up, run the benchmark matrix on the ci profile, write the
# report, execute the notebooks) and `make test` (set up, run the tests); `make calibrate`
# measures and validates the capacity model. Everything is installed from pyproject.toml into
# .venv; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# what is installed from pyproject.toml: `make bench` the suite and what executes its notebooks;
# the other targets every extra (the tests drive the load generators, lint uses dev's tools,
# lab is JupyterLab to open the notebooks)
EXTRAS_bench := notebooks
EXTRAS_all   := test,notebooks,lab,dev,loadgen
PROFILE ?= ci
comma := ,
# the passes beyond the main matrix (browsers, TLS compare, cluster, 4g) run at this profile:
# `make bench PROFILE=standard` (the committed evidence, ~30 min main matrix) keeps them at ci
# size so the whole stays within budget; results/README.md lists each part's profile
EXTRAS_PROFILE ?= ci
# scenarios a main profile has no points for, run at EXTRAS_PROFILE beside it
MISSING_standard := capacity,first-message
MISSING := $(MISSING_$(PROFILE))
# a failed scenario or notebook is listed first and the report is still written (exit 0);
# `make bench STRICT=1` makes any failure exit non-zero
STRICT ?=
STRICT_FLAG := $(if $(STRICT),--strict)
# the TLS cost table: the main run also runs these transports' points of these scenarios
# plaintext, each beside its TLS twin on fresh servers (the rest of the matrix over TLS only)
TLS_COMPARE ?= ws,ws-websockets,ws@elysia,sse,sse@elysia,longpoll,longpoll@elysia
TLS_COMPARE_SCENARIOS ?= echo,connections,overhead
# at ci the main run measures them both ways itself; a bigger main profile leaves them to a
# pass of their own at EXTRAS_PROFILE (the TLS cost table's size stays the same)
MAIN_TLS_COMPARE := $(if $(filter $(PROFILE),$(EXTRAS_PROFILE)),--tls-compare $(TLS_COMPARE_SCENARIOS)$(comma)$(TLS_COMPARE))

# prefixes a phase's command: its wall time is printed when it ends (`make bench 2>&1 | grep
# took`), its exit status kept
took = s=$$(date +%s); trap 'echo "make: $(1) took $$(($$(date +%s) - s)) s" >&2' EXIT;

.PHONY: bench calibrate test setup system lint clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(call took,pip install) $(BIN)/python -m pip install --quiet -e '.[$(EXTRAS_$*)]'
	touch $@

# the two halves of the set-up at once (neither needs the other): pip's, and setup/setup.sh's
# system programs and npm folders
setup:
	$(MAKE) -j2 --no-print-directory $(VENV)/.installed-all system

system:
	$(call took,setup) setup/setup.sh

# the test run is recorded (JUnit XML): claims.md confirms a claim resting on tests only if
# they passed in the newest recorded run (results/tests/*.xml)
test: setup
	$(BIN)/python -m pytest -q --junitxml=results/tests/junit.xml

# budget: 10 minutes on 2 quiet cores, setup included (each phase prints how long it took)
bench:
	$(MAKE) -j2 --no-print-directory $(VENV)/.installed-bench system
	$(call took,main matrix) $(BIN)/sobranie-bench run --profile $(PROFILE) --fresh \
	    $(MAIN_TLS_COMPARE) $(STRICT_FLAG)
	$(if $(MAIN_TLS_COMPARE),,$(call took,TLS compare) $(BIN)/sobranie-bench run \
	  --profile $(EXTRAS_PROFILE) --tls-compare --transports $(TLS_COMPARE) \
	  --scenarios $(TLS_COMPARE_SCENARIOS) $(STRICT_FLAG) || [ -z "$(STRICT)" ])
	$(call took,missing scenarios) if [ -n "$(MISSING)" ]; then $(BIN)/sobranie-bench run \
	  --profile $(EXTRAS_PROFILE) --scenarios $(MISSING) $(STRICT_FLAG) || [ -z "$(STRICT)" ]; fi
	$(call took,browsers) $(BIN)/sobranie-bench run --profile $(EXTRAS_PROFILE) --scenarios browser \
	    $(STRICT_FLAG) || [ -z "$(STRICT)" ]
	$(call took,cluster) $(BIN)/sobranie-bench run --profile $(EXTRAS_PROFILE) --cluster 3 \
	    --broker redis --transports ws,sse,longpoll --scenarios fanout,failover,backplane \
	    $(STRICT_FLAG) || [ -z "$(STRICT)" ]
	@# the same transports over an emulated 4G link (network namespaces: root, as in CI)
	@# and a small fan-out point under 4g (subscribers behind the link, publishers beside the
	@# server) so the fan-out features' SLAs are judged on 4g too; one run, so one lab;
	@# three first-message users (each opens over the link after the other: ~0.6 s a user)
	$(call took,4g) if [ "$$(id -u)" = 0 ]; then $(BIN)/sobranie-bench run --profile $(EXTRAS_PROFILE) \
	  --network 4g --scenarios echo,first-message,fanout --set fanout.subscribers=20 \
	  --set fanout.rate=20 --set first-message.users=3 $(STRICT_FLAG) || [ -z "$(STRICT)" ]; \
	else echo "make bench: --network 4g needs root: its points are left out"; fi
	$(call took,report) $(BIN)/sobranie-bench report --notebooks --docs docs $(STRICT_FLAG)

# The capacity model's calibration (ws and sse: fit points and 3 capacity trials, in turns with
# held-out points and 3 capacity trials it must predict) into results/calibrate, validated, then
# the report (its plans get error bars and the validation table). QUICK=1: 8 s trials, not 30 s
# (a capacity trial's steps are 8 s either way; each trial takes about 3 minutes). Run it
# on a quiet machine: a fit point whose server waited for a CPU more than 10% of its window is
# refused.
calibrate: setup
	$(BIN)/sobranie-bench capacity calibrate --out results/calibrate $(if $(QUICK),--quick,)
	$(BIN)/sobranie-bench report

lint: setup
	$(BIN)/ruff check sobranie_bench servers tests
	$(BIN)/mypy sobranie_bench servers

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
