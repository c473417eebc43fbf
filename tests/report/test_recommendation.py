"""recommendation.md: winners from the data, weights that move the choice, the capacity plan
at one million online users."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sobranie_bench.report import data, recommendation
from sobranie_bench.report.recommendation import FALLBACK_POOL, Feature, choose
from tests.report.conftest import median


def only(criterion: str) -> Feature:
    weights = dict.fromkeys(recommendation.CRITERIA, 0.0)
    weights[criterion] = 1.0
    return Feature("probe", "probe", "both", ("chat",), weights)


def test_one_criterion_picks_its_best_transport(fixture_dir: Path,
                                                summary: pd.DataFrame) -> None:
    res = data.load(fixture_dir)
    transports = ("ws", "ws-websockets", "sse", "longpoll")
    cheapest = min(transports, key=lambda t: median(summary, t, "overhead", "bytes_per_msg",
                                                    payload=64))
    fastest = min(transports, key=lambda t: median(summary, t, "echo", "rtt_p99_us"))
    smallest = min(transports, key=lambda t: median(summary, t, "connections",
                                                    "server_rss_bytes_per_conn"))
    assert choose(res, only("bytes")).winner == cheapest
    assert choose(res, only("latency")).winner == fastest
    assert choose(res, only("memory")).winner == smallest


def test_every_feature_gets_a_measured_winner_and_an_http_fallback(fixture_dir: Path) -> None:
    res = data.load(fixture_dir)
    for key, choice in recommendation.choices(res).items():
        if choice.feature.direction == "media":
            assert choice.winner is None, "calls are WebRTC media: not measured here"
            continue
        assert choice.winner in res.transports, key
        assert choice.fallback in FALLBACK_POOL and choice.fallback != choice.winner


def test_sensitivity_has_every_weighting(fixture_dir: Path) -> None:
    frame = recommendation.sensitivity_frame(data.load(fixture_dir))
    assert list(frame.columns) == list(recommendation.WEIGHTINGS)
    assert len(frame) == 5


def test_zero_measured_figures_fall_back_and_say_so(fixture_dir: Path) -> None:
    from sobranie_bench.capacity import calibrate

    res = data.load(fixture_dir)
    costs = calibrate(data.summary_frame(res))
    assert all(f.value > 0 for tc in costs.values() for f in tc.figures().values())
    assert all(f.note for tc in costs.values() for f in tc.figures().values()
               if f.source == "fallback")


def test_recommendation_md_costs_both_stacks_at_a_million(built: Path) -> None:
    md = (built / "recommendation.md").read_text()
    assert "## Cost at 1,000,000 online users" in md
    assert "planned with `sobranie_bench.capacity.plan`" in md
    assert "The note's stack (WebSockets + SSE)" in md
    assert "WebRTC media" in md and "Not measured here" in md


def test_features_won_by_one_protocol_share_one_connection() -> None:
    features = {f.key: f for f in recommendation.FEATURES}

    def won(key: str, transport: str, score: float) -> recommendation.Choice:
        return recommendation.Choice(features[key], [recommendation.Scored(transport, score, {})],
                                     {}, {})

    chosen = {"chat": won("chat", "ws", 0.9), "collab": won("collab", "ws", 0.9),
              "presence": won("presence", "ws-websockets", 0.8),
              "notifications": won("notifications", "sse", 0.7),
              "feed": won("feed", "ws-websockets", 0.8),
              "calls": recommendation.Choice(features["calls"], [], {}, {})}
    mapping = recommendation.transport_for(chosen)
    assert mapping == {"chat": "ws", "collab": "ws", "presence": "ws", "feed": "ws",
                       "counters": "ws", "notifications": "sse"}
