"""Instance model: one real-time server instance as a multi-core queue with fan-out work.

Covers:

- A :class:`simpy.Store` as the instance's inbox, shared by ``c`` core processes (M/M/c)
- Poisson superposition: several message streams merged into one arrival process
- Output analysis: batch-means confidence intervals and Little's law

Scenario:
  Messages reach one instance of a transport's fleet as the superposition of independent
  Poisson streams (client messages, broker messages for rooms with local members, connection
  set-ups, keep-alives). Each *core* takes the oldest message from the inbox and works on it.
  A message carries ``units`` of work: one for a client message, one per local recipient for
  a broker message, whose recipients are written to one after another. Each unit takes an
  exponential time with the stream's measured mean, so a stream of one-unit messages is
  exactly the M/M/c queue of :mod:`sobranie_bench.capacity.analytic`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import simpy

from sobranie_bench.capacity.stats import batch_means_ci, percentile

RANDOM_SEED = 42
CORES = 2  # servers (cores) in one instance, as on the 2-core benchmark machine
JOBS = 100_000  # messages measured per run
WARMUP_FRACTION = 0.1  # extra messages simulated first and discarded (initial transient)
BATCHES = 20  # batches for the batch-means confidence interval
DELIVERY_POINTS = 4  # recipients sampled per fan-out message for the latency distribution


@dataclass(frozen=True)
class JobStream:
    """One Poisson stream of messages reaching an instance."""

    name: str
    """What the messages are, e.g. ``"inbound"`` or ``"chat deliveries"``."""
    rate_per_s: float
    """Mean arrival rate of messages at this instance, per second."""
    unit_cost_s: float
    """Mean CPU time of one unit of work (one message or one delivery), in seconds."""
    fanout: tuple[tuple[int, float], ...] = ((1, 1.0),)
    """Distribution of units per message as ``(units, probability)`` pairs; units >= 1."""
    delivers: bool = False
    """True when each unit is a delivery to a recipient (counted in delivery latency)."""
    setup_cost_s: float = 0.0
    """Fixed CPU time per message before its first unit (e.g. reading it from Redis), s."""

    def __post_init__(self) -> None:
        if self.rate_per_s < 0 or self.unit_cost_s <= 0:
            raise ValueError(f"{self.name}: need rate >= 0 and unit cost > 0")
        if not self.fanout or any(units < 1 for units, _ in self.fanout):
            raise ValueError(f"{self.name}: every message needs at least one unit of work")

    @property
    def mean_units(self) -> float:
        """Mean units of work per message."""
        total = sum(p for _, p in self.fanout)
        return sum(units * p for units, p in self.fanout) / total

    @property
    def mean_service_s(self) -> float:
        """Mean CPU time per message, in seconds."""
        return self.setup_cost_s + self.unit_cost_s * self.mean_units

    @property
    def second_moment_service_s2(self) -> float:
        """E[S^2] of the CPU time per message, S = setup + Gamma(units, unit cost), in s^2."""
        total = sum(p for _, p in self.fanout)
        c, s = self.unit_cost_s, self.setup_cost_s
        return (
            sum(p * (s * s + 2 * s * k * c + (k * c) ** 2 + k * c * c) for k, p in self.fanout)
            / total
        )


@dataclass(frozen=True)
class InstanceResult:
    """What one simulated instance did while it was measured."""

    cores: int
    """Servers (cores) working on the inbox."""
    arrival_rate: float
    """Configured total arrival rate of messages, per second."""
    service_rate: float
    """Messages one core completes per second of work (1 / mean service time)."""
    utilisation: float
    """Offered utilisation: arrival_rate / (cores * service_rate)."""
    jobs: int
    """Messages measured (after the warm-up)."""
    mean_wait_s: float
    """Mean time a message waited in the inbox before a core took it, in seconds."""
    wait_ci95: tuple[float, float]
    """95% batch-means confidence interval of the mean wait, in seconds."""
    p95_wait_s: float
    """95th percentile of the wait, in seconds."""
    mean_sojourn_s: float
    """Mean time from arrival to the end of the message's work, in seconds."""
    time_average_in_system: float
    """Time-average number of messages in the instance (waiting or in service), L."""
    observed_arrival_rate: float
    """Arrivals per second over the measurement window, lambda."""
    littles_law_error: float
    """Relative gap |L - lambda * W| / L; small when the bookkeeping is right."""
    inbound_p95_s: float | None
    """95th percentile of time in the instance of messages that deliver nothing, seconds."""
    deliveries: int
    """Deliveries made by measured messages (sum of their units on delivering streams)."""
    delivery_p95_s: float | None
    """95th percentile over recipients of arrival-to-delivery time, seconds."""
    delivery_quantiles_s: tuple[float, float, float] | None = None
    """(p50, p95, p99) over recipients of arrival-to-delivery time, seconds."""


class _Message(NamedTuple):
    arrived: float
    units: int
    setup_s: float
    service_s: float
    delivers: bool
    measured: bool


