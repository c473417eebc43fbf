"""The lab's own knobs, measured with its probe: delay, loss, clean-up (even after SIGKILL),
refusals, and one small run under ``--network 4g``. Needs root (CI runs as root)."""

from __future__ import annotations

import asyncio
import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sobranie_bench.harness import figures, results
from sobranie_bench.harness.runner import HarnessError, Plan, run_plan
from sobranie_bench.netlab import lab, profiles
from tests.conftest import SECRET

root = pytest.mark.skipif(os.geteuid() != 0, reason="the network lab needs root (CI is root)")
PLAIN = lab.custom(profiles.get("lan"), name="plain", rtt_ms=0.0, jitter_ms=0.0, up_mbit=0.0,
                   down_mbit=0.0)


def ours() -> list[str]:
    return [ns for ns in lab.namespaces() if ns.startswith(f"{lab.PREFIX}{os.getpid()}")]


@root
def test_an_emulated_40_ms_rtt_measures_40_ms() -> None:
    with lab.Lab(lab.custom(PLAIN, rtt_ms=40.0), verify=False) as running:
        measured = running.probe(500)
    assert 35.0 <= measured["rtt_ms_p50"] <= 45.0, measured
    assert measured["rtt_ms_min"] >= 39.0, measured  # never faster than the emulated delay


@root
def test_three_percent_loss_measures_within_bounds() -> None:
    profile = lab.custom(PLAIN, loss=0.03)
    with lab.Lab(profile, verify=False) as running:
        measured = running.probe(3000)
    bound = lab.Bounds.of(profile, 3000).loss
    for way in ("up", "down"):
        assert abs(measured[f"loss_{way}"] - 0.03) <= bound, measured
    assert lab.check(profile, measured) == []


@root
def test_a_bandwidth_limit_measures_within_bounds() -> None:
    profile = lab.custom(PLAIN, rtt_ms=10.0, down_mbit=4.0, up_mbit=1.0)
    with lab.Lab(profile, pings=300) as running:  # verified on entry, or LabError
        assert 0.6 * 4.0 <= running.measured["down_mbit"] <= 1.15 * 4.0
        assert 0.6 * 1.0 <= running.measured["up_mbit"] <= 1.15 * 1.0


def test_a_profile_out_of_bounds_is_named_with_what_was_measured() -> None:
    profile = profiles.get("4g")
    measured = {"rtt_ms_p50": 140.0, "loss_up": 0.005, "loss_down": 0.2, "pings": 1000,
                "up_mbit": 12.0, "down_mbit": 3.0}
    problems = lab.check(profile, measured)
    assert len(problems) == 3
    assert any("RTT p50 140.0 ms" in p for p in problems)
    assert any("loss down 20.00%" in p for p in problems)
    assert any("rate down 3.00" in p for p in problems)
    assert lab.check(profile, {**measured, "rtt_ms_p50": 76.0, "loss_down": 0.004,
                               "down_mbit": 11.5}) == []


def test_without_root_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(lab.LabError, match="needs root"):
        lab.Lab(profiles.get("4g")).__enter__()


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(HarnessError, match="unknown network profile 'moon'.*4g"):
        asyncio.run(run_plan(Plan(network="moon", transports=("ws",), scenarios=("echo",))))


@root
def test_nothing_is_left_after_a_lab() -> None:
    with lab.Lab(PLAIN, verify=False) as running:
        assert running.link is not None
        link = running.link.pid
        assert sorted(ours()) == sorted([running.server_ns, running.client_ns])
    assert ours() == []
    assert not Path(f"/proc/{link}").exists()


SCRIPT = """
import sys, time
from sobranie_bench.netlab import lab, profiles
with lab.Lab(lab.custom(profiles.get("lan"), rtt_ms=5.0), verify=False) as running:
    print(running.link.pid, flush=True)
    time.sleep(600)
"""


