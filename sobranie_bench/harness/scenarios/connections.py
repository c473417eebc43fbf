"""connections: ramp to N idle subscribers at a connect rate, then hold them idle.

The ramp is paced: the parts share ``connect_rate`` evenly (their schedules interleave), and a
part that falls behind goes on from where it is instead of catching up in a burst (bursts of
connects were what timed out under load). With ``max_inflight`` at most that many connects
are pending at once (over all workers): the ramp then goes as fast as the server accepts, up to
``connect_rate`` (the achieved rate is the figure). Each connect is timed from its slot to the
server's ``hello`` (handshake round trips and time to first message included) and has
``connect_timeout`` seconds for all of it; a connect is tried once (no silent retries). A
part's ramp is bounded in time (:func:`ramp_seconds`): what is not answered by then fails as
``deadline``, and the part reports what it saw. The runner fits the server's RSS against the
number of open connections (bytes per connection is the slope, not one division) and reads
the CPU the idle connections cost while held.

Past one process's open files (20,000 on the machine this suite was built on) a point spreads
its connections over ``workers`` harness processes, ``processes`` server processes (``serve
--processes N``: one port, SO_REUSEPORT) and ``sources`` local addresses 127.0.0.2... (each has
its own ephemeral ports: about 28,000 by default per source address and destination). Before
anything starts, :func:`preflight` checks the point against this machine's limits and refuses
with one line naming the limit and the fix. The hold starts when every part has finished its
ramp (:meth:`PartContext.together`): ``held_at_hold_start`` and ``held`` are counted at the
hold's start and end, the same instants in every part, so their sums are connections open at
once; ``peak_open`` is the most open at one instant (:func:`combine`). Failures are sorted by
cause (:data:`CAUSES`): a failure is a result, never an unretrieved exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import resource
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.results import cpu_between, cpu_percent, latency_rows, server_samples
from sobranie_bench.harness.scenarios import Params, PartContext, Scenario, close_all, sleep_until

log = logging.getLogger("sobranie.harness.connections")

CAUSES = ("refused", "reset", "timeout", "fd_limit", "ports", "server_full", "deadline",
          "other")
"""Why a connect failed: nothing listening or the backlog full (``refused``), the server cut
it (``reset``), no answer in time (``timeout``), this process out of files (``fd_limit``), no
ephemeral port left for its source address (``ports``), the server's clear refusal at its own
limit (``server_full``: HTTP 503), not answered (or not tried) within the point's time bound
(``deadline``: :func:`ramp_seconds`), anything else (``other``)."""
FD_MARGIN = 256
"""Open files a process needs besides its connections (interpreter, pipes, logs, listeners),
plus the server's fd guard headroom (servers/aiohttp_common.py)."""
FIRST_SOURCE = 2
"""Source addresses are 127.0.0.FIRST_SOURCE, 127.0.0.FIRST_SOURCE+1, ..."""


def cause(exc: BaseException) -> str:
    """The :data:`CAUSES` entry of a failed connect (from the error's type, errno and text:
    the clients wrap OS errors in ClientError with the OS's words)."""
    text = f"{type(exc).__name__} {exc}".lower()
    code = getattr(exc, "errno", None)
    if isinstance(exc, TimeoutError) or "timeout" in text or "timed out" in text:
        return "timeout"
    if "http 503" in text or "open-file limit" in text:
        return "server_full"
    if code in (errno.EMFILE, errno.ENFILE) or "too many open files" in text:
        return "fd_limit"
    if code == errno.EADDRNOTAVAIL or "cannot assign requested address" in text \
            or "address already in use" in text:
        return "ports"
    if code == errno.ECONNREFUSED or "refused" in text or "connect call failed" in text:
        return "refused"
    if code in (errno.ECONNRESET, errno.EPIPE) or any(
            word in text for word in ("reset", "connection lost", "disconnected", "broken pipe",
                                      "closed")):
        return "reset"
    return "other"