@dataclass
class _Monitor:
    """Bookkeeping shared by the processes: waits, sojourns, deliveries, area under N(t)."""

    in_system: int = 0
    area: float = 0.0
    last_change: float = 0.0
    window: list[tuple[float, float]] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    sojourns: list[float] = field(default_factory=list)
    inbound_sojourns: list[float] = field(default_factory=list)
    delivery_latencies: list[float] = field(default_factory=list)
    delivery_weights: list[float] = field(default_factory=list)
    deliveries: int = 0

    def _advance(self, now: float) -> None:
        self.area += self.in_system * (now - self.last_change)
        self.last_change = now

    def mark(self, now: float) -> None:
        """Open or close the measurement window: remember (time, area so far)."""
        self._advance(now)
        self.window.append((now, self.area))

    def arrived(self, now: float) -> None:
        self._advance(now)
        self.in_system += 1

    def started(self, now: float, message: _Message) -> None:
        if message.measured:
            self.waits.append(now - message.arrived)

    def finished(self, now: float, message: _Message, started: float) -> None:
        self._advance(now)
        self.in_system -= 1
        if not message.measured:
            return
        self.sojourns.append(now - message.arrived)
        if not message.delivers:
            self.inbound_sojourns.append(now - message.arrived)
            return
        self.deliveries += message.units
        points = min(message.units, DELIVERY_POINTS)
        ready = started - message.arrived + message.setup_s
        for i in range(1, points + 1):
            self.delivery_latencies.append(
                ready + (message.service_s - message.setup_s) * i / points
            )
            self.delivery_weights.append(message.units / points)


def _pick(rng: random.Random, values: Sequence[int], cumulative: Sequence[float]) -> int:
    """One of ``values`` with probabilities given by the ``cumulative`` weights."""
    if len(values) == 1:
        return values[0]
    return values[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]


def clients(
    env: simpy.Environment,
    rng: random.Random,
    streams: Sequence[JobStream],
    inbox: simpy.Store,
    monitor: _Monitor,
    warmup: int,
    jobs: int,
) -> simpy.events.ProcessGenerator:
    """All clients and broker subscriptions of the instance, as one superposed Poisson stream."""
    total_rate = sum(s.rate_per_s for s in streams)
    indices = range(len(streams))
    stream_weights = list(itertools.accumulate(s.rate_per_s for s in streams))
    unit_tables = [
        ([units for units, _ in s.fanout], list(itertools.accumulate(p for _, p in s.fanout)))
        for s in streams
    ]
    for n in range(warmup + jobs):
        yield env.timeout(rng.expovariate(total_rate))
        if n == warmup:
            monitor.mark(env.now)
        index = _pick(rng, indices, stream_weights)
        stream = streams[index]
        units = _pick(rng, *unit_tables[index])
        monitor.arrived(env.now)
        inbox.put(
            _Message(
                arrived=env.now,
                units=units,
                setup_s=stream.setup_cost_s,
                service_s=stream.setup_cost_s + rng.gammavariate(units, stream.unit_cost_s),
                delivers=stream.delivers,
                measured=n >= warmup,
            )
        )
    monitor.mark(env.now)


def core(
    env: simpy.Environment, inbox: simpy.Store, monitor: _Monitor
) -> simpy.events.ProcessGenerator:
    """One core: take the oldest message, do its work, repeat."""
    while True:
        message = yield inbox.get()
        started = env.now
        monitor.started(started, message)
        yield env.timeout(message.service_s)
        monitor.finished(env.now, message, started)


def simulate_instance(
    streams: Sequence[JobStream],
    cores: int = CORES,
    jobs: int = JOBS,
    seed: int = RANDOM_SEED,
    warmup_jobs: int | None = None,
    batches: int = BATCHES,
) -> InstanceResult:
    """Run one instance until ``jobs`` messages after the warm-up have been served."""
    active = [s for s in streams if s.rate_per_s > 0]
    if not active:
        raise ValueError("no stream has a positive rate")
    arrival_rate = sum(s.rate_per_s for s in active)
    mean_service = sum(s.rate_per_s * s.mean_service_s for s in active) / arrival_rate
    warmup = round(jobs * WARMUP_FRACTION) if warmup_jobs is None else warmup_jobs

    env = simpy.Environment()
    inbox = simpy.Store(env)
    monitor = _Monitor()
    env.process(clients(env, random.Random(seed), active, inbox, monitor, warmup, jobs))
    for _ in range(cores):
        env.process(core(env, inbox, monitor))
    env.run()  # ends when the last message has been served and every core waits on the inbox

    (start, area_start), (end, area_end) = monitor.window
    time_average = (area_end - area_start) / (end - start)
    observed_rate = jobs / (end - start)
    mean_sojourn = math.fsum(monitor.sojourns) / jobs
    mean_wait, low, high = batch_means_ci(monitor.waits, batches)
    quantiles = None
    if monitor.delivery_latencies:
        p50, p95, p99 = (
            percentile(monitor.delivery_latencies, q, monitor.delivery_weights)
            for q in (0.5, 0.95, 0.99)
        )
        quantiles = (p50, p95, p99)
    return InstanceResult(
        cores=cores,
        arrival_rate=arrival_rate,
        service_rate=1.0 / mean_service,
        utilisation=arrival_rate * mean_service / cores,
        jobs=jobs,
        mean_wait_s=mean_wait,
        wait_ci95=(low, high),
        p95_wait_s=percentile(monitor.waits, 0.95),
        mean_sojourn_s=mean_sojourn,
        time_average_in_system=time_average,
        observed_arrival_rate=observed_rate,
        littles_law_error=abs(time_average - observed_rate * mean_sojourn) / time_average,
        inbound_p95_s=(
            percentile(monitor.inbound_sojourns, 0.95) if monitor.inbound_sojourns else None
        ),
        deliveries=monitor.deliveries,
        delivery_p95_s=quantiles[1] if quantiles else None,
        delivery_quantiles_s=quantiles,
    )
