"""The comparison's technology-vs-implementation rows and its TLS cost table, checked against
raw files derived from the fixture run (the same transport on another server, the same point
plaintext and over TLS), and the Elysia plugin record the report cites."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sobranie_bench.harness import figures
from sobranie_bench.report import comparison, load, tls_cost
from tests.report.conftest import add_raw, raw_file

RUN = "20261129T010528Z"  # the fixture's run


def scaled_cpu(raw: dict[str, Any], factor: float) -> dict[str, Any]:
    """``raw`` with the server's CPU scaled by ``factor`` (every cumulative sample)."""
    raw = copy.deepcopy(raw)
    samples = raw["resources"]["server"]
    first = samples[0][1]
    for s in samples:
        s[1] = first + (s[1] - first) * factor
    return raw


def as_transport(raw: dict[str, Any], transport: str, **extra: Any) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["transport"] = transport
    raw.update(extra)
    return raw


def server_cpu(raw: dict[str, Any], metric: str = "server_cpu_us_per_msg") -> float:
    """The figure as the summary holds it (rounded as summarize rounds)."""
    return {r["metric"]: r["value"] for r in figures.summarize(raw)}[metric]


def test_each_technology_shows_its_best_server_and_the_spread(results_copy: Path) -> None:
    ws = raw_file("ws", "echo")
    elysia = scaled_cpu(as_transport(ws, "ws@elysia"), 0.25)
    add_raw(results_copy, elysia, RUN)
    res = load(results_copy)
    found = {(s.technology, s.label): s for s in comparison.spreads(res)}
    cpu = found[("WebSockets", "server CPU / echo (µs)")]
    assert cpu.run_id == RUN and not cpu.encrypted
    by_server = {server: (t, f.value) for server, t, f in cpu.figures}
    assert by_server["Bun + Elysia"] == ("ws@elysia", server_cpu(elysia))
    assert by_server["aiohttp"] == ("ws", server_cpu(ws))
    assert set(by_server) == {"aiohttp", "websockets", "Bun + Elysia"}
    assert cpu.figures[0][0] == "Bun + Elysia"  # a quarter of aiohttp's CPU: the best
    values = sorted(v for _, v in by_server.values())
    assert cpu.ratio == values[-1] / values[0]
    # SSE: measured on aiohttp only, so the row says which server is missing
    sse = found[("SSE", "server CPU / echo (µs)")]
    assert [s for s, _, _ in sse.figures] == ["aiohttp"] and sse.ratio is None
    md = comparison.render(res)
    section = md[md.index("## Technology vs implementation"):]
    assert "Bun + Elysia (`ws@elysia`)" in section and "not measured in this run: Bun + Elysia" \
        in section


def test_servers_of_another_run_are_not_put_in_the_spread(results_copy: Path) -> None:
    add_raw(results_copy, as_transport(raw_file("ws", "echo"), "ws@elysia"), "20261130T000000Z")
    res = load(results_copy)
    cpu = next(s for s in comparison.spreads(res)
               if s.technology == "WebSockets" and s.label.startswith("server CPU"))
    assert cpu.run_id == RUN and "Bun + Elysia" not in {s for s, _, _ in cpu.figures}


