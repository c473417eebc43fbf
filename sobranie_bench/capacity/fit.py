"""Fit the capacity model's unit costs to measured trials, with bootstrap error bars.

A trial is one harness run of one point (raw JSON, see :mod:`sobranie_bench.harness.results`).
The model of one server process (one event loop, at most one core) is linear in the work it is
offered, with a fixed cost per scenario::

    cores = fixed[scenario] + inbound_s * inbound/s + delivery_s(load) * deliveries/s

where an echo is one inbound message and one delivery (the reply) and a fan-out publish is one
inbound message and one delivery per subscriber. ``fixed`` is what the process spends on the
scenario's connections whatever the rate (timers, keep-alives, the loop's wake-ups): 50 echo
clients each sending now and then cost a loop wake-up per message that a fan-out burst shares,
so one intercept for both scenarios leaves ±15-20% residuals (measured). Fitted by least
squares on relative error over every fit trial of a transport (echo at several rates, fan-out
at several sizes), so the cost *per message* falls with the rate and the cost *per delivery*
with the fan-out: the fixed and per-publish work is spread over more messages. A line is one
constant cost per delivery, and a real process's is not: it rises as the loop fills and falls
when reads and writes batch near saturation. So a delivery's cost is a curve over the load
(:func:`with_curves`): at each fit point, the factor on the line's delivery cost that the
point's measured CPU calls for, interpolated between the points (in log load) and held at the
last point's beyond them. The capacity scenario has a curve of its own, from the capacity
trials of the calibration stepping up to their knee (:func:`step_trials`; at each step, the
median over them): a step is a fan-out in a
server and a harness that served every step before it, dearer than a fresh fan-out point,
and the knee needs the curve measured where the knee is. The harness's own CPU is fitted the
same way: it is the other queue on a benchmark's path, and validation predicts the benchmark.

Trials whose server waited in a run queue for a CPU more than ``MAX_RUN_QUEUE_WAIT`` of the
window are refused: their CPU and latency measure the machine's other load, not the server.
So are trials that failed (``Trial.failure``: a run in which every connection failed costs
almost nothing and would pass for a cheap point) and fit trials that delivered less than
``MIN_ACHIEVED`` of their offered load: the path fell behind (measured: sse at 600
subscribers, its one harness process full), and a server writing to readers that cannot keep
up pays for the backpressure (44 µs per delivery there against 31-36 below it), which is not
what the same server costs with clients that keep up.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sobranie_bench.capacity.stats import percentile
from sobranie_bench.harness import figures, results

MAX_RUN_QUEUE_WAIT = 0.10  # share of the window; above it a trial is refused
MIN_ACHIEVED = 0.99  # a fit trial that delivered less of its offered load is refused
FIT_PROFILE = "calibrate"
BOOTSTRAP_DRAWS = 1000
RANDOM_SEED = 42
QUANTILES = ("p50", "p95", "p99")


class CalibrationRefused(ValueError):
    """No trustworthy fit: too few fit points survived the run-queue check."""


@dataclass(frozen=True)
class Step:
    """One step of a capacity trial: a fan-out run at one subscriber count."""

    subscribers: int
    p95_us: float
    """95th-percentile one-way latency of the step, µs."""
    server_cores: float | None = None
    """Server CPU over the step's measured window / its length (None: not recorded)."""
    server_wait: float | None = None
    """Share of the step's window the server waited for a CPU."""
    harness_cores: float | None = None
    """Harness CPU over the step's window / its length."""
    harness_wait: float | None = None
    """Share of the step's window the harness waited for a CPU."""
    failed: bool = False
    """Connections failed or deliveries were lost at this step: it missed whatever its p95."""


