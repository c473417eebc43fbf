"""Scale-out experiments on a running :class:`~sobranie_bench.cluster.Cluster`.

Each is an async function that returns a plain dict of metrics (JSON-ready):

* ``fanout``     :func:`cross_instance_fanout` - a publisher on instance 0 at a fixed rate,
  subscribers spread over every instance (or all via the balancer); one-way latency per hop
  (``local``: same instance as the publisher, ``remote``: through the broker to another
  instance, ``lb``: via HAProxy), delivered/s, loss.
* ``cost``       :func:`broker_cost` - the same fan-out while the broker process is sampled:
  CPU microseconds and bytes per message, Redis commands per message (INFO deltas).
* ``failure``    :func:`instance_failure` - subscribers through the balancer, one instance
  SIGKILLed mid-run: acknowledged messages lost and duplicated, time until every cut-off
  client is back (reconnect with full-jitter backoff, resume from its cursor).
* ``throughput`` :func:`backplane_throughput` - closed loop (labelled so): one publisher per
  instance on one channel, each with a window of publishes in flight; acked/s, delivered/s.

Latency is one-way, publish to delivery, from the *intended* send time (``t`` in ``data``,
``time.monotonic_ns()``): every process is on this host, so they share the clock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil

from servers.brokers import make_broker
from sobranie_bench.clients import TRANSPORTS, Client
from sobranie_bench.cluster import Cluster
from sobranie_bench.harness.load import Schedule, open_loop
from sobranie_bench.harness.recorder import Recorder, stats
from sobranie_bench.harness.sampler import cpu_model, raise_fd_limit, read
from sobranie_contract import tokens

CONNECT_CONCURRENCY = 32
"""Clients connecting at once while a run is set up."""
ACK_WAIT_SECONDS = 10.0
"""Longest wait for the last acks once publishing stops."""
CLIENT_BOUND_CPU = 0.85
"""The harness process at or above this share of a core marks a run ``client_bound``."""


# --- what every experiment shares -----------------------------------------------------------


@dataclass
class _Subscriber:
    """One subscribing client's tally."""

    client: Client
    hop: str
    """local, remote or lb."""
    recorder: Recorder
    """Latency histogram of its hop (shared with the other subscribers of that hop)."""
    ids: list[int] = field(default_factory=list)
    """Every message id received, duplicates included, in arrival order."""
    last_ns: int = 0
    """When the latest message arrived."""
    back_after_ns: int | None = None
    """Count as recovered on the first message intended at or after this time."""
    recovered_ns: int | None = None
    """When that message arrived."""

    def on_envelope(self, env: dict[str, Any]) -> None:
        if env.get("type") != "message":
            return
        now = time.monotonic_ns()
        self.ids.append(env["id"])
        self.last_ns = now
        sent = env["data"]["t"]
        self.recorder.record_ns(sent, now)
        if self.back_after_ns is not None and self.recovered_ns is None \
                and sent >= self.back_after_ns:
            self.recovered_ns = now


@dataclass
class _Publisher:
    client: Client
    acked: list[int] = field(default_factory=list)
    failed: int = 0
    pending: set[asyncio.Future[dict[str, Any]]] = field(default_factory=set)

    def send(self, channel: str, data: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        fut = self.client.publish_nowait(channel, data)
        self.pending.add(fut)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: asyncio.Future[dict[str, Any]]) -> None:
        self.pending.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1
        else:
            self.acked.append(int(fut.result()["id"]))

    async def settle(self) -> None:
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=ACK_WAIT_SECONDS)


