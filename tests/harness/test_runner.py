"""The runner end to end: raw files, a summary that is a pure function of them, clear errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from sobranie_bench.harness import figures, results
from sobranie_bench.harness.runner import HarnessError, Plan, check_target, run_plan
from sobranie_bench.harness.scenarios.registry import registry
from tests.conftest import SECRET


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    out = tmp_path_factory.mktemp("results")
    plan = Plan(profile="ci", transports=("ws", "sse"), scenarios=("echo", "overhead"),
                out=out, secret=SECRET)
    asyncio.run(run_plan(plan))
    return out


def test_raw_files_carry_metadata_and_histograms(tiny_run: Path) -> None:
    raws = results.load_raw(tiny_run)
    assert {(r["transport"], r["scenario"]) for r in raws} == {
        ("ws", "echo"), ("sse", "echo"), ("ws", "overhead"), ("sse", "overhead")}
    for raw in raws:
        meta = raw["metadata"]
        for key in ("python", "libraries", "cpu", "git_commit", "profile", "seed", "run_id"):
            assert key in meta
        assert raw["version"] == results.RAW_VERSION
        assert raw["params"]
        if raw["scenario"] == "echo":
            assert raw["histograms"]["rtt"]["measured"]
            assert raw["resources"]["server"] and raw["resources"]["harness"]


def test_summary_is_a_pure_function_of_the_raw_files(tiny_run: Path, tmp_path: Path) -> None:
    first = (tiny_run / "summary.csv").read_text()
    figures.write_summary(tiny_run / "runs", tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == first
    rows = list(csv.DictReader(first.splitlines()))
    assert set(rows[0]) == set(results.SUMMARY_COLUMNS)
    metrics = {(r["transport"], r["scenario"], r["metric"]) for r in rows}
    assert ("ws", "echo", "rtt_p99_us") in metrics
    assert ("sse", "overhead", "bytes_per_msg") in metrics
    # change a raw file: the summary follows it, and only it
    raw_path = next(p for p in (tiny_run / "runs").rglob("ws-overhead-*.json"))
    raw = json.loads(raw_path.read_text())
    raw["counters"]["sub_down"] += raw["counters"]["delivered"] * 10
    copy = tmp_path / "runs" / "x"
    copy.mkdir(parents=True)
    (copy / raw_path.name).write_text(json.dumps(raw))
    before = {r["metric"]: float(r["value"]) for r in figures.summarize(json.loads(
        raw_path.read_text()))}
    after = {r["metric"]: float(r["value"]) for r in figures.summarize(raw)}
    assert after["bytes_down_per_msg"] == pytest.approx(before["bytes_down_per_msg"] + 10)


def test_overhead_counts_bytes_at_the_socket(tiny_run: Path) -> None:
    rows = [r for r in csv.DictReader((tiny_run / "summary.csv").read_text().splitlines())
            if r["scenario"] == "overhead" and r["metric"] == "bytes_down_per_msg"]
    for row in rows:
        payload = int(dict(kv.split("=") for kv in row["params"].split(";"))["payload"])
        assert float(row["value"]) > payload  # framing and envelope on top of the payload


async def test_dead_target_is_a_clear_error() -> None:
    with pytest.raises(HarnessError, match="no server answers"):
        await check_target("http://127.0.0.1:9")


async def test_wrong_target_is_a_clear_error() -> None:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with pytest.raises(HarnessError, match="not the contract"):
            await check_target(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


def test_cli_reports_a_dead_target_without_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sobranie_bench.cli", "run", "--target",
                           "http://127.0.0.1:9", "--transports", "ws", "--scenarios", "echo",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1
    assert "no server answers" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_overrides_set_parameters_in_every_point_that_has_them() -> None:
    plan = Plan(profile="quick", transports=("ws",), scenarios=("fanout", "overhead"), trials=1,
                overrides=(("subscribers", 1000), ("rate", 50)))
    points = [(s.name, p) for _, s, p, _ in plan.points()]
    fanout = [p for name, p in points if name == "fanout"]
    assert fanout == [{"channels": 1, "subscribers": 1000, "rate": 50, "payload": 64}]
    overhead = [p for name, p in points if name == "overhead"]
    assert {p["rate"] for p in overhead} == {50} and all("subscribers" not in p
                                                          for p in overhead)


def test_a_scenario_scoped_override_sets_that_scenarios_points_only() -> None:
    """``make bench``'s 4g pass: echo at its own rate, fan-out small, in one run (one lab)."""
    plan = Plan(profile="ci", transports=("ws",), scenarios=("echo", "fanout"),
                overrides=(("fanout.subscribers", 20), ("fanout.rate", 20)))
    points = {s.name: p for _, s, p, _ in plan.points()}
    assert points["fanout"] == {"channels": 1, "subscribers": 20, "rate": 20, "payload": 64}
    assert points["echo"] == registry()["echo"].grid["ci"][0]  # untouched
    assert "--set fanout.rate=20" in plan.command()


