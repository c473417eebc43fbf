"""overhead: bytes on the wire per delivered message, both directions, by payload size.

One subscriber and one publisher, each behind its own counting relay (TCP) or counting its own
datagrams (UDP transports expose ``bytes_sent``/``bytes_received``). Everything from connect to
close is counted, so handshakes are amortised over the run's messages.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sobranie_bench.clients import Client
from sobranie_bench.harness.proxy import CountingProxy
from sobranie_bench.harness.scenarios import PartContext, Scenario, drain, padding, probe


class Meter:
    """Counts one client's bytes: through a relay, or from the client's own counters."""

    def __init__(self, ctx: PartContext, user: str, **kwargs: Any) -> None:
        self.ctx, self.user, self.kwargs = ctx, user, kwargs
        self.proxy: CountingProxy | None = None
        self.client: Client | None = None
        self.round_trips: int | None = None
        """Handshake round trips to the ``hello``, counted at the relay (TCP transports)."""

    async def open(self, channels: list[str]) -> Client:
        url = urlsplit(self.ctx.url)
        probe_client = self.ctx.client(self.user, **self.kwargs)
        if hasattr(probe_client, "bytes_sent"):
            self.client = probe_client
        else:
            self.proxy = CountingProxy(url.hostname or "127.0.0.1", url.port or 80)
            port = await self.proxy.start()
            relayed = urlunsplit((url.scheme, f"127.0.0.1:{port}", url.path, "", ""))
            self.client = type(probe_client)(relayed, probe_client.token,
                                             timeout=self.ctx.timeout, **self.kwargs)
        await self.client.connect(channels)
        if self.proxy is not None:
            self.round_trips = self.proxy.counts.round_trips_before(time.monotonic())
        return self.client

    async def close(self) -> tuple[int, int]:
        """Close gracefully (the closing handshake counts) and return (up, down) bytes."""
        assert self.client is not None
        await self.client.close()
        await asyncio.sleep(0.1)
        if self.proxy is not None:
            await self.proxy.stop()
            return self.proxy.counts.up, self.proxy.counts.down
        return int(self.client.bytes_sent), int(self.client.bytes_received)  # type: ignore


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    n, pad = int(p["messages"]), padding(int(p["payload"]), ctx.rng())
    channel = f"overhead:{ctx.seed}"
    delivered = 0

    def on_envelope(env: dict[str, Any]) -> None:
        nonlocal delivered
        delivered += env["type"] == "message"

    sub_meter = Meter(ctx, "overhead-sub", on_envelope=on_envelope)
    pub_meter = Meter(ctx, "overhead-pub", on_envelope=lambda env: None)
    await sub_meter.open([channel])
    pub = await pub_meter.open([])
    for i in range(n):
        await pub.publish(channel, probe(i, 0, pad))
        await asyncio.sleep(1.0 / float(p["rate"]))
    await drain(lambda: delivered >= n, timeout=ctx.timeout)
    sub_up, sub_down = await sub_meter.close()
    pub_up, pub_down = await pub_meter.close()
    counters = {"published": n, "delivered": delivered, "sub_up": sub_up,
                "sub_down": sub_down, "pub_up": pub_up, "pub_down": pub_down}
    if pub_meter.round_trips is not None:  # the publisher's connect has no subscription
        counters["handshake_round_trips"] = pub_meter.round_trips
    return {"counters": counters}


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """overhead rows: bytes down (to the subscriber) and up (from the publisher) per delivered
    message, all four directions' total per message, and the handshake's round trips."""
    c = raw["counters"]
    n = max(c["delivered"], 1)
    m = {"bytes_down_per_msg": (c["sub_down"] / n, "bytes"),
         "bytes_up_per_msg": (c["pub_up"] / n, "bytes"),
         "bytes_per_msg": ((c["sub_up"] + c["sub_down"] + c["pub_up"] + c["pub_down"]) / n,
                           "bytes"),
         "delivered": (c["delivered"], "count")}
    if "handshake_round_trips" in c:
        m["handshake_round_trips"] = (c["handshake_round_trips"], "round trips")
    return m


SCENARIO = Scenario(
    name="overhead", doc="bytes on the wire per delivered message (handshakes, headers, framing "
                         "and polling included), by payload",
    part=part, metrics=metrics, workers=False,
    grid={
        "ci": [{"payload": pl, "messages": 100, "rate": 200} for pl in (64, 4096)],
        "standard": [{"payload": pl, "messages": 100, "rate": 200} for pl in (64, 4096)],
        "quick": [{"payload": pl, "messages": 500, "rate": r} for pl in (64, 4096)
                  for r in (10, 200)],
        "full": [{"payload": pl, "messages": 2000, "rate": r} for pl in (16, 64, 1024, 4096)
                 for r in (1, 10, 200)],
    },
    timing={"ci": (0.0, 0.0), "standard": (0.0, 0.0), "quick": (0.0, 0.0),
            "full": (0.0, 0.0)},
    load_seconds=lambda p: int(p["messages"]) / float(p["rate"]),
    headline=[("bytes_down_per_msg", "B down/msg"), ("bytes_up_per_msg", "B up/msg"),
              ("bytes_per_msg", "B total/msg")],
)
