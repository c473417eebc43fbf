"""claims.md: verdicts computed from the data (flipping when the data does), every cited test
exists, every claim has a verdict and evidence."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd
import pytest

from sobranie_bench.report import claims, data, text
from tests.report.conftest import add_raw, median, raw_file

REPO = Path(__file__).resolve().parents[2]


def verdicts(res: data.Results) -> dict[str, claims.Verdict]:
    return {c.id: v for c, v in claims.judge_all(res)}


@pytest.fixture(scope="module")
def judged(fixture_dir: Path) -> dict[str, claims.Verdict]:
    return verdicts(data.load(fixture_dir))


def test_every_claim_has_a_verdict_and_evidence(judged: dict[str, claims.Verdict]) -> None:
    assert len(judged) == len(claims.CLAIMS) + 25, "the list plus the note's 5x5 table"
    for cid, v in judged.items():
        assert v.verdict in claims.VERDICTS, cid
        assert v.evidence, cid


def test_ws_low_latency_is_computed_from_the_run(judged: dict[str, claims.Verdict],
                                                 summary: pd.DataFrame) -> None:
    p50 = {t: median(summary, t, "echo", "rtt_p50_us") for t in ("ws", "ws-websockets", "sse",
                                                                  "longpoll")}
    p99 = {t: median(summary, t, "echo", "rtt_p99_us") for t in p50}
    low = p50["ws"] <= 1.5 * min(p50.values()) and p99["ws"] <= 1.5 * min(p99.values())
    assert judged["ws-latency"].verdict == (claims.CONFIRMED if low else claims.DEPENDS)
    ratio = text.ratio(p50["longpoll"] / p50["ws"])
    assert any(ratio in e for e in judged["ws-latency"].evidence)


def test_unmeasured_socketio_claims_wait(judged: dict[str, claims.Verdict]) -> None:
    assert judged["sio-overhead"].verdict == claims.NOT_MEASURED
    assert judged["sio-resources"].verdict == claims.NOT_MEASURED
    assert judged["wt-performance"].verdict == claims.NOT_MEASURED


def socketio_overhead(results: Path, factor: float) -> str:
    """Add socketio overhead raws (the ws ones with every byte count scaled) to the fixture's
    run, and judge 'bigger overhead' again."""
    run = data.load(results).main_run
    assert run is not None
    for payload in (64, 4096):
        raw = raw_file("ws", "overhead", payload)
        raw["transport"] = "socketio"
        for k in ("sub_up", "sub_down", "pub_up", "pub_down"):
            raw["counters"][k] = int(raw["counters"][k] * factor)
        add_raw(results, raw, run)
    return verdicts(data.load(results))["sio-overhead"].verdict


def test_bigger_overhead_is_confirmed_when_socketio_sends_more(results_copy: Path) -> None:
    assert socketio_overhead(results_copy, 1.3) == claims.CONFIRMED


def test_bigger_overhead_is_refuted_when_it_does_not(results_copy: Path) -> None:
    assert socketio_overhead(results_copy, 0.9) == claims.REFUTED


def test_no_verdict_from_a_ratio_across_runs(results_copy: Path) -> None:
    raw = raw_file("ws", "overhead", 64)
    raw["transport"] = "socketio"
    add_raw(results_copy, raw, "29991231T000000Z")
    v = verdicts(data.load(results_copy))["sio-overhead"]
    assert v.verdict == claims.NOT_MEASURED


def test_db_polling_is_refuted_with_the_measured_push_latency(
        judged: dict[str, claims.Verdict], summary: pd.DataFrame) -> None:
    v = judged["code-db-polling"]
    assert v.verdict == claims.REFUTED
    p99 = median(summary, "sse", "fanout", "latency_p99_us")
    assert any(f"{p99 / 1000:.3g} ms" in e for e in v.evidence)


def test_table_cells_compare_the_notes_stars_with_ours(judged: dict[str, claims.Verdict]
                                                       ) -> None:
    assert judged["table-websockets-browser"].verdict == claims.CONFIRMED
    assert judged["table-webtransport-browser"].verdict == claims.REFUTED
    assert judged["table-socketio-performance"].verdict == claims.NOT_MEASURED


def test_every_cited_test_exists() -> None:
    cited = claims.cited_tests()
    assert cited
    for node in cited:
        path, _, name = node.partition("::")
        func = name.split("[")[0]
        tree = ast.parse((REPO / path).read_text())
        names = {n.name for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert func in names, node


def test_claims_md_lists_every_claim(built: Path) -> None:
    md = (built / "claims.md").read_text()
    for c in claims.CLAIMS:
        assert c.quote.replace("|", "\\|") in md, c.id
    totals = re.search(r"Totals: (.*) \((\d+) claims\)", md)
    assert totals and int(totals.group(2)) == len(claims.CLAIMS) + 25