async def test_tls_compare_runs_each_point_plaintext_and_tls_on_fresh_servers(
        tmp_path: Path) -> None:
    from sobranie_bench.harness.runner import count_points

    plan = Plan(profile="ci", transports=("ws@elysia", "webtransport"),
                scenarios=("overhead",), out=tmp_path, secret=SECRET, tls_compare=True,
                overrides=(("messages", 20), ("payload", 64)))
    assert count_points(plan) == 3  # webtransport always encrypts: once
    raws = results.load_raw(await run_plan(replace(plan, transports=("ws@elysia",))))
    assert not [r["error"] for r in raws if "error" in r]
    assert sorted(r["tls"] for r in raws) == [False, True]
    assert all(r["metadata"]["tls_compare"] for r in raws)
    trips = {r["tls"]: r["counters"]["handshake_round_trips"] for r in raws}
    assert trips == {False: 1, True: 2}  # TLS 1.3's one extra round trip, counted
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert {r["tls"] for r in rows if r["metric"] == "handshake_round_trips"} == {"False",
                                                                                  "True"}
    with pytest.raises(HarnessError, match="tls-compare"):
        await run_plan(replace(plan, target="http://127.0.0.1:9"))


def test_tls_compare_with_names_compares_those_points_and_runs_the_rest_over_tls() -> None:
    plan = Plan(profile="ci", transports=("ws", "sse", "webtransport"),
                scenarios=("echo", "fanout"), tls_compare=True,
                tls_compare_only=("echo", "ws", "webtransport"))
    runs = [(t, s.name, v.tls) for v, t, s, _, _ in plan.runs()]
    assert runs == [("ws", "echo", False), ("ws", "echo", True), ("ws", "fanout", True),
                    ("sse", "echo", True), ("sse", "fanout", True),
                    ("webtransport", "echo", True), ("webtransport", "fanout", True)]
    assert [t for t in ("ws", "sse", "webtransport") if plan.compared(t, "echo")] == ["ws"]


async def test_tls_compare_refuses_a_name_that_is_neither_scenario_nor_transport() -> None:
    with pytest.raises(HarnessError, match="neither a scenario nor a transport"):
        await run_plan(Plan(profile="ci", transports=("ws",), scenarios=("echo",),
                            tls_compare=True, tls_compare_only=("echo", "eccho")))


def test_only_runs_a_scenario_for_the_transports_it_names() -> None:
    plan = Plan(profile="ci", transports=("ws", "sse", "longpoll"), scenarios=("echo", "fanout"),
                only=(("fanout", ("ws", "sse")),))
    assert [(t, s.name) for t, s, _, _ in plan.points()] == [
        ("ws", "echo"), ("ws", "fanout"), ("sse", "echo"), ("sse", "fanout"),
        ("longpoll", "echo")]


async def test_only_refuses_an_unknown_scenario_or_transport() -> None:
    for only in ((("fanout", ("ws", "wss")),), (("fan-out", ("ws",)),)):
        with pytest.raises(HarnessError, match="--only"):
            await run_plan(Plan(profile="ci", transports=("ws",), scenarios=("echo",),
                                only=only))


def test_a_points_server_stops_while_the_next_starts_and_before_its_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop of one point's server overlaps the next one's start, never its load; when the
    run ends every server it started has exited."""
    import asyncio
    import time

    from sobranie_bench.harness import runner

    events: list[tuple[str, float]] = []
    servers: list[runner.Server] = []
    spawn, stop, parts = runner.spawn_server, runner.Server.stop, runner.run_parts

    async def spawned(*args: object, **kwargs: object) -> runner.Server:
        events.append(("spawn", time.monotonic()))
        servers.append(await spawn(*args, **kwargs))  # type: ignore[arg-type]
        return servers[-1]

    async def stopped(self: runner.Server) -> None:
        await stop(self)
        events.append(("stopped", time.monotonic()))

    async def load(*args: object, **kwargs: object) -> object:
        events.append(("load", time.monotonic()))
        return await parts(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "spawn_server", spawned)
    monkeypatch.setattr(runner.Server, "stop", stopped)
    monkeypatch.setattr(runner, "run_parts", load)
    plan = Plan(profile="ci", transports=("ws", "sse"), scenarios=("echo",), out=tmp_path,
                secret=SECRET, timing=(0.1, 0.3), overrides=(("connections", 2), ("rate", 20)))
    asyncio.run(run_plan(plan))
    kinds = [kind for kind, _ in events]
    assert kinds == ["spawn", "load", "spawn", "stopped", "load", "stopped"], kinds
    assert all(s.process.returncode is not None for s in servers)