class _Run:
    """Clients of one experiment: made, connected and closed together."""

    def __init__(self, cluster: Cluster, transport: str) -> None:
        self.cluster = cluster
        self.transport = transport
        self.channel = f"scale:{secrets.token_hex(4)}"
        self.clients: list[Client] = []
        self.recorders: dict[str, Recorder] = {}
        self._secret = tokens.secret_from_env(cluster.secret)

    def client(self, url: str, user: str, **kwargs: Any) -> Client:
        made = TRANSPORTS[self.transport].client_class()(
            url, tokens.make_token(user, self._secret, 3600), **kwargs)
        self.clients.append(made)
        return made

    async def subscribers(self, count: int, where: Callable[[int], tuple[str, str]],
                          measure_from_ns: int = 0) -> list[_Subscriber]:
        """``count`` subscribers of the run's channel; ``where(i)`` gives (url, hop)."""
        subs = []
        for i in range(count):
            url, hop = where(i)
            recorder = self.recorders.setdefault(hop, Recorder(measure_from_ns))
            sub = _Subscriber(self.client(url, f"sub{i}"), hop, recorder)
            sub.client.on_envelope = sub.on_envelope
            subs.append(sub)
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(sub: _Subscriber) -> None:
            async with gate:
                await sub.client.connect([self.channel])

        await asyncio.gather(*(connect(s) for s in subs))
        return subs

    async def publisher(self, url: str, name: str = "publisher") -> _Publisher:
        pub = _Publisher(self.client(url, name, reconnect=False))
        await pub.client.connect()
        return pub

    def start_measuring(self, from_ns: int) -> None:
        for recorder in self.recorders.values():
            recorder.measure_from_ns = from_ns

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        await _forget_channel(self.cluster.broker, self.channel)


def _tally(subs: list[_Subscriber], acked: list[int]) -> dict[str, Any]:
    want = set(acked)
    received = sum(len(s.ids) for s in subs)
    unique = sum(len(want & set(s.ids)) for s in subs)
    return {"acked": len(want), "expected": len(want) * len(subs), "delivered": received,
            "lost": len(want) * len(subs) - unique,
            "duplicates": sum(len(s.ids) - len(set(s.ids)) for s in subs),
            "out_of_order": sum(any(b <= a for a, b in zip(s.ids, s.ids[1:])) for s in subs)}


async def _drain(subs: list[_Subscriber], acked: list[int], timeout: float) -> None:
    """Wait (bounded) until every subscriber holds every acknowledged id."""
    want = set(acked)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(want <= set(s.ids) for s in subs):
            return
        await asyncio.sleep(0.05)


def _latency(recorders: dict[str, Recorder]) -> dict[str, dict[str, float]]:
    out = {hop: stats(r.measured) for hop, r in sorted(recorders.items())}
    if len(recorders) > 1:
        total = Recorder().measured
        for r in recorders.values():
            total.add(r.measured)
        out["all"] = stats(total)
    return out


def _payload(i: int, intended_ns: int, pad: str) -> dict[str, Any]:
    return {"t": intended_ns, "seq": i, "pad": pad}


class _Cpu:
    """CPU share of a core used by this process and by each instance, between two marks."""

    def __init__(self, cluster: Cluster) -> None:
        self.procs = {"harness": psutil.Process(os.getpid())}
        self.procs.update({f"instance{i}": psutil.Process(inst.pid)
                           for i, inst in enumerate(cluster.instances)})
        self._start = self._read()

    def _read(self) -> tuple[float, dict[str, float]]:
        out = {}
        for name, proc in self.procs.items():
            try:
                out[name] = read(proc)[0]
            except psutil.Error:
                out[name] = float("nan")
        return time.monotonic(), out

    def shares(self) -> dict[str, float]:
        (t0, a), (t1, b) = self._start, self._read()
        return {name: round((b[name] - a[name]) / (t1 - t0), 3) for name in a}


def _describe(cluster: Cluster, experiment: str, **params: Any) -> dict[str, Any]:
    broker = urlsplit(cluster.broker).scheme or cluster.broker or "memory"
    return {"experiment": experiment, "broker": broker, "broker_url": cluster.broker,
            "instances": cluster.size, **params, "cpu": cpu_model(), "cores": os.cpu_count()}


def _bound(shares: dict[str, float]) -> bool:
    servers = [v for k, v in shares.items() if k.startswith("instance")]
    return shares["harness"] >= CLIENT_BOUND_CPU and all(v < CLIENT_BOUND_CPU for v in servers)


# --- the experiments --------------------------------------------------------------------------


Probe = Callable[[], Awaitable[None]]


