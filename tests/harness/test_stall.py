"""A server stalled for 1 s mid-run shows up as a ~1 s p99/max in the open-loop recorder
(coordinated omission would hide it: a closed-loop client simply stops sending)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from sobranie_bench.harness.recorder import decode, stats
from sobranie_bench.harness.runner import Plan, spawn_server
from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios.echo import part
from tests.conftest import SECRET, UNIT

STALL_SECONDS = 1.0


async def test_sigstop_stall_shows_as_a_one_second_tail() -> None:
    server = await spawn_server("ws", Plan(secret=SECRET))
    try:
        start = time.monotonic_ns() + int(2e9)
        ctx = PartContext(transport="ws", url=server.url,
                          params={"connections": 10, "payload": 48, "rate": 200}, index=0,
                          count=1, seed=1, start_ns=start, warmup=0.0, duration=4.0,
                          secret=SECRET, timeout=UNIT)

        async def stall() -> None:
            await asyncio.sleep((start - time.monotonic_ns()) / 1e9 + 1.0)
            os.kill(server.pid, signal.SIGSTOP)
            await asyncio.sleep(STALL_SECONDS)
            os.kill(server.pid, signal.SIGCONT)

        out, _ = await asyncio.gather(part(ctx), stall())
    finally:
        await server.stop()
    s = stats(decode(out["histograms"]["rtt"]["measured"]))
    assert out["counters"]["received"] == out["counters"]["sent"]
    # the first message sent into the stall waited the whole second
    assert s["max"] >= 0.9 * STALL_SECONDS * 1e6
    # a quarter of the run was stalled: far more than 1% of round trips saw a long wait
    assert s["p99"] >= 0.5 * STALL_SECONDS * 1e6
    assert s["p50"] < 0.5 * STALL_SECONDS * 1e6