@dataclass(frozen=True, slots=True)
class HostLimits:
    """What this machine allows one load (read by :meth:`here`)."""

    nofile: int
    """Hard RLIMIT_NOFILE: files one process may open (its children inherit it)."""
    ports: int
    """Ephemeral ports per source address and destination (``ip_local_port_range``)."""
    port_range: str
    """The range as the kernel shows it, for messages."""
    somaxconn: int
    """Largest accept backlog a listener gets (``net.core.somaxconn``)."""

    @classmethod
    def here(cls) -> HostLimits:
        low, high = 32768, 60999
        try:
            low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
                            .split())
        except (OSError, ValueError):
            pass
        try:
            somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        except (OSError, ValueError):
            somaxconn = 4096
        return cls(resource.getrlimit(resource.RLIMIT_NOFILE)[1], high - low + 1,
                   f"{low}-{high}", somaxconn)


def preflight(params: Params, *, workers: int, processes: int | None, url: str | None,
              limits: HostLimits | None = None) -> str | None:
    """Why this point cannot run on this machine (``limits``: :meth:`HostLimits.here`), in
    one line naming the limit and the fix; None when it fits. ``processes`` None: a server of
    someone else's (``--target``), whose limits are its own."""
    limits = limits or HostLimits.here()
    n = int(params.get("connections", 0))
    workers = int(params.get("workers", workers))
    sources = int(params.get("sources", 1))
    rate = float(params.get("connect_rate", 0))
    per_worker = math.ceil(n / max(workers, 1)) + FD_MARGIN
    if per_worker > limits.nofile:
        need = math.ceil(n / (limits.nofile - FD_MARGIN))
        return (f"connections={n:,} over {workers} harness worker(s) needs {per_worker:,} open "
                f"files per worker; the hard nofile limit here is {limits.nofile:,}: use "
                f"--set workers={need} (or raise the hard limit: LimitNOFILE= / "
                "/etc/security/limits.conf)")
    if processes is not None:
        processes = int(params.get("processes", processes))
        per_server = math.ceil(n / max(processes, 1)) + FD_MARGIN
        if per_server > limits.nofile:
            need = math.ceil(n / (limits.nofile - FD_MARGIN))
            return (f"connections={n:,} on {processes} server process(es) needs "
                    f"{per_server:,} open files per server process; the hard nofile limit "
                    f"here is {limits.nofile:,}: use --set processes={need} (serve "
                    "--processes N) or raise the hard limit")
        if rate / processes > limits.somaxconn:
            return (f"connect_rate={rate:,.0f}/s over {processes} server process(es) can "
                    f"overflow an accept backlog of {limits.somaxconn:,} (net.core.somaxconn):"
                    " raise it (sysctl -w net.core.somaxconn=65535) or lower connect_rate")
    per_source = math.ceil(n / max(sources, 1))
    if per_source > limits.ports:
        need = math.ceil(n / limits.ports)
        return (f"connections={n:,} from {sources} source address(es) needs {per_source:,} "
                f"ephemeral ports per address; ip_local_port_range {limits.port_range} gives "
                f"{limits.ports:,}: use --set sources={need} (127.0.0.{FIRST_SOURCE}...) or "
                "widen net.ipv4.ip_local_port_range")
    if sources > 1 and url is not None and not _loopback(url):
        return (f"sources={sources} uses 127.0.0.{FIRST_SOURCE}..., which reach only a server "
                f"on loopback, not {urlsplit(url).hostname}: use sources=1 or several "
                "harness hosts")
    if sources > 254 - FIRST_SOURCE:
        return f"sources={sources}: at most {254 - FIRST_SOURCE} loopback addresses"
    return None


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.startswith("127.") or host in ("localhost", "::1")


def source_addresses(url: str, count: int) -> list[str | None]:
    """``count`` local addresses to connect from (None: the kernel's choice)."""
    if count <= 1 or not _loopback(url):
        return [None]
    return [f"127.0.0.{FIRST_SOURCE + i}" for i in range(count)]


RAMP_SLACK = 4.0
"""How much slower than ``connect_rate`` a ramp may go by default (``min_rate`` sets it)."""
CLOSE_SECONDS = 10.0
"""Seconds the closing of a part's connections may take (the kernel closes the rest)."""


def ramp_seconds(params: Params, timeout: float) -> float:
    """A part's time bound for its ramp: its connections at ``min_rate`` (the slowest ramp
    the point accepts; default ``connect_rate`` / RAMP_SLACK), plus one connect timeout
    (``connect_timeout``, default the context's). Connects not answered by then, or not
    tried, fail as ``deadline``: a slow server is a result, not a hung run."""
    n, rate = int(params["connections"]), float(params["connect_rate"])
    slowest = float(params.get("min_rate", rate / RAMP_SLACK))
    return n / slowest + float(params.get("connect_timeout", timeout))


