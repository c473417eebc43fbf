"""Loading and selecting: newest run per transport x scenario, scale-out kept apart, no ratio
across runs, failed runs named as such."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sobranie_bench.report import data
from tests.report.conftest import add_raw, median, raw_file


def test_fixture_loads_with_every_transport_and_scenario(fixture_dir: Path) -> None:
    res = data.load(fixture_dir)
    assert res.transports == ("ws", "ws-websockets", "sse", "longpoll")
    assert set(res.scenarios) == {"echo", "fanout", "connections", "overhead", "churn",
                                  "capacity"}
    assert res.main_run == res.run_ids[0] and res.ignored == 0 and not res.scaleout


def test_figures_are_the_summary_medians(fixture_dir: Path, summary: pd.DataFrame) -> None:
    res = data.load(fixture_dir)
    for t in res.transports:
        assert res.value(t, "echo", "rtt_p99_us") == median(summary, t, "echo", "rtt_p99_us")
        assert res.value(t, "overhead", "bytes_per_msg",
                         res.point("overhead", t, payload=4096)) == median(
            summary, t, "overhead", "bytes_per_msg", payload=4096)


def test_newest_run_wins_and_older_raws_are_counted_out(results_copy: Path) -> None:
    newer = raw_file("ws", "echo")
    newer["counters"]["received_measured"] //= 2
    add_raw(results_copy, newer, "29991231T000000Z")
    res = data.load(results_copy)
    assert res.run_id("ws", "echo") == "29991231T000000Z"
    assert res.run_id("sse", "echo") != "29991231T000000Z"
    assert res.ignored == 1
    assert res.peers("ws", "echo") == ("ws",), "no other transport shares that run"


def test_no_ratio_is_taken_across_runs(results_copy: Path) -> None:
    add_raw(results_copy, raw_file("ws", "echo"), "29991231T000000Z")
    res = data.load(results_copy)
    assert res.ratio("sse", "ws", "echo", "rtt_p50_us") is None
    assert res.ratio("sse", "ws-websockets", "echo", "rtt_p50_us") is not None


def test_cluster_runs_are_kept_apart_from_one_instance_runs(results_copy: Path) -> None:
    scaled = raw_file("ws", "fanout")
    scaled["metadata"].update(cluster=3, broker="redis")
    add_raw(results_copy, scaled, "29991231T000000Z")
    res = data.load(results_copy)
    assert res.run_id("ws", "fanout") != "29991231T000000Z", "one-instance figures unmixed"
    assert list(res.scaleout) == ["3 instances over redis"]
    assert res.scaleout["3 instances over redis"].run_id("ws", "fanout") == "29991231T000000Z"


def test_a_failed_run_is_named_not_hidden(results_copy: Path) -> None:
    failed = raw_file("sse", "connections")
    failed["error"] = "server 'sse' did not start"
    add_raw(results_copy, failed, "29991231T000000Z")
    res = data.load(results_copy)
    assert res.failed("sse", "connections")
    assert res.figure("sse", "connections", "server_rss_bytes_per_conn") is None
    assert not res.failed("ws", "connections")


def test_no_results_is_an_empty_selection(tmp_path: Path) -> None:
    res = data.load(tmp_path / "nothing-here")
    assert res.empty and res.main_run is None and res.transports == ()
    assert data.scenario_frame(res, "echo", ["rtt_p50_us"]).empty


def test_network_runs_are_kept_apart_and_read_by_their_profile(results_copy: Path) -> None:
    from sobranie_bench.report.rules import Ref, figure

    loopback = data.load(results_copy).figure("ws", "echo", "rtt_p99_us")
    slow = raw_file("ws", "echo")
    slow["network"] = "4g"
    add_raw(results_copy, slow, "29991231T000001Z")
    res = data.load(results_copy)
    assert list(res.networks) == ["4g"]
    assert res.figure("ws", "echo", "rtt_p99_us") == loopback  # never mixed into loopback
    on_4g = figure(res, Ref("ws", "echo", "rtt_p99_us", network="4g"))
    assert on_4g is not None and on_4g.run_id == "29991231T000001Z"
    assert figure(res, Ref("ws", "echo", "rtt_p99_us", network="3g")) is None
