"""Fitting, bootstrap, refusal and validation arithmetic on made-up trials (no measurement)."""

from __future__ import annotations

import numpy as np
import pytest

from sobranie_bench.capacity.fit import (
    CalibrationRefused,
    Fit,
    Host,
    Step,
    Trial,
    fit_linear,
    fit_transport,
)
from sobranie_bench.capacity.reality import (
    NOT_REACHED,
    _finish,
    measured_knee,
    predict_knee,
    predict_latency_us,
    predict_steps_knee,
    queueing,
)

IDLE, ECHO_FIXED, INBOUND, DELIVERY = 0.02, 0.05, 80e-6, 20e-6


def trial(scenario: str, rate: float, fanout: int, n: int, wait: float = 0.01,
          profile: str = "calibrate", noise: float = 0.0) -> Trial:
    fixed = ECHO_FIXED if scenario == "echo" else IDLE
    cores = (fixed + INBOUND * rate + DELIVERY * rate * fanout) * (1 + noise)
    return Trial("ws", scenario, f"rate={rate};subscribers={fanout}", n, profile, rate,
                 rate * fanout, fanout, cores, cores, wait, {"p50": 1e3, "p95": 2e3, "p99": 3e3},
                 rate * fanout)


def grid(wait: float = 0.01) -> list[Trial]:
    return [trial(s, r, f, n, wait, noise=(n - 2) * 0.02)
            for s, r, f in (("echo", 200, 1), ("echo", 800, 1), ("fanout", 20, 100),
                            ("fanout", 20, 600)) for n in (1, 2, 3)]


def test_fit_recovers_the_costs_it_was_made_from() -> None:
    exact = fit_linear([(t.scenario, t.inbound_per_s, t.deliveries_per_s, t.cpu_cores or 0)
                        for t in grid() if t.trial == 2])
    assert exact.idle == pytest.approx(IDLE)
    assert exact.fixed_for("echo") == pytest.approx(ECHO_FIXED)
    assert exact.cores(400, 400, "echo") == pytest.approx(ECHO_FIXED + 400 * (INBOUND + DELIVERY))
    assert exact.inbound_s == pytest.approx(INBOUND)
    assert exact.delivery_s == pytest.approx(DELIVERY)


def test_bootstrap_interval_holds_the_central_fit_and_residuals_are_small() -> None:
    fit = fit_transport(grid(), draws=200)
    low, high = fit.interval("delivery_s")
    assert low <= fit.server.delivery_s <= high
    assert all(abs(r.error) < 0.05 for r in fit.residuals)
    assert fit.fit_range["fanout"] == (2000, 12000)


def test_a_busy_machine_refuses_the_calibration() -> None:
    with pytest.raises(CalibrationRefused, match="waiting for a CPU more than 10%"):
        fit_transport(grid(wait=0.3))


def test_measured_knee_interpolates_between_the_steps_around_the_sla() -> None:
    steps = (Step(100, 100e3), Step(200, 300e3), Step(300, 700e3))
    knee = Trial("ws", "capacity", "", 1, "holdout", 20, 0, 0, None, None, None, {}, None,
                 steps=steps, sla_ms=500)
    assert measured_knee(knee)[0] == pytest.approx(250)
    held = Trial("ws", "capacity", "", 1, "holdout", 20, 0, 0, None, None, None, {}, None,
                 steps=steps[:2], sla_ms=500)
    assert measured_knee(held) == (200, NOT_REACHED)


def test_the_queue_recursion_matches_a_step_by_step_lindley_loop() -> None:
    rng = np.random.default_rng(3)
    arrivals = np.sort(rng.uniform(0, 1, 500))
    costs = rng.exponential(0.002, 500)
    expected, free = [], 0.0
    for a, c in zip(arrivals, costs, strict=True):
        free = max(free, a) + c
        expected.append(free)
    assert _finish(arrivals, costs) == pytest.approx(expected)


