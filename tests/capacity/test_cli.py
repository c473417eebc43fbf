"""``sobranie-bench capacity``: the subcommands run and print what they promise."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from sobranie_bench.capacity.cli import register
from tests.capacity.conftest import Raw


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sobranie-bench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_validate_json_has_the_promised_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["capacity", "validate", "--json", "--jobs", "20000"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["M/M/1", "M/M/1", "M/M/2", "M/M/4"]
    for row in rows:
        for key in ("model", "servers", "arrival_rate", "service_rate", "utilisation",
                    "simulated_mean_wait", "analytic_mean_wait", "ci95"):  # fmt: skip
            assert key in row
        low, high = row["ci95"]
        assert low < row["simulated_mean_wait"] < high
        assert row["analytic_mean_wait"] < 0.01  # seconds, not microseconds


def test_validate_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["capacity", "validate", "--jobs", "5000"]) == 0
    out = capsys.readouterr().out
    assert "Erlang C" in out and "M/M/4" in out


def test_plan_json_from_a_summary(summary_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "capacity",
        "plan",
        "--online-users",
        "100000",
        "--summary",
        str(summary_path),
        "--json",
    ]
    assert run(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert [f["transport"] for f in result["fleets"]] == ["ws", "sse"]
    assert result["calibration"].startswith("measured from")
    assert all(f["instances"] >= 2 for f in result["fleets"])


def test_plan_table_with_what_if_transports(
    summary_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["capacity", "plan", "--online-users", "100000", "--summary", str(summary_path),
            "--transport", "ws", "socketio", "--latency-jobs", "5000"]  # fmt: skip
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "socketio" in out and "Redis pub/sub" in out


def test_plan_without_a_summary_says_it_uses_fallbacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no results/summary.csv here
    assert (
        run(["capacity", "plan", "--online-users", "50000", "--json", "--latency-jobs", "5000"])
        == 0
    )
    captured = capsys.readouterr()
    assert "FALLBACK" in captured.err
    result = json.loads(captured.out)
    assert "FALLBACK" in result["calibration"]
    assert all(f["fallbacks"] for f in result["fleets"])


def test_plan_with_a_missing_explicit_summary_fails(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["capacity", "plan", "--online-users", "1000", "--summary", str(tmp_path / "x.csv")])
    assert exit_info.value.code == 2


def test_an_slo_below_the_measured_floor_is_a_row_not_an_error(
    summary_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["capacity", "plan", "--online-users", "1000", "--summary", str(summary_path),
            "--slo-ms", "0.1"]  # fmt: skip
    assert run(argv) == 0
    assert "no number of" in capsys.readouterr().out
    assert run([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["infeasible"]
    assert rows and all(r["reason"].startswith("no number of instances meets the 0.1 ms SLO at "
                                               "the measured load: p95 ") for r in rows)


def test_storm_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["capacity", "storm", "--clients", "20000", "--instances", "2",
            "--connect-capacity", "1000", "--json"]  # fmt: skip
    assert run(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in results] == ["none", "full_jitter", "token_bucket"]
    assert results[1]["peak_handshakes_per_s"] < results[0]["peak_handshakes_per_s"]


@pytest.mark.parametrize("sub", ["plan", "storm", "validate", "scaling"])
def test_every_subcommand_has_help(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["capacity", sub, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out or sub in ("validate", "scaling")


def test_validate_cluster_prints_the_fleet_model_beside_a_cluster_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], failover_raw: Raw
) -> None:
    run_dir = tmp_path / "runs" / "20260101T000000Z"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"cluster": 3}))
    (run_dir / "ws-failover-t1.json").write_text(json.dumps(failover_raw(jitter=False)))
    assert run(["capacity", "validate", "--cluster", str(run_dir), "--json"]) == 0
    rows = {r["figure"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cut off"]["predicted"] == "50" and rows["cut off"]["measured"] == "50"
    assert "no jitter" in rows["all back s"]["note"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["capacity", "validate", "--cluster", str(empty)]) == 2
    assert "no cluster" in capsys.readouterr().out
