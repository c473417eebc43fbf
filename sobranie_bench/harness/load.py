"""Open-loop load: send on a schedule that never waits for replies.

Each action receives its *intended* send time; latency is measured from it, so a server that
stalls shows the stall (no coordinated omission). Loops are bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Schedule:
    rate: float
    """Offered operations per second (all connections together)."""
    poisson: bool = False
    """Exponential gaps (Poisson arrivals) instead of constant ones."""

    def gaps_ns(self, rng: random.Random) -> Iterator[int]:
        mean = 1e9 / self.rate
        while True:
            yield int(rng.expovariate(1.0 / mean)) if self.poisson else int(mean)


async def open_loop(schedule: Schedule, action: Callable[[int, int], Awaitable[object]], *,
                    start_ns: int, duration: float, rng: random.Random,
                    max_count: int | None = None) -> int:
    """Await ``action(i, intended_ns)`` on schedule from ``start_ns`` for ``duration`` seconds
    (the action sends and returns; it never waits for the reply); return the count.

    When the loop falls behind (the event loop was busy or the process stalled) it catches up
    by sending the overdue ones at once, each still stamped with its own intended time.
    """
    start = start_ns
    end = start + int(duration * 1e9)
    intended = start
    count = 0
    for gap in schedule.gaps_ns(rng):
        intended += gap
        if intended >= end or (max_count is not None and count >= max_count):
            break
        delay = (intended - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)  # wakes a little late at most: that lag is measured
        elif count % 64 == 0:
            await asyncio.sleep(0)  # let replies in even when behind
        await action(count, intended)
        count += 1
    return count
