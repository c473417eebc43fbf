"""The standard profile's plan: at most 30 minutes on the 2-core machine by its declared
timings, 3 trials per point, echo and fan-out ladders, windows resolving 1 µs of CPU per
event. The ci profile stays the one-trial smoke run."""

from __future__ import annotations

from sobranie_bench.harness.runner import Plan
from sobranie_bench.harness.scenarios import CPU_TICK_S, MIN_WINDOW_EVENTS
from sobranie_bench.harness.scenarios.registry import registry

STANDARD = Plan(profile="standard")


def test_standard_fits_in_thirty_minutes_on_two_cores() -> None:
    assert STANDARD.planned_seconds() <= 30 * 60


def test_standard_runs_three_trials_of_every_point() -> None:
    trials: dict[tuple[str, str, str], int] = {}
    for transport, scenario, params, _trial in STANDARD.points():
        key = (transport, scenario.name, repr(sorted(params.items())))
        trials[key] = trials.get(key, 0) + 1
    assert trials and min(trials.values()) >= 3


def test_ladders_climb_by_rungs() -> None:
    scenarios = registry()
    echo = [p["rate"] for p in STANDARD.grid(scenarios["echo"])]
    fanout = [p["rate"] * p["subscribers"] for p in STANDARD.grid(scenarios["fanout"])]
    for ladder in (echo, fanout):
        assert len(ladder) >= 3 and ladder == sorted(ladder) and ladder[-1] >= 9 * ladder[0]


def test_standard_windows_resolve_a_microsecond_of_cpu_per_event() -> None:
    scenarios = registry()
    for name in ("echo", "fanout"):
        scenario = scenarios[name]
        for params in STANDARD.grid(scenario):
            assert scenario.events_per_s is not None
            _warmup, window = scenario.window("standard", params)
            events = scenario.events_per_s(params) * window
            assert events >= MIN_WINDOW_EVENTS, (name, params)
            assert CPU_TICK_S / events <= 1e-6 + 1e-12


def test_ci_stays_the_smoke_profile() -> None:
    ci = Plan(profile="ci")
    assert {trial for *_, trial in ci.points()} == {1}
    assert ci.planned_seconds() < STANDARD.planned_seconds() / 3
    echo = registry()["echo"]
    assert echo.window("ci", ci.grid(echo)[0]) == echo.timing["ci"], "ci windows unstretched"
