"""first-message: from "the user opens the app" to the first delivered message.

One user after another (each a brand-new client: no connection reuse, no TLS resumption) opens
the transport, then sends one ``echo`` (the first message delivered) and a second one (one round
trip on the open connection). The connect time over that round trip is the handshake's round
trips as measured, so the report's handshake table is a measurement under each ``--network``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.results import latency_rows
from sobranie_bench.harness.scenarios import PartContext, Scenario, sleep_until


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    connect, first, rtt = Recorder(), Recorder(), Recorder()
    ratios: list[float] = []
    failures = 0
    ctx = ctx.started()  # nothing to set up (opening is the measurement): one part starts now
    await sleep_until(ctx.start_ns)
    for i in ctx.share(int(p["users"])):
        replies: asyncio.Queue[int] = asyncio.Queue()

        def on_envelope(env: dict[str, Any], q: asyncio.Queue[int] = replies) -> None:
            if env["type"] == "echo":
                q.put_nowait(time.monotonic_ns())

        client = ctx.client(f"first-{i}", on_envelope=on_envelope, reconnect=False)
        t0 = time.monotonic_ns()
        try:
            await client.connect()
            t1 = time.monotonic_ns()
            await client.echo({"seq": 1})
            t2 = await asyncio.wait_for(replies.get(), ctx.timeout)
            sent = time.monotonic_ns()
            await client.echo({"seq": 2})
            t3 = await asyncio.wait_for(replies.get(), ctx.timeout)
        except Exception:  # noqa: BLE001 - a failed open is a result (counted)
            failures += 1
            continue
        finally:
            await client.close()
        connect.record_ns(t0, t1)
        first.record_ns(t0, t2)
        rtt.record_ns(sent, t3)
        ratios.append((t1 - t0) / max(t3 - sent, 1))
    return {"histograms": {"connect": connect.encoded(), "first_message": first.encoded(),
                           "rtt": rtt.encoded()},
            "counters": {"users": len(ctx.share(int(p["users"]))), "failures": failures},
            "series": {"handshake_ratio": ratios},
            "times": {"load_end": time.monotonic(), **ctx.milestones()}}


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """first-message rows: connect / first message / one round trip, and the handshake's
    round trips (median over users of connect time / that user's round trip)."""
    h, c = raw["histograms"], raw["counters"]
    m: dict[str, tuple[float, str]] = {}
    for name in ("connect", "first_message", "rtt"):
        m.update(latency_rows(name, h[name]["measured"]))
    ratios = raw.get("series", {}).get("handshake_ratio", [])
    if ratios:
        m["handshake_round_trips"] = (statistics.median(ratios), "round trips")
    m["failures"] = (c["failures"], "count")
    return m


SCENARIO = Scenario(
    name="first-message", doc="time from opening the app to the first delivered message, and "
    "the handshake's round trips as measured",
    part=part, metrics=metrics,
    grid={"ci": [{"users": 5}], "quick": [{"users": 20}], "full": [{"users": 50}]},
    timing={"ci": (0.0, 0.0), "quick": (0.0, 0.0), "full": (0.0, 0.0)},
    workers=False,
    headline=[("first_message_p50_us", "first msg p50 µs"), ("connect_p50_us", "connect p50 µs"),
              ("handshake_round_trips", "handshake RTs")],
)
