"""claims.md: every claim names a rule, verdicts are computed from the data (flipping when
the data does), tests decide only through a recorded test run, models that raise are shown."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd
import pytest

from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.report import claims, data, rules, text
from tests.report.conftest import add_raw, median, raw_file

REPO = Path(__file__).resolve().parents[2]
NO_TESTS = rules.TestRun(None, "", {})


def verdicts(res: data.Results, test_run: rules.TestRun = NO_TESTS) -> dict[str, claims.Verdict]:
    return {c.id: v for c, v in claims.judge_all(res, test_run)}


@pytest.fixture(scope="module")
def judged(fixture_dir: Path) -> dict[str, claims.Verdict]:
    return verdicts(data.load(fixture_dir))


def junit(path: Path, outcomes: dict[str, str]) -> rules.TestRun:
    """Write a pytest-style JUnit XML holding ``node -> outcome`` and read it back."""
    cases = []
    for node, outcome in outcomes.items():
        file, _, name = node.partition("::")
        classname = file.removesuffix(".py").replace("/", ".")
        body = {"passed": "", "failed": "<failure message='boom'/>",
                "skipped": "<skipped/>"}[outcome]
        cases.append(f'<testcase classname="{classname}" name="{name}">{body}</testcase>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" '
                    f'timestamp="2026-12-02T10:00:00">{"".join(cases)}</testsuite></testsuites>')
    return rules.latest_test_run(path.parent.parent)


def test_every_claim_names_a_rule_and_gets_a_verdict(judged: dict[str, claims.Verdict]) -> None:
    assert len(judged) == len(claims.CLAIMS) + 25, "the list plus the note's 5x5 table"
    assert len({c.id for c in (*claims.CLAIMS, *claims.TABLE_CLAIMS)}) == len(judged)
    for cid, v in judged.items():
        assert v.verdict in claims.VERDICTS, cid
        assert v.evidence, cid
    assert all(isinstance(c.rule, rules.RULE_TYPES) for c in (*claims.CLAIMS, *claims.TABLE_CLAIMS))
    assert all(claims.kind(v) in claims.KINDS for v in judged.values())


def test_a_cited_claim_is_never_confirmed(judged: dict[str, claims.Verdict]) -> None:
    for c in claims.CLAIMS:
        if isinstance(c.rule, rules.Cited):
            assert judged[c.id].verdict == claims.CITED, c.id
            assert any(e.startswith("source: [") for e in judged[c.id].evidence), c.id


def test_ws_low_latency_is_computed_from_the_run(judged: dict[str, claims.Verdict],
                                                 summary: pd.DataFrame) -> None:
    p99 = {t: median(summary, t, "echo", "rtt_p99_us") for t in ("ws", "ws-websockets", "sse",
                                                                  "longpoll")}
    low = p99["ws"] < claims.LOW_LATENCY_US and p99["ws"] <= 1.5 * min(p99.values())
    assert judged["ws-latency"].verdict == (claims.CONFIRMED if low else claims.REFUTED)
    assert any(text.ms(p99["ws"]) in e for e in judged["ws-latency"].evidence)


def test_unmeasured_claims_say_so(judged: dict[str, claims.Verdict]) -> None:
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


def test_many_webtransport_streams_rest_on_the_stream_and_datagram_tests(
        fixture_dir: Path, tmp_path: Path) -> None:
    rule = next(c.rule for c in claims.CLAIMS if c.id == "wt-streams")
    nodes = rules.test_nodes(rule)
    assert len(nodes) == 2 and all("test_webtransport.py::" in n for n in nodes)
    res = data.load(fixture_dir)
    passed = junit(tmp_path / "a" / "tests" / "junit.xml", dict.fromkeys(nodes, "passed"))
    assert verdicts(res, passed)["wt-streams"].verdict == claims.CONFIRMED
    one_failed = junit(tmp_path / "b" / "tests" / "junit.xml",
                       {nodes[0]: "passed", nodes[1]: "failed"})
    assert verdicts(res, one_failed)["wt-streams"].verdict == claims.FAILED
    assert verdicts(res)["wt-streams"].verdict == claims.NOT_TESTED  # no recorded run


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
    assert v.verdict == claims.REFUTED and v.basis == "modelled"
    p99 = median(summary, "sse", "fanout", "latency_p99_us")
    assert any(f"{p99 / 1000:.3g} ms" in e for e in v.evidence)


def test_reconnect_storm_uses_the_measured_connect_rate(judged: dict[str, claims.Verdict],
                                                        summary: pd.DataFrame) -> None:
    per_conn = median(summary, "ws", "connections", "server_cpu_us_per_conn")
    assert any(f"{1e6 / per_conn:,.0f} handshakes/s" in e
               for e in judged["code-backoff"].evidence)


def test_storm_is_not_measured_without_a_connections_run(results_copy: Path) -> None:
    for path in (results_copy / "runs").rglob("ws-connections-*.json"):
        path.unlink()
    assert verdicts(data.load(results_copy))["code-backoff"].verdict == claims.NOT_MEASURED


def test_a_model_that_raises_is_a_failure_shown(fixture_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: rules.Context) -> tuple[float | None, tuple[str, ...]]:
        raise ZeroDivisionError("no handshakes")

    monkeypatch.setitem(rules.MODELS, "storm-peak-no-jitter-over-jitter", broken)
    v = verdicts(data.load(fixture_dir))["code-backoff"]
    assert v.verdict == claims.FAILED
    assert any("ZeroDivisionError: no handshakes" in e for e in v.evidence)


def claim(cid: str) -> claims.Claim:
    return next(c for c in (*claims.CLAIMS, *claims.TABLE_CLAIMS) if c.id == cid)


def test_claims_on_tests_need_a_recorded_passing_run(fixture_dir: Path, tmp_path: Path) -> None:
    res = data.load(fixture_dir)
    assert verdicts(res)["sio-acks"].verdict == claims.NOT_TESTED
    nodes = rules.test_nodes(claim("stack-sticky").rule) + rules.test_nodes(
        claim("sio-acks").rule) + rules.test_nodes(claim("sio-fallback").rule)
    passed = junit(tmp_path / "results" / "tests" / "junit.xml", dict.fromkeys(nodes, "passed"))
    assert verdicts(res, passed)["sio-acks"].verdict == claims.CONFIRMED
    # the cluster run it also reads is not in the fixture: refuted by the tests alone
    assert verdicts(res, passed)["stack-sticky"].verdict == claims.REFUTED, "passing=refuted"
    failed = junit(tmp_path / "r2" / "tests" / "junit.xml",
                   {**dict.fromkeys(nodes, "passed"), nodes[-1]: "failed"})
    assert verdicts(res, failed)["sio-fallback"].verdict == claims.FAILED
    skipped = junit(tmp_path / "r3" / "tests" / "junit.xml", dict.fromkeys(nodes, "skipped"))
    assert verdicts(res, skipped)["sio-acks"].verdict == claims.NOT_TESTED


def test_a_claim_resting_on_tests_is_decided_by_them_only_when_they_passed(
        fixture_dir: Path, tmp_path: Path) -> None:
    res = data.load(fixture_dir)
    resting = [c for c in (*claims.CLAIMS, *claims.TABLE_CLAIMS) if rules.test_nodes(c.rule)]
    assert len(resting) >= 15
    nodes = {n for c in resting for n in rules.test_nodes(c.rule)}
    runs = {outcome: junit(tmp_path / outcome / "tests" / "junit.xml",
                           dict.fromkeys(nodes, outcome))
            for outcome in ("passed", "failed", "skipped")}
    judged = {outcome: verdicts(res, run) for outcome, run in runs.items()}
    judged["none"] = verdicts(res, NO_TESTS)
    for c in resting:
        for outcome in ("failed", "skipped", "none"):
            got = judged[outcome][c.id].verdict
            assert got != claims.CONFIRMED, (c.id, outcome)
            if isinstance(c.rule, rules.Tests):  # resting on tests alone: undecided
                assert got not in (claims.CONFIRMED, claims.REFUTED), (c.id, outcome)
        assert judged["failed"][c.id].verdict == claims.FAILED, c.id
        if isinstance(c.rule, rules.Tests):
            assert judged["passed"][c.id].verdict == c.rule.passing, c.id


def test_the_newest_recorded_run_is_read(tmp_path: Path) -> None:
    old = junit(tmp_path / "tests" / "a.xml", {"tests/x/test_a.py::test_one": "failed"})
    assert old.outcome("tests/x/test_a.py::test_one") == "failed"
    newer = (tmp_path / "tests" / "a.xml").read_text().replace("2026-12-02T10", "2026-12-02T11")
    (tmp_path / "tests" / "b.xml").write_text(newer.replace("<failure message='boom'/>", ""))
    assert rules.latest_test_run(tmp_path).outcome("tests/x/test_a.py::test_one") == "passed"


def test_a_rule_reads_a_network_profile_only_where_it_was_run(fixture_dir: Path) -> None:
    res = data.load(fixture_dir)
    assert rules.figure(res, rules.Ref("ws", "echo", "rtt_p99_us")) is not None
    assert rules.figure(res, rules.Ref("ws", "echo", "rtt_p99_us", network="4g")) is None


def test_table_cells_compare_the_notes_stars_with_ours(judged: dict[str, claims.Verdict]
                                                       ) -> None:
    assert judged["table-websockets-browser"].verdict == claims.NOT_MEASURED, "no browser run"
    assert judged["table-websockets-framework"].verdict == claims.NOT_TESTED, "ws@elysia tests"
    assert judged["table-socketio-framework"].verdict == claims.CITED
    assert judged["table-socketio-performance"].verdict == claims.NOT_MEASURED
    assert judged["table-websockets-performance"].verdict in (claims.CONFIRMED, claims.REFUTED)


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


def test_claims_md_counts_verdicts_by_kind(built: Path) -> None:
    md = (built / "claims.md").read_text()
    for c in claims.CLAIMS:
        assert c.quote.replace("|", "\\|") in md, c.id
    kinds = re.search(r"By kind: (.*) \((\d+) claims\)", md)
    assert kinds and int(kinds.group(2)) == len(claims.CLAIMS) + 25
    counted = {name: int(n) for n, name in re.findall(r"\*\*(\d+)\*\* ([a-z ]+?)(?:,|$)",
                                                             kinds.group(1))}
    assert set(counted) == set(claims.KINDS) and sum(counted.values()) == int(kinds.group(2))


def test_a_rule_that_raises_is_a_failure_shown(fixture_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object) -> dict[str, object]:
        raise RuntimeError("table broke")

    monkeypatch.setattr(rules.Context, "table", property(broken))
    v = verdicts(data.load(fixture_dir))["table-websockets-performance"]
    assert v.verdict == claims.FAILED and "RuntimeError: table broke" in v.evidence[0]


# --- the browser column, the cluster run and the emulated network, read by the rules ---------

BROWSER_RUN = "29991231T000000Z"


def add_browser(root: Path, transport: str, engine: str, ok: bool = True,
                sse_limit: dict[str, object] | None = None) -> None:
    """A ``browser`` raw of ``transport`` in ``engine`` (3 tabs, all passing or one failing),
    shaped like the scenario's, in a run of its own."""
    times = Recorder()
    for ms in (20, 30, 40):
        times.record_ns(0, ms * 1_000_000)
    raw = raw_file("ws", "echo")
    raw.update(transport=transport, scenario="browser", series={},
               histograms={"hello": times.encoded(), "first": times.encoded()},
               params={"engine": engine, "tabs": 3, "block_seconds": 2.0},
               counters={"tabs": 3, "tabs_ok": 3 if ok else 2, "engine_major": 1},
               info={"engine": engine, "engine_version": "1.0",
                     "errors": [] if ok else ["tab 2: no first message"],
                     **({"sse_limit": sse_limit} if sse_limit else {})})
    add_raw(root, raw, BROWSER_RUN)


