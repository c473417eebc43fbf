"""recommendation.md: SLAs gate, cost ranks, ties go to reach then simplicity, one connection
versus two, and what would flip each choice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sobranie_bench.harness import results
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
    assert lad is not None and lad.rungs == 1 and not lad.broke and lad.stopped == "top"
    cpu = median(summary, "ws", "echo", "server_cpu_us_per_msg")
    assert lad.per_core == pytest.approx(1e6 / cpu)
    row = next(r for r in recommendation.ladder_rows(res, "echo") if r[0] == "ws")
    assert row[2].startswith("≥ ") and row[3] == "ladder top (a bound)"


Rung = tuple[float, float, float, int]
"""Offered rate (/s), p99 (µs), achieved rate (/s), trials of 3 flagged client-bound."""


def ladder_results(rungs: list[Rung], cores: int = 2) -> data.Results:
    """An echo ladder of ws, 3 trials per rung, with these figures (no run behind it)."""
    raws, rows = [], []
    for rate, p99, got, bound in rungs:
        params = {"connections": 50, "payload": 48, "rate": int(rate)}
        for trial in (1, 2, 3):
            raws.append({"transport": "ws", "scenario": "echo", "params": params,
                         "trial": trial, "metadata": {"run_id": "r", "cores": cores}})
            for metric, value in (("rtt_p99_us", p99), ("throughput_msgs_per_s", got),
                                  ("server_cpu_us_per_msg", 50.0)):
                rows.append({"run_id": "r", "transport": "ws", "scenario": "echo",
                             "params": results.params_key(params), "trial": trial,
                             "metric": metric, "value": value, "unit": "us",
                             "client_bound": trial <= bound, "tls": True, "saturated": False,
                             "noisy": False, "network": "loopback"})
    return data.Results(Path("."), tuple(raws), pd.DataFrame(rows, columns=results.SUMMARY_COLUMNS))


@pytest.mark.parametrize(("rungs", "stopped", "held"), [
    ([(2000, 5e3, 2000, 0), (6000, 9e5, 6000, 0)], "sla", 2000),
    ([(2000, 5e3, 2000, 0), (6000, 9e3, 4000, 0)], "saturated", 2000),
    ([(2000, 5e3, 2000, 0), (6000, 9e5, 4000, 2)], "client_bound", 2000),
    ([(2000, 5e3, 2000, 0), (6000, 9e5, 4000, 1)], "sla", 2000),  # 1 of 3: the server's
    ([(2000, 9e5, 1000, 0), (6000, 9e6, 1000, 0)], "sla", None),
    ([(2000, 5e3, 2000, 0), (6000, 9e3, 6000, 0)], "top", 6000),
])
def test_a_ladder_says_what_stopped_it(rungs: list[Rung], stopped: str,
                                       held: float | None) -> None:
    lad = recommendation.ladder(ladder_results(rungs), "ws", "echo")
    assert lad is not None and (lad.stopped, lad.held, lad.rungs) == (stopped, held, 2)


def test_the_stop_reads_in_words_with_the_runs_machine() -> None:
    res = ladder_results([(2000, 5e3, 2000, 0), (6000, 9e5, 4000, 3)], cores=4)
    [row] = recommendation.ladder_rows(res, "echo")
    assert row[:3] == ["ws", "2", "2,000/s"]
    assert "client-bound" in row[3] and "the 4-core machine's limit" in row[3]
    [row] = recommendation.ladder_rows(ladder_results([(2000, 9e5, 2000, 0)]), "echo")
    assert row[2:4] == ["broke at the first rung", "p99 over the SLA"]
    md = "\n".join(recommendation.ladders_section(res))
    assert "| Transport | Rungs | Held within SLA | Stopped by | Per server core |" in md
