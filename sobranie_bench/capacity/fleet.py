"""Fleet model: server processes, hosts, memory, bandwidth and Redis load for N online users.

The unit is the benchmarked server: one event-loop process, which uses at most one core. A
host runs several such processes (SO_REUSEPORT, or one port each behind HAProxy); a plan
counts processes, and the hosts they fit on.

Covers:

- Sizing a fleet per transport against what limits one process: CPU (one core), the measured
  latency knee, its share of the host's memory and egress, file descriptors (one per
  connection, under the per-process limit) and the broker connection it reads from; the p95
  delivery latency checked with the SimPy instance model, plus N+1 headroom
- Redis pub/sub load, classic (every publish broadcast to every node over the cluster bus)
  versus sharded (SPUBLISH reaches only the shard that owns the channel's slot)
- Aggregate flows for a whole fleet over an hour: one process per *instance*, not per user

Scenario:
  Users connect through a least-connections load balancer, so each of ``n`` instances of a
  transport's fleet holds ``1/n`` of the connections. A message published to a channel
  reaches Redis once and every instance with at least one online recipient of it once; each
  instance then writes to its local recipients. Users are independent Poisson sources, so
  the messages reaching one instance are a Poisson superposition whose rate is a sum of
  per-user rates: a fleet of 10M users costs as much to simulate as its instance count.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import simpy

from sobranie_bench.capacity.calibration import TransportCosts, calibrate
from sobranie_bench.capacity.instance import JobStream, simulate_instance
from sobranie_bench.capacity.stats import percentile
from sobranie_bench.capacity.workload import FeatureLoad, RecipientGroup, Workload, aggregate_rates

RANDOM_SEED = 42
SLO_S = 0.5  # p95 publish-to-delivery latency objective, seconds
HOST_CORES = 2  # cores of a host (the benchmark machine's); one process per core by default
PROCESS_CORES = 1  # an event loop runs on one core at a time
FD_LIMIT = 20_000  # open files per process (the benchmark machine's hard limit)
REDIS_HOP_S = 0.001  # Redis publish to subscriber read inside one datacentre, seconds
KEEPALIVE_PERIOD_S = 20.0  # one heartbeat per idle connection every this many seconds
INSTANCE_JOBS = 10_000  # messages simulated per instance-latency check (p95: 500 beyond it)
TICK_S = 1.0  # time step of the fleet-hour simulation, seconds
HOUR_S = 3600.0  # simulated duration of the fleet-hour run, seconds
RECONNECT_WINDOW_S = 10.0  # clients of a lost instance reconnect spread over this, seconds
IDLE_JOBS_PER_S = 200.0  # a process's idle CPU (timers, GC) as a stream of small jobs
RESP_OVERHEAD_BYTES = 60  # RESP framing + channel name per pub/sub message, bytes
GIB = 1024**3
MAX_INSTANCES_MESSAGE = "no fleet size up to 10M instances meets the limits"

Constraint = Literal[
    "cpu",
    "measured latency",
    "memory",
    "egress",
    "file descriptors",
    "broker connection",
    "simulated latency",
]


@dataclass(frozen=True)
class HostSpec:
    """One machine that runs several server processes."""

    cores: int = HOST_CORES
    """Cores of the host."""
    memory_bytes: int = 8 * GIB
    """RAM of the host, bytes."""
    usable_memory_fraction: float = 0.75
    """Share of RAM available to connections (the rest: runtime, buffers, page cache)."""
    egress_bytes_per_s: float = 125e6
    """Sustained egress of the host's NIC (1 Gbit/s), bytes per second."""
    processes: int | None = None
    """Server processes per host; default one per core (each uses at most one core)."""

    @property
    def processes_per_host(self) -> int:
        """Server processes this host runs."""
        return self.processes or self.cores