@dataclass(frozen=True)
class Trial:
    """What one harness run of one point measured."""

    transport: str
    scenario: str
    """``echo``, ``fanout`` or ``capacity``."""
    params: str
    """Canonical ``k=v;k=v`` of the point."""
    trial: int
    profile: str
    """Harness profile: ``calibrate`` for fit points, anything else is held out."""
    inbound_per_s: float
    """Offered client messages per second (echoes, or publishes)."""
    deliveries_per_s: float
    """Offered deliveries per second (echo replies, or publishes x subscribers)."""
    fanout: int
    """Deliveries per inbound message (1 for echo)."""
    cpu_cores: float | None
    """Server CPU over the measured window / its length (schedstat run time)."""
    harness_cores: float | None
    """CPU of the harness processes over the window / its length."""
    run_queue_wait: float | None
    """Share of the window the server waited for a CPU (schedstat)."""
    latency_us: dict[str, float]
    """Measured latency quantiles (p50, p95, p99): echo round trip or fan-out one way, µs."""
    throughput_per_s: float | None
    """Echo replies, or deliveries, per second over the window."""
    steps: tuple[Step, ...] = ()
    """Capacity scenario: its steps, in order."""
    sla_ms: float | None = None
    """Capacity scenario: the p95 objective its steps were held to."""
    harness_wait: float | None = None
    """Share of the window the harness (the busiest of its processes) waited for a CPU."""
    ceiling: bool = False
    """Capacity scenario: every step held up to the scenario's bound (the knee is above)."""
    achieved: float | None = None
    """Delivered / offered over the window (echo replies, or fan-out deliveries)."""
    failure: str | None = None
    """Why the run measured nothing a model can be held to (the runner's error, connections
    that failed, nothing delivered); None when it ran as planned. Such a trial is refused
    from the fit and not predicted: its CPU is not the planned load's."""

    @property
    def held_out(self) -> bool:
        return self.profile != FIT_PROFILE

    @property
    def refused(self) -> bool:
        return self.run_queue_wait is not None and self.run_queue_wait > MAX_RUN_QUEUE_WAIT


@dataclass(frozen=True)
class Host:
    """The CPU share each process on the path got while runnable (1: a whole core)."""

    server: float = 1.0
    """The server's run / (run + run-queue wait) over the point's window."""
    harness: float = 1.0
    """The harness's (busiest process) share over the same window."""


QUIET = Host()


def share(cores: float | None, wait: float | None) -> float:
    """run / (run + wait), both as shares of a window; 1 when not measured."""
    if cores is None or wait is None or cores <= 0:
        return 1.0
    return min(1.0, cores / (cores + wait))


def host_of(trial: Trial | Step) -> Host:
    """The shares measured over a trial's (or a capacity step's) window."""
    if isinstance(trial, Step):
        return Host(share(trial.server_cores, trial.server_wait),
                    share(trial.harness_cores, trial.harness_wait))  # fmt: skip
    return Host(share(trial.cpu_cores, trial.run_queue_wait),
                share(trial.harness_cores, trial.harness_wait))  # fmt: skip


def failure_of(raw: dict[str, Any]) -> str | None:
    """Why a raw echo, fan-out or capacity result is not the point it planned, or None: the
    runner's error, connections that failed (all of them: a run that measured only an idle
    server, not a cheap one), or nothing delivered in the measured window."""
    if "error" in raw:
        return f"the run failed: {raw['error']}"
    scenario, p, c = raw["scenario"], raw["params"], raw.get("counters", {})
    if scenario == "capacity":
        first = (raw.get("steps") or [{}])[0]
        if first.get("failures", 0) and first["failures"] >= first["subscribers"]:
            return f"every connection of the first step failed ({first['failures']})"
        return None
    channels = int(p.get("channels", 1))
    wanted = (int(p.get("connections", 0)) if scenario == "echo"
              else int(p.get("subscribers", 0)) * channels + channels)  # and the publishers
    failed = int(c.get("connect_failures", 0))
    if failed and failed >= wanted:
        return f"every connection failed ({failed} of {wanted})"
    if failed:
        return f"{failed} of {wanted} connections failed: not the load planned"
    if not c.get("received_measured" if scenario == "echo" else "delivered_measured", 0):
        return "nothing was delivered in the measured window"
    return None


def cluster_size(raw: dict[str, Any]) -> int:
    """Instances of the cluster a raw result was measured on (1: one server)."""
    return int(raw.get("metadata", {}).get("cluster") or 1)


