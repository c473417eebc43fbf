"""fanout: publishers at an offered rate into channels with N subscribers each.

Every delivery's one-way latency is measured from the publisher's intended send time (sender and
receivers share the host's monotonic clock). Ids are per channel and in order, so each
subscriber counts a delivery as new (id above its last), duplicate (id at or below it); lost is
what the publisher had acknowledged after the subscriber joined (the channel's id in the ack of
its subscribe) minus what arrived.

In a cluster run (``run --cluster N``) subscriber *i* connects to instance *i mod N* and the
publishers to instance 0, so each delivery is also recorded by its hop: ``local`` (the
publisher's instance) or ``remote`` (through the shared broker to another instance).

Under ``--network`` the subscribers sit behind the emulated link and the publishers beside the
server (:func:`~sobranie_bench.netlab.lab.beside_server`): a delivery's latency is the server's
and the link's downstream, as a feature's SLA judges it for users on that network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from sobranie_bench.harness.load import Schedule, open_loop
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.results import (
    cpu_per_event,
    latency_rows,
    measured_seconds,
    server_load,
)
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
from sobranie_bench.netlab.lab import beside_server


class Tally:
    """Deliveries seen by one subscriber on one channel, exactly: ids above the last are new
    (any skipped ids are remembered as missing), a missing id arriving late is new but
    reordered, anything else is a duplicate."""

    __slots__ = ("duplicates", "joined", "last", "missing", "reordered", "unique")

    def __init__(self) -> None:
        self.joined: int | None = None
        """The channel's latest id when the subscription began (from its ack): earlier
        messages are not owed to this subscriber."""
        self.last = 0
        self.unique = 0
        self.duplicates = 0
        self.reordered = 0
        self.missing: set[int] = set()

    def see(self, id: int) -> bool:
        if id > self.last:
            if id > self.last + 1 and self.last:
                self.missing.update(range(self.last + 1, id))
            self.last = id
        elif id in self.missing:
            self.missing.discard(id)
            self.reordered += 1
        else:
            self.duplicates += 1
            return False
        self.unique += 1
        return True


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    channels = [f"fanout:{ctx.seed}-{ctx.start_ns}-{c}" for c in range(int(p.get("channels", 1)))]
    per_channel = int(p["subscribers"])
    rec = Recorder()
    hops = {"local": Recorder(), "remote": Recorder()} if ctx.instances else {}
    delivered_measured = 0
    last_rx = 0.0
    tallies: list[Tally] = []

    def subscriber(tally: Tally, hop: Recorder | None) -> Any:
        def on_envelope(env: dict[str, Any]) -> None:
            nonlocal delivered_measured, last_rx
            if env["type"] == "message" and tally.see(env["id"]):
                now = time.monotonic_ns()
                if hop is not None:
                    hop.record_ns(env["data"]["t"], now)
                if rec.record_ns(env["data"]["t"], now):
                    delivered_measured += 1
                    last_rx = now / 1e9
            elif env["type"] == "ack" and "id" in env and tally.joined is None:
                tally.joined = env["id"]
                tally.last = max(tally.last, env["id"])
        return on_envelope

    subs = []
    sub_channels = []
    for i in ctx.share(per_channel * len(channels)):
        tally = Tally()
        tallies.append(tally)
        hop = (hops["remote" if i % len(ctx.instances) else "local"] if ctx.instances
               else None)
        subs.append(ctx.client(f"sub-{i}", on_envelope=subscriber(tally, hop),
                               url=ctx.instance_url(i)))
        sub_channels.append([channels[i % len(channels)]])
    failed = await connect_all(subs, sub_channels)
    started: concurrent.futures.Future[PartContext] = concurrent.futures.Future()
    side = asyncio.ensure_future(beside_server(lambda: publishing(ctx, channels, started)))
    ctx = await asyncio.wrap_future(started)
    for r in (rec, *hops.values()):
        r.measure_from_ns, r.measure_until_ns = ctx.measure_ns, ctx.end_ns
    await sleep_until(ctx.end_ns)  # a part without the publisher listens as long as it sends
    acked, pub_failed = await side
    failed += pub_failed
    # owed: what each channel's publisher had acked after a subscriber joined (a part
    # without the publisher knows no acks: it waits for its deliveries to stop)
    owed = sum(acked[ch] - (t.joined or 0) for t, (ch,) in zip(tallies, sub_channels)) \
        if ctx.index == 0 else None
    await quiet(lambda: sum(t.unique for t in tallies), timeout=ctx.timeout, expected=owed)
    end = time.monotonic()
    await close_all(subs)
    per_channel_subs: dict[str, int] = {}
    per_channel_unique: dict[str, int] = {}
    per_channel_joined: dict[str, int] = {}
    for tally, (ch,) in zip(tallies, sub_channels):
        per_channel_subs[ch] = per_channel_subs.get(ch, 0) + 1
        per_channel_unique[ch] = per_channel_unique.get(ch, 0) + tally.unique
        per_channel_joined[ch] = per_channel_joined.get(ch, 0) + (tally.joined or 0)
    return {"histograms": {"latency": rec.encoded(),
                           **{f"latency_{hop}": r.encoded() for hop, r in hops.items()}},
            "counters": {"published": sum(acked.values()),
                         "delivered": sum(t.unique for t in tallies),
                         "delivered_measured": delivered_measured,
                         "delivered_in_window": rec.in_window,
                         "duplicated": sum(t.duplicates for t in tallies),
                         "connect_failures": failed, "subscribers": len(subs)},
            "per_channel": {"acked": acked, "subscribers": per_channel_subs,
                            "unique": per_channel_unique, "joined": per_channel_joined},
            "times": {"load_end": end, "last_rx": last_rx, **ctx.milestones()}}


async def publishing(ctx: PartContext, channels: list[str],
                     started: concurrent.futures.Future[PartContext]) -> tuple[dict[str, int], int]:
    """The publishers' side: one per channel (in the first part), connected, then publishing at
    the offered rate from the load's start (``started`` gets the context once they are
    connected); returns what was acknowledged per channel and how many failed to connect."""
    p = ctx.params
    publishers = [ctx.client(f"pub-{c}", on_envelope=lambda env: None, url=ctx.instance_url(0))
                  for c in range(len(channels))] if ctx.index == 0 else []
    try:
        failed = await connect_all(publishers)
    except BaseException as exc:  # cancelled while connecting: the caller must not wait on
        started.set_exception(exc)
        raise
    ctx = ctx.started()
    started.set_result(ctx)
    acked: dict[str, int] = {ch: 0 for ch in channels}
    in_flight: set[asyncio.Future[Any]] = set()
    pad = padding(int(p["payload"]), ctx.rng())
    rng = ctx.rng()

    async def publish(pub: Any, channel: str) -> None:
        def on_ack(fut: asyncio.Future[Any]) -> None:
            in_flight.discard(fut)
            if not fut.cancelled() and fut.exception() is None:
                acked[channel] += 1

        async def send(i: int, intended: int) -> None:
            fut = pub.publish_nowait(channel, probe(i, intended, pad))
            in_flight.add(fut)
            fut.add_done_callback(on_ack)

        await open_loop(Schedule(float(p["rate"]) / len(channels), bool(p.get("poisson"))),
                        send, start_ns=ctx.start_ns, duration=ctx.warmup + ctx.duration, rng=rng)

    try:
        await sleep_until(ctx.start_ns)
        await asyncio.gather(*(publish(pub, ch) for pub, ch in zip(publishers, channels)))
        await drain(lambda: not in_flight, timeout=ctx.timeout)
    finally:
        await close_all(publishers)
    return acked, failed


def delivery_rows(raw: dict[str, Any], lost: float) -> dict[str, tuple[float, str]]:
    """What fanout and churn both report: delivery latency percentiles (in a cluster run
    also by hop), published, delivered, ``lost``, duplicated and failed connects."""
    c, h = raw["counters"], raw["histograms"]
    m = latency_rows("latency", h["latency"]["measured"])
    for hop in ("local", "remote"):  # a cluster run: deliveries by hop
        if f"latency_{hop}" in h:
            m.update(latency_rows(f"latency_{hop}", h[f"latency_{hop}"]["measured"]))
    m["published"] = (c["published"], "count")
    m["delivered"] = (c["delivered"], "count")
    m["lost"] = (float(lost), "count")
    m["duplicated"] = (c["duplicated"], "count")
    m["connect_failures"] = (c["connect_failures"], "count")
    return m


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """fanout rows: :func:`delivery_rows` (lost: what each channel's publisher had acked after
    a subscriber joined, times its subscribers, minus what they got), deliveries per second of
    the window, and the server's and the harness's CPU per delivery."""
    c, pc = raw["counters"], raw["per_channel"]
    joined = pc.get("joined", {})  # ids published before a subscriber joined
    lost = sum(pc["acked"].get(ch, 0) * subs - joined.get(ch, 0) - pc["unique"].get(ch, 0)
               for ch, subs in pc["subscribers"].items())
    n = c["delivered_measured"]
    return {**delivery_rows(raw, lost), "delivered_per_s": (n / measured_seconds(raw), "msg/s"),
            **cpu_per_event(raw, n, "delivery"), **server_load(raw)}


FANOUT_LADDER = (100, 300, 1000)
"""Subscribers per channel of the standard profile's ladder (at 50 publishes/s)."""

