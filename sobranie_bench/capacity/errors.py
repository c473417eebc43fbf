"""Error bars: fitted costs into plans, and their bootstrap spread into process counts.

:func:`fitted_costs` turns a :class:`~sobranie_bench.capacity.fit.Fit` into the costs a plan
uses (CPU per inbound message and per delivery, idle CPU, and the measured knee of the
capacity scenario as the hard latency limit). :func:`with_error_bars` carries the bootstrap
draws of those costs through the closed-form limits by Monte Carlo: "13 ± 2 processes" is the
plan's count and the larger distance to the 5th or 95th percentile over the draws.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sobranie_bench.capacity.calibration import Figure, LatencyCurve, LatencyPoint, TransportCosts
from sobranie_bench.capacity.fit import Fit, Linear, Trial, host_of
from sobranie_bench.capacity.fleet import FleetPlan, Plan, limit_needs
from sobranie_bench.capacity.reality import NOT_REACHED, median_knee
from sobranie_bench.capacity.stats import percentile
from sobranie_bench.capacity.workload import FeatureLoad, aggregate_rates

MONTE_CARLO_DRAWS = 200


@dataclass(frozen=True)
class Knee:
    """Where a capacity trial's p95 crossed its SLA."""

    subscribers: float
    """Subscribers of one channel at the crossing (interpolated between the steps)."""
    rate: float
    """Publishes per second."""
    sla_ms: float
    """The p95 objective."""
    share: float = 1.0
    """Median CPU share the host gave the server over the steps up to the crossing."""


def _knee_curve(model: Linear, knee: Knee | None) -> LatencyCurve | None:
    """The measured knee as a one-point curve that ends at it: the message work one process
    did there, scaled to a whole core when the host gave it less (the model's speed is the
    share less the fixed cost), is the plan's hard latency limit."""
    if knee is None:
        return None
    fixed = model.idle
    work = model.cores(knee.rate, knee.rate * knee.subscribers) - fixed
    scale = (1 - fixed) / max(knee.share - fixed, 1e-3) if knee.share < 1 else 1.0
    work_us = (fixed + work * scale) * 1e6
    note = f" at a host share of {knee.share:.2f}, scaled to a whole core" if scale != 1 else ""
    return LatencyCurve(
        (LatencyPoint(work_us, knee.sla_ms * 1000, knee.rate * knee.subscribers * scale),),
        "measured",
        f"capacity scenario: p95 crossed {knee.sla_ms:g} ms at {knee.subscribers:,.0f} "
        f"subscribers x {knee.rate:g}/s (interpolated between steps){note}",
        ends_at_knee=True,
    )


def costs_from_model(
    base: TransportCosts, model: Linear, knee: Knee | None, note: str
) -> TransportCosts:
    """``base`` with its CPU figures (and knee) replaced by a fitted model's."""
    curve = _knee_curve(model, knee) or base.latency_curve
    return dataclasses.replace(
        base,
        cpu_us_per_inbound=Figure(model.inbound_s * 1e6, "us", "measured", note),
        cpu_us_per_delivery=Figure(model.delivery_s * 1e6, "us", "measured", note),
        echo_cpu_us_per_msg=Figure((model.inbound_s + model.delivery_s) * 1e6, "us",
                                   "measured", note),
        idle_cores=Figure(model.idle, "cores", "measured", note),
        latency_curve=curve,
    )


def measured_knees(trials: Sequence[Trial]) -> dict[str, Knee]:
    """Transport -> where its capacity trials' p95 crossed their SLA: the median of the
    trials' knees (:func:`~sobranie_bench.capacity.reality.median_knee`; trials whose every
    step held set no knee), with the median server share over their steps up to it."""
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        if t.scenario == "capacity" and t.sla_ms and not t.failure:
            groups.setdefault(t.transport, []).append(t)
    knees: dict[str, Knee] = {}
    for transport, group in groups.items():
        value, how = median_knee(group)
        if how != NOT_REACHED and not math.isnan(value):
            upto = [st for t in group for st in t.steps if st.subscribers <= value] or list(
                group[0].steps[:1])
            share = float(np.median([host_of(st).server for st in upto]))
            knees[transport] = Knee(value, group[0].inbound_per_s, group[0].sla_ms or 0.0,
                                    share)  # fmt: skip
    return knees


