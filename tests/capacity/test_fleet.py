"""Plans move the right way when each input grows; Redis modes; fleet-hour simulation."""

from __future__ import annotations

import math

import pytest

from sobranie_bench.capacity.calibration import TransportCosts
from sobranie_bench.capacity.fleet import (
    FleetPlan,
    HostSpec,
    InstanceSpec,
    Plan,
    RedisSpec,
    local_recipients,
    plan,
    redis_load,
    scaling_table,
    simulate_fleet_hour,
)
from sobranie_bench.capacity.workload import RecipientGroup, RoomSize, Workload, aggregate_rates

USERS = 500_000
JOBS = 5_000  # messages per latency check: enough for the direction of a change, and fast


def fleet(result: Plan, transport: str) -> FleetPlan:
    return next(f for f in result.fleets if f.transport == transport)


@pytest.fixture(scope="module")
def base(costs: dict[str, TransportCosts]) -> Plan:
    return plan(USERS, costs=costs, latency_jobs=JOBS)


def test_default_plan_has_a_ws_and_an_sse_fleet(base: Plan) -> None:
    assert [f.transport for f in base.fleets] == ["ws", "sse"]
    for f in base.fleets:
        assert f.instances == f.instances_needed + 1  # N+1
        assert f.p95_delivery_s < base.slo_s
        assert f.cpu_utilisation <= InstanceSpec().max_utilisation
        assert f.memory_bytes_per_instance <= InstanceSpec().connection_memory_bytes
        assert f.fallbacks == ()


def test_more_users_need_more_instances(costs: dict[str, TransportCosts], base: Plan) -> None:
    bigger = plan(USERS * 4, costs=costs, latency_jobs=JOBS)
    for transport in ("ws", "sse"):
        assert fleet(bigger, transport).instances > fleet(base, transport).instances
        assert fleet(bigger, transport).redis_sharded.publishes_per_s == pytest.approx(
            4 * fleet(base, transport).redis_sharded.publishes_per_s
        )


def test_larger_rooms_mean_more_deliveries_and_no_fewer_instances(
    costs: dict[str, TransportCosts], base: Plan
) -> None:
    rooms = tuple(RoomSize(r.members * 4, r.message_share) for r in Workload().chat_rooms)
    larger = plan(USERS, costs=costs, latency_jobs=JOBS, workload=Workload(chat_rooms=rooms))
    assert fleet(larger, "ws").deliveries_per_s > fleet(base, "ws").deliveries_per_s
    assert fleet(larger, "ws").instances >= fleet(base, "ws").instances
    assert (
        fleet(larger, "ws").redis_sharded.deliveries_per_s
        > fleet(base, "ws").redis_sharded.deliveries_per_s
    )


def test_costlier_connections_need_more_instances(
    costs: dict[str, TransportCosts], base: Plan
) -> None:
    small_host = InstanceSpec(host=HostSpec(memory_bytes=256 * 1024**2))
    small = plan(USERS, costs=costs, latency_jobs=JOBS, instance=small_host)
    assert fleet(small, "sse").instances > fleet(base, "sse").instances
    assert fleet(small, "sse").binding == "memory"


def test_a_tighter_slo_needs_more_instances(costs: dict[str, TransportCosts], base: Plan) -> None:
    alone = plan(USERS, costs=costs, latency_jobs=JOBS, transports=["ws"])
    slo_s = fleet(alone, "ws").p95_delivery_s * 0.8  # below what the plain plan gives
    tight = plan(USERS, costs=costs, latency_jobs=JOBS, slo_s=slo_s, transports=["ws"])
    assert fleet(tight, "ws").instances > fleet(alone, "ws").instances
    assert fleet(tight, "ws").p95_delivery_s <= slo_s


def test_more_spares_add_instances(costs: dict[str, TransportCosts], base: Plan) -> None:
    spare = plan(USERS, costs=costs, latency_jobs=JOBS, instance=InstanceSpec(spare_instances=2))
    for f, g in zip(base.fleets, spare.fleets, strict=True):
        assert g.instances == f.instances + 1


def test_longpoll_needs_many_more_instances_than_ws(costs: dict[str, TransportCosts]) -> None:
    what_if = plan(USERS, costs=costs, latency_jobs=JOBS, transports=["ws", "longpoll"])
    assert [f.transport for f in what_if.fleets] == ["ws", "longpoll"]
    # ws is bound by its file descriptors (20,000 connections a process), longpoll by CPU
    assert fleet(what_if, "ws").binding == "file descriptors"
    assert fleet(what_if, "longpoll").instances > 2 * fleet(what_if, "ws").instances
    assert set(fleet(what_if, "ws").features) == {
        "chat", "presence", "collab", "notifications", "feed", "counters",
    }  # fmt: skip