def trial_from_raw(raw: dict[str, Any]) -> Trial | None:
    """The trial one raw result holds (a failed run: with its ``failure`` and no figures);
    None for another scenario or a cluster's result (the fleet model's, see
    :mod:`~sobranie_bench.capacity.clustercheck`)."""
    scenario = raw["scenario"]
    if scenario not in ("echo", "fanout", "capacity") or cluster_size(raw) >= 2:
        return None
    failure = failure_of(raw)
    p, w = raw["params"], raw.get("window", {})
    m = figures.metrics(raw)  # a failed run's: only its flag
    harness_cores, harness_wait = _harness_load(raw, w)
    rate = float(p.get("rate", 0.0))
    fanout = 1 if scenario == "echo" else int(p.get("subscribers", 0)) * int(p.get("channels", 1))
    prefix = "rtt" if scenario == "echo" else "latency"
    steps: tuple[Step, ...] = ()
    if scenario == "capacity":
        steps = tuple(_step(raw, s) for s in raw.get("steps", []))
    wait = m.get("server_run_queue_wait_percent")
    return Trial(
        transport=raw["transport"],
        scenario=scenario,
        params=results.params_key(p),
        trial=int(raw["trial"]),
        profile=str(raw.get("profile", "")),
        inbound_per_s=rate,
        deliveries_per_s=rate * fanout,
        fanout=fanout,
        cpu_cores=m["server_cpu_cores"][0] if "server_cpu_cores" in m else None,
        harness_cores=harness_cores,
        run_queue_wait=None if wait is None else wait[0] / 100,
        latency_us={q: m[f"{prefix}_{q}_us"][0] for q in QUANTILES if f"{prefix}_{q}_us" in m},
        throughput_per_s=next(
            (m[k][0] for k in ("throughput_msgs_per_s", "delivered_per_s") if k in m), None
        ),
        steps=steps,
        sla_ms=float(p["sla_ms"]) if "sla_ms" in p else None,
        harness_wait=harness_wait,
        ceiling=bool(raw.get("steps") and raw["steps"][-1].get("ceiling")),
        achieved=m["achieved_percent_of_offered"][0] / 100
        if "achieved_percent_of_offered" in m else None,
        failure=failure,
    )


def _harness_load(raw: dict[str, Any], w: dict[str, float]) -> tuple[float | None, float | None]:
    """Harness CPU (all its processes, cores) and the busiest one's run-queue wait share over
    the window ``w``."""
    start, end = w.get("measure", 0.0), w.get("end", 0.0)
    names = results.harness_names(raw)
    cpu = [results.cpu_between(raw["resources"][n], start, end) for n in names]
    waits = [results.run_queue_wait(raw["resources"][n], start, end) for n in names]
    cores = sum(c for c in cpu if c is not None) / max(end - start, 1e-9) if cpu else None
    known = [x for x in waits if x is not None]
    return cores, max(known) if known else None


def _step(raw: dict[str, Any], step: dict[str, Any]) -> Step:
    """One capacity step, with the server's and harness's load over its window when the
    scenario recorded that window."""
    w = step.get("window")
    failed = bool(step.get("lost") or step.get("failures"))
    if not w:
        return Step(int(step["subscribers"]), float(step["p95_us"]), failed=failed)
    server = results.server_samples(raw)
    cpu = results.cpu_between(server, w["measure"], w["end"])
    length = max(w["end"] - w["measure"], 1e-9)
    harness_cores, harness_wait = _harness_load(raw, w)
    return Step(
        int(step["subscribers"]),
        float(step["p95_us"]),
        server_cores=None if cpu is None else cpu / length,
        server_wait=results.run_queue_wait(server, w["measure"], w["end"]),
        harness_cores=harness_cores,
        harness_wait=harness_wait,
        failed=failed,
    )


def load_trials(root: Any) -> list[Trial]:
    """Every echo, fan-out and capacity trial under a results root (or a run directory)."""
    from pathlib import Path

    return [t for raw in results.load_raw(Path(root)) if (t := trial_from_raw(raw)) is not None]