@root
def test_a_run_killed_with_sigkill_is_cleaned_up_by_the_next() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    link = int(proc.stdout.readline())
    left = [f"{lab.PREFIX}{proc.pid}s", f"{lab.PREFIX}{proc.pid}c"]
    assert set(left) <= set(lab.namespaces())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert set(left) <= set(lab.namespaces())  # what a killed run leaves ...
    with lab.Lab(PLAIN, verify=False):  # ... the next lab removes
        assert not set(left) & set(lab.namespaces())
    for _ in range(50):  # the link process dies with its parent (PR_SET_PDEATHSIG)
        if not Path(f"/proc/{link}").exists() or "zombie" in Path(
                f"/proc/{link}/status").read_text():
            break
        subprocess.run(["sleep", "0.1"], check=True)
    else:
        pytest.fail(f"link process {link} outlived its killed parent")
    assert ours() == []


@root
def test_run_network_4g_end_to_end(tmp_path: Path) -> None:
    plan = Plan(profile="ci", transports=("ws",), scenarios=("echo", "first-message"),
                out=tmp_path, secret=SECRET, network="4g", timing=(0.3, 1.5),
                overrides=(("connections", 5), ("rate", 40), ("users", 3)))
    run_dir = asyncio.run(run_plan(plan))
    raws = {r["scenario"]: r for r in results.load_raw(tmp_path)}
    assert set(raws) == {"echo", "first-message"}
    assert not [r["error"] for r in raws.values() if "error" in r]
    first = figures.metrics(raws["first-message"])
    # TCP, then TLS 1.3, then the WebSocket upgrade: at least two emulated round trips
    assert first["handshake_round_trips"][0] >= 2
    assert first["first_message_p50_us"][0] >= 3 * 70_000
    raw = raws["echo"]
    assert raw["network"] == "4g"
    network = raw["metadata"]["network"]
    assert network["profile"]["name"] == "4g" and network["measured"]["rtt_ms_p50"] > 60
    m = figures.metrics(raw)
    assert m["rtt_p50_us"][0] >= 70_000  # the emulated 70 ms round trip, at least
    # one part: run by the runner itself (a thread in the client namespace), no worker process
    assert [n for n in raw["resources"] if n.startswith("worker")] == []
    rows = list(csv.DictReader((tmp_path / "summary.csv").read_text().splitlines()))
    assert rows and {"tls", "network"} <= set(rows[0])
    assert {r["network"] for r in rows} == {"4g"}
    assert run_dir.exists() and ours() == []
    # the report's network section: its own table, the loopback comparison left alone
    from sobranie_bench.report import load, network

    paths = network.write(tmp_path, tmp_path / "report")
    text = paths[0].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| ws |"))
    p50, p99 = (float(x) for x in re.findall(r"[\d.]+", row.split("|")[2].replace(",", ""))[:2])
    assert 70.0 <= p50 <= p99
    assert "| 4g | 70 |" in text and (tmp_path / "report/charts/network_loss.png").exists()
    assert load(tmp_path).empty