def test_latency_grows_with_fanout_and_a_smaller_cpu_share_moves_the_knee_down() -> None:
    fit = fit_transport(grid(), draws=20)
    small = predict_latency_us(fit, "fanout", 20, 200)
    large = predict_latency_us(fit, "fanout", 20, 2000)
    assert small is not None and large is not None and small["p95"] < large["p95"]
    # a server at (SATURATED - fixed) / work is full: no steady state
    full = int((1 - IDLE) / (20 * DELIVERY))
    assert queueing(fit, "fanout", 20, full + 100) is None
    quiet = predict_knee(fit, 20, 500)
    busy = predict_knee(fit, 20, 500, Host(0.5, 0.5))
    assert 0 < busy < quiet < full
    steps = tuple(Step(n, 1e3, 0.1, 0.1, 0.1, 0.1) for n in (100, 200))  # share 0.5 at each
    capacity = Trial("ws", "capacity", "", 1, "holdout", 20, 0, 0, None, None, None, {}, None,
                     steps=steps, sla_ms=500)
    knee, how = predict_steps_knee(fit, capacity)
    assert knee == pytest.approx(busy, rel=0.02) and "beyond the steps" in how


def test_held_out_points_of_the_same_costs_pass_and_the_tables_show_them() -> None:
    from sobranie_bench.capacity.reality import validate_against
    from sobranie_bench.capacity.tables import VALIDATION_HEADERS, tables

    fit = fit_transport(grid(), draws=50)
    knee = predict_knee(fit, 20, 500)
    steps = tuple(Step(n, p, IDLE + 20 * INBOUND + 20 * n * DELIVERY, 0.0)
                  for n, p in ((200, 5e3), (int(knee * 0.9), 100e3), (int(knee * 1.1), 900e3)))
    held = [trial("echo", 400, 1, 1, profile="holdout"),
            trial("fanout", 20, 300, 1, profile="holdout"),
            Trial("ws", "capacity", "rate=20;sla_ms=500", 1, "holdout", 20, 0, 0, None, None,
                  None, {}, None, steps=steps, sla_ms=500)]
    result = validate_against(grid() + held, {"ws": fit})
    cpu = [c for c in result.checks if c.metric.startswith("cpu cores")]
    assert cpu and all(c.passed for c in cpu)
    knees = [c for c in result.checks if c.metric == "knee subs"]
    assert knees and knees[0].error is not None and abs(knees[0].error) < 0.2
    shown = tables({"ws": fit}, result, {})
    assert all(len(row) == len(VALIDATION_HEADERS) for row in shown.validation)
    assert shown.host == "host not recorded" and "ws" in shown.verdicts


def test_a_plan_with_error_bars_reads_n_plus_minus_k() -> None:
    import dataclasses

    from sobranie_bench.capacity import plan
    from sobranie_bench.capacity.errors import processes_text

    fleet = plan(100_000, latency_jobs=500).fleets[0]
    assert processes_text(fleet) == str(fleet.instances)
    ranged = dataclasses.replace(fleet, instances=13, instances_interval=(11, 14),
                                 extrapolation=True)
    assert processes_text(ranged) == "13 ± 2 (extrapolation)"


def test_waiting_for_a_quiet_machine_starts_at_once_or_gives_up() -> None:
    from sobranie_bench.capacity.measure import wait_for_quiet

    assert wait_for_quiet(1e9, timeout_s=0)
    assert not wait_for_quiet(0.0, timeout_s=0, poll_s=0)


def raw_echo(failures: int, received: int = 1600, error: str | None = None) -> dict[str, object]:
    """A raw echo result as the runner writes it (50 connections at 200/s, 8 s window)."""
    raw: dict[str, object] = {
        "version": 1, "transport": "ws", "scenario": "echo", "trial": 1, "profile": "calibrate",
        "params": {"connections": 50, "payload": 48, "rate": 200},
        "counters": {"connect_failures": failures, "received_measured": received,
                     "received": received, "sent": 1600},
    }
    if error:
        raw = {k: v for k, v in raw.items() if k != "counters"} | {"error": error}
    return raw