SCENARIO = Scenario(
    name="fanout", doc="publish at a rate into channels of N subscribers; one-way latency, "
                       "delivered/s, lost and duplicated",
    part=part, metrics=metrics,
    grid={
        "ci": [{"channels": 1, "subscribers": 100, "rate": 50, "payload": 64}],
        # the fan-out ladder: deliveries per second 3x per rung (subscribers x rate)
        "standard": [{"channels": 1, "subscribers": s, "rate": 50, "payload": 64}
                     for s in FANOUT_LADDER],
        "quick": [{"channels": 1, "subscribers": s, "rate": r, "payload": 64}
                  for s in (100, 1000) for r in (20, 100)],
        "full": [{"channels": c, "subscribers": s, "rate": r, "payload": pl}
                 for c in (1, 10) for s in (100, 1000, 5000) for r in (10, 50, 200)
                 for pl in (64, 4096)],
        # the capacity model's fit points and the points it must predict (capacity validate)
        "calibrate": [{"channels": 1, "subscribers": s, "rate": 20, "payload": 64}
                      for s in (100, 400, 800)],
        "holdout": [{"channels": 1, "subscribers": 300, "rate": 20, "payload": 64}],
    },
    timing={"ci": (0.3, 1.0), "standard": (0.3, 1.0), "quick": (2.0, 10.0),
            "full": (5.0, 30.0), "calibrate": (2.0, 30.0), "holdout": (2.0, 30.0)},
    ladder="subscribers",
    events_per_s=lambda p: float(p["rate"]) * int(p["subscribers"]) * int(p.get("channels", 1)),
    headline=[("latency_p50_us", "p50 µs"), ("latency_p99_us", "p99 µs"),
              ("latency_remote_p99_us", "other instance p99 µs"),
              ("delivered_per_s", "deliv/s"), ("lost", "lost"), ("duplicated", "dup")],
)
