"""The ``browser`` harness scenario: real tabs of every engine against a real server.

Through the runner (a fresh ``serve sse --tls`` process): each engine's tabs work and are timed,
the engine's version is recorded, the SSE per-origin limit is measured (the 7th tab of one
profile waits, another host name does not, closing one lets it in; over HTTP/2 through an
HAProxy of its own it does not wait), and the report's browser
column and section show it. Directly on a part: a page whose origin is refused is recorded as
"does not work" with the reason, not as a crash or a pass.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from sobranie_bench import browser
from sobranie_bench.harness import figures, results, runner
from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios import browser as scenario
from sobranie_bench.report import browser as report_browser
from sobranie_bench.report import comparison, data
from tests.conftest import SECRET, UNIT


async def test_the_scenario_times_every_engine_and_measures_the_sse_limit(
        tmp_path: Path, haproxy: str) -> None:
    plan = runner.Plan(profile="ci", transports=("sse",), scenarios=("browser",), out=tmp_path,
                       secret=SECRET)
    run_dir = await runner.run_plan(plan)
    raws = {raw["params"]["engine"]: raw for raw in results.load_raw(run_dir)}
    assert set(raws) == set(browser.ENGINES)
    try:
        browser.firefox_path()
    except browser.BrowserUnavailable as exc:  # recorded as not run, with the reason
        assert raws["firefox"]["info"]["not_run"] == str(exc)
        assert figures.metrics(raws.pop("firefox")) == {"browser_not_run": (1.0, "flag")}
    for engine, raw in raws.items():
        assert "error" not in raw, raw.get("error")
        info, m = raw["info"], figures.metrics(raw)
        assert info["engine"] == engine and info["engine_version"], info
        assert raw["tls"] is True
        assert m["browser_tabs_ok"][0] == m["browser_tabs"][0] == raw["params"]["tabs"], \
            info["errors"]
        assert m["browser_works"][0] == 1.0
        assert 0 < m["hello_p50_us"][0] <= m["first_message_p50_us"][0]
        limit = info["sse_limit"]
        assert limit["first_six_hello"] == 6, limit
        assert limit["seventh_blocked"] is True, limit
        assert limit["other_host_blocked"] is False, limit
        assert limit["seventh_hello_after_close_ms"] is not None, limit
        h2 = limit["http2"]  # through our HAProxy speaking HTTP/2: one connection, no wait
        assert h2["protocol"] == "h2" and h2["first_six_hello"] == 6, h2
        assert h2["seventh_blocked"] is False, h2
    summary = results.read_summary(tmp_path / "summary.csv")
    assert set(summary[summary.metric == "browser_works"].value) == {1.0}
    res = data.load(tmp_path)
    measured = report_browser.engine_results(res, "sse")
    assert {r.engine for r in measured if r.works} == set(raws)
    sse_row = next(r for r in comparison.rows(res) if r.technology.name == "SSE")
    basis = sse_row.ours["browser"].basis
    assert basis.startswith("measured") and "cited:" in basis
    for r in measured:
        assert f"{r.title} works" in basis
    section = report_browser.section(res)
    assert "7th tab blocked" in section and "| yes | no |" in section
    assert "| no (h2) |" in section


async def test_a_run_launches_an_engine_once_and_closes_it_at_the_end(tmp_path: Path) -> None:
    plan = runner.Plan(profile="ci", transports=("ws", "longpoll"), scenarios=("browser",),
                       out=tmp_path, secret=SECRET, overrides=(("engine", "chromium"),))
    raws = results.load_raw(await runner.run_plan(plan))
    assert [(r["transport"], r["info"]["launched"]) for r in raws] == [
        ("longpoll", False), ("ws", True)]  # ws ran first and launched it; load_raw sorts
    assert all(figures.metrics(r)["browser_works"][0] == 1.0 for r in raws)
    assert not scenario._KEPT  # closed when the plan ended
    assert not [p for p in psutil.Process().children(recursive=True)
                if "chrom" in p.name().lower()]


async def test_a_refused_page_is_recorded_as_not_working_with_the_reason(start_server) -> None:
    server = await start_server("http", origins=("https://sobranie.example",))
    ctx = PartContext(transport="ws", url=server.url, index=0, count=1, seed=1,
                      params={"engine": "chromium", "tabs": 2, "block_seconds": 1.0},
                      start_ns=time.monotonic_ns(), warmup=0, duration=0, secret=SECRET,
                      timeout=UNIT)
    part = await scenario.part(ctx)
    raw = {"scenario": "browser", **part}
    m = figures.metrics(raw)
    assert m["browser_tabs_ok"][0] == 0 and m["browser_works"][0] == 0.0
    assert "hello_p50_us" not in m
    assert any("refused" in e for e in part["info"]["errors"]), part["info"]