@dataclass(frozen=True)
class Linear:
    """cores = fixed[scenario] + inbound_s * inbound/s + delivery_s(load) * deliveries/s."""

    idle: float
    """Fixed cores of a process holding fan-out subscribers (the plan's process), cores."""
    inbound_s: float
    """CPU seconds per inbound message (parse, authorise, reply or publish)."""
    delivery_s: float
    """CPU seconds per delivery (encode once per publish is in inbound_s; the write here),
    the least-squares line's: what ``curve`` scales at a fan-out load."""
    fixed: tuple[tuple[str, float], ...] = ()
    """Per scenario, its fixed cores (``idle`` for a scenario not listed)."""
    curves: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()
    """Per scenario (``fanout``, ``capacity``), a delivery's cost as a function of the load:
    (deliveries/s, factor on ``delivery_s``) at each of its fit points, in increasing load;
    none: a constant cost."""

    def fixed_for(self, scenario: str | None) -> float:
        """The fixed cores of ``scenario`` (``idle`` when it was not fitted apart)."""
        return dict(self.fixed).get(scenario or "", self.idle)

    def curve(self, scenario: str | None) -> tuple[tuple[float, float], ...]:
        """The cost curve of ``scenario``: its own, else the fan-out's (a plan's process
        delivers fan-out); none for an echo (a reply is ``delivery_s``)."""
        if scenario == "echo":
            return ()
        curves = dict(self.curves)
        return curves.get(scenario or "") or curves.get(PLAN_SCENARIO, ())

    def delivery_at(self, deliveries_per_s: float, scenario: str | None = None) -> float:
        """CPU seconds per delivery at this load: ``delivery_s`` times the factor measured at
        the scenario's fit points around it (interpolated in log load; the nearest point's
        factor beyond them)."""
        curve = self.curve(scenario)
        if not curve:
            return self.delivery_s
        loads = [math.log(max(load, 1e-9)) for load, _ in curve]
        factor = float(np.interp(math.log(max(deliveries_per_s, 1e-9)), loads,
                                 [f for _, f in curve]))  # fmt: skip
        return self.delivery_s * factor

    def cores(
        self, inbound_per_s: float, deliveries_per_s: float, scenario: str | None = None
    ) -> float:
        return (self.fixed_for(scenario) + self.inbound_s * inbound_per_s
                + self.delivery_at(deliveries_per_s, scenario) * deliveries_per_s)  # fmt: skip

    def per_message_us(self, inbound_per_s: float, fanout: int) -> float:
        """CPU per delivered message at this rate and fan-out, µs (idle spread over them)."""
        deliveries = inbound_per_s * fanout
        return self.cores(inbound_per_s, deliveries) / deliveries * 1e6


PLAN_SCENARIO = "fanout"  # whose fixed cost is a planned process's idle (it holds subscribers)


def fit_linear(points: Sequence[tuple[str, float, float, float]]) -> Linear:
    """Least squares on relative error of ``(scenario, inbound/s, deliveries/s, cores)``
    points, one fixed cost per scenario; every coefficient kept non-negative (a negative cost
    is noise, not a saving)."""
    scenarios = sorted({p[0] for p in points})
    width = len(scenarios) + 2
    x = np.array([[*(1.0 if sc == name else 0.0 for name in scenarios), i, d]
                  for sc, i, d, _ in points])  # fmt: skip
    y = np.array([c for *_, c in points])
    if len(points) < width or np.linalg.matrix_rank(x) < width:
        raise CalibrationRefused(
            "a fit needs points at >= 2 inbound rates and >= 2 fan-outs (echo and fan-out "
            f"points), got {len(points)} usable trial(s)"
        )
    weights = 1.0 / np.maximum(y, 1e-6)
    active = list(range(width))
    while True:  # drop a coefficient that comes out negative and refit (NNLS, small)
        coef = np.zeros(width)
        sol, *_ = np.linalg.lstsq(x[:, active] * weights[:, None], y * weights, rcond=None)
        coef[active] = sol
        negative = [i for i in active if coef[i] < 0]
        if not negative:
            break
        active.remove(min(negative, key=lambda i: coef[i]))
    fixed = tuple((name, float(coef[k])) for k, name in enumerate(scenarios))
    idle = dict(fixed).get(PLAN_SCENARIO, max((v for _, v in fixed), default=0.0))
    return Linear(float(idle), float(coef[-2]), float(coef[-1]), fixed)


@dataclass(frozen=True)
class Residual:
    """A fit point: the measured mean against the fitted model and its line."""

    scenario: str
    params: str
    trials: int
    measured_cores: float
    fitted_cores: float
    """The model's cores here: the line with the cost curve (which passes through each fit
    point's mean)."""
    spread: tuple[float, float] = (0.0, 0.0)
    """Lowest and highest trial residual (fitted / measured - 1) at this point."""
    line_cores: float | None = None
    """The least-squares line's cores here, without the curve: what the curve corrects."""

    @property
    def error(self) -> float:
        return (self.fitted_cores - self.measured_cores) / self.measured_cores

    @property
    def line_error(self) -> float | None:
        if self.line_cores is None:
            return None
        return (self.line_cores - self.measured_cores) / self.measured_cores