@dataclass(frozen=True)
class InstanceSpec:
    """One server instance: one event-loop process (at most one core) on a host."""

    host: HostSpec = HostSpec()
    """The machine the process shares with ``host.processes_per_host - 1`` others."""
    max_utilisation: float = 0.75
    """Highest planned utilisation of the process's one core: headroom for bursts, GC pauses
    and deploys."""
    fd_limit: int = FD_LIMIT
    """Open files one process may hold; every connection takes one."""
    fds_reserved: int = 64
    """Descriptors not available to connections (listening sockets, broker connection, the
    event loop's own, logs, imported libraries)."""
    broker_messages_per_s: float = 50_000.0
    """Messages one process can read from its one broker subscription connection per second
    (an estimate for a Python client's parser on one core, until measured: the CPU it takes is
    part of the per-delivery cost, this bounds the single connection's pipe)."""
    spare_instances: int = 1
    """Processes added on top of the need (N+1): the plan holds with this many lost."""

    @property
    def cores(self) -> int:
        """Cores one process can use: one (its event loop)."""
        return PROCESS_CORES

    @property
    def memory_bytes(self) -> float:
        """This process's share of the host's RAM, bytes."""
        return self.host.memory_bytes / self.host.processes_per_host

    @property
    def connection_memory_bytes(self) -> float:
        """RAM this process can give to connections, bytes."""
        return self.memory_bytes * self.host.usable_memory_fraction

    @property
    def egress_bytes_per_s(self) -> float:
        """This process's share of the host's egress, bytes per second."""
        return self.host.egress_bytes_per_s / self.host.processes_per_host

    @property
    def max_connections(self) -> int:
        """Connections one process can hold under its file-descriptor limit."""
        return self.fd_limit - self.fds_reserved


@dataclass(frozen=True)
class RedisSpec:
    """The Redis deployment carrying pub/sub between instances."""

    ops_per_s_per_node: float = 100_000.0
    """Pub/sub messages (in or out) one Redis node handles per second on its one core;
    the order of magnitude redis-benchmark reports for O(1) commands without pipelining."""
    ops_per_publish: float = 3.0
    """Operations one publish costs the node: the servers' publishing script runs INCR (the
    channel's id), XADD (its history) and PUBLISH (``servers/brokers/redis_broker.py``). Was
    one: the measured cluster's broker spent 78-80 µs per message of a 3-instance backplane,
    the model with one op per publish said 40 (``capacity validate --cluster``)."""
    max_utilisation: float = 0.5
    """Highest planned utilisation of a Redis node (it is single-threaded)."""


@dataclass(frozen=True)
class RedisLoad:
    """Pub/sub load on Redis for one fleet, in one cluster mode."""

    mode: Literal["classic", "sharded"]
    """``classic``: PUBLISH, broadcast over the cluster bus to every node; ``sharded``:
    SPUBLISH, forwarded only within the shard owning the channel's slot."""
    publishes_per_s: float
    """Messages published per second."""
    deliveries_per_s: float
    """Messages Redis sends to instance subscriptions per second."""
    subscribed_instances_per_publish: float
    """Mean instances holding at least one online recipient of a publish."""
    deliveries_per_instance_s: float
    """Messages each instance's subscription receives per second."""
    shards: int | None
    """Shards needed to stay under the node utilisation limit; None if no count suffices."""
    per_shard_publishes_per_s: float
    """Publishes each shard's primary processes per second (broadcasts included)."""
    per_shard_deliveries_per_s: float
    """Deliveries each shard's primary sends per second."""
    per_shard_bytes_per_s: float
    """Bytes each shard's primary receives and sends per second."""