def test_a_trial_whose_every_connection_failed_carries_an_error_and_is_refused() -> None:
    import dataclasses

    from sobranie_bench.capacity.fit import failure_of, trial_from_raw

    assert failure_of(raw_echo(50, received=0)) == "every connection failed (50 of 50)"
    assert "connections failed" in (failure_of(raw_echo(3)) or "")
    assert failure_of(raw_echo(0, received=0)) == "nothing was delivered in the measured window"
    assert failure_of(raw_echo(0)) is None
    crashed = trial_from_raw(raw_echo(0, error="OSError: refused"))
    assert crashed is not None and crashed.failure == "the run failed: OSError: refused"
    assert crashed.cpu_cores is None
    # all connections failed: the server idled, a near-zero cost that would pull the fit down
    dead = dataclasses.replace(trial("echo", 800, 1, 4), cpu_cores=0.002,
                               failure="every connection failed (50 of 50)")
    good = fit_transport(grid(), draws=20)
    fit = fit_transport([*grid(), dead], draws=20)
    assert dead in fit.refused
    assert fit.server.inbound_s == pytest.approx(good.server.inbound_s)
    failed = [dataclasses.replace(t, failure="every connection failed (101 of 101)")
              if t.scenario == "fanout" else t for t in grid()]
    with pytest.raises(CalibrationRefused, match="fit trials failed"):
        fit_transport(failed)


def test_a_fit_trial_that_fell_behind_its_load_is_refused() -> None:
    import dataclasses

    behind = dataclasses.replace(trial("fanout", 20, 600, 4), cpu_cores=0.9, achieved=0.96)
    fit = fit_transport([*grid(), behind], draws=20)
    assert behind in fit.refused
    assert fit.server.delivery_s == pytest.approx(fit_transport(grid(), draws=20).server.delivery_s)


def test_a_held_out_point_measured_on_a_busy_machine_is_shown_not_judged() -> None:
    import dataclasses

    from sobranie_bench.capacity.reality import check_trial

    fit = fit_transport(grid(), draws=20)
    quiet = trial("echo", 400, 1, 1, profile="holdout")
    busy = dataclasses.replace(quiet, cpu_cores=(quiet.cpu_cores or 0) * 2, run_queue_wait=0.3)
    assert all(c.passed for c in check_trial(fit, quiet, None) if c.metric == "cpu cores")
    cpu = next(c for c in check_trial(fit, busy, None) if c.metric == "cpu cores")
    assert cpu.passed is None and "not judged" in cpu.note and cpu.error is not None
    failed = dataclasses.replace(quiet, failure="every connection failed (50 of 50)")
    (row,) = check_trial(fit, failed, None)
    assert row.passed is None and "not predicted" in row.note


def test_a_step_that_lost_messages_ends_the_knee_whatever_its_p95() -> None:
    steps = (Step(100, 100e3), Step(200, 200e3), Step(300, 250e3, failed=True))
    knee = Trial("ws", "capacity", "", 1, "holdout", 20, 0, 0, None, None, None, {}, None,
                 steps=steps, sla_ms=500)
    assert measured_knee(knee) == (200, "the next step lost messages or connections")


def test_a_calibration_takes_turns_between_its_fit_and_held_out_trials() -> None:
    from pathlib import Path

    from sobranie_bench.capacity.measure import plans
    from sobranie_bench.harness.runner import count_points

    turns = plans(Path("out"), ("ws",), quick=True)
    points = [(p.profile, p.scenarios, t) for p in turns for _, _, _, t in p.points()]
    lines = [(prof, trial) for prof, sc, trial in points if sc == ("echo", "fanout")]
    assert lines == [(prof, trial) for trial in (1, 2, 3) for prof in ("calibrate", "holdout")
                     for _ in range(7 if prof == "calibrate" else 3)]  # 4+3 points, 2+1
    knees = [(prof, trial) for prof, sc, trial in points if sc == ("capacity",)]
    assert knees == [(prof, trial) for trial in (1, 2, 3) for prof in ("holdout", "calibrate")]
    assert sum(count_points(p) for p in turns) == 3 * (7 + 3) + 6


def test_held_out_trials_of_one_point_are_judged_on_their_median() -> None:
    from sobranie_bench.capacity.reality import validate_against

    fit = fit_transport(grid(), draws=20)
    held = [trial("echo", 400, 1, n, profile="holdout", noise=noise)
            for n, noise in ((1, 0.4), (2, 0.0), (3, -0.02))]  # one wild trial of three
    checks = validate_against(grid() + held, {"ws": fit}).checks
    (cpu,) = [c for c in checks if c.metric == "cpu cores"]
    assert cpu.passed and "median of 3 trials" in cpu.note


