"""hol: head-of-line blocking between independent flows on one connection, under loss.

``flows`` channels each get ``rate`` messages per second from publishers beside the server
(:func:`~sobranie_bench.netlab.lab.beside_server`: their traffic never crosses the emulated
link); message *k* of every channel is published at the same moment (round *k*). Behind the link,
``users`` connections per *mode* subscribe to every flow, each mode one of the transport's
answers to "several flows on one connection" (:class:`~sobranie_contract.framing.Delivery`,
chosen by the client when it connects):

- ``ordered``: every flow on the connection's one ordered stream (a WebSocket's TCP stream,
  WebTransport's envelope stream, WebRTC's ``sobranie`` channel): a lost packet holds up every
  flow behind it;
- ``per_channel``: each flow on a stream of its own (WebTransport: one QUIC stream per
  channel): a lost packet holds up only its flow;
- ``unreliable``: best effort, unordered (WebTransport datagrams, WebRTC's unordered
  ``sobranie-deliveries`` channel): nothing waits, what is lost stays lost;
- ``split``: the application's own way out on any transport, one ordered connection per flow.

Every mode hears the same publishes at the same moment over the same link. Per mode: the
latency of every message, the latency of the *bystanders* (in each round of a connection, the
messages other than its slowest one, when all arrived: the flows that did not lose the packet
that delayed the round, if one was lost), and the delivered share of what was owed. Under
head-of-line blocking the bystanders wait too; without it their p99 stays near the link's delay.
Needs ``--network`` (on loopback nothing is lost).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from typing import Any

from sobranie_bench.clients import Client
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.results import latency_rows
from sobranie_bench.harness.scenarios import (
    PartContext,
    Scenario,
    close_all,
    connect_all,
    drain,
    quiet,
    sleep_until,
)
from sobranie_bench.harness.scenarios.fanout import publishing
from sobranie_bench.netlab.lab import beside_server
from sobranie_contract.framing import Delivery

SPLIT = "split"
"""The mode holding one ordered connection per flow."""
MODES = (Delivery.ORDERED, Delivery.PER_CHANNEL, Delivery.UNRELIABLE, SPLIT)


def mode_name(mode: str) -> str:
    """A mode as it appears in metric names (``per-channel`` -> ``per_channel``)."""
    return mode.replace("-", "_")


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    flows, users = int(p["flows"]), int(p["users"])
    channels = [f"hol:{ctx.seed}-{ctx.start_ns}-{f}" for f in range(flows)]
    modes = [m for m in MODES if m == SPLIT or m in ctx.deliveries]
    # (mode, user, round) -> (intended, arrived) ns of each distinct message of that round
    rounds: dict[tuple[str, int, int], dict[str, tuple[int, int]]] = {}
    got = dict.fromkeys(modes, 0)

    def on(mode: str, user: int) -> Any:
        def on_envelope(env: dict[str, Any]) -> None:
            if env["type"] == "message":
                data = env["data"]
                seen = rounds.setdefault((mode, user, int(data["seq"])), {})
                if env["channel"] not in seen:
                    seen[env["channel"]] = (int(data["t"]), time.monotonic_ns())
                    got[mode] += 1
        return on_envelope

    groups: list[tuple[list[Client], list[list[str]]]] = []
    for mode in modes:
        if mode == SPLIT:
            groups.append(([ctx.client(f"hol-split-{u}-{f}", on_envelope=on(mode, u))
                            for u in range(users) for f in range(flows)],
                           [[channels[f]] for _ in range(users) for f in range(flows)]))
        else:
            groups.append(([ctx.client(f"hol-{mode}-{u}", on_envelope=on(mode, u),
                                       delivery=mode) for u in range(users)],
                           [channels] * users))
    failed = 0
    for clients, subscribed in groups:
        failed += await connect_all(clients, subscribed)
    started: concurrent.futures.Future[PartContext] = concurrent.futures.Future()
    total = dataclasses.replace(ctx, params={**p, "rate": float(p["rate"]) * flows})
    side = asyncio.ensure_future(beside_server(lambda: publishing(total, channels, started)))
    ctx = await asyncio.wrap_future(started)
    await sleep_until(ctx.end_ns)
    acked, pub_failed = await side
    # reliable modes owe every message (a retransmission may take seconds: SCTP's RTO is 1 s at
    # least), then the unreliable ones get what is still on its way
    owed = sum(acked.values()) * users
    await drain(lambda: all(n >= owed for m, n in got.items() if m != Delivery.UNRELIABLE),
                timeout=ctx.timeout)
    await quiet(lambda: sum(got.values()), timeout=ctx.timeout)
    end = time.monotonic()
    await close_all([c for clients, _ in groups for c in clients])
    histograms, counters = {}, {}
    for mode in modes:
        every, bystanders = (Recorder(measure_from_ns=ctx.measure_ns) for _ in range(2))
        name = mode_name(mode)
        counters[f"delivered_{name}"] = record_rounds(
            [seen for (m, _, _), seen in rounds.items() if m == mode], flows, every, bystanders)
        histograms[name], histograms[f"{name}_bystander"] = every.encoded(), bystanders.encoded()
    return {"histograms": histograms,
            "counters": {"published": sum(acked.values()), "flows": flows, "users": users,
                         **counters, "connect_failures": failed + pub_failed},
            "info": {"modes": [mode_name(m) for m in modes]},
            "times": {"load_end": end, **ctx.milestones()}}


def record_rounds(rounds: list[dict[str, tuple[int, int]]], flows: int, every: Recorder,
                  bystanders: Recorder) -> int:
    """Record each round's messages (channel -> (intended, arrived) ns) in ``every``, and in
    ``bystanders`` all but the slowest of a complete round (all of an incomplete one: the
    missing message was the one lost); return how many messages were delivered."""
    for seen in rounds:
        times = sorted(seen.values(), key=lambda t: t[1] - t[0])
        for t in times:
            every.record_ns(*t)
        for t in times[:-1] if len(times) == flows else times:
            bystanders.record_ns(*t)
    return sum(len(seen) for seen in rounds)


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """hol rows per mode: latency percentiles of every message and of the bystanders, the
    delivered share of what was owed, and each mode's bystander p99 over the ordered one's."""
    h, c = raw["histograms"], raw["counters"]
    m: dict[str, tuple[float, str]] = {}
    owed = max(c["published"] * c["users"], 1)
    modes = raw["info"]["modes"]
    for name in modes:
        m.update(latency_rows(name, h[name]["measured"]))
        m.update(latency_rows(f"{name}_bystander", h[f"{name}_bystander"]["measured"]))
        m[f"{name}_delivered_percent"] = (100 * c[f"delivered_{name}"] / owed, "%")
    ordered = m.get("ordered_bystander_p99_us", (0.0, ""))[0]
    for name in modes:
        mine = m.get(f"{name}_bystander_p99_us", (0.0, ""))[0]
        if name != "ordered" and ordered > 0 and mine > 0:
            m[f"{name}_vs_ordered_bystander_p99_ratio"] = (mine / ordered, "ratio")
    m["connect_failures"] = (c["connect_failures"], "count")
    return m


SCENARIO = Scenario(
    name="hol", doc="head-of-line blocking: flows on one ordered stream vs a stream per flow, "
    "unreliable delivery and a connection per flow, under the link's loss (needs --network)",
    part=part, metrics=metrics,
    grid={"ci": [{"flows": 4, "users": 3, "rate": 25, "payload": 200}],
          "quick": [{"flows": 8, "users": 3, "rate": 25, "payload": 200}],
          "full": [{"flows": f, "users": 5, "rate": 25, "payload": 200} for f in (4, 16)]},
    timing={"ci": (0.5, 5.0), "quick": (2.0, 20.0), "full": (5.0, 60.0)},
    workers=False,
    headline=[("ordered_bystander_p99_us", "ordered p99 µs (bystanders)"),
              ("per_channel_bystander_p99_us", "stream per flow"),
              ("unreliable_bystander_p99_us", "unreliable"),
              ("split_bystander_p99_us", "conn per flow"),
              ("unreliable_delivered_percent", "unreliable delivered %")],
    network=True,
)
