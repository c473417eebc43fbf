"""Capacity models for Sobranie's real-time features, calibrated from the benchmark summary.

Notebook entry points:

- :func:`calibrate` - per-transport costs from ``results/summary.csv`` (fallbacks marked)
- :func:`plan` - instances, memory, egress and Redis load per transport for N online users
- :func:`storm` - a reconnect storm with no jitter, full jitter or token-bucket admission
- :func:`validate` - the SimPy instance model against M/M/1 and M/M/c (Erlang C)
- :mod:`~sobranie_bench.capacity.fit` / :mod:`~sobranie_bench.capacity.reality` - costs fitted
  to ``capacity calibrate``'s trials, and held-out validation against measurement
- :mod:`~sobranie_bench.capacity.tables` - the fit and validation tables, plans with error bars
- :func:`scaling_table` - how the models' run time grows with online users
"""

from sobranie_bench.capacity.analytic import erlang_c, mm1_mean_wait, mmc_mean_wait
from sobranie_bench.capacity.calibration import TransportCosts, calibrate
from sobranie_bench.capacity.fleet import (
    FleetPlan,
    Infeasible,
    InfeasibleFleet,
    InstanceSpec,
    Plan,
    RedisSpec,
    plan,
    scaling_table,
    simulate_fleet_hour,
)
from sobranie_bench.capacity.instance import JobStream, simulate_instance
from sobranie_bench.capacity.storm import StormResult, storm
from sobranie_bench.capacity.validation import ValidationRow, validate
from sobranie_bench.capacity.workload import Workload, aggregate_rates

__all__ = [
    "FleetPlan",
    "Infeasible",
    "InfeasibleFleet",
    "InstanceSpec",
    "JobStream",
    "Plan",
    "RedisSpec",
    "StormResult",
    "TransportCosts",
    "ValidationRow",
    "Workload",
    "aggregate_rates",
    "calibrate",
    "erlang_c",
    "mm1_mean_wait",
    "mmc_mean_wait",
    "plan",
    "scaling_table",
    "simulate_fleet_hour",
    "simulate_instance",
    "storm",
    "validate",
]
