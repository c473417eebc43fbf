"""Fan-out counts deliveries, losses and duplicates exactly."""

from __future__ import annotations

import time

from sobranie_bench.harness import figures
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios.fanout import Tally, part
from tests.conftest import SECRET, UNIT


def test_tally_counts_new_and_duplicate_ids() -> None:
    t = Tally()
    seen = [t.see(i) for i in [1, 2, 2, 3, 5, 4, 6, 6, 6, 9, 4]]
    assert seen == [True, True, False, True, True, True, True, False, False, True, False]
    assert (t.unique, t.duplicates, t.reordered, t.last) == (7, 4, 1, 9)
    assert t.missing == {7, 8}


def _raw(acked: dict[str, int], subs: dict[str, int], unique: dict[str, int],
         dups: int) -> dict:
    empty = Recorder().encoded()
    return {"scenario": "fanout", "params": {"rate": 1}, "window": {"measure": 0, "end": 1},
            "histograms": {"latency": empty},
            "counters": {"published": sum(acked.values()), "delivered": sum(unique.values()),
                         "delivered_measured": 0, "duplicated": dups, "connect_failures": 0},
            "per_channel": {"acked": acked, "subscribers": subs, "unique": unique}}


def test_lost_is_acked_times_subscribers_minus_unique_per_channel() -> None:
    m = figures.metrics(_raw({"a": 10, "b": 4}, {"a": 3, "b": 2}, {"a": 28, "b": 8}, 5))
    assert m["lost"][0] == (30 - 28) + (8 - 8)
    assert m["duplicated"][0] == 5
    assert m["delivered"][0] == 36


async def test_fanout_run_delivers_every_acked_message_once(start_server) -> None:
    server = await start_server("ws")
    ctx = PartContext(transport="ws", url=server.url,
                      params={"channels": 2, "subscribers": 5, "rate": 100, "payload": 16},
                      index=0, count=1, seed=3, start_ns=time.monotonic_ns() + int(1e9),
                      warmup=0.2, duration=1.0, secret=SECRET, timeout=UNIT)
    out = await part(ctx)
    c, pc = out["counters"], out["per_channel"]
    assert c["published"] > 50
    assert c["delivered"] == c["published"] * 5
    assert c["duplicated"] == 0
    assert pc["subscribers"] == {ch: 5 for ch in pc["acked"]}
    assert all(pc["unique"][ch] == pc["acked"][ch] * 5 for ch in pc["acked"])


def test_parts_merge_into_exact_per_channel_counts() -> None:
    from sobranie_bench.harness.runner import merge_parts

    publisher = {"per_channel": {"acked": {"a": 10}, "subscribers": {"a": 2},
                                 "unique": {"a": 20}}}
    other = {"per_channel": {"acked": {"a": 0}, "subscribers": {"a": 3}, "unique": {"a": 29}}}
    merged = merge_parts([publisher, other])["per_channel"]
    assert merged == {"acked": {"a": 10}, "subscribers": {"a": 5}, "unique": {"a": 49}}
    raw = _raw(merged["acked"], merged["subscribers"], merged["unique"], 0)
    assert figures.metrics(raw)["lost"][0] == 1


def test_a_subscriber_that_joined_late_is_owed_only_what_followed() -> None:
    raw = _raw({"a": 10}, {"a": 2}, {"a": 10 + 7}, 0)
    raw["per_channel"]["joined"] = {"a": 3}  # the second one joined when id 3 was the latest
    assert figures.metrics(raw)["lost"][0] == 0
