"""churn: clients connect and disconnect at a steady rate while messages flow.

Steady subscribers measure delivery latency and loss while churners connect, subscribe, stay a
short while and leave; the connect time and failures of churners are recorded too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sobranie_bench.harness.load import Schedule, open_loop
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.results import latency_rows
from sobranie_bench.harness.scenarios import (
    PartContext,
    Scenario,
    close_all,
    connect_all,
    drain,
    padding,
    probe,
    quiet,
    sleep_until,
)
from sobranie_bench.harness.scenarios.fanout import Tally, delivery_rows


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    channel = f"churn:{ctx.seed}"
    latency, connect = Recorder(), Recorder()
    tallies = [Tally() for _ in ctx.share(int(p["subscribers"]))]

    def steady(tally: Tally) -> Any:
        def on_envelope(env: dict[str, Any]) -> None:
            if env["type"] == "message" and tally.see(env["id"]):
                latency.record_ns(env["data"]["t"])
        return on_envelope

    subs = [ctx.client(f"steady-{i}", on_envelope=steady(t)) for i, t in enumerate(tallies)]
    failed = await connect_all(subs, [[channel]] * len(subs))
    pub = ctx.client(f"churn-pub-{ctx.index}", on_envelope=lambda env: None)
    await pub.connect()
    ctx = ctx.started()
    latency.measure_from_ns = connect.measure_from_ns = ctx.measure_ns
    acked = 0
    churned = churn_failures = 0
    tasks: list[asyncio.Task[None]] = []
    rng = ctx.rng()
    pad = padding(int(p["payload"]), rng)

    async def churner(i: int, intended: int) -> None:
        nonlocal churned, churn_failures
        client = ctx.client(f"churn-{ctx.index}-{i}", reconnect=False,
                            on_envelope=lambda env: None)
        try:
            await client.connect([channel])
            connect.record_ns(intended)
            churned += 1
            await asyncio.sleep(float(p["lifetime"]))
        except Exception:  # noqa: BLE001 - counted
            churn_failures += 1
        finally:
            await client.close()

    async def churn(i: int, intended: int) -> None:
        tasks.append(asyncio.ensure_future(churner(i, intended)))

    async def publish(i: int, intended: int) -> None:
        async def one() -> None:
            nonlocal acked
            await pub.publish(channel, probe(i, intended, pad))
            acked += 1
        tasks.append(asyncio.ensure_future(one()))

    await sleep_until(ctx.start_ns)
    span = ctx.warmup + ctx.duration
    await asyncio.gather(
        open_loop(Schedule(float(p["churn_rate"]) / ctx.count), churn, start_ns=ctx.start_ns,
                  duration=span, rng=rng),
        open_loop(Schedule(float(p["rate"]) / ctx.count), publish, start_ns=ctx.start_ns,
                  duration=span, rng=rng))
    await asyncio.gather(*tasks, return_exceptions=True)
    await drain(lambda: all(t.unique >= acked for t in tallies), timeout=min(5.0, ctx.timeout))
    await quiet(lambda: sum(t.unique for t in tallies), timeout=2.0, still=0.2)
    end = time.monotonic()
    await close_all([*subs, pub])
    return {"histograms": {"latency": latency.encoded(), "connect": connect.encoded()},
            "counters": {"published": acked, "subscribers": len(subs),
                         "delivered": sum(t.unique for t in tallies),
                         "duplicated": sum(t.duplicates for t in tallies),
                         "churned": churned, "churn_failures": churn_failures,
                         "connect_failures": failed},
            "times": {"load_end": end, **ctx.milestones()}}


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """churn rows: the steady subscribers' deliveries (:func:`fanout.delivery_rows`; lost:
    every publish owed to every one of them), the churners' connect times and failures."""
    c = raw["counters"]
    m = delivery_rows(raw, c["published"] * c["subscribers"] - c["delivered"])
    m.update(latency_rows("connect", raw["histograms"]["connect"]["measured"]))
    m["churned"] = (c["churned"], "count")
    m["churn_failures"] = (c["churn_failures"], "count")
    return m


SCENARIO = Scenario(
    name="churn", doc="connect/disconnect at a steady rate while messages flow",
    part=part, metrics=metrics,
    grid={
        "ci": [{"subscribers": 20, "churn_rate": 20, "lifetime": 0.5, "rate": 20,
                "payload": 64}],
        "standard": [{"subscribers": 50, "churn_rate": 25, "lifetime": 1.0, "rate": 20,
                      "payload": 64}],
        "quick": [{"subscribers": 200, "churn_rate": 50, "lifetime": 2.0, "rate": 50,
                   "payload": 64}],
        "full": [{"subscribers": 1000, "churn_rate": cr, "lifetime": 5.0, "rate": 100,
                  "payload": 64} for cr in (50, 200)],
    },
    timing={"ci": (0.3, 1.0), "standard": (0.3, 1.5), "quick": (2.0, 10.0),
            "full": (5.0, 30.0)},
    headline=[("latency_p99_us", "p99 µs"), ("connect_p50_us", "connect p50 µs"),
              ("lost", "lost"), ("churn_failures", "failed")],
)