def test_local_recipients_distribution() -> None:
    group = RecipientGroup(potential=500, online_probability=0.3, share=1.0)
    p_local, table = local_recipients(group, instances=20)
    assert p_local == pytest.approx(1 - (1 - 0.3 / 20) ** 500)
    assert sum(p for _, p in table) == pytest.approx(1.0)
    mean_given_any = sum(k * p for k, p in table)
    assert p_local * mean_given_any == pytest.approx(500 * 0.3 / 20, rel=1e-6)
    assert local_recipients(RecipientGroup(9, 1.0, 1.0), 1) == (1.0, ((9, 1.0),))


def test_classic_pub_sub_broadcasts_every_publish_to_every_node() -> None:
    loads = aggregate_rates(Workload(online_users=2_000_000))
    classic, sharded = redis_load(loads, instances=20, payload_bytes=300, redis=RedisSpec())
    assert classic.per_shard_publishes_per_s == classic.publishes_per_s
    assert sharded.shards is not None
    assert sharded.per_shard_publishes_per_s == pytest.approx(
        sharded.publishes_per_s / sharded.shards
    )
    assert classic.deliveries_per_s == sharded.deliveries_per_s
    assert classic.deliveries_per_instance_s == pytest.approx(classic.deliveries_per_s / 20)


def test_classic_pub_sub_cannot_scale_past_one_node_of_publishes() -> None:
    loads = aggregate_rates(Workload(online_users=20_000_000))
    classic, sharded = redis_load(loads, instances=200, payload_bytes=300, redis=RedisSpec())
    assert classic.publishes_per_s > RedisSpec().ops_per_s_per_node * RedisSpec().max_utilisation
    assert classic.shards is None
    assert sharded.shards == math.ceil(
        (RedisSpec().ops_per_publish * sharded.publishes_per_s + sharded.deliveries_per_s)
        / 50_000
    )


def test_fleet_hour_runs_one_process_per_instance(
    costs: dict[str, TransportCosts], base: Plan
) -> None:
    ws = fleet(base, "ws")
    hour = simulate_fleet_hour(
        ws, base.workload, costs["ws"], duration_s=600, lost_instance_at_s=300
    )
    # every instance ticks once a second; the lost one stops half-way
    assert hour.instance_ticks == ws.instances * 600 - 300
    assert 0 < hour.mean_utilisation < ws.cpu_utilisation * 1.1
    assert hour.p99_utilisation >= hour.mean_utilisation


def test_scaling_table_records_run_time(costs: dict[str, TransportCosts]) -> None:
    table = scaling_table((10_000, 100_000), costs=costs, duration_s=120, latency_jobs=JOBS)
    assert list(table["online_users"]) == [10_000, 10_000, 100_000, 100_000]
    assert {"plan_wall_s", "simulate_wall_s", "instance_ticks", "instances"} <= set(table.columns)
    assert (table["simulate_wall_s"] > 0).all()


def test_a_process_holds_no_more_connections_than_its_file_limit(
    costs: dict[str, TransportCosts], base: Plan
) -> None:
    few_files = InstanceSpec(fd_limit=2_064)  # 2,000 connections after the reserved 64
    limited = plan(USERS, costs=costs, latency_jobs=JOBS, instance=few_files)
    for f in limited.fleets:
        assert f.connections_per_instance <= 2_000
        assert f.binding == "file descriptors"
        assert f.instances > fleet(base, f.transport).instances


def test_hosts_count_processes_per_host(costs: dict[str, TransportCosts], base: Plan) -> None:
    four = plan(USERS, costs=costs, latency_jobs=JOBS,
                instance=InstanceSpec(host=HostSpec(cores=4, memory_bytes=16 * 1024**3)))
    for f in four.fleets:
        assert f.hosts == math.ceil(f.instances / 4)
        assert f.cpu_utilisation <= InstanceSpec().max_utilisation  # of one core per process


def test_a_transport_missing_the_slo_at_its_lowest_step_is_a_row_not_a_crash(
        costs: dict[str, TransportCosts]) -> None:
    import dataclasses

    from sobranie_bench.capacity.calibration import LatencyCurve, LatencyPoint

    slow = LatencyCurve((LatencyPoint(1000.0, 812_000.0, 100.0),
                         LatencyPoint(4000.0, 2_000_000.0, 400.0)), "measured", "echo rows")
    table = {**costs, "sse": dataclasses.replace(costs["sse"], latency_curve=slow)}
    result = plan(USERS, costs=table, latency_jobs=JOBS)
    assert [f.transport for f in result.fleets] == ["ws"]
    (row,) = result.infeasible
    assert row.transport == "sse" and row.features and row.lowest_p95_s == pytest.approx(0.812)
    assert row.reason == ("no number of instances meets the 500 ms SLO at the measured load: "
                          "p95 812 ms at the lowest step")
    table_rows = scaling_table((USERS,), costs=table, duration_s=60, latency_jobs=JOBS)
    assert table_rows.set_index("transport").loc["sse", "infeasible"] == row.reason
