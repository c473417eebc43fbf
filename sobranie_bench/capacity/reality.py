"""Held-out validation: the calibrated model predicts measured points it was not fitted to.

For every held-out trial (any profile but ``calibrate``) the fitted model predicts the
server's CPU, the latency quantiles, the throughput and, for the capacity scenario, the most
subscribers whose p95 stays within the SLA (the knee); each prediction is printed beside the
measurement with its error. Thresholds (METHOD.md item 13, issue 17): CPU within
``CPU_TOLERANCE``, p95 within a factor ``P95_FACTOR`` at points below the knee, knee within
``KNEE_TOLERANCE``. A point whose load lies outside the fitted range is an extrapolation.

Latency is the measured floor (client + kernel + scheduler at the lowest fitted load) plus
the queueing the load adds on top of it. The path is a tandem of two single-core queues, the
server then the harness that plays every client, each working through its items in order:
an echo is one item at each; a fan-out publish is the publish then one item per subscriber
at the server, and one item per subscriber at the harness. The harness sends on a constant
schedule (periodic arrivals, as ``harness.load.Schedule`` does), each item's CPU time is
exponential about its fitted mean, and a process runs at the CPU share the host gave it while
it was runnable, run / (run + run-queue wait) from schedstat, minus its fixed cost: on a
machine shared with other work a process gets less than its core, and that share is measured
with every point, not fitted (it is the other tenants' load, not the server's property). The
plan assumes a whole core (share 1); validation reports the knee both ways. A process is
saturated (no steady state) only beyond the loads a fit point measured it keeping up at: up
to them the simulation runs it at most ``KEPT_UP`` busy and the measured floor carries the
rest (a loop near its core batches; :func:`_speed`).

A delivery's CPU time is the fitted cost curve's at the point's load (:mod:`.fit`). A capacity
trial is predicted with the capacity scenario's own curve and floor when the calibration
measured capacity trials of its own (steps at other sizes): a step is a fan-out in a server
and a harness that served every step before it, measured dearer than a fresh fan-out point of
the same size (ws 0.46 against 0.39 cores at 800 subscribers, sse 0.67 against 0.49, in one
calibration). Its trials are judged together: the knee is the median of their knees, a
step's CPU the median over the trials that reached it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sobranie_bench.capacity.fit import (
    MAX_RUN_QUEUE_WAIT,
    QUANTILES,
    QUIET,
    CalibrationRefused,
    Fit,
    Host,
    Linear,
    Step,
    Trial,
    host_of,
)
from sobranie_bench.harness import results

CPU_TOLERANCE = 0.15
P95_FACTOR = 2.0
KNEE_TOLERANCE = 0.20
SIM_ITEMS = 200_000  # items (messages or deliveries) simulated per latency prediction, at most
SIM_MESSAGES = 400  # inbound messages simulated per prediction, at least (echo or publishes)
WARMUP_SHARE = 0.1  # the first messages are discarded (the queue starts empty)
SATURATED = 0.98  # a stage this busy has no steady state: the latency grows without bound
KEPT_UP = 0.9  # at most this busy in the simulation where a fit point measured it keeping up
MAX_KNEE = 200_000  # subscribers: the bisection's bound for a knee beyond the steps
RANDOM_SEED = 11


def _left(model: Linear, scenario: str, cpu_share: float) -> float:
    """The share of a core left for messages: the host's share less the fixed cost."""
    return cpu_share - model.fixed_for(scenario)


