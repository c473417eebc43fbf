"""The standard profile's plan: at most 30 minutes on the 2-core machine by its declared
timings, 3 trials per point, echo and fan-out ladders, windows resolving 1 µs of CPU per
event. The ci profile stays the one-trial smoke run."""

from __future__ import annotations

import os

from sobranie_bench.harness.runner import Ladders, Plan
from sobranie_bench.harness.sampler import schedstat
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
            assert CPU_TICK_S / events <= 2e-6 + 1e-12  # the tick: only the fallback
    assert schedstat(os.getpid()) is not None, "CPU read in nanoseconds (schedstat), not ticks"


def test_ci_stays_the_smoke_profile() -> None:
    ci = Plan(profile="ci")
    assert {trial for *_, trial in ci.points()} == {1}
    assert ci.planned_seconds() < STANDARD.planned_seconds() / 3
    echo = registry()["echo"]
    assert echo.window("ci", ci.grid(echo)[0]) == echo.timing["ci"], "ci windows unstretched"


def _echo_raw(transport: str, rate: int, trial: int, share: float) -> dict[str, object]:
    """An echo raw whose achieved rate is ``share`` of the offered one."""
    return {"transport": transport, "scenario": "echo", "trial": trial,
            "params": {"connections": 50, "payload": 48, "rate": rate},
            "timing": {"warmup": 0.3, "duration": 1.0},
            "counters": {"received_in_window": int(rate * share)}}


def test_a_ladder_stops_above_the_rung_that_saturated_in_most_trials() -> None:
    echo = registry()["echo"]
    climbing = Ladders(STANDARD)
    point = {"connections": 50, "payload": 48, "rate": 6000}
    for trial, share in ((1, 0.5), (2, 1.0)):  # one saturated trial of three: climb on
        climbing.record(STANDARD, "ws", echo, point, _echo_raw("ws", 6000, trial, share))
    assert climbing.skip(STANDARD, "ws", echo, {**point, "rate": 18000}) is None
    climbing.record(STANDARD, "ws", echo, point, _echo_raw("ws", 6000, 3, 0.6))
    why = climbing.skip(STANDARD, "ws", echo, {**point, "rate": 18000})
    assert why is not None and "rate=6000" in why and "short" in why
    assert climbing.skip(STANDARD, "ws", echo, point) is None, "the rung itself ran"
    assert climbing.skip(STANDARD, "sse", echo, {**point, "rate": 18000}) is None, "per transport"
    other = {**point, "payload": 4096, "rate": 18000}
    assert climbing.skip(STANDARD, "ws", echo, other) is None, "per point of the other params"


def test_ci_never_skips_a_point() -> None:
    echo = registry()["echo"]
    ci = Plan(profile="ci")
    climbing = Ladders(ci)
    point = {"connections": 50, "payload": 48, "rate": 500}
    climbing.record(ci, "ws", echo, point, _echo_raw("ws", 500, 1, 0.1))
    assert climbing.skip(ci, "ws", echo, {**point, "rate": 5000}) is None
