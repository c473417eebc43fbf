"""Validation: the SimPy instance model against closed-form M/M/1 and M/M/c results.

Each case feeds one Poisson stream of one-unit messages (exponential service) to an
instance with ``servers`` cores, which is exactly M/M/c, and sets the simulated mean wait
beside the Erlang C value. The simulated mean should be within a few percent with the
analytic value inside its 95% batch-means confidence interval, and Little's law L = lambda W
should hold over the measurement window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sobranie_bench.capacity.analytic import mm1_mean_wait, mmc_mean_wait
from sobranie_bench.capacity.instance import JobStream, simulate_instance

RANDOM_SEED = 7
SERVICE_RATE = 10_000.0  # messages per second per core: 100 us each, a ws echo's order
CASES = ((1, 0.5), (1, 0.8), (2, 0.8), (4, 0.7))  # (servers, utilisation)
JOBS = 400_000  # messages measured per case


@dataclass(frozen=True)
class ValidationRow:
    """Simulated versus analytic mean wait for one queue."""

    model: str
    """Queue in Kendall notation, e.g. ``"M/M/1"`` or ``"M/M/4"``."""
    servers: int
    """Servers (cores)."""
    arrival_rate: float
    """Poisson arrival rate, per second."""
    service_rate: float
    """Service rate of one server, per second."""
    utilisation: float
    """arrival_rate / (servers * service_rate)."""
    jobs: int
    """Messages measured after the warm-up."""
    simulated_mean_wait: float
    """Mean wait in queue from the simulation, seconds."""
    analytic_mean_wait: float
    """Mean wait in queue from the closed form (Erlang C), seconds."""
    ci95: tuple[float, float]
    """95% batch-means confidence interval of the simulated mean wait, seconds."""
    relative_error: float
    """(simulated - analytic) / analytic."""
    analytic_in_ci: bool
    """Whether the analytic value lies inside ci95."""
    time_average_in_system: float
    """L: time-average number in the instance over the measurement window."""
    arrival_rate_times_sojourn: float
    """lambda * W over the same window; equals L by Little's law."""
    littles_law_error: float
    """|L - lambda W| / L."""


def validate(
    cases: Sequence[tuple[int, float]] = CASES,
    jobs: int = JOBS,
    seed: int = RANDOM_SEED,
    service_rate: float = SERVICE_RATE,
) -> list[ValidationRow]:
    """Simulate each ``(servers, utilisation)`` case and compare with the closed form."""
    rows = []
    for servers, utilisation in cases:
        lam = utilisation * servers * service_rate
        result = simulate_instance(
            [JobStream("messages", lam, 1.0 / service_rate)], cores=servers, jobs=jobs, seed=seed
        )
        analytic = (
            mm1_mean_wait(lam, service_rate)
            if servers == 1
            else mmc_mean_wait(lam, service_rate, servers)
        )
        low, high = result.wait_ci95
        rows.append(
            ValidationRow(
                model=f"M/M/{servers}",
                servers=servers,
                arrival_rate=lam,
                service_rate=service_rate,
                utilisation=utilisation,
                jobs=jobs,
                simulated_mean_wait=result.mean_wait_s,
                analytic_mean_wait=analytic,
                ci95=(low, high),
                relative_error=(result.mean_wait_s - analytic) / analytic,
                analytic_in_ci=low <= analytic <= high,
                time_average_in_system=result.time_average_in_system,
                arrival_rate_times_sojourn=result.observed_arrival_rate * result.mean_sojourn_s,
                littles_law_error=result.littles_law_error,
            )
        )
    return rows