def _speed(fit: Fit, model: Linear, scenario: str, rate: float, fanout: int,
           cpu_share: float) -> float | None:
    """The share of a core a stage works on messages at (the host's share less the fixed
    cost), None when the stage is saturated: at least SATURATED busy beyond the loads the fit
    measured. Up to the highest load a fit point measured the process keeping up at, however
    busy its core, it is run at most KEPT_UP busy: a process near its core batches (ws kept
    its p95 within 500 ms at 0.99 cores, 2,300 subscribers at 20/s), which a queue of single
    items cannot, and the measured floor carries the rest."""
    speed = _left(model, scenario, cpu_share)
    work = model.cores(rate, rate * fanout, scenario) - model.fixed_for(scenario)
    if rate * fanout <= fit.fit_range.get(scenario, (0.0, 0.0))[1]:
        return max(speed, work / KEPT_UP)
    return speed if speed > 0 and work / speed < SATURATED else None


def _finish(arrivals: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Completion times of items served in order by one queue: F_k = max(F_{k-1}, a_k) + c_k,
    in closed form C_k + max_{j<=k}(a_j - C_{j-1}) with C the cumulative cost."""
    total = np.cumsum(costs)
    return total + np.maximum.accumulate(arrivals - (total - costs))


def queueing(
    fit: Fit, scenario: str, rate: float, fanout: int, host: Host = QUIET,
    seed: int = RANDOM_SEED,
) -> tuple[float, float, float] | None:
    """(p50, p95, p99) seconds from a message's intended send to its delivery's handling by
    the harness, through the server then the harness; None when either is saturated."""
    stages = [(fit.server, host.server)]
    if fit.harness is not None:
        stages.append((fit.harness, host.harness))
    maybe = [_speed(fit, m, scenario, rate, fanout, s) for m, s in stages]
    speeds = [s for s in maybe if s is not None]
    if rate <= 0 or len(speeds) < len(stages):
        return None
    rng = np.random.default_rng(seed)
    messages = max(SIM_MESSAGES, SIM_ITEMS // max(1, fanout))
    sent = np.arange(messages) / rate
    per = 1 if scenario == "echo" else fanout  # delivery items per message
    server, speed = stages[0][0], speeds[0]
    load = rate * fanout
    if scenario == "echo":
        at_server = sent
        mean = np.full(messages, server.inbound_s + server.delivery_at(load, scenario))
    else:  # the publish, then its deliveries, one after another
        at_server = np.repeat(sent, per + 1)
        mean = np.tile(np.r_[server.inbound_s, np.full(per, server.delivery_at(load, scenario))],
                       messages)  # fmt: skip
    done = _finish(at_server, rng.exponential(mean) / speed)
    if scenario != "echo":
        done = done.reshape(messages, per + 1)[:, 1:].ravel()  # the deliveries' ends
    origin = np.repeat(sent, per)
    if len(stages) > 1:
        harness, speed = stages[1][0], speeds[1]
        cost = harness.delivery_at(load, scenario) + harness.inbound_s / per
        done = _finish(done, rng.exponential(cost, done.size) / speed)
    latency = (done - origin)[int(done.size * WARMUP_SHARE):]
    p50, p95, p99 = np.quantile(latency, (0.5, 0.95, 0.99))
    return float(p50), float(p95), float(p99)


def predict_latency_us(
    fit: Fit, scenario: str, rate: float, fanout: int, host: Host = QUIET
) -> dict[str, float] | None:
    """Predicted latency quantiles (µs): the floor plus the queueing this load makes (at the
    host share given). The floor is what queueing does not explain at the fit points: a fit
    point's measured latency less the model's queueing there (at its own measured shares),
    interpolated in log load between the fit points around this one (the nearest one outside
    them). It is a function of load, not a constant: a busier client and server wake up
    sooner (ws echo p50 1,040 µs at 200/s, 480 µs at 800/s). None when a process on the path
    is saturated; the quantiles the fit points measured (a capacity step: its p95)."""
    here = queueing(fit, scenario, rate, fanout, host)
    if here is None:
        return None
    floors: dict[str, list[tuple[float, float]]] = {}
    for a in fit.anchors.get(scenario, ()):
        at = queueing(fit, scenario, a.inbound_per_s, a.fanout, a.host)
        for i, q in enumerate(QUANTILES):
            if at is not None and q in a.latency_us:
                floors.setdefault(q, []).append(
                    (math.log(a.deliveries_per_s), max(0.0, a.latency_us[q] - at[i] * 1e6)))
    load = math.log(max(rate * fanout, 1e-9))
    return {q: float(np.interp(load, [x for x, _ in floors[q]], [f for _, f in floors[q]]))
            + here[i] * 1e6 for i, q in enumerate(QUANTILES) if q in floors} or None


def knee_scenario(fit: Fit) -> str:
    """Whose costs and floor predict a capacity trial: the capacity scenario's own when the
    fit measured its steps (a step is a fan-out in a process that served the steps before
    it), else the fresh fan-out points'."""
    return "capacity" if "capacity" in fit.anchors else "fanout"


def _within(fit: Fit, rate: float, subscribers: int, sla_us: float, host: Host) -> float:
    """Predicted p95 (µs) at ``subscribers``, infinite when saturated."""
    p = predict_latency_us(fit, knee_scenario(fit), rate, subscribers, host)
    return math.inf if p is None or "p95" not in p else p["p95"]


def predict_knee(fit: Fit, rate: float, sla_ms: float, host: Host = QUIET,
                 bounds: tuple[int, int] = (1, MAX_KNEE)) -> float:  # fmt: skip
    """Most subscribers of one channel published to at ``rate`` whose predicted p95 stays
    within ``sla_ms`` on a host giving these shares (bisection within ``bounds``; the p95
    grows with the fan-out)."""
    sla_us = sla_ms * 1000
    low, high = bounds
    if _within(fit, rate, low, sla_us, host) > sla_us:
        return 0.0
    while high - low > max(1, low // 200):
        middle = (low + high) // 2
        low, high = (middle, high) if _within(fit, rate, middle, sla_us, host) <= sla_us else (
            low, middle)
    return float(low)


def predict_steps_knee(fit: Fit, trial: Trial) -> tuple[float, str]:
    """The knee of a capacity trial as the model sees it: the predicted p95 at each measured
    step (at that step's measured host shares), crossed like :func:`measured_knee`; where the
    model saturates at the first step that misses (no p95 to interpolate to), by bisection
    between that step and the last that held, at the missing step's shares; past the last
    step, at the last step's shares."""
    sla_us = (trial.sla_ms or 0.0) * 1000
    predicted = tuple(
        Step(s.subscribers, _within(fit, trial.inbound_per_s, s.subscribers, sla_us,
                                    host_of(s))) for s in trial.steps)  # fmt: skip
    knee, how = measured_knee(Trial(**{**trial.__dict__, "steps": predicted}))
    miss = next((i for i, s in enumerate(predicted) if s.p95_us > sla_us), None)
    if miss and not math.isfinite(predicted[miss].p95_us):
        bounds = (predicted[miss - 1].subscribers, predicted[miss].subscribers)
        return predict_knee(fit, trial.inbound_per_s, trial.sla_ms or 0.0,
                            host_of(trial.steps[miss]), bounds), (
            "the model saturates at the next step: bisected between the steps")  # fmt: skip
    if how == NOT_REACHED and trial.steps:
        last = host_of(trial.steps[-1])
        return predict_knee(fit, trial.inbound_per_s, trial.sla_ms or 0.0, last), (
            "beyond the steps, at the last step's host share")
    return knee, how


NOT_REACHED = "every step held: the knee is above the last step"


def measured_knee(trial: Trial) -> tuple[float, str]:
    """The subscriber count where the measured p95 crossed the SLA, linear between the last
    step that held and the first that did not; with how it was found (``NOT_REACHED``: a
    lower bound only)."""
    sla_us = (trial.sla_ms or 0.0) * 1000
    steps = [(s.subscribers, s.p95_us) for s in trial.steps]
    if not steps:
        return math.nan, "no steps"
    first_miss = next((i for i, (s, (_, p)) in enumerate(zip(trial.steps, steps))
                       if p > sla_us or s.failed), None)  # fmt: skip
    if first_miss is None:
        return float(steps[-1][0]), NOT_REACHED
    n_f, p_f = steps[first_miss]
    if trial.steps[first_miss].failed and p_f <= sla_us:
        held = steps[first_miss - 1][0] if first_miss else 0
        return float(held), "the next step lost messages or connections"
    if first_miss == 0:
        return float(n_f) * sla_us / p_f, "the first step missed: scaled from it"
    n_h, p_h = steps[first_miss - 1]
    if not math.isfinite(p_f):
        return float(n_h), "between the steps around the SLA"
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


def busy(wait: float | None) -> str:
    """Why a held-out figure is shown but not judged: its server waited for a CPU more than
    ``MAX_RUN_QUEUE_WAIT`` of the window, the rule that refuses such a fit point (the figure
    measures the machine's other load too: CPU per message rises with a neighbour on the core,
    measured +25% at a host share of 0.43); empty when it is judged."""
    if wait is None or wait <= MAX_RUN_QUEUE_WAIT:
        return ""
    return f"not judged: the server waited for a CPU {wait:.0%} of the window"


def client_bound(server_cores: float | None, harness_cores: float | None) -> str:
    """Why a step's server CPU is shown but not judged: the harness, one process playing every
    client, was client-bound (``results.harness_bound``, the run's ``client_bound`` rule): the
    server then writes to readers that fall behind and batches its writes (sse: 36-55 µs per
    delivery at 600-700 subscribers with the harness at 0.93 cores, 65-70 at 400 with it at
    0.85), so its CPU measures the client; empty when it is judged."""
    if harness_cores is None or not results.harness_bound(
            None if server_cores is None else server_cores * 100, harness_cores * 100):
        return ""
    return f"not judged: client-bound (the harness ran {harness_cores:.2f} cores)"


def _judged(test: bool, why: str) -> bool | None:
    return None if why else test


def predict_cpu(
    fit: Fit, scenario: str, rate: float, deliveries_per_s: float, cpu_share: float = 1.0
) -> float:
    """The server's cores at this load: the fitted costs, but never more than the CPU share
    the host gave it (a process that cannot keep up runs all the time it is given)."""
    return min(fit.server.cores(rate, deliveries_per_s, scenario), cpu_share)


def median_knee(group: Sequence[Trial]) -> tuple[float, str]:
    """The knee of a capacity point's trials: the median of each trial's measured knee (one
    trial's knee is too noisy to hold a model to: ws 1,598 and 2,163 subscribers in two quiet
    trials of one point); ``NOT_REACHED`` when every trial held every step. A trial that held
    every step counts with its last step, a lower bound."""
    knees = [measured_knee(t) for t in group]
    if len(knees) == 1:
        return knees[0]
    values = [k for k, _ in knees if not math.isnan(k)]
    median = float(np.median(values)) if values else math.nan
    if all(how == NOT_REACHED for _, how in knees):
        return median, NOT_REACHED
    bounds = sum(how == NOT_REACHED for _, how in knees)
    return median, (f"median of {len(knees)} trials' knees ({', '.join(f'{k:,.0f}' for k in values)})"
                    + (f", {bounds} a lower bound (every step held)" if bounds else ""))  # fmt: skip


def median_steps(group: Sequence[Trial]) -> Trial:
    """A capacity point's trials as one: at each subscriber count, the median of the steps
    that reached it (p95, CPU, waits; failed when most failed)."""
    if len(group) == 1:
        return group[0]
    by_count: dict[int, list[Step]] = {}
    for t in group:
        for step in t.steps:
            by_count.setdefault(step.subscribers, []).append(step)
    steps = tuple(Step(n, float(np.median([s.p95_us for s in steps])),
                       _median([s.server_cores for s in steps]),
                       _median([s.server_wait for s in steps]),
                       _median([s.harness_cores for s in steps]),
                       _median([s.harness_wait for s in steps]),
                       sum(s.failed for s in steps) * 2 > len(steps))
                  for n, steps in sorted(by_count.items()))  # fmt: skip
    return dataclasses.replace(group[0], steps=steps)


def _knee_checks(fit: Fit, group: Sequence[Trial]) -> list[Check]:
    """A capacity point's trials: the knee (their median; predicted at the measured host
    shares, and on a quiet host), and the server's CPU at every step that held (the median
    over the trials that reached it)."""
    trial = median_steps(group)
    measured, how = median_knee(group)
    predicted, predicted_how = predict_steps_knee(fit, trial)
    scenario = knee_scenario(fit)
    lo, hi = fit.fit_range.get(scenario, (0.0, math.inf))
    outside = not lo <= predicted * trial.inbound_per_s <= hi
    ok: bool | None = abs(predicted / measured - 1) <= KNEE_TOLERANCE if measured else False
    if how == NOT_REACHED:
        ok = None  # a lower bound is no knee to hold the prediction to
    quiet = predict_knee(fit, trial.inbound_per_s, trial.sla_ms or 0.0)
    checks = [
        _check(trial, "knee subs", predicted, measured, f"±{KNEE_TOLERANCE:.0%}", ok, outside,
               f"measured: {how}; predicted: {predicted_how}"),
        _check(trial, "knee subs, quiet host", quiet, measured, "-", None,
               not lo <= quiet * trial.inbound_per_s <= hi,
               "the model with a whole core per process (the plan's assumption)"),
    ]  # fmt: skip
    sla_us = (trial.sla_ms or 0.0) * 1000
    for step in trial.steps:
        if step.server_cores is None or step.p95_us > sla_us:
            continue
        deliveries = trial.inbound_per_s * step.subscribers
        cpu = predict_cpu(fit, scenario, trial.inbound_per_s, deliveries, host_of(step).server)
        beyond = not lo <= deliveries <= hi
        why = busy(step.server_wait) or client_bound(step.server_cores, step.harness_cores)
        checks.append(_check(
            trial, f"cpu cores @{step.subscribers} subs", cpu, step.server_cores,
            f"±{CPU_TOLERANCE:.0%}",
            _judged(abs(cpu / step.server_cores - 1) <= CPU_TOLERANCE, why), beyond,
            ", ".join(filter(None, [f"host share {host_of(step).server:.2f}", why]))))  # fmt: skip
    return checks


def check_trial(fit: Fit, trial: Trial, knee: float | None) -> list[Check]:
    """Predict one held-out trial (or point: the median of its trials; a capacity point's
    trials together: :func:`_knee_checks`); ``knee`` is the measured knee (subscribers) when known.
    A failed run is shown, not predicted: it measured no load the model could be held to."""
    if trial.failure:
        return [_check(trial, "run", None, math.nan, "-", None, False,
                       f"not predicted: {trial.failure}")]  # fmt: skip
    if trial.scenario == "capacity":
        return _knee_checks(fit, [trial])
    lo, hi = fit.fit_range.get(trial.scenario, (0.0, math.inf))
    outside = not lo <= trial.deliveries_per_s <= hi
    host = host_of(trial)
    why = busy(trial.run_queue_wait)
    share = f"host share server {host.server:.2f}, harness {host.harness:.2f}"
    checks = []
    if trial.cpu_cores is not None:
        cpu = predict_cpu(fit, trial.scenario, trial.inbound_per_s, trial.deliveries_per_s,
                          host.server)
        checks.append(_check(trial, "cpu cores", cpu, trial.cpu_cores, f"±{CPU_TOLERANCE:.0%}",
                             _judged(abs(cpu / trial.cpu_cores - 1) <= CPU_TOLERANCE, why),
                             outside, ", ".join(filter(None, [share, why]))))  # fmt: skip
    latency = predict_latency_us(fit, trial.scenario, trial.inbound_per_s, trial.fanout, host)
    below = knee is None or trial.fanout < knee if trial.scenario == "fanout" else True
    for q in QUANTILES:
        if q not in trial.latency_us:
            continue
        value = None if latency is None else latency[q]
        if q == "p95" and below:
            ok = value is not None and 1 / P95_FACTOR <= value / trial.latency_us[q] <= P95_FACTOR
            checks.append(_check(trial, "p95 µs", value, trial.latency_us[q],
                                 f"within {P95_FACTOR:g}x", _judged(ok, why), outside,
                                 why))  # fmt: skip
        else:
            note = "above the knee: no threshold" if q == "p95" else ""
            checks.append(_check(trial, f"{q} µs", value, trial.latency_us[q], "-", None,
                                 outside, note))  # fmt: skip
    if trial.throughput_per_s is not None:
        offered = trial.deliveries_per_s
        capacity = _saturation_rate(fit, trial, host) * trial.fanout
        checks.append(_check(trial, "throughput /s", min(offered, capacity),
                             trial.throughput_per_s, "-", None, outside))  # fmt: skip
    return checks


def _saturation_rate(fit: Fit, trial: Trial, host: Host = QUIET) -> float:
    """Inbound messages per second at which the slowest process on the path is full, at the
    costs of the trial's load."""
    scenario, fanout = trial.scenario, trial.fanout
    stages = [(fit.server, host.server)]
    if fit.harness is not None:
        stages.append((fit.harness, host.harness))
    rates = []
    for m, cpu_share in stages:
        per_message = m.inbound_s + fanout * m.delivery_at(trial.deliveries_per_s, scenario)
        speed = max(0.0, _left(m, scenario, cpu_share))
        rates.append(math.inf if per_message <= 0 else speed / per_message)
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
        points: dict[tuple[str, str], list[Trial]] = {}
        for t in held:
            if not t.failure:
                points.setdefault((t.scenario, t.params), []).append(t)
        knees = [median_knee(g) for (s, _), g in points.items() if s == "capacity"]
        knee = next((k for k, how in knees if how != NOT_REACHED), None)
        failed = [t for t in held if t.failure]  # shown one by one
        for group in sorted([*([t] for t in failed), *points.values()],
                            key=lambda g: (g[0].scenario, g[0].deliveries_per_s, g[0].trial)):
            medians = f"median of {len(group)} trials" if len(group) > 1 else ""
            found = (_knee_checks(fit, group) if group[0].scenario == "capacity"
                     and not group[0].failure else check_trial(fit, median_trial(group), knee))
            checks += [dataclasses.replace(c, note=", ".join(filter(None, [medians, c.note])))
                       for c in found]  # fmt: skip
    return Validation(tuple(checks), refused)


def _median(values: Sequence[float | None]) -> float | None:
    """The median of the known values (None when none is)."""
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def median_trial(group: Sequence[Trial]) -> Trial:
    """One held-out point's trials as one: the median of each figure (a single short trial is
    too noisy to hold a model to: ws echo CPU spread ±12% between 8 s trials of one point)."""
    if len(group) == 1:
        return group[0]
    quantiles = {q: _median([t.latency_us.get(q) for t in group]) for q in QUANTILES}
    return dataclasses.replace(
        group[0],
        cpu_cores=_median([t.cpu_cores for t in group]),
        harness_cores=_median([t.harness_cores for t in group]),
        run_queue_wait=_median([t.run_queue_wait for t in group]),
        harness_wait=_median([t.harness_wait for t in group]),
        latency_us={q: v for q, v in quantiles.items() if v is not None},
        throughput_per_s=_median([t.throughput_per_s for t in group]),
        achieved=_median([t.achieved for t in group]),
    )