def limit(blocked: bool, http2_blocked: bool = False) -> dict[str, object]:
    return {"seventh_blocked": blocked, "other_host_blocked": False, "first_six_hello": 6,
            "http2": {"seventh_blocked": http2_blocked, "first_six_hello": 6, "protocol": "h2"}}


def test_browser_claims_are_judged_on_the_engines_run(results_copy: Path) -> None:
    before = verdicts(data.load(results_copy))
    assert before["ws-browsers"].verdict == claims.NOT_MEASURED
    assert before["sse-six"].verdict == claims.NOT_MEASURED
    for engine in ("chromium", "firefox"):
        for t in ("ws", "ws-websockets"):
            add_browser(results_copy, t, engine)
        add_browser(results_copy, "webtransport", engine, ok=engine == "chromium")
        add_browser(results_copy, "sse", engine, sse_limit=limit(blocked=True))
    judged = verdicts(data.load(results_copy))
    assert judged["ws-browsers"].verdict == claims.CONFIRMED
    assert judged["ws-browsers"].basis == "measured"
    assert any("ws-websockets in Firefox 1.0: works" in e for e in judged["ws-browsers"].evidence)
    assert judged["table-websockets-browser"].verdict == claims.CONFIRMED
    assert judged["wt-browsers"].verdict == claims.CONFIRMED, "it failed in Firefox"
    assert judged["table-webtransport-browser"].verdict == claims.CONFIRMED
    assert judged["sse-six"].verdict == claims.CONFIRMED
    assert judged["sse-proxies"].verdict == claims.CONFIRMED, "all seven passed HAProxy"


