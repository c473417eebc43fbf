"""Reconnect storm: clients reconnecting all at once after a deploy or an instance loss.

Covers:

- Retries with exponential backoff and full jitter (Marc Brooker, "Exponential Backoff And
  Jitter", AWS Architecture Blog, 2015)
- Admission control with a token bucket on the server
- Aggregate flows: cohorts of clients with a count each, not one process per client

Scenario:
  At t = 0 every client loses its connection and reconnects. The load balancer spreads them
  evenly over the instances, so one instance and its ``clients / instances`` clients stand
  for all. The instance completes handshakes at its connect capacity (CPU per handshake from
  the calibration), first come first served. A client waits TIMEOUT_S for its handshake, then
  gives up (after ``timeout_s``, default TIMEOUT_S) and tries again; the instance still finds the abandoned attempt in its queue and
  spends STALE_COST of a handshake discovering the closed socket. Strategies:

  - ``none``: reconnect at once; after a timeout retry after RETRY_DELAY_S.
  - ``full_jitter``: the first attempt waits U(0, JITTER_WINDOW_S); attempt a > 1 waits
    U(0, min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2**a)).
  - ``token_bucket``: reconnect at once; admission in front of the instance (a load-balancer
    rate limit such as nginx ``limit_req`` or Envoy's local rate limit) lets handshakes
    through at BUCKET_SHARE of its capacity with a bucket of one second's tokens and turns
    the rest away (HTTP 503) without touching the instance; they back off with full jitter.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Literal

import simpy

RANDOM_SEED = 42
TICK_S = 0.01  # time step, seconds
TIMEOUT_S = 5.0  # a client gives up on a handshake after this long, seconds
RETRY_DELAY_S = 1.0  # fixed retry delay without jitter, seconds
JITTER_WINDOW_S = 10.0  # full jitter: first attempt spread over this window, seconds
BASE_BACKOFF_S = 1.0  # full jitter: backoff cap of attempt a is BASE * 2**a, seconds
MAX_BACKOFF_S = 60.0  # full jitter: backoff never exceeds this, seconds
BUCKET_SHARE = 0.8  # token bucket: admission rate as a share of the connect capacity
STALE_COST = 0.1  # cost of discarding an abandoned attempt, in handshakes
RECOVERED_SHARE = 0.99  # recovered once this share of clients is connected
MAX_DURATION_S = 900.0  # stop simulating after this long, seconds

Strategy = Literal["none", "full_jitter", "token_bucket"]
STRATEGIES: tuple[Strategy, ...] = ("none", "full_jitter", "token_bucket")


@dataclass(frozen=True)
class StormResult:
    """How one instance lived through a reconnect storm."""

    strategy: Strategy
    """Reconnect strategy of the clients (and admission policy of the server)."""
    clients: int
    """Clients reconnecting, fleet-wide."""
    instances: int
    """Instances they reconnect to."""
    connect_capacity_per_s: float
    """Handshakes one instance completes per second with all its CPU."""
    peak_attempts_per_s: float
    """Most reconnect attempts aimed at one instance in any one-second window."""
    peak_handshakes_per_s: float
    """Most attempts let through to one instance in any one-second window (all of them,
    except under the token bucket)."""
    peak_over_capacity: float
    """peak_handshakes_per_s / connect_capacity_per_s; above 1 the instance falls behind."""
    time_to_recover_s: float | None
    """Time until RECOVERED_SHARE of the clients are connected; None if not within the run."""
    attempts: int
    """Handshake attempts that reached one instance."""
    wasted_share: float
    """Share of the instance's handshake CPU spent discarding abandoned attempts."""
    connected_share: tuple[float, ...]
    """Share of one instance's clients connected at the end of each step (a second unless
    ``storm(step_s=...)``)."""


@dataclass
class _Cohort:
    """Clients that reached the instance in the same tick on the same attempt."""

    tick: int
    count: int
    attempt: int
    abandoned: bool = False


@dataclass
class _Instance:
    """The state the clients and the instance share."""

    capacity_per_tick: float
    timeout_ticks: int
    due: defaultdict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    queue: deque[_Cohort] = field(default_factory=deque)
    waiting: deque[_Cohort] = field(default_factory=deque)
    arrivals: list[_Cohort] = field(default_factory=list)
    attempts_per_tick: list[int] = field(default_factory=list)
    admitted_per_tick: list[int] = field(default_factory=list)
    connected: int = 0
    useful_work: float = 0.0
    wasted_work: float = 0.0


def _backoff_s(rng: random.Random, attempt: int) -> float:
    return rng.uniform(0.0, min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2**attempt))


def _schedule(
    instance: _Instance, rng: random.Random, strategy: Strategy, now: int, count: int, attempt: int
) -> None:
    """Book ``count`` clients' next attempt (number ``attempt``) after their backoff."""
    if strategy == "none":
        instance.due[now + round(RETRY_DELAY_S / TICK_S)][attempt] += count
        return
    for _ in range(count):
        instance.due[now + max(1, round(_backoff_s(rng, attempt) / TICK_S))][attempt] += 1


