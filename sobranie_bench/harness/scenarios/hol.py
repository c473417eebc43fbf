"""hol: head-of-line blocking between independent flows on one connection, under loss.

``flows`` channels each get messages at ``rate`` per second from one publisher. The same
messages reach two groups of subscribers on the client side of the lab's link: ``shared`` users
hold one connection subscribed to every flow (a loss on it delays every flow behind the lost
packet), ``split`` users hold one connection per flow (a loss delays only its own flow). The
publisher's side is common to both, so the difference between the two latency distributions is
what sharing one ordered connection costs. Needs ``--network`` (on loopback nothing is lost).

WebTransport streams per flow, WebRTC unordered channels and datagrams would be the transports'
own answer to this; the reference servers deliver every message on one ordered stream per
connection today, so this scenario measures that stream against one connection per flow.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sobranie_bench.harness.load import Schedule, open_loop
from sobranie_bench.harness.recorder import Recorder
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


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    flows, users = int(p["flows"]), int(p["users"])
    channels = [f"hol:{ctx.seed}-{ctx.start_ns}-{f}" for f in range(flows)]
    recs = {"shared": Recorder(), "split": Recorder()}
    got = {"shared": 0, "split": 0}

    def on(group: str) -> Any:
        def on_envelope(env: dict[str, Any]) -> None:
            if env["type"] == "message":
                got[group] += 1
                recs[group].record_ns(env["data"]["t"])
        return on_envelope

    shared = [ctx.client(f"hol-shared-{u}", on_envelope=on("shared")) for u in range(users)]
    split = [ctx.client(f"hol-split-{u}-{f}", on_envelope=on("split"))
             for u in range(users) for f in range(flows)]
    pub = ctx.client("hol-pub", on_envelope=lambda env: None)
    failed = await connect_all(shared, [channels] * users)
    failed += await connect_all(split, [[channels[f]] for _ in range(users)
                                        for f in range(flows)])
    failed += await connect_all([pub])
    ctx = ctx.started()
    for rec in recs.values():
        rec.measure_from_ns = ctx.measure_ns
    pad = padding(int(p["payload"]), ctx.rng())
    in_flight: set[asyncio.Future[Any]] = set()
    published = 0

    async def send(i: int, intended: int) -> None:
        nonlocal published
        fut = pub.publish_nowait(channels[i % flows], probe(i, intended, pad))
        published += 1
        in_flight.add(fut)
        fut.add_done_callback(in_flight.discard)

    await sleep_until(ctx.start_ns)
    await open_loop(Schedule(float(p["rate"]) * flows), send, start_ns=ctx.start_ns,
                    duration=ctx.warmup + ctx.duration, rng=ctx.rng())
    await drain(lambda: not in_flight, timeout=ctx.timeout)
    await quiet(lambda: got["shared"] + got["split"], timeout=ctx.timeout)
    end = time.monotonic()
    await close_all([*shared, *split, pub])
    return {"histograms": {name: rec.encoded() for name, rec in recs.items()},
            "counters": {"published": published, "flows": flows, "users": users,
                         "delivered_shared": got["shared"], "delivered_split": got["split"],
                         "connect_failures": failed},
            "times": {"load_end": end, **ctx.milestones()}}


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """hol rows: latency percentiles of each group, the p99 ratio shared / split, and what was
    delivered of what each group was owed."""
    from sobranie_bench.harness.results import _latency_rows

    h, c = raw["histograms"], raw["counters"]
    m: dict[str, tuple[float, str]] = {}
    for group in ("shared", "split"):
        m.update(_latency_rows(group, h[group]["measured"]))
        owed = c["published"] * c["users"]
        m[f"{group}_delivered_percent"] = (100 * c[f"delivered_{group}"] / max(owed, 1), "%")
    if m.get("split_p99_us", (0.0, ""))[0] > 0:
        m["hol_p99_ratio"] = (m["shared_p99_us"][0] / m["split_p99_us"][0], "ratio")
    m["connect_failures"] = (c["connect_failures"], "count")
    return m


SCENARIO = Scenario(
    name="hol", doc="head-of-line blocking: flows sharing one connection vs one connection per "
    "flow, under the link's loss (needs --network)",
    part=part,
    grid={"ci": [{"flows": 4, "users": 3, "rate": 25, "payload": 200}],
          "quick": [{"flows": 8, "users": 10, "rate": 25, "payload": 200}],
          "full": [{"flows": f, "users": 20, "rate": 25, "payload": 200} for f in (4, 16)]},
    timing={"ci": (0.5, 5.0), "quick": (2.0, 20.0), "full": (5.0, 60.0)},
    workers=False,
    headline=[("shared_p99_us", "one conn p99 µs"), ("split_p99_us", "conn per flow p99 µs"),
              ("hol_p99_ratio", "p99 ratio")],
    network=True,
)