def test_a_browser_claim_flips_with_the_engines(results_copy: Path) -> None:
    add_browser(results_copy, "ws", "chromium")
    add_browser(results_copy, "ws", "firefox", ok=False)
    add_browser(results_copy, "webtransport", "firefox")
    add_browser(results_copy, "sse", "firefox", sse_limit=limit(blocked=False, http2_blocked=True))
    judged = verdicts(data.load(results_copy))
    assert judged["ws-browsers"].verdict == claims.REFUTED
    assert judged["wt-browsers"].verdict == claims.REFUTED, "it works outside Chromium"
    assert judged["table-webtransport-browser"].verdict == claims.REFUTED
    assert judged["sse-six"].verdict == claims.REFUTED
    assert judged["sse-proxies"].verdict == claims.REFUTED


def test_a_limited_browser_claim_is_not_measured_without_its_engine(results_copy: Path) -> None:
    add_browser(results_copy, "webtransport", "chromium")
    assert verdicts(data.load(results_copy))["wt-browsers"].verdict == claims.NOT_MEASURED


def test_a_rule_reads_the_cluster_run_apart_from_one_instance(results_copy: Path) -> None:
    ref = rules.Ref("ws", "fanout", "lost", broker="redis")
    assert rules.figure(data.load(results_copy), ref) is None
    raw = raw_file("ws", "fanout")
    raw["metadata"].update(cluster=3, broker="redis")
    channel = next(iter(raw["per_channel"]["unique"]))
    raw["per_channel"]["unique"][channel] -= 7  # 7 acked publishes some subscriber never got
    add_raw(results_copy, raw, BROWSER_RUN)
    res = data.load(results_copy)
    fig = rules.figure(res, ref)
    assert fig is not None and fig.value == 7 and fig.run_id == BROWSER_RUN
    one = rules.figure(res, rules.Ref("ws", "fanout", "lost"))
    assert one is not None and one.run_id != BROWSER_RUN, "never mixed with one instance"
    out = rules.judge(rules.Threshold(ref, "<=", 0, "none lost"), claims.context(res, NO_TESTS))
    assert out.verdict == claims.REFUTED and "cluster over redis" in out.evidence[0]