@dataclass(frozen=True)
class FleetPlan:
    """The instances one transport needs for the features it carries."""

    transport: str
    """Transport of this fleet."""
    features: tuple[str, ...]
    """Features the fleet carries."""
    connections: float
    """Open connections (one per online user)."""
    inbound_per_s: float
    """Client messages received per second, fleet-wide."""
    deliveries_per_s: float
    """Messages delivered to clients per second, fleet-wide."""
    connects_per_s: float
    """New connections per second from session churn, fleet-wide."""
    instances_needed: int
    """Instances that meet every limit with all of them up."""
    instances: int
    """Server processes to run: instances_needed plus the spares (N+1)."""
    hosts: int
    """Hosts those processes fit on (``processes_per_host`` each)."""
    binding: Constraint
    """The limit that set instances_needed."""
    cpu_utilisation: float
    """Utilisation of one process's core with instances_needed up."""
    connections_per_instance: float
    """Open connections (file descriptors) of one process with instances_needed up."""
    memory_bytes_per_instance: float
    """Connection memory of one instance with instances_needed up, bytes."""
    egress_bytes_per_s_per_instance: float
    """Egress of one instance with instances_needed up, bytes per second."""
    p95_delivery_s: float
    """Simulated p95 publish-to-delivery latency with instances_needed up, seconds."""
    connect_capacity_per_instance_s: float
    """Handshakes one instance completes per second with all its CPU, per second."""
    redis_classic: RedisLoad
    """Redis load with classic cluster pub/sub."""
    redis_sharded: RedisLoad
    """Redis load with sharded pub/sub."""
    fallbacks: tuple[str, ...]
    """Calibration figures of this transport that are fallback constants, not measurements."""
    instances_interval: tuple[int, int] | None = None
    """5th and 95th percentile of ``instances`` over the fitted costs' bootstrap (Monte
    Carlo, closed-form limits); None without a fit (:mod:`sobranie_bench.capacity.errors`)."""
    extrapolation: bool = False
    """One process's planned load lies beyond the largest load the costs were fitted to."""


@dataclass(frozen=True)
class InfeasibleFleet:
    """A transport no number of instances serves within the SLO: a measured fact, a row of the
    plan (not an exception)."""

    transport: str
    """Transport of the fleet that cannot be planned."""
    features: tuple[str, ...]
    """Features it would have carried."""
    reason: str
    """Why, in one line, e.g. "no number of instances meets the SLO at the measured load: p95
    812 ms at the lowest step"."""
    lowest_p95_s: float | None = None
    """Measured p95 at the lowest measured load, seconds (None when another limit failed)."""


class Infeasible(ValueError):
    """Raised by :func:`plan_fleet` when no fleet size meets the limits; :func:`plan` turns it
    into an :class:`InfeasibleFleet` row."""

    def __init__(self, row: InfeasibleFleet) -> None:
        super().__init__(f"{row.transport}: {row.reason}")
        self.row = row


@dataclass(frozen=True)
class Plan:
    """A capacity plan: one fleet per transport in use."""

    workload: Workload
    """The workload planned for."""
    slo_s: float
    """p95 delivery latency objective, seconds."""
    instance: InstanceSpec
    """Instance size assumed."""
    calibration: str
    """Where the per-transport costs came from."""
    fleets: tuple[FleetPlan, ...]
    """One plan per transport."""
    infeasible: tuple[InfeasibleFleet, ...] = ()
    """Transports no number of instances serves within the SLO (rows, with the reason)."""


@functools.lru_cache(maxsize=65536)  # a pure function, asked again by every fleet-size search
def local_recipients(
    group: RecipientGroup, instances: int
) -> tuple[float, tuple[tuple[int, float], ...]]:
    """For one publish and one instance: P(at least one online recipient is local) and the
    distribution of the local count given at least one, as ``(count, probability)`` pairs.

    Each of ``group.potential`` recipients is online with probability p and sits on any of
    the ``instances`` with equal chance, so the local count is Binomial(potential, p / n).
    """
    m, q = group.potential, group.online_probability / instances
    if m == 0 or q <= 0:
        return 0.0, ((1, 1.0),)
    if q >= 1:
        return 1.0, ((m, 1.0),)
    mean, sd = m * q, math.sqrt(m * q * (1 - q))
    low, high = max(1, math.floor(mean - 10 * sd)), min(m, math.ceil(mean + 10 * sd))
    log_q, log_not_q = math.log(q), math.log1p(-q)

    def log_pmf(k: int) -> float:
        return (
            math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)
            + k * log_q + (m - k) * log_not_q
        )  # fmt: skip

    pmf = [(k, math.exp(log_pmf(k))) for k in range(low, high + 1)]
    total = sum(p for _, p in pmf)
    return -math.expm1(m * log_not_q), tuple((k, p / total) for k, p in pmf if p > 0)


