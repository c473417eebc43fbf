"""reconnect: the link drops for N seconds and comes back, while a publisher keeps publishing.

Subscribers (resuming clients) and the publisher sit on the client side of the lab's link; at the
end of the warm-up the link is cut both ways (every packet dropped) for ``outage`` seconds. Per
subscriber: when its transport noticed (``detect``: the transport ended, if it ever did), when it
was open again after the link came back (``reconnect``), and when the first message arrived after
it came back (``resume``); and the messages the server acknowledged that it never got (lost) or
got twice (duplicated). Where resume is promised both must be 0. Needs ``--network``.

With ``change="address"`` the link stays up and every subscriber moves to a new local address
instead (:meth:`~sobranie_bench.clients.base.Client.migrate`, a phone changing networks): a QUIC
connection migrates (WebTransport: same connection, new UDP port, the server validates the new
path), any other transport opens a new connection and resumes. ``reconnect`` is then when it
was connected again (migrated or reconnected), ``resume`` when the first message arrived after
the change.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from sobranie_bench.harness.load import Schedule, open_loop
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.scenarios import (
    PartContext,
    Scenario,
    close_all,
    connect_all,
    quiet,
    sleep_until,
)
from sobranie_bench.netlab.lab import set_link_down


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    channel = f"reconnect:{ctx.seed}"
    outage = float(p["outage"])
    moved = p.get("change", "cut") == "address"
    latency = Recorder()
    seen: list[dict[int, int]] = [{} for _ in range(int(p["subscribers"]))]
    first_after: list[float | None] = [None] * len(seen)
    up_at = float("inf")

    def on(i: int) -> Any:
        def on_envelope(env: dict[str, Any]) -> None:
            if env["type"] == "message":
                seen[i][env["id"]] = seen[i].get(env["id"], 0) + 1
                latency.record_ns(env["data"]["t"])
                if first_after[i] is None and time.monotonic() >= up_at:
                    first_after[i] = time.monotonic()
        return on_envelope

    subs = [ctx.client(f"rc-{i}", on_envelope=on(i)) for i in range(len(seen))]
    failed = await connect_all(subs, [[channel]] * len(subs))
    pub = ctx.client("rc-pub", on_envelope=lambda env: None)
    await pub.connect()
    ctx = ctx.started()
    latency.measure_from_ns = ctx.measure_ns
    acked: list[int] = []
    unacked: list[int] = []
    tasks: list[asyncio.Task[None]] = []

    async def publish_one(seq: int, intended: int) -> None:
        try:
            acked.append(await asyncio.wait_for(
                pub.publish(channel, {"t": intended, "seq": seq}), outage + ctx.timeout))
        except Exception:  # noqa: BLE001 - not acknowledged: not owed to anyone
            unacked.append(seq)

    async def send(seq: int, intended: int) -> None:
        tasks.append(asyncio.ensure_future(publish_one(seq, intended)))

    async def cut() -> tuple[float, float, list[tuple[int, float]]]:
        nonlocal up_at
        await sleep_until(ctx.measure_ns)
        before = [s.reconnects + s.migrations for s in subs]
        down_at = time.monotonic()
        if moved:
            up_at = down_at
            await asyncio.gather(*(s.migrate() for s in subs))
        else:
            set_link_down(True)
            await asyncio.sleep(outage)
            set_link_down(False)
            up_at = time.monotonic()
        back: list[tuple[int, float]] = []  # (subscriber, when it reconnected), polled
        deadline = up_at + ctx.duration
        while time.monotonic() < deadline and len(back) < len(subs):
            for i, s in enumerate(subs):
                if s.reconnects + s.migrations > before[i] and i not in {b for b, _ in back}:
                    back.append((i, time.monotonic()))
            await asyncio.sleep(0.01)
        return down_at, up_at, back

    await sleep_until(ctx.start_ns)
    cutter = asyncio.ensure_future(cut())
    await open_loop(Schedule(float(p["rate"])), send, start_ns=ctx.start_ns,
                    duration=ctx.warmup + outage + ctx.duration, rng=ctx.rng())
    down_at, up_at, back = await cutter
    await asyncio.gather(*tasks)
    want = set(acked)
    await quiet(lambda: sum(len(s) for s in seen), timeout=ctx.timeout, still=1.0)
    end = time.monotonic()
    await close_all([*subs, pub])
    detect = [next((t - down_at for t in s.ended_at if t >= down_at), None) for s in subs]
    return {"histograms": {"latency": latency.encoded()},
            "counters": {"subscribers": len(subs), "connect_failures": failed,
                         "acked": len(want), "unacked": len(unacked), "outage_s": outage,
                         "lost": sum(len(want - set(s)) for s in seen),
                         "duplicated": sum(n - 1 for s in seen for n in s.values() if n > 1),
                         "noticed": sum(d is not None for d in detect),
                         "reconnected": len(back),
                         "migrated": sum(s.migrations for s in subs)},
            "series": {"detect_s": [d for d in detect if d is not None],
                       "reconnect_s": [t - up_at for _, t in back],
                       "resume_s": [t - up_at for t in first_after if t is not None]},
            "times": {"load_end": end, **ctx.milestones()}}


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """reconnect rows: median times to detect / reconnect / resume (ms), counts."""
    c, series = raw["counters"], raw.get("series", {})
    m: dict[str, tuple[float, str]] = {}
    for name in ("detect", "reconnect", "resume"):
        values = series.get(f"{name}_s", [])
        if values:
            m[f"{name}_p50_ms"] = (statistics.median(values) * 1e3, "ms")
            m[f"{name}_max_ms"] = (max(values) * 1e3, "ms")
    for name in ("acked", "unacked", "lost", "duplicated", "noticed", "reconnected", "subscribers",
                 "connect_failures", "migrated"):
        m[name] = (float(c.get(name, 0)), "count")
    m["outage_ms"] = (c["outage_s"] * 1e3, "ms")
    return m


SCENARIO = Scenario(
    name="reconnect", doc="the link drops for N seconds, or the client's address changes: time "
    "to detect, reconnect (or migrate), resume; messages lost / duplicated (needs --network)",
    part=part, metrics=metrics,
    grid={"ci": [{"subscribers": 5, "rate": 20, "outage": 2.0},
                 {"subscribers": 5, "rate": 20, "outage": 0.0, "change": "address"}],
          "quick": [*({"subscribers": 20, "rate": 50, "outage": o} for o in (3.0, 10.0)),
                    {"subscribers": 20, "rate": 50, "outage": 0.0, "change": "address"}],
          "full": [*({"subscribers": 50, "rate": 50, "outage": o}
                     for o in (1.0, 3.0, 10.0, 30.0)),
                   {"subscribers": 50, "rate": 50, "outage": 0.0, "change": "address"}]},
    timing={"ci": (0.5, 4.0), "quick": (2.0, 20.0), "full": (2.0, 40.0)},
    workers=False,
    network=True,
    headline=[("detect_p50_ms", "detect ms"), ("reconnect_p50_ms", "reconnect ms"),
              ("resume_p50_ms", "resume ms"), ("lost", "lost"), ("duplicated", "dup")],
)