def test_the_cost_curve_carries_what_the_fan_out_points_measured_between_and_beyond_them(
) -> None:
    import dataclasses

    dearer = {100: 1.0, 600: 1.0, 1500: 1.5}  # per-delivery cost rising as the loop fills
    fanout = [dataclasses.replace(t, cpu_cores=IDLE + INBOUND * 20 + DELIVERY * dearer[f] * 20 * f)
              for f in dearer for t in [trial("fanout", 20, f, 1)]]  # fmt: skip
    echo = [t for t in grid() if t.scenario == "echo"]
    model = fit_transport(echo + fanout, draws=20).server
    for t in fanout:
        assert model.cores(20, t.deliveries_per_s, "fanout") == pytest.approx(t.cpu_cores)
    line = dataclasses.replace(model, curves=())  # no line passes through a kink
    assert max(abs(line.cores(20, t.deliveries_per_s, "fanout") / (t.cpu_cores or 1) - 1)
               for t in fanout) > 0.05  # fmt: skip
    between = model.delivery_at(20 * 1000, "fanout")
    assert model.delivery_at(12_000, "fanout") < between < model.delivery_at(30_000, "fanout")
    assert model.delivery_at(60_000, "fanout") == model.delivery_at(30_000, "fanout")
    assert model.delivery_at(400, "echo") == model.delivery_s  # a reply is not a fan-out


def capacity_trial(profile: str, steps: tuple[tuple[int, float], ...], factor: float,
                   n: int = 1) -> Trial:
    """A capacity trial whose steps cost ``factor`` times a fresh fan-out point's per
    delivery, with the given (subscribers, p95 µs) steps."""
    return Trial("ws", "capacity", "rate=20;sla_ms=500", n, profile, 20, 0, 0, None, None,
                 None, {}, None, sla_ms=500, steps=tuple(
                     Step(s, p95, IDLE + 20 * INBOUND + 20 * s * DELIVERY * factor, 0.0)
                     for s, p95 in steps))  # fmt: skip


def test_a_fit_capacity_trial_gives_the_capacity_scenario_its_own_costs_and_floor() -> None:
    from sobranie_bench.capacity.fit import step_trials
    from sobranie_bench.capacity.reality import knee_scenario, validate_against

    fitted = capacity_trial("calibrate", ((150, 5e3), (300, 8e3), (600, 20e3), (900, 60e3),
                                          (1200, 900e3)), factor=1.3)
    # 1,200 missed the SLA, losing nothing: a cost point still (the last)
    assert [t.fanout for t in step_trials(fitted)] == [150, 300, 600, 900, 1200]
    held = capacity_trial("holdout", ((200, 6e3), (400, 12e3), (800, 40e3)), factor=1.3)
    fresh = fit_transport(grid(), draws=20)
    stepped = fit_transport([*grid(), fitted], draws=20)
    assert knee_scenario(fresh) == "fanout" and knee_scenario(stepped) == "capacity"
    assert stepped.fit_range["capacity"] == (3000, 24000)
    assert stepped.server.delivery_at(8000, "fanout") == pytest.approx(DELIVERY, rel=0.02)

    def cpu(fit: Fit) -> list[bool | None]:
        checks = validate_against([*grid(), fitted, held], {"ws": fit}).checks
        return [c.passed for c in checks if c.metric.startswith("cpu cores @")]

    assert cpu(stepped) == [True, True, True]
    assert cpu(fresh) == [False, False, False]  # fresh fan-out points cost 1 / 1.3 of a step


def test_a_capacity_step_queues_at_the_capacity_scenarios_own_cost() -> None:
    cheap = capacity_trial("calibrate", tuple((n, 5e3) for n in (1000, 2000, 3000, 4000)), 0.5)
    fit = fit_transport([*grid(), cheap], draws=5)
    assert queueing(fit, "fanout", 20, 3000) is None  # a fresh fan-out's cost: saturated
    stepped = queueing(fit, "capacity", 20, 3000)  # half of it per delivery: 0.6 busy
    assert stepped is not None and stepped[1] < 0.5  # p95 (s): a publish's burst, no backlog


