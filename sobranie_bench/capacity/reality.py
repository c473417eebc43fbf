"""Held-out validation: the calibrated model predicts measured points it was not fitted to.

For every held-out trial (any profile but ``calibrate``) the fitted model predicts the
server's CPU, the latency quantiles, the throughput and, for the capacity scenario, the most
subscribers whose p95 stays within the SLA (the knee); each prediction is printed beside the
measurement with its error. Thresholds (METHOD.md item 13, issue 17): CPU within
``CPU_TOLERANCE``, p95 within a factor ``P95_FACTOR`` at points below the knee, knee within
``KNEE_TOLERANCE``. A point whose load lies outside the fitted range is an extrapolation.

Latency is the measured floor (client + kernel + scheduler at the lowest fitted load) plus
the queueing the load adds on top of it: each process on the path (the server, and the
harness that plays every client) is one single-core queue; a message costs its inbound CPU,
then one delivery's CPU per recipient, written one after another. The slowest queue sets
the queueing (a pipeline is as slow as its slowest stage).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sobranie_bench.capacity.fit import QUANTILES, CalibrationRefused, Fit, Linear, Trial
from sobranie_bench.capacity.instance import JobStream, simulate_instance

CPU_TOLERANCE = 0.15
P95_FACTOR = 2.0
KNEE_TOLERANCE = 0.20
SIM_JOBS = 6_000  # messages simulated per latency prediction
IDLE_JOBS_PER_S = 200.0  # the idle CPU as a stream of small jobs (timers, GC) of this rate
SATURATED = 0.98  # a stage this busy has no steady state: the latency grows without bound
RANDOM_SEED = 11


def _stages(fit: Fit) -> list[Linear]:
    """The single-core processes on a benchmark's path: the server, then the harness."""
    return [fit.server] + ([fit.harness] if fit.harness is not None else [])


def _stage_quantiles(
    model: Linear, inbound_per_s: float, fanout: int, seed: int, jobs: int = SIM_JOBS
) -> tuple[float, float, float] | None:
    """(p50, p95, p99) seconds a delivery spends in one single-core process, or None when
    the process is saturated at this load."""
    if model.cores(inbound_per_s, inbound_per_s * fanout) >= SATURATED:
        return None
    streams = [
        JobStream(
            "messages",
            inbound_per_s,
            max(model.delivery_s, 1e-9),
            fanout=((fanout, 1.0),),
            delivers=True,
            setup_cost_s=model.inbound_s,
        )
    ]
    if model.idle > 0:
        streams.append(JobStream("idle", IDLE_JOBS_PER_S, model.idle / IDLE_JOBS_PER_S))
    result = simulate_instance(streams, cores=1, jobs=jobs, seed=seed)
    return result.delivery_quantiles_s


def queueing(
    fit: Fit, inbound_per_s: float, fanout: int, seed: int = RANDOM_SEED, jobs: int = SIM_JOBS
) -> tuple[float, float, float] | None:
    """Queueing quantiles (s) on the benchmark's path: the slowest of server and harness."""
    found = [_stage_quantiles(m, inbound_per_s, fanout, seed, jobs) for m in _stages(fit)]
    if any(q is None for q in found):
        return None
    return tuple(max(q[i] for q in found if q is not None) for i in range(3))  # type: ignore[return-value]


def predict_latency_us(
    fit: Fit, scenario: str, inbound_per_s: float, fanout: int, jobs: int = SIM_JOBS
) -> dict[str, float] | None:
    """Predicted latency quantiles (µs): the measured floor plus the queueing this load adds
    over the floor's load. None when a process on the path is saturated."""
    floor = fit.floor_us.get(scenario)
    if floor is None:
        return None
    base_in, base_del = fit.floor_load[scenario]
    base = queueing(fit, base_in, max(1, round(base_del / base_in)), jobs=jobs)
    here = queueing(fit, inbound_per_s, fanout, jobs=jobs)
    if here is None or base is None:
        return None
    return {q: floor[q] + max(0.0, here[i] - base[i]) * 1e6 for i, q in enumerate(QUANTILES)}


