"""The capacity scenario's steps: up until the SLA is missed, down when the first step missed."""

from __future__ import annotations

import time
from typing import Any

from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios.capacity import MIN_SUBSCRIBERS, next_step, part
from tests.conftest import SECRET, UNIT


def _walk(p: dict[str, Any], holds_up_to: int) -> list[int]:
    """The steps the scenario would run against a server that holds up to ``holds_up_to``."""
    measured: list[tuple[int, bool]] = []
    while (n := next_step(p, measured)) is not None:
        measured.append((n, n <= holds_up_to))
    return [n for n, _ in measured]


def test_steps_stop_at_the_first_miss_above() -> None:
    p = {"steps": [100, 300, 1000]}
    assert _walk(p, 500) == [100, 300, 1000]
    assert _walk(p, 5000) == [100, 300, 1000]  # every step held: the last is a bound
    assert _walk({**p, "until_knee": True}, 2000) == [100, 300, 1000, 1500, 2250]


def test_a_first_step_that_misses_steps_down_until_one_holds() -> None:
    assert _walk({"steps": [100, 300]}, 50) == [100, 67, 45]
    assert _walk({"steps": [100, 300]}, 0) == [100, 67, 45, 30, 20, 13]  # 9 < MIN_SUBSCRIBERS
    assert min(_walk({"steps": [100]}, 0)) >= MIN_SUBSCRIBERS
    assert _walk({"steps": [100], "min_subscribers": 50}, 0) == [100, 67]


def _ctx(server_url: str, **params: Any) -> PartContext:
    return PartContext(transport="ws", url=server_url,
                       params={"rate": 20, "payload": 16, **params}, index=0, count=1, seed=5,
                       start_ns=time.monotonic_ns(), warmup=0.1, duration=0.5, secret=SECRET,
                       timeout=UNIT)


async def test_a_missed_first_step_is_followed_by_fewer_subscribers(start_server) -> None:
    server = await start_server("ws")
    # no delivery is within a microsecond: every step misses, down to the smallest allowed
    out = await part(_ctx(server.url, steps=[12], sla_ms=0.001, min_subscribers=8))
    assert [s["subscribers"] for s in out["steps"]] == [8, 12]  # ordered by subscribers
    assert out["counters"]["max_clients_within_sla"] == 0
    assert not any(s.get("ceiling") for s in out["steps"])
    assert all(s["p95_us"] > 1 and s["lost"] == 0 and s["failures"] == 0 for s in out["steps"])


async def test_steps_that_all_hold_end_in_a_ceiling(start_server) -> None:
    server = await start_server("ws")
    out = await part(_ctx(server.url, steps=[4, 8], sla_ms=60_000))
    assert [s["subscribers"] for s in out["steps"]] == [4, 8]
    assert out["counters"]["max_clients_within_sla"] == 8
    assert out["steps"][-1].get("ceiling") is True
