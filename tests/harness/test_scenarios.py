"""The scenario contract (harness/scenarios/__init__.py): how a part meets the other parts
(``PartContext.together`` through the context's own barrier) and how a scenario's metrics reach
the summary (``Scenario.metrics``, called by ``results.metrics``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import pytest

from sobranie_bench.harness import figures
from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios.registry import registry


def context(**kw: Any) -> PartContext:
    return PartContext(transport="ws", url="http://127.0.0.1:1", params={}, index=0, count=2,
                       seed=1, start_ns=time.monotonic_ns(), warmup=0.0, duration=0.0,
                       secret="s", **kw)


def test_a_part_alone_goes_on_at_once() -> None:
    before = time.monotonic_ns()
    assert asyncio.run(context().together("ramped")) >= before


def test_a_part_meets_the_others_through_its_own_barrier() -> None:
    reached: list[str] = []
    go = time.monotonic_ns() + 20_000_000

    async def barrier(name: str) -> int:
        reached.append(name)
        return go

    ctx = context(barrier=barrier)
    assert asyncio.run(ctx.together("ramped")) == go
    # a context derived from it (a capacity step, a late start) meets the others the same way
    step = dataclasses.replace(ctx, params={"subscribers": 10}).started()
    assert asyncio.run(step.together("held")) == go
    assert reached == ["ramped", "held"]


def test_the_workers_spec_of_a_context_travels_as_json_and_gets_the_workers_barrier() -> None:
    async def barrier(name: str) -> int:
        return 7

    spec = json.loads(json.dumps({"ctx": dataclasses.asdict(context())}))  # as the runner sends
    ctx = PartContext(**{**spec["ctx"], "barrier": barrier})  # as harness/worker.py builds it
    assert ctx.barrier is barrier and ctx.url == "http://127.0.0.1:1"


def test_every_scenario_declares_its_metrics_and_results_asks_it() -> None:
    raw = {"scenario": "capacity", "counters": {"max_clients_within_sla": 300, "sla_ms": 500.0}}
    assert figures.metrics(raw) == {"max_clients_within_sla": (300, "clients"),
                                    "sla_ms": (500.0, "ms")}
    assert all(callable(s.metrics) for s in registry().values())


def test_a_scenario_nobody_declares_gets_the_common_metrics_only() -> None:
    raw = {"scenario": "gone", "counters": {}, "machine": {"cores": 2, "samples": [
        [0.0, 0.0, 0.0], [1.0, 1.0, 0.5]]}, "window": {"measure": 0.0, "end": 1.0}}
    assert figures.metrics(raw) == {"other_processes_cpu_cores": (pytest.approx(0.5), "cores")}
    assert figures.metrics({**raw, "error": "died"}) == {"run_failed": (1.0, "flag")}