@root
def test_a_link_out_of_its_profile_runs_and_flags_every_figure_noisy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy machine delays what the user-space link carries: no bounds can be met here (zero
    width), so the probe finds the link off its profile; the run goes on, says so and flags."""
    monkeypatch.setattr(lab.Bounds, "of", staticmethod(lambda profile, pings: lab.Bounds(0, 0)))
    monkeypatch.setattr(lab, "VERIFY_ATTEMPTS", 1)
    plan = Plan(profile="ci", transports=("ws",), scenarios=("echo",), out=tmp_path,
                secret=SECRET, network="lan", timing=(0.3, 1.0),
                overrides=(("connections", 2), ("rate", 20)))
    asyncio.run(run_plan(plan))
    (raw,) = results.load_raw(tmp_path)
    assert "error" not in raw, raw
    off = raw["metadata"]["network"]["off_profile"]
    assert any(p.startswith("RTT p50") for p in off), off
    assert results.flags(raw)["noisy"]
    assert figures.metrics(raw)["rtt_p50_us"][0] > 0
    assert ours() == []


def test_link_cutting_scenarios_are_skipped_on_loopback() -> None:
    names = {s.name for _, s, _, _ in Plan(transports=("ws",)).points()}
    assert "reconnect" not in names and "first-message" in names
    names = {s.name for _, s, _, _ in Plan(transports=("ws",), network="4g").points()}
    assert "reconnect" in names


@root
def test_reconnect_after_a_cut_or_an_address_change_loses_and_duplicates_nothing(
        tmp_path: Path) -> None:
    plan = Plan(profile="ci", transports=("ws", "webtransport"), scenarios=("reconnect",),
                out=tmp_path, secret=SECRET, network="lan", timing=(0.5, 4.0),
                overrides=(("outage", 1.0), ("subscribers", 2), ("rate", 20)))
    asyncio.run(run_plan(plan))
    raws = {(r["transport"], r["params"].get("change", "cut")): r
            for r in results.load_raw(tmp_path)}
    assert set(raws) == {(t, c) for t in ("ws", "webtransport") for c in ("cut", "address")}
    for (transport, change), raw in raws.items():
        assert "error" not in raw, raw
        m = figures.metrics(raw)
        assert m["acked"][0] > 0 and m["lost"][0] == 0 and m["duplicated"][0] == 0, (
            transport, change, m)
        if change == "address":  # (TCP and QUIC both outlast a 1 s cut, often unaware)
            assert m["reconnected"][0] == 2, (transport, change, m)
        assert m["resume_p50_ms"][0] > 0
        # an address change: QUIC migrates its connection, TCP needs a new one
        migrated = 2 if (transport, change) == ("webtransport", "address") else 0
        assert m["migrated"][0] == migrated, (transport, change, m)
    assert raws["ws", "cut"]["counters"]["outage_s"] == 1.0
    from sobranie_bench.report import network

    text = network.render(network.select(raws.values()))
    assert "| webtransport | lan | address | 0 of 2 | 2 (2) |" in text, text  # nothing ended
    assert "| ws | lan | address | 2 of 2 | 2 (0) |" in text, text


@root
def test_hol_every_flow_delivers_in_every_mode(tmp_path: Path) -> None:
    """Under loss each transport's own answers run side by side: one ordered stream, a QUIC
    stream per flow, datagrams / an unordered channel, a connection per flow."""
    plan = Plan(profile="ci", transports=("ws", "webtransport", "webrtc"), scenarios=("hol",),
                out=tmp_path, secret=SECRET, network="lossy-wifi", timing=(0.3, 2.0),
                overrides=(("users", 2), ("flows", 3)))
    asyncio.run(run_plan(plan))
    raws = {r["transport"]: r for r in results.load_raw(tmp_path)}
    modes = {"ws": ["ordered", "split"],
             "webtransport": ["ordered", "per_channel", "unreliable", "split"],
             "webrtc": ["ordered", "unreliable", "split"]}
    assert set(raws) == set(modes)
    for transport, raw in raws.items():
        assert "error" not in raw, raw
        assert raw["info"]["modes"] == modes[transport]
        m = figures.metrics(raw)
        assert m["connect_failures"][0] == 0
        for mode in modes[transport]:
            if mode == "unreliable":  # best effort: 3 % loss per packet, nothing resent
                assert 50.0 <= m[f"{mode}_delivered_percent"][0] <= 100.0, (transport, m)
            else:  # reliable: every message of every flow
                assert m[f"{mode}_delivered_percent"][0] == 100.0, (transport, mode, m)
            # publishers beside the server: one crossing of the 10 ms one-way link at least
            assert m[f"{mode}_bystander_p50_us"][0] >= 10_000, (transport, mode, m)
            assert m[f"{mode}_bystander_count"][0] > 0
    from sobranie_bench.report import network

    text = network.render(network.select(raws.values()))
    assert "| webtransport | lossy-wifi |" in text and "| ws | lossy-wifi |" in text


@root
def test_fanout_under_4g_publishes_beside_the_server(tmp_path: Path) -> None:
    """The subscribers sit behind the 4g link, the publishers beside the server: a delivery
    crosses the link once (35 ms one way), not twice (the 70 ms round trip)."""
    plan = Plan(profile="ci", transports=("ws", "sse"), scenarios=("fanout",), out=tmp_path,
                secret=SECRET, network="4g", timing=(0.3, 2.0),
                overrides=(("subscribers", 5), ("rate", 20)))
    asyncio.run(run_plan(plan))
    for raw in results.load_raw(tmp_path):
        assert "error" not in raw, raw
        m = figures.metrics(raw)
        assert m["lost"][0] == 0 and m["duplicated"][0] == 0, m
        assert 35_000 <= m["latency_p50_us"][0] < 70_000, (raw["transport"], m)
