"""Every declared scenario, by name: add a scenario module's ``SCENARIO`` here."""

from __future__ import annotations

from sobranie_bench.harness.scenarios import (
    Scenario,
    browser,
    capacity,
    churn,
    connections,
    echo,
    fanout,
    first_message,
    hol,
    overhead,
    reconnect,
    scaleout,
)


def registry() -> dict[str, Scenario]:
    """Every scenario, by name."""
    declared = [m.SCENARIO for m in (echo, fanout, connections, overhead, churn, capacity,
                                     first_message, hol, reconnect, browser)]
    return {s.name: s for s in [*declared, scaleout.FAILOVER, scaleout.BACKPLANE]}