def _subscribed_instances(load: FeatureLoad, instances: int) -> float:
    return sum(g.share * instances * local_recipients(g, instances)[0] for g in load.groups)


def job_streams(
    loads: Sequence[FeatureLoad],
    costs: TransportCosts,
    connections: float,
    connects_per_s: float,
    instances: int,
) -> list[JobStream]:
    """The Poisson streams reaching one of ``instances`` instances of a fleet.

    Client messages cost ``cpu_us_per_inbound``; a broker message costs one delivery's CPU
    to read from Redis plus one per local recipient; handshakes and heartbeats are streams
    of their own, so the CPU they take shows up in the waits of everything else.
    """
    streams: list[JobStream] = []

    def add(name: str, rate_per_s: float, cost_us: float, **fan_out: Any) -> None:
        if rate_per_s > 0 and cost_us > 0:  # a zero-cost figure adds no work to simulate
            streams.append(JobStream(name, rate_per_s, cost_us * 1e-6, **fan_out))

    add("idle", IDLE_JOBS_PER_S, costs.idle_cores.value * 1e6 / IDLE_JOBS_PER_S)
    add("inbound", sum(load.inbound_per_s for load in loads) / instances,
        costs.cpu_us_per_inbound.value)  # fmt: skip
    add("connect", connects_per_s / instances, costs.cpu_us_per_connection.value)
    add("keepalive", connections / instances / KEEPALIVE_PERIOD_S,
        costs.keepalive_cpu_us_per_connection_s.value * KEEPALIVE_PERIOD_S)  # fmt: skip
    delivery_us = costs.cpu_us_per_delivery.value
    for load in loads:
        for group in load.groups:
            p_local, fanout = local_recipients(group, instances)
            add(
                f"{load.feature} to {group.potential}",
                load.publishes_per_s * group.share * p_local,
                delivery_us,
                fanout=fanout,
                delivers=True,
                setup_cost_s=delivery_us * 1e-6,
            )
    return streams


def _broker_messages(loads: Sequence[FeatureLoad], instances: int) -> float:
    """Messages the broker sends to the processes of a fleet of ``instances``, per second."""
    return sum(load.publishes_per_s * _subscribed_instances(load, instances) for load in loads)


def _cpu_cores(streams: Sequence[JobStream]) -> float:
    return sum(s.rate_per_s * s.mean_service_s for s in streams)


def redis_load(
    loads: Sequence[FeatureLoad], instances: int, payload_bytes: int, redis: RedisSpec
) -> tuple[RedisLoad, RedisLoad]:
    """Pub/sub load of one fleet on Redis, classic and sharded, with ``instances`` up."""
    publishes = sum(load.publishes_per_s for load in loads)
    deliveries = _broker_messages(loads, instances)
    message_bytes = payload_bytes + RESP_OVERHEAD_BYTES
    capacity = redis.ops_per_s_per_node * redis.max_utilisation
    subscribed = deliveries / publishes if publishes else 0.0
    publish_ops = publishes * redis.ops_per_publish

    # Classic: every node processes every publish (the cluster bus broadcasts it), while the
    # subscriptions spread over the nodes. More shards never lower the publish share.
    classic_shards: int | None = None
    if publish_ops < capacity:
        classic_shards = max(1, math.ceil(deliveries / (capacity - publish_ops)))
    # Sharded: a channel lives on one shard, publishes and deliveries both spread.
    sharded_shards = max(1, math.ceil((publish_ops + deliveries) / capacity))

    def load_for(mode: Literal["classic", "sharded"], shards: int | None) -> RedisLoad:
        count = shards or 1
        per_publishes = publishes if mode == "classic" else publishes / count
        per_deliveries = deliveries / count
        return RedisLoad(
            mode=mode,
            publishes_per_s=publishes,
            deliveries_per_s=deliveries,
            subscribed_instances_per_publish=subscribed,
            deliveries_per_instance_s=deliveries / instances,
            shards=shards,
            per_shard_publishes_per_s=per_publishes,
            per_shard_deliveries_per_s=per_deliveries,
            per_shard_bytes_per_s=(per_publishes + per_deliveries) * message_bytes,
        )

    return load_for("classic", classic_shards), load_for("sharded", sharded_shards)