@dataclass(frozen=True)
class Anchor:
    """One fit point's measured latency, median over its trials."""

    inbound_per_s: float
    deliveries_per_s: float
    fanout: int
    latency_us: dict[str, float]
    """p50, p95, p99 µs."""
    host: Host
    """The shares the point was measured at (median over its trials)."""


@dataclass(frozen=True)
class Fit:
    """One transport's fitted costs, their spread, and what they were fitted to."""

    transport: str
    server: Linear
    """The server process's CPU model."""
    harness: Linear | None
    """The harness's CPU model (the benchmark client), None when not sampled."""
    residuals: tuple[Residual, ...]
    """Per fit point: measured mean cores against the fit."""
    draws: tuple[Linear, ...]
    """Bootstrap refits (trials resampled within each point)."""
    anchors: dict[str, tuple[Anchor, ...]]
    """Per scenario, every fit point's measured latency, in increasing load: where the
    latency model takes its floor (client + kernel + scheduler) from."""
    refused: tuple[Trial, ...] = field(default=())
    """Fit trials left out: failed runs (``Trial.failure``), those that fell behind their
    offered load, then those whose server waited for a CPU too long."""
    fit_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per scenario, the lowest and highest deliveries/s fitted (beyond: extrapolation)."""

    def interval(self, attribute: str, level: float = 0.9) -> tuple[float, float]:
        """The bootstrap ``level`` interval of one :class:`Linear` attribute."""
        values = sorted(getattr(d, attribute) for d in self.draws)
        low = values[int((1 - level) / 2 * (len(values) - 1))]
        high = values[int((1 + level) / 2 * (len(values) - 1))]
        return low, high


def _by_point(trials: Iterable[Trial]) -> dict[tuple[str, str], list[Trial]]:
    points: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        points.setdefault((t.scenario, t.params), []).append(t)
    return points


def with_curves(line: Linear, points: Sequence[tuple[str, float, float, float]]) -> Linear:
    """``line`` with each delivering scenario's cost as a function of the load: at each load
    of ``points`` (``(scenario, inbound/s, deliveries/s, cores)``), the factor on
    ``delivery_s`` that the mean measured cores there call for once the fixed and inbound
    costs are paid. A line is one constant cost per delivery; a real process's rises as its
    loop fills and falls when reads and writes batch near saturation (measured in one ws
    capacity trial: 23.6 µs per delivery at 600 subscribers, 34-37 at 1,000-1,250, 23 at
    2,000; the harness 36 -> 21 µs from 1,000 to 2,000). What the fit points measured, between
    them, is what the model carries."""
    loads: dict[str, dict[float, list[float]]] = {}
    for scenario, inbound, deliveries, cores in points:
        if scenario != "echo" and deliveries > 0 and line.delivery_s > 0:
            paid = line.fixed_for(scenario) + line.inbound_s * inbound
            loads.setdefault(scenario, {}).setdefault(deliveries, []).append(
                (cores - paid) / deliveries)
    curves = tuple((scenario, tuple((load, max(float(np.mean(costs)), 0.0) / line.delivery_s)
                                    for load, costs in sorted(by_load.items())))
                   for scenario, by_load in sorted(loads.items()) if len(by_load) >= 2)
    return dataclasses.replace(line, curves=curves)  # fmt: skip


LINE_SCENARIOS = ("echo", "fanout")  # the least-squares line's points; capacity steps: a curve


def _linear_of(trials: Sequence[Trial], harness: bool = False) -> Linear:
    """The fit over ``trials``: the least-squares line over the echo and fan-out points (each
    point's median over its trials: one trial disturbed by the machine, ws echo 0.073 cores
    against 0.033 and 0.048 at 200/s, does not pull the line) at the deliveries the trials
    actually made (a process that fell behind its offered load was paid for what it
    delivered), then the cost curves over every delivering point's offered load
    (the points' axis; a capacity step's too: it is a fan-out in a process that served the
    steps before it, measured dearer than a fresh fan-out point of the same size)."""

    def rows(delivered: bool) -> list[tuple[str, float, float, float]]:
        out = []
        for (scenario, _), group in _by_point(trials).items():
            got = [(t.inbound_per_s, (t.throughput_per_s if delivered else None)
                    or t.deliveries_per_s, t.harness_cores if harness else t.cpu_cores)
                   for t in group]  # fmt: skip
            got = [(i, d, c) for i, d, c in got if c is not None and c > 0]
            if got:
                inbound, deliveries, cores = (float(np.median(v)) for v in zip(*got, strict=True))
                out.append((scenario, inbound, deliveries, cores))
        return out

    line = fit_linear([r for r in rows(delivered=True) if r[0] in LINE_SCENARIOS])
    return with_curves(line, rows(delivered=False))


def _step_trial(trial: Trial, step: Step) -> Trial:
    """One step of a capacity trial as a trial of scenario ``capacity`` at its fan-out (its
    CPU, run-queue wait and p95 over the step's window)."""
    kept = [item for item in trial.params.split(";") if item.split("=")[0] in ("payload", "rate")]
    return dataclasses.replace(
        trial, params=";".join([*kept, f"subscribers={step.subscribers}"]),
        deliveries_per_s=trial.inbound_per_s * step.subscribers, fanout=step.subscribers,
        cpu_cores=step.server_cores, harness_cores=step.harness_cores,
        run_queue_wait=step.server_wait, harness_wait=step.harness_wait,
        latency_us={"p95": step.p95_us}, throughput_per_s=trial.inbound_per_s * step.subscribers,
        steps=(), achieved=None)  # fmt: skip


def step_trials(trial: Trial) -> list[Trial]:
    """A fit capacity trial's steps, each as a trial (:func:`_step_trial`): the points of the
    capacity scenario's cost curve and latency floor. They are the steps that held the SLA and
    the first one over it, when it lost nothing: its CPU is what the load cost a process that
    still kept up (it batches near saturation: ws 42 µs per delivery at 1,100 subscribers, 30
    at 1,600 in one trial, sse 52 at 500 and 36 at 700), and its p95 is where the floor
    reaches the SLA. A step that failed, or any step after the first miss, is left out: a
    process past its knee runs what it is given, not what the load asks."""
    sla_us = (trial.sla_ms or 0.0) * 1000
    kept = []
    for s in trial.steps:
        if s.failed or s.server_cores is None:
            break
        kept.append(_step_trial(trial, s))
        if s.p95_us > sla_us:
            break
    return kept


def fit_transport(
    trials: Sequence[Trial],
    max_wait: float = MAX_RUN_QUEUE_WAIT,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = RANDOM_SEED,
) -> Fit:
    """Fit one transport's fit trials (profile ``calibrate``); refuse when too few survive."""
    fit_trials = [t for t in trials if not t.held_out and t.scenario in LINE_SCENARIOS]
    fit_trials += [s for t in trials if not t.held_out and t.scenario == "capacity"
                   and not t.failure for s in step_trials(t)]  # fmt: skip
    if not fit_trials:
        raise CalibrationRefused("no fit trials (run `sobranie-bench capacity calibrate`)")
    transport = fit_trials[0].transport
    failed = [t for t in fit_trials if t.failure]
    behind = [t for t in fit_trials if not t.failure and t.achieved is not None
              and t.achieved < MIN_ACHIEVED]  # fmt: skip
    waited = [t for t in fit_trials if t.run_queue_wait is not None and t.run_queue_wait > max_wait
              and not t.failure and t not in behind]  # fmt: skip
    usable = [t for t in fit_trials if t not in waited and t not in behind and not t.failure
              and t.cpu_cores is not None]  # fmt: skip
    points = _by_point(usable)
    try:
        sizes = {sc: sum(1 for s, _ in points if s == sc) for sc in ("echo", "fanout")}
        if min(sizes.values()) < 2:  # the costs are not identifiable (rank from noise only)
            raise CalibrationRefused(
                f"a fit needs >= 2 echo rates and >= 2 fan-out sizes, got {sizes['echo']} and "
                f"{sizes['fanout']} usable")  # fmt: skip
        server = _linear_of(usable)
    except CalibrationRefused as error:
        why = []
        if failed:
            why.append(f"{len(failed)} of {len(fit_trials)} fit trials failed (" + ", ".join(
                f"{t.scenario} {t.params} #{t.trial}: {t.failure}" for t in failed[:3]) + ")")
        if behind:
            why.append(f"{len(behind)} fell behind their offered load (" + ", ".join(
                f"{t.scenario} {t.params} #{t.trial}: {t.achieved:.1%}" for t in behind[:3])
                + ")")  # fmt: skip
        if waited:
            worst = ", ".join(
                f"{t.scenario} {t.params} #{t.trial}: {t.run_queue_wait:.0%}"
                for t in sorted(waited, key=lambda t: -(t.run_queue_wait or 0))[:6]
            )
            why.append(f"{len(waited)} of {len(fit_trials)} fit trials had the server waiting "
                       f"for a CPU more than {max_wait:.0%} of the window ({worst}); the "
                       "machine is busy: measure again when it is quiet")  # fmt: skip
        raise CalibrationRefused(
            f"{transport}: calibration refused: {'; '.join(why) or 'too few fit trials'} "
            f"({error})"
        ) from None
    harness = None
    if all(t.harness_cores for t in usable):
        harness = _linear_of(usable, harness=True)
    rng = random.Random(seed)
    boot = []
    for _ in range(draws):
        sample = [rng.choice(group) for group in points.values() for _ in group]
        boot.append(_linear_of(sample))
    line = dataclasses.replace(server, curves=())
    residuals = tuple(
        Residual(
            scenario,
            params,
            len(group),
            float(np.mean([t.cpu_cores for t in group if t.cpu_cores is not None])),
            server.cores(group[0].inbound_per_s, group[0].deliveries_per_s, scenario),
            _spread(server, group),
            line.cores(group[0].inbound_per_s, group[0].deliveries_per_s, scenario),
        )
        for (scenario, params), group in sorted(
            points.items(), key=lambda item: (item[0][0], item[1][0].deliveries_per_s))
    )
    anchors: dict[str, tuple[Anchor, ...]] = {}
    fit_range: dict[str, tuple[float, float]] = {}
    for scenario in (*LINE_SCENARIOS, "capacity"):
        groups = sorted((g for (s, _), g in points.items() if s == scenario),
                        key=lambda g: g[0].deliveries_per_s)  # fmt: skip
        if not groups:
            continue
        fit_range[scenario] = (groups[0][0].deliveries_per_s, groups[-1][0].deliveries_per_s)
        anchors[scenario] = tuple(_anchor(g) for g in sorted(
            groups, key=lambda g: g[0].deliveries_per_s))
    return Fit(
        transport=transport,
        server=server,
        harness=harness,
        residuals=residuals,
        draws=tuple(boot),
        anchors=anchors,
        refused=tuple(failed + behind + waited),
        fit_range=fit_range,
    )


def _anchor(group: Sequence[Trial]) -> Anchor:
    hosts = [host_of(t) for t in group]
    return Anchor(
        group[0].inbound_per_s, group[0].deliveries_per_s, group[0].fanout,
        {q: float(np.median([t.latency_us[q] for t in group if q in t.latency_us]))
         for q in QUANTILES if any(q in t.latency_us for t in group)},
        Host(float(np.median([h.server for h in hosts])),
             float(np.median([h.harness for h in hosts]))))  # fmt: skip


def _spread(model: Linear, group: Sequence[Trial]) -> tuple[float, float]:
    errors = [model.cores(t.inbound_per_s, t.deliveries_per_s, t.scenario) / t.cpu_cores - 1
              for t in group if t.cpu_cores]  # fmt: skip
    return (min(errors), max(errors)) if errors else (0.0, 0.0)


def fit_all(
    trials: Sequence[Trial], max_wait: float = MAX_RUN_QUEUE_WAIT, seed: int = RANDOM_SEED
) -> dict[str, Fit | CalibrationRefused]:
    """One fit (or the reason it was refused) per transport with fit trials."""
    out: dict[str, Fit | CalibrationRefused] = {}
    for transport in sorted({t.transport for t in trials if not t.held_out}):
        mine = [t for t in trials if t.transport == transport]
        try:
            out[transport] = fit_transport(mine, max_wait, seed=seed)
        except CalibrationRefused as error:
            out[transport] = error
    return out


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median and the 5th and 95th percentiles of ``values``."""
    return percentile(values, 0.5), percentile(values, 0.05), percentile(values, 0.95)