async def part(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    mine = list(ctx.share(int(p["connections"])))
    sources = source_addresses(ctx.url, int(p.get("sources", 1)))
    timeout = float(p.get("connect_timeout", ctx.timeout))
    rec = Recorder(0)  # every connect is data; there is no warm-up in a ramp
    clients = [ctx.client(f"idle-{i}", reconnect=False, on_envelope=lambda env: None,
                          source=sources[i % len(sources)], timeout=timeout) for i in mine]
    opened: list[Any] = []
    connected_at: list[float] = []
    failed: Counter[str] = Counter()
    limit = int(p.get("max_inflight", 0)) // ctx.count
    inflight = asyncio.Semaphore(max(limit, 1)) if p.get("max_inflight") else None

    async def connect(client: Any, intended: int) -> None:
        try:  # the whole connect (TCP, handshake, hello) within one timeout
            async with asyncio.timeout(timeout):
                await client.connect(["presence"] if p.get("subscribe") else ())
        except Exception as exc:  # noqa: BLE001 - a failed connect is a result
            why = cause(exc)
            if not failed[why]:
                log.warning("connect failed (%s, part %d): %s", why, ctx.index,
                            (str(exc) or f"{type(exc).__name__} after {timeout:g} s")[:200])
            failed[why] += 1
            await client.close()  # a half-open one (no hello in time) must not stay held
            return
        finally:
            if inflight is not None:
                inflight.release()
        rec.record_ns(intended)
        connected_at.append(time.monotonic())
        opened.append(client)

    tasks: list[asyncio.Future[None]] = []
    gap = int(1e9 * ctx.count / float(p["connect_rate"]))  # this part's share of the rate

    async def ramp() -> None:
        # the parts' schedules interleave (part i starts i/count of a gap later), so together
        # they connect at connect_rate, evenly; a part that falls behind (max_inflight pending,
        # or a busy loop) goes on from now instead of catching up in a burst
        due = ctx.start_ns + gap * ctx.index // ctx.count
        for client in clients:
            if inflight is not None:  # at most max_inflight pending: the server sets the pace
                await inflight.acquire()
            now = time.monotonic_ns()
            if due > now:
                await sleep_until(due)
            due = max(due, now - gap)  # late by more than a gap: the schedule slides
            tasks.append(asyncio.ensure_future(connect(client, due)))
            due += gap
        await asyncio.gather(*tasks)

    ctx = ctx.started()  # nothing to set up: one part starts its ramp at once
    await sleep_until(ctx.start_ns)
    ramp_start = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ramp(), ramp_seconds(p, ctx.timeout))
    for task in tasks:  # still pending at the time bound: cut, counted below
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if late := len(clients) - len(opened) - sum(failed.values()):
        log.warning("part %d: %d connect(s) not answered (or not tried) within the point's "
                    "time bound of %.0f s", ctx.index, late, ramp_seconds(p, ctx.timeout))
        failed["deadline"] += late
    ramp_end = time.monotonic()
    # the hold starts when every part holds all it could open: the counts below are taken at
    # the same two instants in every part, so their sums are connections open at once
    hold_start = await ctx.together("ramped") / 1e9
    held_at_start = sum(1 for c in opened if c.is_open)
    await sleep_until(int((hold_start + float(p.get("hold", 2.0))) * 1e9))
    hold_end = time.monotonic()
    held = sum(1 for c in opened if c.is_open)
    lost_at = [c.ended_at[0] for c in opened if c.ended_at and c.ended_at[0] <= hold_end]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(close_all(clients), CLOSE_SECONDS)
    return {"histograms": {"connect": rec.encoded()},
            "counters": {"connections": len(clients), "connected": len(opened),
                         "failures": sum(failed.values()), "held_at_hold_start": held_at_start,
                         "held": held, "dropped": len(opened) - held,
                         **{f"failed_{c}": failed[c] for c in CAUSES}},
            "series": {"connected_at": sorted(round(t, 4) for t in connected_at),
                       "lost_at": sorted(round(t, 4) for t in lost_at)},
            "times": {"ramp_start": ramp_start, "ramp_end": ramp_end, "hold_start": hold_start,
                      "hold_end": hold_end}}