def predict_knee(
    fit: Fit, inbound_per_s: float, sla_ms: float, upper: int = 100_000
) -> float:
    """Most subscribers of one channel published to at ``inbound_per_s`` whose predicted
    p95 stays within ``sla_ms`` (bisection; the p95 grows with the fan-out)."""

    def within(n: int) -> bool:
        p = predict_latency_us(fit, "fanout", inbound_per_s, n, jobs=SIM_JOBS // 3)
        return p is not None and p["p95"] <= sla_ms * 1000

    for m in _stages(fit):  # beyond the fan-out that fills a process, nothing holds
        if m.delivery_s > 0:
            full = ((SATURATED - m.idle) / inbound_per_s - m.inbound_s) / m.delivery_s
            upper = min(upper, max(2, math.ceil(full)))
    low, high = 1, upper
    if not within(low):
        return 0.0
    while high - low > max(1, low // 100):
        middle = (low + high) // 2
        low, high = (middle, high) if within(middle) else (low, middle)
    return float(low)


NOT_REACHED = "every step held: the knee is above the last step"


def measured_knee(trial: Trial) -> tuple[float, str]:
    """The subscriber count where the measured p95 crossed the SLA, linear between the last
    step that held and the first that did not; with how it was found (``NOT_REACHED``: a
    lower bound only)."""
    sla_us = (trial.sla_ms or 0.0) * 1000
    held = [(n, p) for n, p in trial.steps if p <= sla_us]
    missed = [(n, p) for n, p in trial.steps if p > sla_us]
    if not trial.steps:
        return math.nan, "no steps"
    if not missed:
        return float(trial.steps[-1][0]), NOT_REACHED
    first_miss = trial.steps.index(missed[0]) if missed else len(trial.steps)
    before = [s for s in trial.steps[:first_miss] if s in held]
    n_f, p_f = missed[0]
    if not before:
        return float(n_f) * sla_us / p_f, "the first step missed: scaled from it"
    n_h, p_h = before[-1]
    return n_h + (sla_us - p_h) / (p_f - p_h) * (n_f - n_h), "between the steps around the SLA"


@dataclass(frozen=True)
class Check:
    """One predicted against measured figure of one held-out trial."""

    transport: str
    point: str
    """Scenario and parameters, e.g. ``echo rate=1000``."""
    metric: str
    """``cpu cores``, ``p50 µs``, ``p95 µs``, ``p99 µs``, ``throughput /s``, ``knee subs``."""
    predicted: float | None
    """None when the model predicts saturation (no steady state)."""
    measured: float
    error: float | None
    """predicted / measured - 1."""
    threshold: str
    """What passing means here, or ``-`` for a figure shown without one."""
    passed: bool | None
    """None for a figure without a threshold."""
    extrapolation: bool
    """The point's load lies outside the fitted range."""
    note: str = ""


def _point(trial: Trial) -> str:
    keep = ("rate", "subscribers") if trial.scenario != "capacity" else ("rate", "sla_ms")
    items = dict(item.split("=", 1) for item in trial.params.split(";") if "=" in item)
    return f"{trial.scenario} " + " ".join(f"{k}={items[k]}" for k in keep if k in items)


def _check(
    trial: Trial,
    metric: str,
    predicted: float | None,
    measured: float,
    threshold: str,
    test: bool | None,
    extrapolation: bool,
    note: str = "",
) -> Check:
    error = None if predicted is None or not measured else predicted / measured - 1
    return Check(trial.transport, _point(trial), metric, predicted, measured, error, threshold,
                 test, extrapolation, note)  # fmt: skip


def check_trial(fit: Fit, trial: Trial, knee: float | None) -> list[Check]:
    """Predict one held-out trial; ``knee`` is the measured knee (subscribers) when known."""
    if trial.scenario == "capacity":
        measured, how = measured_knee(trial)
        predicted = predict_knee(fit, trial.inbound_per_s, trial.sla_ms or 0.0)
        lo, hi = fit.fit_range.get("fanout", (0.0, math.inf))
        outside = not lo <= predicted * trial.inbound_per_s <= hi
        ok: bool | None = abs(predicted / measured - 1) <= KNEE_TOLERANCE if measured else False
        if how == NOT_REACHED:
            ok = None  # a lower bound is no knee to hold the prediction to
        return [_check(trial, "knee subs", predicted, measured, f"±{KNEE_TOLERANCE:.0%}", ok,
                       outside, how)]  # fmt: skip
    lo, hi = fit.fit_range.get(trial.scenario, (0.0, math.inf))
    outside = not lo <= trial.deliveries_per_s <= hi
    checks = []
    if trial.cpu_cores is not None:
        cpu = fit.server.cores(trial.inbound_per_s, trial.deliveries_per_s)
        checks.append(_check(trial, "cpu cores", cpu, trial.cpu_cores, f"±{CPU_TOLERANCE:.0%}",
                             abs(cpu / trial.cpu_cores - 1) <= CPU_TOLERANCE, outside))  # fmt: skip
    latency = predict_latency_us(fit, trial.scenario, trial.inbound_per_s, trial.fanout)
    below = knee is None or trial.fanout < knee if trial.scenario == "fanout" else True
    for q in QUANTILES:
        if q not in trial.latency_us:
            continue
        value = None if latency is None else latency[q]
        if q == "p95" and below:
            ok = value is not None and 1 / P95_FACTOR <= value / trial.latency_us[q] <= P95_FACTOR
            checks.append(_check(trial, "p95 µs", value, trial.latency_us[q],
                                 f"within {P95_FACTOR:g}x", ok, outside))  # fmt: skip
        else:
            note = "above the knee: no threshold" if q == "p95" else ""
            checks.append(_check(trial, f"{q} µs", value, trial.latency_us[q], "-", None,
                                 outside, note))  # fmt: skip
    if trial.throughput_per_s is not None:
        offered = trial.deliveries_per_s
        capacity = _saturation_rate(fit, trial.fanout) * trial.fanout
        checks.append(_check(trial, "throughput /s", min(offered, capacity),
                             trial.throughput_per_s, "-", None, outside))  # fmt: skip
    return checks


def _saturation_rate(fit: Fit, fanout: int) -> float:
    """Inbound messages per second at which the slowest process on the path is full."""
    rates = []
    for m in _stages(fit):
        per_message = m.inbound_s + fanout * m.delivery_s
        rates.append(math.inf if per_message <= 0 else max(0.0, 1 - m.idle) / per_message)
    return min(rates)


@dataclass(frozen=True)
class Validation:
    """The held-out checks of every transport, and the transports that could not be fitted."""

    checks: tuple[Check, ...]
    refused: dict[str, str]
    """Transport -> why its calibration was refused."""

    def passed(self, transport: str) -> bool:
        mine = [c for c in self.checks if c.transport == transport and c.passed is not None]
        knee = any(c.metric == "knee subs" for c in mine)  # a knee must have been measured
        return transport not in self.refused and knee and all(c.passed for c in mine)


def validate_against(
    trials: Sequence[Trial], fits: dict[str, Fit | CalibrationRefused]
) -> Validation:
    """Every held-out trial of every fitted transport, predicted and compared."""
    checks: list[Check] = []
    refused = {t: str(f) for t, f in fits.items() if isinstance(f, CalibrationRefused)}
    for transport, fit in sorted(fits.items()):
        if isinstance(fit, CalibrationRefused):
            continue
        held = [t for t in trials if t.transport == transport and t.held_out]
        knees = [k for k, how in (measured_knee(t) for t in held if t.scenario == "capacity")
                 if how != NOT_REACHED]  # fmt: skip
        knee = knees[0] if knees else None
        for trial in sorted(held, key=lambda t: (t.scenario, t.deliveries_per_s, t.trial)):
            checks += check_trial(fit, trial, knee)
    return Validation(tuple(checks), refused)
