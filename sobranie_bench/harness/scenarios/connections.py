"""connections: ramp to N idle subscribers at a connect rate, then hold them idle.

Each connect is timed from its intended start to the server's ``hello`` (handshake round trips
and time to first message included). The runner fits the server's RSS against the number of
open connections (bytes per connection is the slope, not one division) and reads the CPU the
idle connections cost while held.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sobranie_bench.harness.load import Schedule, open_loop
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.scenarios import PartContext, Scenario, close_all, sleep_until


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    mine = list(ctx.share(int(p["connections"])))
    rec = Recorder(0)  # every connect is data; there is no warm-up in a ramp
    clients = [ctx.client(f"idle-{i}", reconnect=False, on_envelope=lambda env: None)
               for i in mine]
    connected_at: list[float] = []
    failures = 0
    tasks = []

    async def connect(client: Any, intended: int) -> None:
        nonlocal failures
        try:
            await client.connect(["presence"] if p.get("subscribe") else ())
        except Exception:  # noqa: BLE001 - a failed connect is a result
            failures += 1
            return
        rec.record_ns(intended)
        connected_at.append(time.monotonic())

    async def start_one(i: int, intended: int) -> None:
        tasks.append(asyncio.ensure_future(connect(clients[i], intended)))

    rate = float(p["connect_rate"]) / ctx.count
    await sleep_until(ctx.start_ns)
    ramp_start = time.monotonic()
    await open_loop(Schedule(rate), start_one, start_ns=ctx.start_ns,
                    duration=len(clients) / rate + 1.0, rng=ctx.rng(), max_count=len(clients))
    await asyncio.gather(*tasks)
    ramp_end = time.monotonic()
    await asyncio.sleep(float(p.get("hold", 2.0)))
    hold_end = time.monotonic()
    await close_all(clients)
    return {"histograms": {"connect": rec.encoded()},
            "counters": {"connections": len(clients), "connected": len(connected_at),
                         "failures": failures},
            "series": {"connected_at": sorted(round(t, 4) for t in connected_at)},
            "times": {"ramp_start": ramp_start, "ramp_end": ramp_end, "hold_end": hold_end}}


SCENARIO = Scenario(
    name="connections", doc="ramp to N idle connections: connect time, failures, memory per "
                            "connection (RSS slope), keep-alive CPU",
    part=part,
    grid={
        "ci": [{"connections": 300, "connect_rate": 300, "hold": 1.0}],
        "standard": [{"connections": 500, "connect_rate": 500, "hold": 0.5}],
        "quick": [{"connections": 2000, "connect_rate": 500, "hold": 3.0}],
        "full": [{"connections": 10000, "connect_rate": 500, "hold": 10.0}],
    },
    timing={"ci": (0.0, 0.0), "standard": (0.0, 0.0), "quick": (0.0, 0.0),
            "full": (0.0, 0.0)},
    load_seconds=lambda p: int(p["connections"]) / float(p["connect_rate"]) + float(p["hold"]),
    headline=[("connect_p50_us", "connect p50 µs"), ("connect_p99_us", "p99 µs"),
              ("server_rss_bytes_per_conn", "B/conn"), ("failures", "failed")],
)