def test_prefer_judges_on_4g_where_it_ran_else_on_loopback(results_copy: Path) -> None:
    def ratio(network: str) -> rules.Ratio:
        return rules.Ratio(rules.Ref("ws-websockets", "echo", "rtt_p99_us", network=network),
                           rules.Ref("ws", "echo", "rtt_p99_us", network=network), "<", 100,
                           "any")
    rule = rules.Prefer((ratio("4g"), ratio("loopback")))
    out = rules.judge(rule, claims.context(data.load(results_copy), NO_TESTS))
    assert out.verdict == claims.CONFIRMED
    assert any("not judged on echo on 4g" in e for e in out.evidence)
    for t in ("ws", "ws-websockets"):
        raw = raw_file(t, "echo")
        raw["network"] = "4g"
        add_raw(results_copy, raw, BROWSER_RUN)
    out = rules.judge(rule, claims.context(data.load(results_copy), NO_TESTS))
    assert out.verdict == claims.CONFIRMED and f"run {BROWSER_RUN}" in out.evidence[1]
    assert not any("not judged" in e for e in out.evidence)


def test_near_best_forgives_a_gap_nobody_feels_but_not_a_large_one(results_copy: Path) -> None:
    res = data.load(results_copy)
    ref = rules.Ref("ws", "echo", "rtt_p99_us")
    fig = rules.figure(res, ref)
    assert fig is not None
    ctx = claims.context(res, NO_TESTS)
    best = min(f.value for t in res.peers("ws", "echo")
               if (f := rules.figure(res, ref.with_transport(t))) is not None
               and f.run_id == fig.run_id and f.params == fig.params and f.value > 0)
    gap = fig.value - best
    strict = rules.NearBest(ref, 1.0, "only the best")
    forgiving = rules.NearBest(ref, 1.0, "only the best, or a gap nobody feels", slack=gap + 1)
    tight = rules.NearBest(ref, 1.0, "only the best, or a gap nobody feels", slack=gap - 1)
    expected = claims.CONFIRMED if gap <= 0 else claims.REFUTED
    assert rules.judge(strict, ctx).verdict == expected
    assert rules.judge(forgiving, ctx).verdict == claims.CONFIRMED
    if gap > 1:
        assert rules.judge(tight, ctx).verdict == claims.REFUTED
        assert "or at most" in rules.judge(tight, ctx).evidence[0]