def test_one_wild_trial_of_three_does_not_pull_the_fit() -> None:
    wild = [trial(t.scenario, t.inbound_per_s, t.fanout, t.trial, noise=1.0)
            if (t.scenario, t.inbound_per_s, t.trial) == ("echo", 800, 1) else t for t in grid()]
    calm = fit_transport(grid(), draws=5).server.cores(800, 800, "echo")
    assert fit_transport(wild, draws=5).server.cores(800, 800, "echo") == pytest.approx(
        calm, rel=0.05)


def test_a_process_measured_keeping_up_at_a_full_core_is_not_called_saturated_there() -> None:
    """ws held its p95 within the SLA at 0.99 cores (it batches): within the loads the fit
    measured, the simulation runs it below KEPT_UP and the floor carries the rest; past them
    a full core is saturation."""
    from sobranie_bench.capacity.reality import predict_latency_us

    full = round((0.99 - IDLE - 20 * INBOUND) / (20 * DELIVERY))  # subscribers at 0.99 cores
    steps = ((full // 4, 5e3), (full // 2, 8e3), (full, 300e3))
    fit = fit_transport([*grid(), capacity_trial("calibrate", steps, 1.0)], draws=5)
    assert queueing(fit, "capacity", 20, full) is not None
    p95 = (predict_latency_us(fit, "capacity", 20, full) or {})["p95"]
    assert 150e3 <= p95 <= 600e3, p95  # what was measured there, not a queue without bound
    assert queueing(fit, "capacity", 20, 2 * full) is None  # two cores' work: saturated


def test_a_client_bound_step_shows_the_servers_cpu_without_judging_it() -> None:
    import dataclasses

    from sobranie_bench.capacity.reality import validate_against

    fitted = capacity_trial("calibrate", ((150, 5e3), (300, 8e3), (600, 20e3)), factor=1.0)
    held = capacity_trial("holdout", ((200, 6e3), (400, 12e3)), factor=2.0)  # far off
    held = dataclasses.replace(held, steps=(
        dataclasses.replace(held.steps[0], harness_cores=0.5),  # the harness kept up
        dataclasses.replace(held.steps[1], harness_cores=0.95)))  # it did not
    checks = [c for c in validate_against([*grid(), fitted, held],
                                          {"ws": fit_transport([*grid(), fitted], draws=5)}).checks
              if c.metric.startswith("cpu cores @")]
    assert [c.passed for c in checks] == [False, None]
    assert "client-bound" in checks[1].note


def test_a_step_that_lost_messages_or_came_after_the_first_miss_is_no_cost_point() -> None:
    import dataclasses

    from sobranie_bench.capacity.fit import step_trials

    missed_twice = capacity_trial("calibrate", ((150, 5e3), (300, 600e3), (450, 900e3)), 1.0)
    assert [t.fanout for t in step_trials(missed_twice)] == [150, 300]
    lost = dataclasses.replace(missed_twice, steps=(
        missed_twice.steps[0], dataclasses.replace(missed_twice.steps[1], failed=True)))
    assert [t.fanout for t in step_trials(lost)] == [150]


def test_a_capacity_point_is_judged_on_the_median_of_its_trials_knees() -> None:
    from sobranie_bench.capacity.errors import measured_knees
    from sobranie_bench.capacity.reality import median_knee, median_steps, validate_against

    # knee = 800 + (x - 800) / 2 between a step at 100 ms and one at 900 ms
    group = [capacity_trial("holdout", ((800, 100e3), (x, 900e3)), factor=1.0, n=n)
             for n, x in ((1, 1200), (2, 2200), (3, 1400))]
    knee, how = median_knee(group)
    assert knee == pytest.approx(1100) and "median of 3 trials' knees" in how
    assert measured_knees(group)["ws"].subscribers == pytest.approx(1100)
    merged = median_steps(group)
    assert [s.subscribers for s in merged.steps] == [800, 1200, 1400, 2200]
    held = [capacity_trial("holdout", ((800, 100e3),), factor=1.0, n=n) for n in (1, 2)]
    assert median_knee(held) == (800, NOT_REACHED)
    fit = fit_transport(grid(), draws=20)
    checks = validate_against([*grid(), *group], {"ws": fit}).checks
    (row,) = [c for c in checks if c.metric == "knee subs"]
    assert row.measured == pytest.approx(1100) and "median of 3 trials" in row.note