async def cross_instance_fanout(cluster: Cluster, transport: str = "ws", subscribers: int = 200,
                                rate: float = 100.0, duration: float = 5.0, payload: int = 64,
                                *, via_lb: bool = False, warmup: float = 1.0,
                                drain: float = 10.0, seed: int = 1,
                                _around: tuple[Probe, Probe] | None = None) -> dict[str, Any]:
    """A publisher on instance 0 at ``rate`` msg/s for ``duration`` s (the first ``warmup``
    s recorded apart); ``subscribers`` spread round-robin over the instances (or all via the
    balancer). Returns latency per hop, delivered/s, loss, CPU shares."""
    raise_fd_limit()
    run = _Run(cluster, transport)
    n = len(cluster.instances)
    try:
        def where(i: int) -> tuple[str, str]:
            if via_lb:
                return cluster.lb_url, "lb"
            return cluster.instances[i % n].url, "local" if i % n == 0 else "remote"

        subs = await run.subscribers(subscribers, where)
        pub = await run.publisher(cluster.instances[0].url)
        pad = "x" * payload
        if _around:
            await _around[0]()
        cpu = _Cpu(cluster)
        start = time.monotonic_ns() + 50_000_000
        run.start_measuring(start + int(warmup * 1e9))

        async def action(i: int, intended_ns: int) -> None:
            pub.send(run.channel, _payload(i, intended_ns, pad))

        sent = await open_loop(Schedule(rate), action, start_ns=start,
                               duration=warmup + duration, rng=random.Random(seed))
        await pub.settle()
        await _drain(subs, pub.acked, drain)
        shares = cpu.shares()
        if _around:
            await _around[1]()
        last = max((s.last_ns for s in subs), default=start)
        tally = _tally(subs, pub.acked)
        return {**_describe(cluster, "cross_instance_fanout", transport=transport,
                            subscribers=subscribers, rate=rate, duration=duration,
                            payload=payload, via_lb=via_lb, warmup=warmup),
                "published": sent, "publish_failed": pub.failed, **tally,
                "delivered_per_s": round(tally["delivered"] / max(1e-9, (last - start) / 1e9)),
                "latency_us": _latency(run.recorders), "cpu_share": shares,
                "client_bound": _bound(shares)}
    finally:
        await run.close()


async def broker_cost(cluster: Cluster, transport: str = "ws", subscribers: int = 200,
                      rate: float = 100.0, duration: float = 5.0, payload: int = 64, *,
                      monitor_url: str | None = None, **fanout: Any) -> dict[str, Any]:
    """:func:`cross_instance_fanout` while the broker's process (redis-server, nats-server on
    this host) is measured: CPU µs, RSS, and for Redis the INFO deltas (commands, network
    bytes, commandstats) per acknowledged message; for NATS the bytes come from its
    monitoring endpoint (``monitor_url``, e.g. http://127.0.0.1:8222) when given."""
    meter = _BrokerMeter(cluster.broker, monitor_url)
    result = await cross_instance_fanout(cluster, transport, subscribers, rate, duration,
                                         payload, _around=(meter.begin, meter.end), **fanout)
    result["experiment"] = "broker_cost"
    result["broker_cost"] = meter.per_message(result["acked"])
    return result


async def instance_failure(cluster: Cluster, transport: str = "ws", subscribers: int = 30,
                           rate: float = 50.0, duration: float = 6.0, kill_after: float = 2.0,
                           *, victim: int = 0, drain: float = 20.0,
                           seed: int = 1) -> dict[str, Any]:
    """Subscribers connect through the balancer; a publisher talks to the last instance
    directly; ``kill_after`` s into the run instance ``victim`` is SIGKILLed. Counts the
    acknowledged messages each subscriber lost or got twice, and how long the cut-off ones
    took to get a message sent after the kill (reconnect through the balancer + resume)."""
    if len(cluster.instances) < 2 or not cluster.lb_url:
        raise ValueError("instance_failure needs 2+ instances behind the balancer")
    if victim == len(cluster.instances) - 1:
        raise ValueError("the victim must not be the publisher's instance (the last one)")
    raise_fd_limit()
    run = _Run(cluster, transport)
    try:
        subs = await run.subscribers(subscribers, lambda i: (cluster.lb_url, "lb"))
        pub = await run.publisher(cluster.instances[-1].url)
        first_conn = [s.client.conn for s in subs]
        start = time.monotonic_ns() + 50_000_000
        killed_ns = start + int(kill_after * 1e9)
        for sub in subs:
            sub.back_after_ns = killed_ns

        async def killer() -> None:
            await asyncio.sleep(max(0.0, (killed_ns - time.monotonic_ns()) / 1e9))
            await cluster.kill(victim)

        async def action(i: int, intended_ns: int) -> None:
            pub.send(run.channel, _payload(i, intended_ns, ""))

        kill = asyncio.create_task(killer())
        sent = await open_loop(Schedule(rate), action, start_ns=start, duration=duration,
                               rng=random.Random(seed))
        await kill
        await pub.settle()
        await _drain(subs, pub.acked, drain)
        # Cut off: now on another server connection (a long-poll the balancer retried on
        # another instance never saw an error, but its session there is new).
        cut = [s for s, conn in zip(subs, first_conn) if s.client.conn != conn]
        back = [(s.recovered_ns - killed_ns) / 1e9 for s in cut if s.recovered_ns is not None]
        return {**_describe(cluster, "instance_failure", transport=transport,
                            subscribers=subscribers, rate=rate, duration=duration,
                            kill_after=kill_after, victim=victim),
                "published": sent, "publish_failed": pub.failed, **_tally(subs, pub.acked),
                "cut_off": len(cut), "reconnects": sum(s.client.reconnects for s in subs),
                "not_recovered": len(cut) - len(back),
                "recovery_s": _spread(back),
                "all_recovered_s": round(max(back), 3) if back and len(back) == len(cut)
                else None,
                "latency_us": _latency(run.recorders)}
    finally:
        await run.close()


