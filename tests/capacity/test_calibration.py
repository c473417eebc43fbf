"""Calibration from the fixture summary: measured medians, marked fallbacks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from sobranie_bench.capacity.calibration import (
    FALLBACKS,
    TRANSPORTS,
    LatencyCurve,
    LatencyPoint,
    TransportCosts,
    calibrate,
    load_summary,
    parse_params,
)
from sobranie_bench.capacity.fleet import plan


def test_ws_figures_are_the_medians_of_the_fixture(costs: dict[str, TransportCosts]) -> None:
    ws = costs["ws"]
    assert ws.echo_cpu_us_per_msg.value == pytest.approx(60.0)
    assert ws.cpu_us_per_delivery.value == pytest.approx(8.0)
    assert ws.cpu_us_per_inbound.value == pytest.approx(52.0)  # echo minus one delivery
    assert ws.cpu_us_per_connection.value == pytest.approx(1000.0)
    assert ws.memory_bytes_per_connection.value == pytest.approx(15 * 1024)
    assert ws.wire_overhead_bytes.value == pytest.approx(64.0)
    assert ws.keepalive_cpu_us_per_connection_s.value == pytest.approx(1.5)
    assert ws.fallbacks == []
    assert all(f.source == "measured" for f in ws.figures().values())


def test_longpoll_costs_much_more_per_message_than_ws(costs: dict[str, TransportCosts]) -> None:
    ws, longpoll = costs["ws"], costs["longpoll"]
    assert longpoll.cpu_us_per_delivery.value > 10 * ws.cpu_us_per_delivery.value
    assert longpoll.echo_cpu_us_per_msg.value > 5 * ws.echo_cpu_us_per_msg.value


def test_transports_missing_from_the_summary_are_all_fallback(
    costs: dict[str, TransportCosts],
) -> None:
    assert set(TRANSPORTS) <= set(costs)
    webtransport = costs["webtransport"]
    assert all(f.source == "fallback" for f in webtransport.figures().values())
    assert webtransport.cpu_us_per_connection == FALLBACKS["webtransport"]["cpu_us_per_connection"]
    assert "latency_curve" in webtransport.fallbacks
    assert all(f.note for f in webtransport.figures().values())  # every fallback says why


def test_a_missing_scenario_falls_back_for_its_figures_only(summary_path: Path) -> None:
    frame = pd.read_csv(summary_path)
    no_fanout = frame[~((frame["transport"] == "sse") & (frame["scenario"] == "fanout"))]
    sse = calibrate(no_fanout)["sse"]
    assert sse.cpu_us_per_delivery.source == "fallback"
    assert sse.cpu_us_per_inbound.source == "measured"
    assert "fallback CPU per delivery" in sse.cpu_us_per_inbound.note
    assert sse.memory_bytes_per_connection.source == "measured"
    assert sse.fallbacks == ["cpu_us_per_delivery"]


def test_a_missing_metric_falls_back(summary_path: Path) -> None:
    frame = pd.read_csv(summary_path)
    ws = calibrate(frame[frame["metric"] != "keepalive_cpu_percent"])["ws"]
    assert ws.keepalive_cpu_us_per_connection_s.source == "fallback"
    assert ws.fallbacks == ["keepalive_cpu_us_per_connection_s"]


def test_median_over_trials() -> None:
    frame = pd.DataFrame(
        {
            "run_id": "r",
            "transport": "ws",
            "scenario": "fanout",
            "params": "subscribers=10",
            "trial": [1, 2, 3],
            "metric": "server_cpu_us_per_delivery",
            "value": [7.0, 9.0, 100.0],
            "unit": "us",
            "client_bound": False,
        }
    )
    assert calibrate(frame)["ws"].cpu_us_per_delivery.value == 9.0


def test_client_bound_rows_stay_out_of_the_latency_curve(costs: dict[str, TransportCosts]) -> None:
    rates = [p.rate_per_s for p in costs["ws"].latency_curve.points]
    assert rates == [1000, 4000, 8000, 12000, 15000]  # not the client-bound 20000


def test_latency_curve_knee_interpolates(costs: dict[str, TransportCosts]) -> None:
    curve = costs["ws"].latency_curve
    # p95 crosses 500 ms between 12000/s (38 ms) and 15000/s (950 ms), at 60 us per echo.
    knee = curve.work_within(500_000)
    assert knee is not None
    assert 12000 * 60 < knee < 15000 * 60
    assert curve.work_within(10_000_000) is None  # never crossed: no measured limit
    assert curve.work_within(100) == 0.0  # even the lowest rate misses it


def test_capacity_rows_give_the_curve_when_echo_is_missing(summary_path: Path) -> None:
    frame = pd.read_csv(summary_path)
    ws = calibrate(frame[frame["scenario"] != "echo"])["ws"]
    curve = ws.latency_curve
    assert curve.source == "measured" and curve.ends_at_knee
    # 20 publishes/s to ~4000 subscribers held 500 ms: work = 20 * (52 + 4000 * 8) us/s.
    assert curve.work_within(500_000) == pytest.approx(20 * (52 + 4000 * 8), rel=0.01)
    assert ws.echo_cpu_us_per_msg.source == "fallback"


def test_a_knee_below_the_echo_ladder_is_the_capacity_scenarios(summary_path: Path) -> None:
    frame = pd.read_csv(summary_path)
    echo_rates = frame["params"].str.extract(r"rate=(\d+)")[0].astype(float)
    # the ladder keeps only its 15,000/s rung, p95 950 ms: above the 500 ms the capacity
    # scenario held at less work (20/s to ~4,000 subscribers)
    high = frame[(frame["scenario"] != "echo") | (echo_rates == 15000)]
    ws = calibrate(high)["ws"]
    curve = ws.latency_curve
    assert [p.rate_per_s for p in curve.points][1:] == [15000]
    knee = 20 * (ws.cpu_us_per_inbound.value + 4000 * ws.cpu_us_per_delivery.value)
    assert curve.points[0].work_us_per_s == pytest.approx(knee, rel=0.01)
    assert curve.work_within(500_000) == pytest.approx(knee, rel=0.01)  # a capacity, not 0
    # the plan sizes a fleet (processes bound by that knee or tighter), where the echo rung
    # alone would leave none: "no number of instances meets the SLO"
    planned = plan(100_000, costs={"ws": ws}, transports=["ws"], latency_jobs=2_000)
    assert not planned.infeasible and planned.fleets[0].instances > 1
    alone = dataclasses.replace(ws, latency_curve=LatencyCurve(curve.points[1:], "measured", ""))
    assert plan(100_000, costs={"ws": alone}, transports=["ws"], latency_jobs=2_000).infeasible
    # the whole ladder (its lowest rung held) keeps the echo curve alone
    assert calibrate(frame)["ws"].latency_curve.points[0].rate_per_s == 1000


def test_no_summary_means_every_figure_is_fallback() -> None:
    costs = calibrate(None)
    assert all(f.source == "fallback" for c in costs.values() for f in c.figures().values())
    assert all(
        c.latency_curve == LatencyCurve((), "fallback", c.latency_curve.note)
        for c in costs.values()
    )


def test_loading_normalises_types(summary_path: Path) -> None:
    frame = load_summary(summary_path)
    assert frame["client_bound"].dtype == bool
    assert frame["client_bound"].sum() == 4  # two trials x two metrics at rate 20000


def test_parse_params() -> None:
    assert parse_params("connections=50;payload=48;rate=2000") == {
        "connections": 50.0,
        "payload": 48.0,
        "rate": 2000.0,
    }
    assert parse_params("steps=100/200;sla_ms=500")["steps"] == "100/200"
    assert parse_params("") == {}


def test_latency_points_sort_by_work() -> None:
    points = sorted([LatencyPoint(2.0, 1.0, 1.0), LatencyPoint(1.0, 5.0, 9.0)])
    assert [p.work_us_per_s for p in points] == [1.0, 2.0]