def fitted_costs(
    fits: Mapping[str, Fit],
    base: Mapping[str, TransportCosts],
    knees: Mapping[str, Knee],
) -> dict[str, TransportCosts]:
    """Every transport's costs, with the fitted ones where a fit exists."""
    out = dict(base)
    for transport, fit in fits.items():
        note = f"fit over {sum(r.trials for r in fit.residuals)} calibrate trials"
        out[transport] = costs_from_model(
            base[transport], fit.server, knees.get(transport), note
        )
    return out


def _loads(result: Plan, transport: str, features: tuple[str, ...]) -> list[FeatureLoad]:
    """The loads a fleet of ``result`` carries: by the workload's mapping, or (a what-if
    fleet) every feature over ``transport``."""
    for workload in (result.workload, result.workload.all_over(transport)):
        loads = [load for load in aggregate_rates(workload) if load.transport == transport]
        if tuple(load.feature for load in loads) == features:
            return loads
    raise ValueError(f"{transport}: no workload mapping carries {features}")


def with_error_bars(
    result: Plan,
    costs: Mapping[str, TransportCosts],
    fits: Mapping[str, Fit],
    knees: Mapping[str, Knee],
    draws: int = MONTE_CARLO_DRAWS,
) -> Plan:
    """``result`` with each fitted fleet's process count interval over ``draws`` bootstrap
    costs and its extrapolation flag. The draws go through the closed-form limits; the SimPy
    latency check runs on the central plan only, so the interval is moved by what that check
    added to the central count."""

    def count(model: Linear, base: TransportCosts, loads: list[FeatureLoad]) -> int:
        drawn = costs_from_model(base, model, knees.get(base.transport), "bootstrap draw")
        knee = drawn.latency_curve.work_within(result.slo_s * 1e6)
        needs = limit_needs(loads, drawn, result.workload, result.instance,
                            None if knee is None else knee * 1e-6)  # fmt: skip
        return max(needs.values()) + result.instance.spare_instances

    fleets = []
    for fleet in result.fleets:
        fit = fits.get(fleet.transport)
        if fit is None:
            fleets.append(fleet)
            continue
        loads = _loads(result, fleet.transport, fleet.features)
        base = costs[fleet.transport]
        shift = fleet.instances - count(fit.server, base, loads)
        counts = [count(model, base, loads) + shift for model in fit.draws[:draws]]
        interval = (int(percentile(counts, 0.05)), int(percentile(counts, 0.95)))
        knee = knees.get(fleet.transport)
        fitted_max = max([high for _, high in fit.fit_range.values()]
                         + ([knee.subscribers * knee.rate] if knee else []),
                         default=math.inf)  # fmt: skip
        per_process = fleet.deliveries_per_s / fleet.instances_needed
        fleets.append(dataclasses.replace(fleet, instances_interval=interval,
                                          extrapolation=per_process > fitted_max))  # fmt: skip
    return dataclasses.replace(result, fleets=tuple(fleets))


def processes_text(fleet: FleetPlan) -> str:
    """A fleet's process count with its error bar: ``13 ± 2`` (the larger distance to the
    5th or 95th percentile over the bootstrap), ``13`` without a fit, and ``extrapolation``
    when one process's load lies beyond the measured range."""
    text = str(fleet.instances)
    if fleet.instances_interval is not None:
        low, high = fleet.instances_interval
        text += f" ± {max(fleet.instances - low, high - fleet.instances, 0)}"
    return text + (" (extrapolation)" if fleet.extrapolation else "")