async def backplane_throughput(cluster: Cluster, transport: str = "ws",
                               subscribers: int = 20, duration: float = 5.0,
                               payload: int = 64, *, window: int = 32,
                               drain: float = 10.0) -> dict[str, Any]:
    """Closed loop: one publisher per instance, all on one channel, each keeping ``window``
    publishes in flight for ``duration`` s; subscribers spread over the instances. The most
    the backplane carries on this machine (every process shares its cores)."""
    raise_fd_limit()
    run = _Run(cluster, transport)
    n = len(cluster.instances)
    try:
        subs = await run.subscribers(
            subscribers, lambda i: (cluster.instances[i % n].url, "local" if n == 1 else "mixed"))
        pubs = [await run.publisher(inst.url, f"publisher{i}")
                for i, inst in enumerate(cluster.instances)]
        pad = "x" * payload
        cpu = _Cpu(cluster)
        start = time.monotonic_ns()
        end = start + int(duration * 1e9)
        seq = 0

        async def pump(pub: _Publisher) -> None:
            nonlocal seq
            while time.monotonic_ns() < end:
                seq += 1
                await asyncio.wait({pub.send(run.channel, _payload(seq, time.monotonic_ns(),
                                                                   pad))},
                                   timeout=ACK_WAIT_SECONDS)

        await asyncio.gather(*(pump(p) for p in pubs for _ in range(window)))
        elapsed = (time.monotonic_ns() - start) / 1e9
        acked = [i for p in pubs for i in p.acked]
        await _drain(subs, acked, drain)
        shares = cpu.shares()
        tally = _tally(subs, acked)
        last = max((s.last_ns for s in subs), default=end)
        return {**_describe(cluster, "backplane_throughput", transport=transport,
                            subscribers=subscribers, duration=duration, payload=payload,
                            window=window, closed_loop=True),
                "publish_failed": sum(p.failed for p in pubs), **tally,
                "acked_per_s": round(len(acked) / elapsed),
                "delivered_per_s": round(tally["delivered"] / max(1e-9, (last - start) / 1e9)),
                "latency_us": _latency(run.recorders), "cpu_share": shares,
                "client_bound": _bound(shares)}
    finally:
        await run.close()


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"count": len(ordered), "min": round(ordered[0], 3),
            "p50": round(ordered[len(ordered) // 2], 3), "max": round(ordered[-1], 3)}


# --- the broker's own bill ----------------------------------------------------------------------


class _BrokerMeter:
    """CPU and memory of the broker's process, plus what the broker itself counts."""

    def __init__(self, url: str, monitor_url: str | None) -> None:
        self.url = url
        self.scheme = urlsplit(url).scheme
        self.monitor_url = monitor_url
        self._proc: psutil.Process | None = None
        self._before: dict[str, float] = {}
        self._after: dict[str, float] = {}
        self._t = 0.0

    async def begin(self) -> None:
        self._proc = await self._process()
        self._before = await self._counters()
        self._t = time.monotonic()

    async def end(self) -> None:
        self._t = time.monotonic() - self._t
        self._after = await self._counters()

    def per_message(self, messages: int) -> dict[str, Any]:
        if self._proc is None:
            return {"note": f"no broker process on this host for {self.scheme or 'memory'}"}
        delta = {k: self._after[k] - self._before.get(k, 0.0) for k in self._after}
        out: dict[str, Any] = {"pid": self._proc.pid, "messages": messages,
                               "cpu_share": round(delta.pop("cpu_s") / self._t, 3),
                               "rss_mb": round(self._after["rss"] / 2**20, 1)}
        cpu_s = self._after["cpu_s"] - self._before["cpu_s"]
        delta.pop("rss", None)
        per = max(1, messages)
        out["cpu_us_per_msg"] = round(cpu_s * 1e6 / per, 1)
        out["per_msg"] = {k: round(v / per, 2) for k, v in sorted(delta.items()) if v}
        return out

    async def _process(self) -> psutil.Process | None:
        if self.scheme == "redis":
            info = await self._redis_info("server")
            return psutil.Process(int(info["process_id"]))
        port = urlsplit(self.url).port
        try:
            for conn in psutil.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                    return psutil.Process(conn.pid)
        except psutil.AccessDenied:
            pass
        return None

    async def _counters(self) -> dict[str, float]:
        if self._proc is None:
            return {}
        cpu_s, rss = read(self._proc)
        out: dict[str, float] = {"cpu_s": cpu_s, "rss": rss}
        if self.scheme == "redis":
            info = await self._redis_info("all")
            out["commands"] = info["total_commands_processed"]
            out["net_in_bytes"] = info["total_net_input_bytes"]
            out["net_out_bytes"] = info["total_net_output_bytes"]
            for key, value in info.items():
                if key.startswith("cmdstat_") and isinstance(value, dict):
                    out[f"calls_{key[8:]}"] = value["calls"]
        elif self.monitor_url:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{self.monitor_url}/varz") as resp:
                varz = await resp.json()
            for key in ("in_msgs", "out_msgs", "in_bytes", "out_bytes"):
                out[key] = varz[key]
        return out

    async def _redis_info(self, section: str) -> dict[str, Any]:
        import redis.asyncio as aioredis

        from servers.brokers.backplane import split_namespace

        client = aioredis.from_url(split_namespace(self.url)[0])
        try:
            return await client.info(section)  # type: ignore[no-any-return]
        finally:
            await client.aclose()


async def _forget_channel(url: str, channel: str) -> None:
    """Remove what a run left in the shared broker (its channel's ids and history)."""
    if urlsplit(url).scheme in ("redis", "nats"):
        broker = make_broker(url)
        try:
            await broker.purge([channel])  # type: ignore[attr-defined]
        finally:
            await broker.close()


# --- the command line (sobranie-bench cluster measure) -----------------------------------------


EXPERIMENTS = {"fanout": cross_instance_fanout, "cost": broker_cost,
               "failure": instance_failure, "throughput": backplane_throughput}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transport", default="ws", choices=["ws", "sse", "longpoll"],
                        help="client transport (default ws)")
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s (open loop)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--payload", type=int, default=64, help="padding bytes per message")
    parser.add_argument("--via-lb", action="store_true",
                        help="fanout/cost: subscribers connect through the balancer")
    parser.add_argument("--kill-after", type=float, default=2.0,
                        help="failure: seconds into the run before instance 0 is killed")
    parser.add_argument("--window", type=int, default=32,
                        help="throughput: publishes in flight per publisher")
    parser.add_argument("--nats-monitor", help="cost: nats-server monitoring URL for bytes")


def needs_balancer(args: argparse.Namespace) -> bool:
    return args.experiment == "failure" or bool(args.via_lb)


async def run(experiment: str, cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """One experiment with the command line's parameters."""
    if experiment == "failure":
        return await instance_failure(cluster, args.transport, args.subscribers, args.rate,
                                      args.duration, args.kill_after)
    if experiment == "throughput":
        return await backplane_throughput(cluster, args.transport, args.subscribers,
                                          args.duration, args.payload, window=args.window)
    if experiment == "cost":
        return await broker_cost(cluster, args.transport, args.subscribers, args.rate,
                                 args.duration, args.payload, via_lb=args.via_lb,
                                 monitor_url=args.nats_monitor)
    return await cross_instance_fanout(cluster, args.transport, args.subscribers, args.rate,
                                       args.duration, args.payload, via_lb=args.via_lb)
