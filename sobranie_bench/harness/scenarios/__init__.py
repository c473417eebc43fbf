"""Declared scenarios: a name, a parameter grid per profile, and a load *part*.

A part is what one harness process does (its share of the connections); the runner runs one part
in-process or ``--workers K`` parts in K processes and merges what they return. Set-up
(connecting) happens before ``start_ns``; only what is intended after ``measure_ns`` is data.
Scenarios see transports only through the client interface.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sobranie_bench.clients import TRANSPORTS, Client
from sobranie_contract import tokens

Params = dict[str, Any]
Barrier = Callable[[str], Awaitable[int]]
"""``barrier(name)``: wait until every part of the load reached ``name``; returns the
``time.monotonic_ns()`` at which they all go on (the clock is the machine's, shared by the
harness's processes)."""
log = logging.getLogger("sobranie.harness")

PROFILES = ("ci", "standard", "quick", "full", "calibrate", "holdout")
"""ci: the smoke profile (minutes, one trial); standard: the committed evidence (≤ 30 min on
2 cores, 3 trials, ladders until the SLA breaks, windows resolving 1 µs of CPU per event);
quick, full: bigger grids; calibrate, holdout: the capacity model's fit and check points."""
RESOLVED_PROFILES = ("standard", "full")
"""Profiles whose windows stretch to hold MIN_WINDOW_EVENTS events."""
CPU_TICK_S = 0.01
"""Resolution of a process's CPU time as the sampler reads it (Linux clock ticks)."""
MIN_WINDOW_EVENTS = 5_000
"""Events (echoes, deliveries) a resolved window holds: 50 beyond its p99, and CPU per event far
finer than 1 µs: the sampler reads the scheduler's run time in nanoseconds (schedstat), which
it interpolates at the window's edges (only off Linux would the CPU_TICK_S ticks give 2 µs)."""


@dataclass(frozen=True, slots=True)
class PartContext:
    transport: str
    """Transport name (a key of ``clients.TRANSPORTS``)."""
    url: str
    """Base URL of the server under test."""
    params: Params
    """This grid point's parameters."""
    index: int
    """Which share of the load this part carries (0-based)."""
    count: int
    """How many parts share the load."""
    seed: int
    """Seed of this part's random.Random."""
    start_ns: int
    """``time.monotonic_ns()`` at which load starts (set-up happens before)."""
    warmup: float
    """Seconds of warm-up after start_ns (recorded apart)."""
    duration: float
    """Seconds of measured load after the warm-up."""
    secret: str
    """JWT secret shared with the server."""
    timeout: float = 10.0
    """Seconds any single connect or reply may take."""
    client_options: dict[str, Any] = field(default_factory=dict)
    """Extra client arguments the server announced (a WebTransport certificate's hash, so
    each connect does not fetch it first)."""
    instances: tuple[str, ...] = ()
    """In a cluster run, each instance's own base URL (``url`` is then the balancer's)."""
    instance_pids: tuple[int, ...] = ()
    """In a cluster run, each instance's process id (a failure scenario kills one)."""
    barrier: Barrier | None = None
    """How this part meets the others at :meth:`together` (a worker process: its pipe to the
    runner, harness/worker.py); None: the part is alone and goes on at once. Set in the
    process that runs the part (a function does not travel in the worker's JSON spec)."""

    @property
    def measure_ns(self) -> int:
        return self.start_ns + int(self.warmup * 1e9)

    @property
    def end_ns(self) -> int:
        return self.measure_ns + int(self.duration * 1e9)

    def started(self) -> PartContext:
        """This context, with the load starting now if set-up overran its budget (a slow
        handshake must not be counted as latency of the first messages), or if it finished
        early and this is the only part (parts in several processes start together at
        ``start_ns``; one part has nobody to wait for, and its warm-up still comes first)."""
        now = time.monotonic_ns()
        if now <= self.start_ns and self.count > 1:
            return self
        return dataclasses.replace(self, start_ns=now)

    def milestones(self) -> dict[str, float]:
        return {"load_start": self.start_ns / 1e9, "measure_start": self.measure_ns / 1e9}

    def share(self, total: int) -> range:
        """This part's slice of ``range(total)``."""
        return range(self.index, total, self.count)

    def rng(self) -> random.Random:
        return random.Random(self.seed * 1000 + self.index)

    async def together(self, name: str) -> int:
        """Wait until every part reached ``name`` and go on with the others at one instant
        (the runner releases them all through :attr:`barrier`); returns that instant
        (``time.monotonic_ns()``). A part alone goes on at once."""
        if self.barrier is None:
            return time.monotonic_ns()
        at = await self.barrier(name)
        await sleep_until(at)
        return at

    def instance_url(self, i: int) -> str:
        """Instance ``i mod N``'s own URL in a cluster run; the server's URL otherwise."""
        return self.instances[i % len(self.instances)] if self.instances else self.url

    @property
    def deliveries(self) -> frozenset[str]:
        """The delivery modes this transport's client offers (``Delivery``, chosen by the
        client's ``delivery=``)."""
        return TRANSPORTS[self.transport].client_class().deliveries

    def client(self, user: str, *, url: str | None = None, **kwargs: Any) -> Client:
        """A client of the server under test (or of ``url``: one instance of a cluster)."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs = {**self.client_options, **kwargs}
        token = tokens.make_token(user, self.secret, ttl=24 * 3600)
        return TRANSPORTS[self.transport].client_class()(url or self.url, token, **kwargs)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    """Name on the command line and in results."""
    doc: str
    """One line for --help."""
    part: Callable[[PartContext], Awaitable[dict[str, Any]]]
    """The load one process generates; returns histograms, counters and series."""
    grid: dict[str, list[Params]]
    """Parameter points per profile (ci, quick, full)."""
    metrics: Callable[[dict[str, Any]], dict[str, tuple[float, str]]]
    """``metrics(raw)``: this scenario's own metrics of one (successful) raw result, as
    name -> (value, unit); ``figures.metrics`` adds the ones every scenario has."""
    timing: dict[str, tuple[float, float]] = field(default_factory=dict)
    """(warm-up, duration) seconds per profile."""
    workers: bool = True
    """Whether the load can be split across worker processes."""
    needs_cluster: bool = False
    """Only meaningful against ``run --cluster N`` (N >= 2): left out of other runs."""
    named_only: bool = False
    """Run only when named in ``--scenarios`` (``browser``: it measures client engines, not
    server load, and has its own line in ``make bench``)."""
    headline: list[tuple[str, str]] = field(default_factory=list)
    """(summary metric, short label) pairs the end-of-run table shows."""
    network: bool = False
    """Whether it needs the network lab (``--network``): skipped on loopback."""
    preflight: Callable[..., str | None] | None = None
    """``preflight(params, workers=, processes=, url=, limits=)``: why a point cannot run on
    this machine (one line naming the limit and the fix), checked before the run starts."""
    connects_in_load: bool = False
    """Its connections are the load itself (timed), not set-up before ``start_ns``."""
    longest: Callable[[Params, float], float] | None = None
    """``longest(params, timeout)``: seconds a healthy part may take past ``start_ns`` when
    that is more than its timing says (a ramp paced by the server); past it, it is stuck."""
    events_per_s: Callable[[Params], float] | None = None
    """Measured events per second a point generates (echoes, deliveries); in
    RESOLVED_PROFILES its window stretches to hold MIN_WINDOW_EVENTS of them."""
    combine: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Counters that need every part at once (connections open at one instant), computed
    from the merged parts; they replace the parts' summed ones."""
    load_seconds: Callable[[Params], float] | None = None
    """Seconds a point's load takes beyond warm-up and window (ramps, holds, steps), for
    planning a profile's duration."""
    teardown: Callable[[], Awaitable[None]] | None = None
    """Called once when the process that ran its parts is done with them (the runner at the
    plan's end, a worker after its part): closes what its points shared (the browser
    scenario's open browsers)."""
    ladder: str | None = None
    """The parameter a profile's grid climbs (``rate``, ``subscribers``): once a rung saturated
    in most of its trials, the runner skips the transport's higher rungs (they would only
    queue longer) and says so."""

    def window(self, profile: str, params: Params) -> tuple[float, float]:
        """(warm-up, duration) seconds of one point under ``profile``."""
        warmup, duration = self.timing.get(profile, (0.0, 0.0))
        if profile in RESOLVED_PROFILES and self.events_per_s is not None:
            rate = self.events_per_s(params)
            if rate > 0:
                duration = max(duration, MIN_WINDOW_EVENTS / rate)
        return warmup, duration

    def planned_seconds(self, profile: str, params: Params) -> float:
        """Seconds one trial of one point takes by plan (set-up, warm-up, window, ramps),
        not counting the server's start and stop."""
        warmup, duration = self.window(profile, params)
        extra = self.load_seconds(params) if self.load_seconds is not None else 0.0
        return self.setup_budget(params) + warmup + duration + extra

    def setup_budget(self, params: Params) -> float:
        """Seconds allowed for connecting before the load starts."""
        if self.connects_in_load:
            return 1.0 + int(params.get("connections", 0)) / 20000.0  # building the clients
        conns = int(params.get("connections", 0)) + int(params.get("subscribers", 0)) * int(
            params.get("channels", 1))
        return 1.0 + conns / 500.0


async def connect_all(clients: Sequence[Client], channels: Sequence[Sequence[str]] = (),
                      concurrency: int = 100) -> int:
    """Connect every client (at most ``concurrency`` at once); return how many failed."""
    sem = asyncio.Semaphore(concurrency)
    failed = 0
    reasons: set[str] = set()

    async def one(i: int, client: Client) -> None:
        nonlocal failed
        async with sem:
            try:
                await client.connect(channels[i] if channels else ())
            except Exception as exc:  # noqa: BLE001 - counted; a scenario reports failures
                failed += 1
                reason = f"{type(exc).__name__}: {exc}"[:200]
                if reason not in reasons:
                    reasons.add(reason)
                    log.warning("connect failed (%s): %s", client.transport, reason)

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    return failed


async def close_all(clients: Sequence[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def sleep_until(t_ns: int) -> None:
    delay = (t_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def drain(done: Callable[[], bool], timeout: float) -> None:
    """Wait until ``done()`` or ``timeout`` seconds (replies still in flight)."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def quiet(progress: Callable[[], int], timeout: float, still: float = 0.5,
                expected: int | None = None) -> None:
    """Wait until ``progress()`` stops growing for ``still`` seconds, reaches ``expected``
    (all that is owed arrived: nothing to wait for) or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    last, since = progress(), time.monotonic()
    while time.monotonic() < deadline and (expected is None or last < expected):
        await asyncio.sleep(0.05)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return


def padding(size: int, rng: random.Random) -> str:
    """``size`` characters of random base64: like real text it travels as JSON unescaped, and
    unlike one repeated character it does not compress away (HTTP gzip, permessage-deflate)."""
    return base64.b64encode(rng.randbytes(size))[:size].decode()


def probe(seq: int, intended_ns: int, pad: str) -> dict[str, Any]:
    """The harness's fields inside ``data`` (servers never read them)."""
    return {"t": intended_ns, "seq": seq, "pad": pad}
