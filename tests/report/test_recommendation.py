"""recommendation.md: SLAs gate, cost ranks, ties go to reach then simplicity, one connection
versus two, and what would flip each choice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sobranie_bench.report import data, recommendation
from sobranie_bench.report.recommendation import (
    FALLBACK_POOL,
    SLA,
    Check,
    Cost,
    Feature,
    Option,
    rank,
)
from tests.report.conftest import median


@pytest.fixture(scope="module")
def res(fixture_dir: Path) -> data.Results:
    return data.load(fixture_dir)


def option(t: str, usd: float, reach: int = 5, complexity: float = 1.0) -> Option:
    cost = Cost((), 1, 1, 1.0, 1.0, usd, 1, ())
    return Option(t, Check(t, None, "loopback", True, 10.0), cost, reach, complexity)


def test_cost_ranks_and_near_ties_go_to_reach_then_simplicity() -> None:
    ranked = rank([option("a", 1000), option("b", 900), option("c", 2000)])
    assert [o.transport for o in ranked] == ["b", "a", "c"]
    tie = rank([option("cheap-narrow", 1000, reach=3), option("wide", 1030, reach=5)])
    assert tie[0].transport == "wide", "3% apart is a tie: reach decides"
    simple = rank([option("big", 1000, complexity=3.0), option("small", 1010, complexity=1.0)])
    assert simple[0].transport == "small"


def test_a_sub_millisecond_gap_does_not_decide_a_seconds_deadline(res: data.Results) -> None:
    choice = recommendation.choices(res)["notifications"]
    assert choice.ranking, "every transport of the fixture delivers within seconds"
    win = choice.ranking[0]
    for o in choice.ranking[1:]:
        assert o.cost is not None and win.cost is not None
        assert o.cost.usd_month >= win.cost.usd_month * (1 - recommendation.COST_TIE)


def test_the_sla_gates(res: data.Results, summary: pd.DataFrame) -> None:
    p99 = median(summary, "ws", "echo", "rtt_p99_us")
    tight = SLA("echo", "rtt_p99_us", p99 / 2, "4g", "test")
    loose = SLA("echo", "rtt_p99_us", p99 * 2, "4g", "test")
    assert not recommendation.sla_check(res, "ws", tight).meets
    check = recommendation.sla_check(res, "ws", loose)
    assert check.meets and check.network == "loopback", "no 4g run: loopback stands in"
    assert check.headroom == pytest.approx(2.0, rel=0.01)


def test_a_transport_missing_the_sla_is_rejected_with_why(res: data.Results) -> None:
    costing = recommendation.Costing(res)
    feature = Feature("probe", "probe", "both", ("chat",),
                      SLA("echo", "rtt_p99_us", 1.0, "loopback", "1 µs: nobody meets it"), 1e9)
    choice = recommendation.choose(res, feature, costing, "ws")
    assert choice.winner is None
    assert all("misses the SLA" in why for _, why in choice.rejected)


def test_every_feature_gets_a_winner_and_an_http_fallback(res: data.Results) -> None:
    for key, choice in recommendation.choices(res).items():
        if choice.feature.sla is None:
            assert choice.winner is None, "calls are WebRTC media: not measured here"
            continue
        assert choice.winner in res.transports, key
        assert choice.fallback in FALLBACK_POOL and choice.fallback != choice.winner
        assert recommendation.flips(choice), key


def test_two_connections_cost_more_processes_than_one(res: data.Results) -> None:
    frame = recommendation.stacks_frame(res)
    one, two = frame.iloc[0], frame.iloc[1]
    assert one["Connections / user"] == 1 and two["Connections / user"] == 2
    assert two["Processes"] > one["Processes"]


def test_recommendation_md_shows_sla_cost_and_flips(built: Path) -> None:
    md = (built / "recommendation.md").read_text()
    assert "## One connection per user, or two" in md
    assert md.count("What would flip it:") == 5
    assert "SLA: echo round trip p99 ≤ 300 ms on 4g" in md
    assert "judged on loopback" in md, "no 4g run in the fixture: labelled"
    assert "$" in md and recommendation.PRICE.source in md
    assert "WebRTC media" in md and "Not measured here" in md


def test_a_one_rung_ladder_is_a_bound_not_a_break(res: data.Results,
                                                  summary: pd.DataFrame) -> None:
    lad = recommendation.ladder(res, "ws", "echo")
    assert lad is not None and lad.rungs == 1 and not lad.broke
    cpu = median(summary, "ws", "echo", "server_cpu_us_per_msg")
    assert lad.per_core == pytest.approx(1e6 / cpu)
    assert any("(ladder top: a bound)" in row[2] for row in recommendation.ladder_rows(res, "echo"))
