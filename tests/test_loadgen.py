"""sobranie_bench.loadgen: the generator comparison, run for real at a tiny scale (20 echo/s
for 2 s over 2 connections, a fresh ws@elysia server per run), yields a CPU-per-message figure
for the harness and for k6; a generator that is not installed is a row that says so, never a
crash; bad arguments get a clear error. Behaviour only: no figure is compared with a bound."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sobranie_bench import loadgen
from sobranie_bench.loadgen.generators import GENERATORS


async def test_tiny_comparison_yields_cpu_per_message_for_harness_and_k6() -> None:
    result = await loadgen.run(["harness", "k6"], [20.0], [False], trials=1, connections=2,
                               warmup=0.5, window=2.0)
    runs = {r["generator"]: r for r in result["runs"]}
    assert set(runs) == {"harness", "k6"}
    for name, r in runs.items():
        assert "error" not in r and "report_error" not in r, r
        assert r["echoed"] > 0, name
        assert r["cpu_us_per_msg"] >= 0 and r["cpu_us_per_msg_schedstat"] > 0, name
        assert r["tool_count"] > 0 and r["p50_ms"] is not None, name
        assert isinstance(r["saturated"], bool)
    verdict = next(row for row in result["summary"] if row.get("verdict"))
    assert verdict["cheapest"] == "k6" and verdict["rate"] == 20.0
    assert result["metadata"]["generators"]["k6"] not in (None, "not installed")
    text = loadgen.markdown(result)
    assert "| 20 | off | harness |" in text and "| 20 | off | k6 |" in text
    json.dumps(result)  # what --out writes


async def test_a_generator_not_installed_is_a_row_not_a_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    absent = dataclasses.replace(GENERATORS["k6"], version=lambda: None)
    monkeypatch.setitem(GENERATORS, "k6", absent)
    result = await loadgen.run(["k6"], [20.0], [False], trials=1, connections=2,
                               warmup=0.1, window=0.5)
    assert "not installed" in result["runs"][0]["error"]
    assert "k6 | not measured: k6 is not installed" in loadgen.markdown(result)


async def test_a_generator_is_installed_on_first_use_before_it_is_measured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Artillery's way (``install``), tried on k6: the installer runs once, before the first
    run, and the generator is then measured; an installer that fails is said, not raised."""
    real, installed = GENERATORS["k6"], []

    def install() -> None:
        installed.append(True)

    monkeypatch.setitem(GENERATORS, "k6", dataclasses.replace(
        real, version=lambda: real.version() if installed else None, install=install))
    lines: list[str] = []
    result = await loadgen.run(["k6"], [20.0], [False], trials=1, connections=2, warmup=0.1,
                               window=0.5, progress=lines.append)
    assert installed == [True]
    assert "error" not in result["runs"][0] and result["runs"][0]["echoed"] > 0

    monkeypatch.setitem(GENERATORS, "k6", dataclasses.replace(
        real, version=lambda: None, install=lambda: "npm ci failed (exit code 1)"))
    result = await loadgen.run(["k6"], [20.0], [False], trials=1, connections=2, warmup=0.1,
                               window=0.5, progress=lines.append)
    assert "k6: npm ci failed (exit code 1)" in lines
    assert "not installed" in result["runs"][0]["error"]


@pytest.mark.parametrize("argv, message", [
    (["--generators", "harness,gatling"], "unknown generator(s) gatling"),
    (["--rates", "0"], "--rates needs positive"),
    (["--tls", "maybe"], "--tls is off, on or both"),
    (["--rates", "500000", "--connections", "2"], "per-connection rate limit"),
])
def test_bad_arguments_are_refused_with_a_clear_error(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        loadgen.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