def _smallest(fits: Callable[[int], bool], start: int = 1) -> int:
    """Smallest n >= start with fits(n), for fits monotone (false then true) in n."""
    high = start
    while not fits(high):
        high *= 2
        if high > 10_000_000:
            raise ValueError(MAX_INSTANCES_MESSAGE)
    low = max(start, high // 2)
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return high


def _p95_delivery(streams: Sequence[JobStream], jobs: int, seed: int) -> float:
    """Conservative end-to-end p95: sender's instance p95 + Redis hop + receiver's p95."""
    return _p95_of(tuple(streams), jobs, seed)


@functools.lru_cache(maxsize=4096)
def _p95_of(streams: tuple[JobStream, ...], jobs: int, seed: int) -> float:
    """:func:`_p95_delivery`, once per process for the same streams (a seeded simulation: a
    pure function of its arguments; the report prices many feature mappings that share a
    fleet, each asking for the same instance)."""
    result = simulate_instance(streams, cores=PROCESS_CORES, jobs=jobs, seed=seed)
    sender_leg = result.inbound_p95_s or 0.0
    return sender_leg + REDIS_HOP_S + (result.delivery_p95_s or 0.0)


def limit_needs(
    loads: Sequence[FeatureLoad],
    costs: TransportCosts,
    workload: Workload,
    instance: InstanceSpec,
    knee_cores: float | None,
) -> dict[Constraint, int]:
    """Processes each closed-form limit needs on its own: CPU, the measured latency knee
    (``knee_cores`` of one process's core, a hard limit), memory, egress, file descriptors
    and the broker connection."""
    connections = float(workload.online_users)
    connects = connections / workload.session_length_s
    deliveries = sum(load.deliveries_per_s for load in loads)
    bytes_per_delivery = workload.payload_bytes + costs.wire_overhead_bytes.value

    def cores_used(n: int) -> float:
        return _cpu_cores(job_streams(loads, costs, connections, connects, n))

    limits: dict[Constraint, Callable[[int], bool]] = {
        "cpu": lambda n: cores_used(n) <= instance.max_utilisation * instance.cores,
        "memory": lambda n: (
            connections / n * costs.memory_bytes_per_connection.value
            <= instance.connection_memory_bytes
        ),
        "egress": lambda n: deliveries / n * bytes_per_delivery <= instance.egress_bytes_per_s,
        "file descriptors": lambda n: connections / n <= instance.max_connections,
        "broker connection": lambda n: (
            _broker_messages(loads, n) / n <= instance.broker_messages_per_s
        ),
    }
    if knee_cores is not None:
        limits["measured latency"] = lambda n: cores_used(n) <= knee_cores
    return {name: _smallest(fits) for name, fits in limits.items()}


def plan_fleet(
    transport: str,
    loads: Sequence[FeatureLoad],
    costs: TransportCosts,
    workload: Workload,
    slo_s: float = SLO_S,
    instance: InstanceSpec = InstanceSpec(),
    redis: RedisSpec = RedisSpec(),
    latency_jobs: int = INSTANCE_JOBS,
    seed: int = RANDOM_SEED,
) -> FleetPlan:
    """Size one transport's fleet for the features it carries.

    The closed-form limits (CPU, measured latency knee, memory, egress) give a first size;
    the SimPy instance model then checks the p95 delivery latency at that size with
    ``latency_jobs`` messages, growing the fleet by 10% steps while it misses the SLO.
    """
    connections = float(workload.online_users)
    connects = connections / workload.session_length_s
    deliveries = sum(load.deliveries_per_s for load in loads)
    bytes_per_delivery = workload.payload_bytes + costs.wire_overhead_bytes.value
    features = tuple(load.feature for load in loads)
    knee = costs.latency_curve.work_within(slo_s * 1e6)
    if knee == 0.0:
        lowest = costs.latency_curve.points[0].p95_us * 1e-6
        raise Infeasible(InfeasibleFleet(
            transport, features,
            f"no number of instances meets the {slo_s * 1000:g} ms SLO at the measured load: "
            f"p95 {lowest * 1000:.0f} ms at the lowest step", lowest))
    measured_cores = None if knee is None else knee * 1e-6
    try:
        needs = limit_needs(loads, costs, workload, instance, measured_cores)
    except ValueError as exc:
        if str(exc) != MAX_INSTANCES_MESSAGE:
            raise
        raise Infeasible(InfeasibleFleet(transport, features, str(exc))) from None

    def cores_used(n: int) -> float:
        return _cpu_cores(job_streams(loads, costs, connections, connects, n))

    binding: Constraint = max(needs, key=lambda name: needs[name])
    needed = needs[binding]

    def p95_at(n: int) -> float:
        streams = job_streams(loads, costs, connections, connects, n)
        return _p95_delivery(streams, latency_jobs, seed)

    p95 = p95_at(needed)
    while p95 > slo_s:
        if needed > 10_000_000:
            raise Infeasible(InfeasibleFleet(
                transport, features, f"{MAX_INSTANCES_MESSAGE} (simulated p95 "
                f"{p95 * 1000:.0f} ms)"))
        needed = max(needed + 1, math.ceil(needed * 1.1))
        binding = "simulated latency"
        p95 = p95_at(needed)

    classic, sharded = redis_load(
        loads, needed + instance.spare_instances, workload.payload_bytes, redis
    )
    return FleetPlan(
        transport=transport,
        features=features,
        connections=connections,
        inbound_per_s=sum(load.inbound_per_s for load in loads),
        deliveries_per_s=deliveries,
        connects_per_s=connects,
        instances_needed=needed,
        instances=needed + instance.spare_instances,
        hosts=math.ceil((needed + instance.spare_instances) / instance.host.processes_per_host),
        binding=binding,
        cpu_utilisation=cores_used(needed) / instance.cores,
        connections_per_instance=connections / needed,
        memory_bytes_per_instance=connections / needed * costs.memory_bytes_per_connection.value,
        egress_bytes_per_s_per_instance=deliveries / needed * bytes_per_delivery,
        p95_delivery_s=p95,
        connect_capacity_per_instance_s=1e6 / costs.cpu_us_per_connection.value,
        redis_classic=classic,
        redis_sharded=sharded,
        fallbacks=tuple(costs.fallbacks),
    )


def plan(
    online_users: int | None = None,
    *,
    workload: Workload | None = None,
    costs: Mapping[str, TransportCosts] | None = None,
    transports: Sequence[str] | None = None,
    slo_s: float = SLO_S,
    instance: InstanceSpec = InstanceSpec(),
    redis: RedisSpec = RedisSpec(),
    calibration: str = "fallback constants (no summary given)",
    latency_jobs: int = INSTANCE_JOBS,
    seed: int = RANDOM_SEED,
) -> Plan:
    """Plan the fleets for ``online_users`` (or ``workload.online_users``).

    Without ``transports`` the workload's feature-to-transport mapping decides which fleet
    carries what. With ``transports``, each listed transport is planned as if it carried
    every feature alone: a what-if, one fleet per transport, for comparing them.
    """
    base = workload or Workload()
    if online_users is not None:
        base = base.with_(online_users=online_users)
    table = dict(costs) if costs is not None else calibrate(None)
    scenarios = [base.all_over(t) for t in transports] if transports else [base]
    fleets = []
    infeasible = []
    for scenario in scenarios:
        loads = aggregate_rates(scenario)
        for transport in scenario.transports:
            carried = [load for load in loads if load.transport == transport]
            transport_costs = table.get(transport) or calibrate(None, (transport,))[transport]
            try:
                fleets.append(plan_fleet(
                    transport,
                    carried,
                    transport_costs,
                    scenario,
                    slo_s,
                    instance,
                    redis,
                    latency_jobs,
                    seed,
                ))
            except Infeasible as exc:  # a measured fact: a row of the plan, never a crash
                infeasible.append(exc.row)
    return Plan(base, slo_s, instance, calibration, tuple(fleets), tuple(infeasible))


@dataclass(frozen=True)
class FleetHour:
    """One fleet simulated as aggregate flows over a stretch of time (an hour by default)."""

    transport: str
    """Transport of the fleet."""
    online_users: int
    """Online users the fleet serves."""
    instances: int
    """Instances at the start (the plan's count, spares included)."""
    duration_s: float
    """Simulated time, seconds."""
    instance_ticks: int
    """Instance time steps simulated (the work the simulation did)."""
    mean_utilisation: float
    """Mean CPU utilisation over all instances and ticks."""
    p99_utilisation: float
    """99th percentile of per-tick CPU utilisation over instances and ticks."""
    overloaded_fraction: float
    """Share of instance ticks at which the instance had more work than CPU (backlog)."""
    max_backlog_delay_s: float
    """Longest queueing delay implied by a backlog at a tick end, seconds."""
    lost_instance_at_s: float | None
    """When one instance was killed (its clients reconnect to the others), or None."""
    wall_time_s: float
    """Wall-clock time the simulation took, seconds."""


@dataclass
class _FleetState:
    """What the instance processes and the chaos monkey share during a fleet run."""

    alive: list[bool]
    load_share: float = 1.0  # load on a surviving instance relative to all instances up
    utilisations: list[float] = field(default_factory=list)
    overloaded_ticks: int = 0
    max_delay_s: float = 0.0


def simulate_fleet_hour(
    fleet: FleetPlan,
    workload: Workload,
    costs: TransportCosts,
    duration_s: float = HOUR_S,
    lost_instance_at_s: float | None = HOUR_S / 2,
    seed: int = RANDOM_SEED,
) -> FleetHour:
    """Run a planned fleet for ``duration_s`` in ticks of TICK_S, one process per instance.

    Per tick, an instance's work is the compound-Poisson sum of its streams' CPU demand,
    drawn as a normal with the exact mean and variance (thousands of messages per tick).
    Work beyond the process's one core carries over as a backlog. At ``lost_instance_at_s``
    one instance dies: the others take its share of the load, and its clients' handshakes
    arrive spread over RECONNECT_WINDOW_S.
    """
    loads = [load for load in aggregate_rates(workload) if load.feature in fleet.features]
    connects = fleet.connections / workload.session_length_s
    streams = job_streams(loads, costs, fleet.connections, connects, fleet.instances)
    mean_work = sum(s.rate_per_s * s.mean_service_s for s in streams) * TICK_S
    var_work = sum(s.rate_per_s * s.second_moment_service_s2 for s in streams) * TICK_S
    handshake_s = costs.cpu_us_per_connection.value * 1e-6
    capacity = PROCESS_CORES * TICK_S
    state = _FleetState(alive=[True] * fleet.instances)

    def reconnect_work(now: float) -> float:
        if lost_instance_at_s is None or not 0 <= now - lost_instance_at_s < RECONNECT_WINDOW_S:
            return 0.0
        lost_clients = fleet.connections / fleet.instances
        per_survivor = lost_clients / (fleet.instances - 1)
        return per_survivor * handshake_s * TICK_S / RECONNECT_WINDOW_S

    def instance(
        env: simpy.Environment, index: int, rng: random.Random
    ) -> simpy.events.ProcessGenerator:
        backlog = 0.0
        while state.alive[index]:
            yield env.timeout(TICK_S)
            share = state.load_share
            work = max(0.0, rng.gauss(mean_work * share, math.sqrt(var_work * share)))
            work += reconnect_work(env.now)
            state.utilisations.append(min(1.0, (backlog + work) / capacity))
            backlog = max(0.0, backlog + work - capacity)
            if backlog > 0:
                state.overloaded_ticks += 1
                state.max_delay_s = max(state.max_delay_s, backlog / PROCESS_CORES)

    def chaos_monkey(env: simpy.Environment, at_s: float) -> simpy.events.ProcessGenerator:
        yield env.timeout(at_s)
        state.alive[0] = False
        state.load_share = fleet.instances / (fleet.instances - 1)

    started = time.perf_counter()
    env = simpy.Environment()
    rng = random.Random(seed)
    for index in range(fleet.instances):
        env.process(instance(env, index, random.Random(rng.getrandbits(64))))
    if lost_instance_at_s is not None and fleet.instances > 1:
        env.process(chaos_monkey(env, lost_instance_at_s))
    env.run(until=duration_s + TICK_S / 2)
    return FleetHour(
        transport=fleet.transport,
        online_users=workload.online_users,
        instances=fleet.instances,
        duration_s=duration_s,
        instance_ticks=len(state.utilisations),
        mean_utilisation=math.fsum(state.utilisations) / len(state.utilisations),
        p99_utilisation=percentile(state.utilisations, 0.99),
        overloaded_fraction=state.overloaded_ticks / len(state.utilisations),
        max_backlog_delay_s=state.max_delay_s,
        lost_instance_at_s=lost_instance_at_s,
        wall_time_s=time.perf_counter() - started,
    )


def scaling_table(
    users: Sequence[int] = (100_000, 1_000_000, 10_000_000),
    *,
    workload: Workload | None = None,
    costs: Mapping[str, TransportCosts] | None = None,
    duration_s: float = HOUR_S,
    latency_jobs: int = INSTANCE_JOBS,
    seed: int = RANDOM_SEED,
) -> pd.DataFrame:
    """How planning and the fleet-hour simulation grow with online users: one row per size
    and fleet, with wall-clock seconds for each (the simulation covers ``duration_s``)."""
    base = workload or Workload()
    table = dict(costs) if costs is not None else calibrate(None)
    rows = []
    for online in users:
        scenario = base.with_(online_users=online)
        started = time.perf_counter()
        result = plan(workload=scenario, costs=table, latency_jobs=latency_jobs, seed=seed)
        plan_s = time.perf_counter() - started
        for fleet in result.fleets:
            hour = simulate_fleet_hour(
                fleet,
                scenario,
                table[fleet.transport],
                duration_s,
                seed=seed,
            )
            rows.append(
                {
                    "online_users": online,
                    "transport": fleet.transport,
                    "instances": fleet.instances,
                    "instance_ticks": hour.instance_ticks,
                    "simulated_s": duration_s,
                    "plan_wall_s": plan_s,
                    "simulate_wall_s": hour.wall_time_s,
                    "p99_utilisation": hour.p99_utilisation,
                    "max_backlog_delay_s": hour.max_backlog_delay_s,
                    "infeasible": "",
                }
            )
        for row in result.infeasible:  # the reason, where a number of instances would be
            rows.append({"online_users": online, "transport": row.transport,
                         "instances": None, "plan_wall_s": plan_s, "infeasible": row.reason})
    return pd.DataFrame(rows)