def reconnecting_clients(
    env: simpy.Environment, instance: _Instance, rng: random.Random, strategy: Strategy
) -> simpy.events.ProcessGenerator:
    """The instance's clients: attempt when due, give up after a timeout, back off, retry."""
    tick = 0
    while True:
        due = sorted(instance.due.pop(tick, Counter()).items())
        instance.arrivals = [_Cohort(tick, count, attempt) for attempt, count in due]
        instance.queue.extend(instance.arrivals)
        instance.waiting.extend(instance.arrivals)
        instance.attempts_per_tick.append(sum(count for _, count in due))
        while instance.waiting and instance.waiting[0].tick + instance.timeout_ticks <= tick:
            cohort = instance.waiting.popleft()
            if cohort.count and not cohort.abandoned:
                cohort.abandoned = True
                _schedule(instance, rng, strategy, tick, cohort.count, cohort.attempt + 1)
        yield env.timeout(TICK_S)
        tick += 1


def handshaking_instance(
    env: simpy.Environment, instance: _Instance, rng: random.Random, strategy: Strategy
) -> simpy.events.ProcessGenerator:
    """The instance behind its admission bucket (token bucket only): completes handshakes
    first come first served with the CPU of one tick, discarding abandoned attempts cheaply.
    It acts after the clients in each tick (it was started second): it sees their arrivals."""
    bucket_rate = BUCKET_SHARE * instance.capacity_per_tick
    bucket_size = bucket_rate / TICK_S  # one second's worth of tokens
    tokens, budget = bucket_size, 0.0
    while True:
        budget = min(budget, 1.0) + instance.capacity_per_tick
        if strategy == "token_bucket":
            tokens = min(bucket_size, tokens + bucket_rate)
            for cohort in instance.arrivals:
                rejected = max(0, cohort.count - math.floor(tokens))
                tokens -= cohort.count - rejected
                cohort.count -= rejected
                _schedule(instance, rng, strategy, cohort.tick, rejected, cohort.attempt + 1)
        instance.admitted_per_tick.append(sum(c.count for c in instance.arrivals))
        while instance.queue and budget > 0:
            cohort = instance.queue[0]
            if cohort.count == 0:  # all turned away by the bucket, or all served
                instance.queue.popleft()
                continue
            cost = STALE_COST if cohort.abandoned else 1.0
            served = min(cohort.count, math.floor(budget / cost))
            if served == 0:
                break
            budget -= served * cost
            cohort.count -= served
            if cohort.abandoned:
                instance.wasted_work += served * cost
            else:
                instance.connected += served
                instance.useful_work += served
        if not instance.queue:
            budget = min(budget, 0.0)  # an idle core does not bank CPU for later
        yield env.timeout(TICK_S)


def _peak_per_s(per_tick: list[int]) -> float:
    """Largest sum over any window of one second of ticks."""
    window = round(1 / TICK_S)
    running = peak = sum(per_tick[:window])
    for i in range(window, len(per_tick)):
        running += per_tick[i] - per_tick[i - window]
        peak = max(peak, running)
    return float(peak)


def storm(
    clients: int,
    instances: int = 10,
    strategy: Strategy = "full_jitter",
    connect_capacity_per_s: float = 1_000.0,
    jitter_window_s: float = JITTER_WINDOW_S,
    timeout_s: float = TIMEOUT_S,
    seed: int = RANDOM_SEED,
    max_duration_s: float = MAX_DURATION_S,
    step_s: float = 1.0,
) -> StormResult:
    """Simulate ``clients`` reconnecting to ``instances`` with one strategy.

    ``connect_capacity_per_s`` is one instance's handshakes per second at full CPU, e.g.
    :attr:`FleetPlan.connect_capacity_per_instance_s` (the default is one core at 1 ms each).
    ``step_s`` is the resolution of ``time_to_recover_s`` and ``connected_share`` (a multiple
    of TICK_S; a small storm recovers within a second).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    per_instance = math.ceil(clients / instances)
    rng = random.Random(seed)
    instance = _Instance(connect_capacity_per_s * TICK_S, round(timeout_s / TICK_S))
    if strategy == "full_jitter":
        for _ in range(per_instance):
            instance.due[round(rng.uniform(0.0, jitter_window_s) / TICK_S)][1] += 1
    else:
        instance.due[0][1] = per_instance

    env = simpy.Environment()
    env.process(reconnecting_clients(env, instance, rng, strategy))
    env.process(handshaking_instance(env, instance, rng, strategy))
    connected_share: list[float] = []
    recovered_at: float | None = None
    steps = 0
    while steps * step_s < max_duration_s and instance.connected < per_instance:
        steps += 1
        env.run(until=steps * step_s)
        connected_share.append(instance.connected / per_instance)
        if recovered_at is None and instance.connected >= RECOVERED_SHARE * per_instance:
            recovered_at = steps * step_s

    peak_attempts = _peak_per_s(instance.attempts_per_tick)
    peak_handshakes = _peak_per_s(instance.admitted_per_tick)
    total_work = instance.useful_work + instance.wasted_work
    return StormResult(
        strategy=strategy,
        clients=clients,
        instances=instances,
        connect_capacity_per_s=connect_capacity_per_s,
        peak_attempts_per_s=peak_attempts,
        peak_handshakes_per_s=peak_handshakes,
        peak_over_capacity=peak_handshakes / connect_capacity_per_s,
        time_to_recover_s=recovered_at,
        attempts=sum(instance.attempts_per_tick),
        wasted_share=instance.wasted_work / total_work if total_work else 0.0,
        connected_share=tuple(connected_share),
    )
