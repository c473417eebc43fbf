"""comparison.md against the fixture's own numbers: the measured table's cells, the stars'
rule recomputed independently, "not measured" for what is not there, the line counter."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from sobranie_bench.report import comparison, data
from sobranie_bench.report.sources import TECHNOLOGIES
from tests.report.conftest import FIXTURE, median


def markdown_table(md: str, *columns: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table whose header row holds every one of ``columns``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| ")
                 and all(f"| {c} |" in line for c in columns)
                 and lines[i + 1].startswith("|---"))
    headers = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(headers, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def number(cell: str) -> float:
    return float(re.match(r"[\d,.]+", cell).group().replace(",", ""))  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def md(built: Path) -> str:
    return (built / "comparison.md").read_text()


def test_measured_cells_are_the_fixtures_numbers(md: str, summary: pd.DataFrame) -> None:
    rows = {r["Transport"]: r for r in markdown_table(md, "Transport", "Echo p50")}
    for t in ("ws", "ws-websockets", "sse", "longpoll"):
        row = rows[t]
        assert number(row["Echo p50"]) * 1000 == pytest.approx(
            median(summary, t, "echo", "rtt_p50_us"), rel=5e-3)
        assert number(row["Echo p99"]) * 1000 == pytest.approx(
            median(summary, t, "echo", "rtt_p99_us"), rel=5e-3)
        assert number(row["Server CPU / msg (µs)"]) == pytest.approx(
            median(summary, t, "echo", "server_cpu_us_per_msg"), rel=5e-3)
        assert number(row["Memory / connection"]) * 1024 == pytest.approx(
            median(summary, t, "connections", "server_rss_bytes_per_conn"), rel=5e-3)
        assert number(row["Bytes / msg (64 B)"]) == pytest.approx(
            median(summary, t, "overhead", "bytes_per_msg", payload=64), abs=0.5)
        assert number(row["Subscribers within SLA"]) == median(
            summary, t, "capacity", "max_clients_within_sla")


def bands(ratio: float) -> int:
    """The documented rule, written again: 5 stars under 1.5x the best, one less per
    doubling."""
    return 5 if ratio < 1.5 else 4 if ratio < 3 else 3 if ratio < 6 else 2 if ratio < 12 else 1


def test_performance_stars_follow_the_documented_rule(md: str, summary: pd.DataFrame) -> None:
    measured = ("ws", "ws-websockets", "sse", "longpoll")
    metrics = ("rtt_p50_us", "rtt_p99_us", "server_cpu_us_per_msg")
    best = {m: min(median(summary, t, "echo", m) for t in measured) for m in metrics}
    stars = {r["Technology"]: r["Performance"]
             for r in markdown_table(md, "Technology", "Performance")}
    for tech, t in (("WebSockets", "ws"), ("SSE", "sse"), ("Long-polling", "longpoll")):
        ratio = math.prod(median(summary, t, "echo", m) / best[m] for m in metrics) ** (1 / 3)
        ours = stars[tech].split("→")[1]
        assert ours.count("★") == bands(ratio), (tech, ratio, stars[tech])


def test_note_stars_are_shown_beside_ours(md: str) -> None:
    rows = {r["Technology"]: r for r in markdown_table(md, "Technology", "Browser support")}
    for tech in TECHNOLOGIES:
        if tech.note_stars:
            note = rows[tech.name]["Browser support"].split("→")[0]
            assert note.count("★") == tech.note_stars["browser"]


def test_unmeasured_transports_say_not_measured(md: str) -> None:
    stars = {r["Technology"]: r for r in markdown_table(md, "Technology", "Performance")}
    assert stars["Socket.IO"]["Performance"].endswith("not measured")
    assert stars["WebRTC"]["Scalability"].endswith("not measured")
    rows = {r["Transport"]: r for r in markdown_table(md, "Transport", "Echo p50")}
    assert rows["socketio"]["Echo p50"] == "not measured"
    assert "Backplane cost: not measured" in md


def test_no_figure_is_marked_client_bound_when_none_was(md: str, summary: pd.DataFrame
                                                        ) -> None:
    assert not summary.client_bound.any()
    assert "†" not in md.split("## Handshakes")[0].split("How our stars")[0]


def test_client_bound_figures_are_marked(results_copy: Path) -> None:
    res = data.load(results_copy)
    bound = res.rows.copy()
    bound.loc[(bound.transport == "sse") & (bound.scenario == "echo"), "client_bound"] = True
    marked = data.Results(res.root, res.raws, bound)
    assert "†" in comparison.performance(marked, "sse").cell()
    assert "†" not in comparison.performance(marked, "ws").cell()


def test_complexity_reads_the_code_size_the_run_recorded() -> None:
    """A refactor after the run does not change its verdict: the lines come from the run."""
    res = data.load(FIXTURE)
    base = res.raws[0]["metadata"]
    sizes = {t: {"server_file": f"servers/{t}.py", "server_lines": 100,
                 "client_file": f"sobranie_bench/clients/{t}.py", "client_lines": 50}
             for t in ("ws", "sse")}
    raws = [{**raw, "metadata": {**raw["metadata"], "complexity": sizes}} for raw in res.raws
            if raw["metadata"]["run_id"] == base["run_id"]]
    recorded = data._results(res.root, raws)
    rating = comparison.complexity(recorded, "ws")
    assert rating.basis.startswith("150 lines (100 server + 50 client),")
    assert "today's files" not in rating.basis
    # a transport the run recorded no size for (as Elysia's before it was counted): today's
    # files, and said so
    assert "today's files" in comparison.complexity(recorded, "longpoll").basis
    # a run older than the record: counted from today's files, and said so
    assert "today's files" in comparison.complexity(res, "ws").basis


def test_empty_results_still_render(tmp_path: Path) -> None:
    md = comparison.render(data.load(tmp_path))
    rows = {r["Technology"]: r for r in markdown_table(md, "Technology", "Performance")}
    assert rows["WebSockets"]["Performance"].endswith("not measured")


def test_saturated_and_noisy_figures_are_marked_beside_values_and_stars(results_copy: Path
                                                                        ) -> None:
    from tests.report.conftest import add_raw, raw_file

    sse = raw_file("sse", "echo")
    sse["counters"]["received_measured"] //= 2  # half the offered rate came back
    add_raw(results_copy, sse, sse["metadata"]["run_id"])
    ws = raw_file("ws", "connections")
    t0 = ws["window"]["start"]
    ws["machine"] = {"cores": 2, "samples": [[t0, 0.0, 0.0], [t0 + 2, 4.0, 0.0]]}
    add_raw(results_copy, ws, ws["metadata"]["run_id"])  # others kept both cores busy
    res = data.load(results_copy)
    fig = res.figure("sse", "echo", "rtt_p50_us")
    assert fig is not None and fig.saturated and not fig.noisy
    assert "⚠ saturated" in comparison.performance(res, "sse").cell()
    assert "⚠" not in comparison.performance(res, "ws").cell()
    assert "⚠ noisy" in comparison.scalability(res, "ws").cell()
    md = comparison.render(res)
    rows = {r["Transport"]: r for r in markdown_table(md, "Transport", "Echo p50")}
    assert rows["sse"]["Echo p50"].endswith("⚠ saturated")
    assert rows["ws"]["Memory / connection"].endswith("⚠ noisy")
    assert "⚠" not in rows["ws"]["Echo p50"]
    assert "⚠ saturated: the achieved rate fell below 95%" in md
