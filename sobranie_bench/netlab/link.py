"""The link: one process that owns a TUN device in each namespace and carries every packet
from one to the other after its delay, unless the profile drops it.

Why a TUN pair and not veth + netem: this machine's kernel has no ``netem`` (nor ``fq``), and a
delay queued in the middle of the path is seen by neither end (a drop at the sender's own
output would be reported to the sender at once, a delay at one end's prerouting hides half of
it from ``ping``). TUN devices carry plain IP packets of at most the MTU (no GSO super-packets),
so one "packet" here is one packet on a real link.

Per direction, in order: the link is down (``SIGUSR1``; ``SIGUSR2`` brings it back) -> drop;
Gilbert-Elliott loss -> drop; the bottleneck (bandwidth, tail drop beyond ``queue_ms``) ->
serialisation time; then the one-way delay with jitter, never earlier than the packet before
(a link does not reorder). Run as ``python -m sobranie_bench.netlab.link SPEC_JSON``; prints
``ready`` once both devices exist, and dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
MAX_PACKET = 65536


@dataclass(slots=True)
class Direction:
    """One direction of the link and its state."""

    delay_s: float
    """One-way delay (half the round trip)."""
    jitter_s: float
    """Uniform extra delay in [0, jitter_s)."""
    rate_bps: float
    """Bottleneck bits per second (0 = none)."""
    queue_s: float
    """Bottleneck buffer, in seconds of its rate."""
    p_enter_bad: float
    """Gilbert-Elliott: probability a good-state packet starts a loss burst."""
    p_leave_bad: float
    """Probability a bad-state packet ends the burst (1 / mean burst length)."""
    rng: random.Random
    """This direction's seeded random source."""
    bad: bool = False
    """In a loss burst."""
    busy_until: float = 0.0
    """When the bottleneck finishes serialising what it holds."""
    last_release: float = 0.0
    """Release time of the previous packet (no reordering)."""
    counts: dict[str, int] = field(default_factory=lambda: {"in": 0, "lost": 0, "queue": 0})
    """Packets in, dropped by loss, dropped by a full queue."""

    def schedule(self, now: float, size: int) -> float | None:
        """When this packet leaves the link, or None when it is dropped."""
        self.counts["in"] += 1
        self.bad = (self.rng.random() < self.p_enter_bad) if not self.bad \
            else (self.rng.random() >= self.p_leave_bad)
        if self.bad:
            self.counts["lost"] += 1
            return None
        t = now
        if self.rate_bps:
            start = max(now, self.busy_until)
            if start - now > self.queue_s:
                self.counts["queue"] += 1
                return None
            self.busy_until = start + size * 8 / self.rate_bps
            t = self.busy_until
        t += self.delay_s + (self.rng.random() * self.jitter_s if self.jitter_s else 0.0)
        t = max(t, self.last_release)
        self.last_release = t
        return t


def direction(spec: dict[str, Any], mbit: float, rng: random.Random) -> Direction:
    loss, burst = float(spec["loss"]), max(1.0, float(spec["burst"]))
    leave = 1.0 / burst
    # the stationary share of the bad state is the loss: enter / (enter + leave) = loss
    enter = loss * leave / (1.0 - loss) if loss < 1 else 1.0
    return Direction(delay_s=float(spec["rtt_ms"]) / 2000, jitter_s=float(spec["jitter_ms"]) / 1000,
                     rate_bps=mbit * 1e6, queue_s=float(spec["queue_ms"]) / 1000,
                     p_enter_bad=enter, p_leave_bad=leave, rng=rng)


@contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """This thread inside network namespace ``netns`` for the block, then home again: sockets
    and devices made meanwhile stay bound to ``netns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns home")
    finally:
        os.close(home)
        os.close(target)


def open_tun(netns: str, name: str) -> int:
    """A TUN device called ``name`` inside network namespace ``netns`` (the fd stays bound to
    the device)."""
    with in_netns(netns):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def serve(spec: dict[str, Any]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(spec["parent"]):  # the parent died before prctl
        sys.exit(1)
    try:  # a delay held to the millisecond on a busy machine needs the CPU when it is due
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(spec.get("priority", 50))))
    except (OSError, AttributeError):
        pass
    server = open_tun(spec["server_ns"], spec["dev"])
    client = open_tun(spec["client_ns"], spec["dev"])
    rng = random.Random(int(spec.get("seed", 1)))
    up = direction(spec, float(spec["up_mbit"]), random.Random(rng.random()))
    down = direction(spec, float(spec["down_mbit"]), random.Random(rng.random()))
    route = {client: (up, server), server: (down, client)}
    state = {"down": False}
    signal.signal(signal.SIGUSR1, lambda *_: state.update(down=True))
    signal.signal(signal.SIGUSR2, lambda *_: state.update(down=False))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    heap: list[tuple[float, int, int, bytes]] = []
    seq = 0
    print("ready", flush=True)
    while True:
        timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else None
        try:
            readable, _, _ = select.select([client, server], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in readable:
            way, out = route[fd]
            for _ in range(256):
                try:
                    packet = os.read(fd, MAX_PACKET)
                except BlockingIOError:
                    break
                if state["down"]:
                    way.counts["in"] += 1
                    way.counts["lost"] += 1
                    continue
                at = way.schedule(now, len(packet))
                if at is not None:
                    seq += 1
                    heapq.heappush(heap, (at, seq, out, packet))
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, out, packet = heapq.heappop(heap)
            try:
                os.write(out, packet)
            except OSError:  # the device's queue is full or it went down: a lost packet
                pass


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