def combine(merged: dict[str, Any]) -> dict[str, Any]:
    """``peak_open``: the most connections open at one instant over all parts (from every
    part's connect and loss times, not a sum of each part's own peak)."""
    series = merged.get("series", {})
    events = sorted([(t, 1) for t in series.get("connected_at", [])]
                    + [(t, -1) for t in series.get("lost_at", [])])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return {"peak_open": peak}


def longest(params: Params, timeout: float) -> float:
    """A part's time bound: its ramp's (:func:`ramp_seconds`), closing, and the hold."""
    return ramp_seconds(params, timeout) + CLOSE_SECONDS + float(params.get("hold", 2.0))


def rss_slope(server: list[list[float]], connected_at: list[float], start: float,
              end: float) -> float | None:
    """Bytes of server RSS per open connection: least-squares slope over the ramp and hold."""
    points = [(float(np.searchsorted(connected_at, s[0], side="right")), s[2])
              for s in server if start <= s[0] <= end]
    xs = np.array([p[0] for p in points])
    if len(points) < 3 or xs.max() - xs.min() < max(10, 0.2 * len(connected_at)):
        return None
    slope, _ = np.polyfit(xs, np.array([p[1] for p in points]), 1)
    return float(slope)


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """connections rows: connect percentiles, connected / held / dropped, failures by cause,
    the server's RSS per connection (:func:`rss_slope`), CPU per connect over the ramp, and
    the keep-alive CPU of the idle connections while held."""
    c, t, server = raw["counters"], raw["times"], server_samples(raw)
    m = latency_rows("connect", raw["histograms"]["connect"]["measured"])
    m["failures"] = (c["failures"], "count")
    m["connected"] = (c["connected"], "count")
    for key in ("held", "held_at_hold_start", "peak_open", "dropped"):
        if key in c:
            m[key] = (c[key], "count")
    m.update({key: (value, "count") for key, value in c.items()
              if key.startswith("failed_") and value})
    slope = rss_slope(server, raw["series"]["connected_at"], t["ramp_start"], t["hold_end"])
    if slope is not None:
        m["server_rss_bytes_per_conn"] = (slope, "bytes")
    ramp = cpu_between(server, t["ramp_start"], t["ramp_end"] + 0.3)
    if ramp is not None and c["connected"] > 0:
        m["server_cpu_us_per_conn"] = (ramp * 1e6 / c["connected"], "us")
    # every part holds from one instant (hold_start); older runs: from the last ramp's end
    keep = cpu_percent(server, t.get("hold_start", t["ramp_end"]), t["hold_end"])
    if keep is not None:
        m["keepalive_cpu_percent"] = (keep, "%")
    return m


SCENARIO = Scenario(
    name="connections", doc="ramp to N idle connections: connect time, failures by cause, "
                            "connections held, memory per connection (RSS slope), keep-alive "
                            "CPU",
    part=part, metrics=metrics,
    grid={
        "ci": [{"connections": 300, "connect_rate": 500, "hold": 0.5}],
        "standard": [{"connections": 500, "connect_rate": 500, "hold": 0.5}],
        "quick": [{"connections": 2000, "connect_rate": 500, "hold": 3.0}],
        # Python vs Elysia at the same levels in one run (docs/scale.md): the ramp paced by
        # the server (max_inflight), bounded at min_rate; every part holds from one instant
        "full": [{"connections": 10000, "connect_rate": 5000, "hold": 15.0, "workers": 6,
                  "processes": 6, "sources": 8, "max_inflight": 120, "connect_timeout": 30.0,
                  "min_rate": 100},
                 {"connections": 100000, "connect_rate": 5000, "hold": 15.0, "workers": 6,
                  "processes": 6, "sources": 8, "max_inflight": 120, "connect_timeout": 30.0,
                  "min_rate": 100}],
    },
    timing={"ci": (0.0, 0.0), "standard": (0.0, 0.0), "quick": (0.0, 0.0),
            "full": (0.0, 0.0)},
    load_seconds=lambda p: int(p["connections"]) / float(p["connect_rate"]) + float(p["hold"]),
    preflight=preflight,
    connects_in_load=True,
    longest=longest,
    combine=combine,
    headline=[("connect_p50_us", "connect p50 µs"), ("connect_p99_us", "p99 µs"),
              ("server_rss_bytes_per_conn", "B/conn"), ("held", "held"), ("failures", "failed")],
)
