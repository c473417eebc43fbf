"""The workload model's aggregate rates move the right way when each input grows."""

from __future__ import annotations

import pytest

from sobranie_bench.capacity.workload import (
    FEATURES,
    RoomSize,
    Workload,
    aggregate_rates,
)


def rates(workload: Workload) -> dict[str, tuple[float, float, float]]:
    return {
        load.feature: (load.inbound_per_s, load.publishes_per_s, load.deliveries_per_s)
        for load in aggregate_rates(workload)
    }


def test_rates_scale_linearly_with_online_users() -> None:
    small, large = rates(Workload(online_users=1000)), rates(Workload(online_users=10_000))
    for feature in FEATURES:
        for a, b in zip(small[feature], large[feature], strict=True):
            assert b == pytest.approx(10 * a)


def test_default_mapping_and_what_if() -> None:
    workload = Workload()
    assert workload.transports == ("ws", "sse")
    assert {load.feature: load.transport for load in aggregate_rates(workload)} == {
        "chat": "ws", "presence": "ws", "collab": "ws",
        "notifications": "sse", "feed": "sse", "counters": "sse",
    }  # fmt: skip
    assert workload.all_over("longpoll").transports == ("longpoll",)


def test_chat_fan_out_is_exact_for_fixed_rooms() -> None:
    workload = Workload(
        online_users=1000,
        chat_rooms=(RoomSize(10, 1.0),),
        member_online_probability=1.0,
        chat_msgs_per_user_s=0.01,
    )
    chat = rates(workload)["chat"]
    assert chat == pytest.approx((10.0, 10.0, 10.0 * 9))


def test_larger_rooms_mean_more_deliveries() -> None:
    small = Workload(chat_rooms=(RoomSize(2, 0.9), RoomSize(50, 0.1)))
    large = Workload(chat_rooms=(RoomSize(2, 0.9), RoomSize(500, 0.1)))
    assert rates(large)["chat"][2] > rates(small)["chat"][2]
    assert rates(large)["chat"][1] == rates(small)["chat"][1]  # same messages sent


def test_presence_is_quadratic_in_group_size() -> None:
    def group_deliveries(g: int) -> float:
        # One presence group of g users, everyone online: g members each tell g - 1 others.
        workload = Workload(online_users=g, friends_per_user=g - 1, member_online_probability=1.0)
        return rates(workload)["presence"][2]

    r = Workload().presence_changes_per_user_s
    assert group_deliveries(100) == pytest.approx(100 * 99 * r)
    assert group_deliveries(200) / group_deliveries(100) == pytest.approx(200 * 199 / (100 * 99))


def test_presence_scoping_and_debounce_cut_the_load() -> None:
    plain = rates(Workload())["presence"]
    scoped = rates(Workload(presence_subscription_limit=20))["presence"]
    debounced = rates(Workload(presence_debounce_s=600))["presence"]
    assert scoped[2] < plain[2] and scoped[1] == plain[1]
    assert debounced[1] == pytest.approx(plain[1] / 2)  # r / (1 + r T) with r T = 1
    assert debounced[2] < plain[2]


def test_server_originated_features_have_no_inbound() -> None:
    r = rates(Workload())
    assert r["notifications"][0] == r["feed"][0] == r["counters"][0] == 0.0
    assert r["counters"][2] == pytest.approx(Workload().online_users * 0.05)