def tls_pair(root: Path, transport: str, scenario: str, factor: float, **match: Any
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fixture's raw as the plaintext half of a --tls-compare run, and its TLS half with
    the server's CPU scaled by ``factor``."""
    base = raw_file(transport, scenario, **match)
    plain = as_transport(base, transport, tls=False)
    encrypted = as_transport(scaled_cpu(base, factor), transport, tls=True)
    for raw in (plain, encrypted):
        raw["metadata"] = {**raw["metadata"], "tls_compare": True}
        add_raw(root, raw, "20261201T000000Z")
    return plain, encrypted


def test_tls_cost_is_the_difference_of_the_two_halves_of_one_run(tmp_path: Path) -> None:
    root = tmp_path / "results"
    plain, encrypted = tls_pair(root, "ws", "echo", 1.5)
    assert len(list((root / "runs").rglob("ws-echo-*.json"))) == 2  # -plain: no overwrite
    conn = tls_pair(root, "ws", "connections", 2.0)
    res = load(root)
    [cost] = tls_cost.costs(res)
    assert cost.transport == "ws" and cost.run_id == "20261201T000000Z"
    assert cost.per_message.both is not None
    assert cost.per_message.extra == pytest.approx(server_cpu(encrypted) - server_cpu(plain))
    assert abs(cost.per_message.ratio - 1.5) < 0.01
    per_conn = [server_cpu(r, "server_cpu_us_per_conn") for r in conn]
    assert cost.per_connect.extra == pytest.approx(per_conn[1] - per_conn[0])
    assert cost.round_trips.both is None  # no overhead scenario in this run
    md = comparison.render(res)
    table = md[md.index("## TLS cost per message and per handshake"):]
    assert f"| +{tls_cost.text.num(per_conn[1] - per_conn[0])} |" in table
    # the rest of the report never mixes such a run into its matrix
    assert res.empty and res.tls_compared is not None
    tls_only = res.tls_compared.figure("ws", "echo", "server_cpu_us_per_msg")
    assert tls_only is not None and tls_only.value == server_cpu(encrypted)


def test_a_tls_compare_run_stays_out_of_the_main_selection(results_copy: Path) -> None:
    before = load(results_copy).figure("ws", "echo", "server_cpu_us_per_msg")
    tls_pair(results_copy, "ws", "echo", 3.0)  # a newer run, but a --tls-compare one
    res = load(results_copy)
    assert res.figure("ws", "echo", "server_cpu_us_per_msg") == before
    assert [c.transport for c in tls_cost.costs(res)] == ["ws"]


def test_a_main_run_that_compared_some_points_keeps_their_tls_halves_as_main_figures(
        tmp_path: Path) -> None:
    # `run --tls-compare echo,...`: the echo points ran both ways, fan-out over TLS only
    root = tmp_path / "results"
    base = raw_file("ws", "echo")
    plain = as_transport(base, "ws", tls=False, tls_compared=True)
    encrypted = as_transport(scaled_cpu(base, 2.0), "ws", tls=True, tls_compared=True)
    fanout = as_transport(raw_file("ws", "fanout"), "ws", tls=True)
    for raw in (plain, encrypted, fanout):
        raw["metadata"] = {**raw["metadata"], "tls_compare": ["echo"]}
        add_raw(root, raw, "20261201T000000Z")
    assert len(list((root / "runs").rglob("ws-echo-*.json"))) == 2  # -plain: no overwrite
    res = load(root)
    main = res.figure("ws", "echo", "server_cpu_us_per_msg")
    assert main is not None and main.value == server_cpu(encrypted)
    assert [r["tls"] for r in res.raw("ws", "echo")] == [True]
    assert res.measured("ws", "fanout")
    assert res.tls_compared is not None and not res.tls_compared.measured("ws", "fanout")
    [cost] = tls_cost.costs(res)
    assert cost.run_id == "20261201T000000Z" and abs(cost.per_message.ratio - 2.0) < 0.01


def test_no_tls_comparison_says_how_to_measure_it(fixture_dir: Path) -> None:
    section = tls_cost.section(load(fixture_dir))
    assert "Not measured" in section and "--tls-compare" in section


def test_the_plugin_record_is_what_the_report_cites() -> None:
    check = comparison.plugin_check()
    assert check.verdict == "outdated" and check.plugin == "@elysiajs/websocket"
    package = json.loads((Path(comparison.__file__).parents[2] / "servers" / "elysia"
                          / "package.json").read_text())
    assert check.elysia_pinned == package["dependencies"]["elysia"]
    evidence = comparison.plugin_evidence()
    assert check.checked in evidence and check.plugin_latest in evidence
    assert all(t in evidence for t in check.tests)
