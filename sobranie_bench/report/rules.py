"""Rules that turn a run's results into a verdict: the vocabulary of the claims table.

A claim of the note (``claims.CLAIMS``) names one rule. A rule is a frozen record saying what
it reads (figures by transport x scenario x metric x network profile, a count of code lines,
a model's output, the recorded test run, or a cited source), how it compares (comparator and
threshold) and why that threshold. ``judge(rule, ctx)`` computes the verdict from *this*
run's data; nothing here holds a verdict as text.

Verdicts:

- ``confirmed`` / ``refuted``: a measured, counted or modelled rule decided, or the tests a
  claim rests on all passed in the recorded test run (``Tests``; its ``passing`` says which
  of the two a pass means);
- ``not measured``: a figure the rule needs is absent from the results (or its run failed);
- ``not tested``: no recorded test run (JUnit XML) holds the tests the claim rests on;
- ``cited``: the claim rests on a public source, named, never ``confirmed``;
- ``failed``: a test the claim rests on failed, or a model raised: shown, never hidden.

A :class:`Ref` names any metric of the summary by transport, scenario, parameter match,
network profile (the ``run --network`` runs) and set-up (one instance, or the ``run --cluster``
run over a broker); :class:`Prefer` judges on the first of several that was measured (4g,
else loopback). The browser column is read from the ``browser`` scenario's engine results
(:class:`Browser`, and :class:`SseProbe` for SSE's connection limit and the HTTP/2 proxy).
"""

from __future__ import annotations

import functools
import math
import operator
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

from sobranie_bench.report import text
from sobranie_bench.report.data import Measured, Results
from sobranie_bench.report.sources import cite

Decided = Literal["confirmed", "refuted"]
CONFIRMED: Decided = "confirmed"
REFUTED: Decided = "refuted"
NOT_MEASURED, NOT_TESTED = "not measured", "not tested"
CITED, FAILED = "cited", "failed"
VERDICTS = (CONFIRMED, REFUTED, NOT_MEASURED, NOT_TESTED, CITED, FAILED)

Basis = Literal["measured", "counted", "modelled", "tested", "cited"]
BASES: tuple[Basis, ...] = ("measured", "counted", "modelled", "tested", "cited")

Op = Literal["<", "<=", ">", ">="]
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

LOOPBACK = "loopback"
JUNIT_DIR = "tests"
"""Recorded test runs live in ``<results>/tests/*.xml`` (pytest ``--junitxml``, ``make test``)."""


# --- what a rule reads -----------------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """One figure of the results: a metric of a transport in a scenario, at a parameter point,
    on a network profile."""

    transport: str
    """Transport name as in the registry (``ws``, ``sse``...)."""
    scenario: str
    """Scenario name (``echo``, ``fanout``, ``connections``, ``overhead``...)."""
    metric: str
    """Summary metric (``rtt_p99_us``, ``server_cpu_us_per_msg``...)."""
    match: tuple[tuple[str, float], ...] = ()
    """Numeric parameters the point must have, e.g. ``(("payload", 64),)``; empty = the
    scenario's reference point."""
    network: str = LOOPBACK
    """Network profile (``loopback``, ``4g``...); rows without a ``network`` column are
    loopback."""
    broker: str | None = None
    """None: one instance (the main matrix); a broker name (``redis``): the cluster run over
    that broker (``run --cluster N --broker redis``; the one with most instances)."""

    def label(self) -> str:
        where = ", ".join(f"{k}={v:g}" for k, v in self.match)
        net = "" if self.network == LOOPBACK else f", {self.network}"
        net += f", cluster over {self.broker}" if self.broker else ""
        where = f"{where}{net}".removeprefix(", ")
        return f"{self.transport} {self.scenario} {self.metric}" + (f" ({where})" if where else "")

    def with_transport(self, transport: str) -> Ref:
        return Ref(transport, self.scenario, self.metric, self.match, self.network, self.broker)

    def where(self) -> str:
        """The scenario and set-up it is judged on, in a few words."""
        setup = f", cluster over {self.broker}" if self.broker else ""
        return f"{self.scenario} on {self.network}{setup}"


def scope(res: Results, ref: Ref) -> Results | None:
    """The part of ``res`` a reference reads: the runs under its network profile, and of its
    set-up (one instance, or the cluster over its broker); None when none was run."""
    if ref.network != LOOPBACK:  # the runs made under that emulated profile
        if ref.network not in res.networks:
            return None
        res = res.networks[ref.network]
    if ref.broker is None:
        return res
    setups = [name for name in res.scaleout if name.endswith(f" over {ref.broker}")]
    if not setups:
        return None
    return res.scaleout[max(setups, key=lambda name: int(name.split()[0]))]


def figure(res: Results, ref: Ref) -> Measured | None:
    """The figure ``ref`` names in ``res`` (None when not measured)."""
    sub = scope(res, ref)
    if sub is None:
        return None
    params = sub.point(ref.scenario, ref.transport, **dict(ref.match)) if ref.match else None
    if ref.match and params is None:
        return None
    return sub.figure(ref.transport, ref.scenario, ref.metric, params)


def show(fig: Measured, metric: str) -> str:
    if "cpu" in metric and metric.endswith(("_msg", "_delivery", "_conn")):
        return f"{text.measured(fig, 'num')} µs"
    if metric.endswith("_us"):
        return text.measured(fig, "ms")
    return text.measured(fig, "bytes" if "bytes" in metric else "num")


# --- rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ratio:
    """``a / b`` compared with a threshold (both figures from one run, never across runs)."""

    a: Ref
    b: Ref
    op: Op
    threshold: float
    reason: str
    """Why this threshold (what size of difference matters)."""


@dataclass(frozen=True)
class NearBest:
    """A figure within ``factor`` of the best transport of its run, or within ``slack`` of it
    in the figure's own unit (lower is better): a gap smaller than ``slack`` is one nobody
    notices, so it never refutes "among the fastest"."""

    ref: Ref
    factor: float
    reason: str
    slack: float = 0.0


@dataclass(frozen=True)
class Threshold:
    """A figure compared with an absolute threshold."""

    ref: Ref
    op: Op
    threshold: float
    reason: str
    holds: Decided = CONFIRMED
    """The verdict when the comparison holds (the other one when it does not)."""


@dataclass(frozen=True)
class CodeRatio:
    """Code lines (adapter + client) of ``transport`` over those of ``other`` (``smallest``:
    the smallest transport in the suite), compared with a threshold."""

    transport: str
    other: str
    op: Op
    threshold: float
    reason: str


@dataclass(frozen=True)
class Model:
    """A model's output (``MODELS[name](ctx)``, a number and its evidence) compared with a
    threshold. A model that raises gives ``failed``."""

    name: str
    op: Op
    threshold: float
    reason: str
    holds: Decided = CONFIRMED
    """The verdict when the comparison holds (the other one when it does not)."""


@dataclass(frozen=True)
class Tests:
    """Tests of the suite (pytest node ids) that decide the claim: all passing in the recorded
    test run gives ``passing`` (the note's claim confirmed or refuted by what they show)."""

    nodes: tuple[str, ...]
    passing: Decided = CONFIRMED
    shows: str = ""
    """What the tests show, in a sentence."""


@dataclass(frozen=True)
class Cited:
    """A claim this suite cannot measure (or has not): it rests on public sources."""

    sources: tuple[str, ...]
    says: str
    """What the sources say about the claim, in a sentence."""
    agrees: bool | None = None
    """Whether the sources bear the note out (None: in part, or not a checkable claim)."""


@dataclass(frozen=True)
class Browser:
    """The ``browser`` scenario (report/browser.py's engine results): whether every tab of
    ``transports`` did the whole check (connect, hello, subscribe, publish, first message,
    drop, resume, nothing lost) in ``engines`` (empty: every engine that ran)."""

    transports: tuple[str, ...]
    reason: str
    works: bool = True
    """The claim: it works in those engines (True), or it is limited and fails there
    (False: then working there refutes it)."""
    engines: tuple[str, ...] = ()


@dataclass(frozen=True)
class SseProbe:
    """The ``browser`` scenario's probe of SSE's connection limit: seven tabs of one browser
    profile each hold an EventSource to one server, straight over HTTP/1.1 (``over="http/1.1"``:
    the claim is that the seventh waits) or through an HTTP/2 proxy (``over="proxy"``:
    HAProxy, h2 to the browser; the claim is that all seven streams pass it)."""

    transports: tuple[str, ...]
    reason: str
    over: Literal["http/1.1", "proxy"] = "http/1.1"


@dataclass(frozen=True)
class Prefer:
    """The first of ``rules`` that is measured decides (e.g. a 4g figure where a 4g run
    exists, else the loopback one); the evidence says which were not measured."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class AllOf:
    """Several rules: confirmed when all confirm; failed when any failed (a failing test or
    model is shown, never outvoted); refuted when any refutes; otherwise the first verdict
    that is neither (not measured before not tested before cited)."""

    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Stars:
    """A cell of the note's table: our stars (comparison.py) within ``tolerance`` of the
    note's."""

    technology: str
    column: str
    tolerance: int = 1


Rule: TypeAlias = ("Ratio | NearBest | Threshold | CodeRatio | Model | Tests | Cited | Browser "
                   "| SseProbe | Prefer | AllOf | Stars")
RULE_TYPES = (Ratio, NearBest, Threshold, CodeRatio, Model, Tests, Cited, Browser, SseProbe,
              Prefer, AllOf, Stars)
"""Every kind of rule a claim may name."""


# --- the recorded test run -------------------------------------------------------------------

@dataclass(frozen=True)
class TestRun:
    """Outcomes of one recorded pytest run (its JUnit XML)."""

    path: Path | None
    """The XML read (None: no recorded run)."""
    timestamp: str
    """When pytest ran (the testsuite's timestamp)."""
    outcomes: Mapping[str, str]
    """Node id -> passed, failed, error or skipped."""

    def outcome(self, node: str) -> str | None:
        return self.outcomes.get(node)


def _node_id(classname: str, name: str) -> str:
    parts = classname.split(".")
    # pytest's classname: the module path dotted, then classes; find the test_*.py module
    for i in range(len(parts), 0, -1):
        if parts[i - 1].startswith("test_"):
            path = "/".join(parts[:i]) + ".py"
            return "::".join([path, *parts[i:], name])
    return f"{classname}::{name}"


def read_junit(path: Path) -> TestRun:
    """Outcomes of a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    outcomes: dict[str, str] = {}
    stamp = ""
    for suite in suites:
        stamp = max(stamp, suite.get("timestamp", ""))
        for case in suite.iter("testcase"):
            node = _node_id(case.get("classname", ""), case.get("name", ""))
            tags = {child.tag for child in case}
            outcomes[node] = ("failed" if "failure" in tags else "error" if "error" in tags
                              else "skipped" if "skipped" in tags else "passed")
    return TestRun(path, stamp, outcomes)


def latest_test_run(results_root: Path) -> TestRun:
    """The newest recorded test run under ``results_root/tests`` (by its timestamp); an empty
    one when there is none."""
    runs = []
    for path in sorted((Path(results_root) / JUNIT_DIR).glob("*.xml")):
        try:
            runs.append(read_junit(path))
        except ET.ParseError:
            continue
    if not runs:
        return TestRun(None, "", {})
    return max(runs, key=lambda r: (r.timestamp, str(r.path)))


# --- judging ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """A rule's verdict with its evidence."""

    verdict: str
    """One of VERDICTS."""
    basis: Basis
    """What decided it: measured, counted, modelled, tested or cited."""
    evidence: tuple[str, ...]
    """Markdown items: the rule, the figures it read, test outcomes, sources."""


@dataclass
class Context:
    """What rules read: the results, the recorded test run, and things derived once."""

    res: Results
    tests: TestRun = field(default_factory=lambda: TestRun(None, "", {}))

    @functools.cached_property
    def table(self) -> dict[str, Any]:
        from sobranie_bench.report import comparison
        return {row.technology.name: row for row in comparison.rows(self.res)}


ModelFn = Callable[[Context], tuple[float | None, tuple[str, ...]]]
MODELS: dict[str, ModelFn] = {}
"""Models a rule may name: ``name -> fn(ctx) -> (value or None, evidence)``."""


def model(name: str) -> Callable[[ModelFn], ModelFn]:
    def register(fn: ModelFn) -> ModelFn:
        MODELS[name] = fn
        return fn
    return register


def _cmp(value: float, op: str, threshold: float) -> bool:
    return OPS[op](value, threshold)


def _missing(res: Results, *refs: Ref) -> str:
    gone = [r for r in refs if figure(res, r) is None]
    failed = [r.label() for r in gone
              if (sub := scope(res, r)) is not None and sub.failed(r.transport, r.scenario)]
    absent = [r.label() for r in gone if r.label() not in failed]
    return "; ".join(([f"run failed: {', '.join(failed)}"] if failed else [])
                     + ([f"not in the results: {', '.join(absent)}"] if absent else []))


def judge(rule: Rule, ctx: Context) -> Outcome:
    """The verdict of ``rule`` on this run's results and recorded tests."""
    res = ctx.res
    if isinstance(rule, Ratio):
        fa, fb = figure(res, rule.a), figure(res, rule.b)
        head = f"rule: {rule.a.label()} / {rule.b.label()} {rule.op} {rule.threshold:g} ({rule.reason})"
        if fa is None or fb is None:
            return Outcome(NOT_MEASURED, "measured", (head, _missing(res, rule.a, rule.b)))
        if fa.run_id != fb.run_id:
            return Outcome(NOT_MEASURED, "measured", (head, (
                f"{rule.a.transport} and {rule.b.transport} come from different runs "
                f"({fa.run_id}, {fb.run_id}); no ratio is taken across runs")))
        r = fa.value / fb.value if fb.value else math.inf
        ok = _cmp(r, rule.op, rule.threshold)
        return Outcome(CONFIRMED if ok else REFUTED, "measured", (head, (
            f"figure: {rule.a.transport} {show(fa, rule.a.metric)} vs {rule.b.transport} "
            f"{show(fb, rule.b.metric)} = {text.ratio(r)} (run {fa.run_id}, {fa.params})")))
    if isinstance(rule, NearBest):
        fig = figure(res, rule.ref)
        head = (f"rule: {rule.ref.label()} ≤ {rule.factor:g}× the best of its run"
                + (f" or at most {rule.slack:g} above it" if rule.slack else "")
                + f" ({rule.reason})")
        if fig is None:
            return Outcome(NOT_MEASURED, "measured", (head, _missing(res, rule.ref)))
        sub = scope(res, rule.ref)
        assert sub is not None  # the figure was found in it
        peers = {t: f for t in sub.peers(rule.ref.transport, rule.ref.scenario)
                 if (f := figure(res, rule.ref.with_transport(t))) is not None
                 and f.run_id == fig.run_id and f.params == fig.params and f.value > 0}
        best_t = min(peers, key=lambda t: peers[t].value)
        best = peers[best_t].value
        ok = fig.value <= rule.factor * best or fig.value - best <= rule.slack
        return Outcome(CONFIRMED if ok else REFUTED, "measured", (head, (
            f"figure: {rule.ref.transport} {show(fig, rule.ref.metric)}; best {best_t} "
            f"{show(peers[best_t], rule.ref.metric)} = {text.ratio(fig.value / peers[best_t].value)}"
            f" (run {fig.run_id}, {fig.params}, {len(peers)} transports)")))
    if isinstance(rule, Threshold):
        fig = figure(res, rule.ref)
        head = f"rule: {rule.ref.label()} {rule.op} {rule.threshold:g} ({rule.reason})"
        if fig is None:
            return Outcome(NOT_MEASURED, "measured", (head, _missing(res, rule.ref)))
        ok = _cmp(fig.value, rule.op, rule.threshold)
        return Outcome(rule.holds if ok else _other(rule.holds), "measured", (head, (
            f"figure: {show(fig, rule.ref.metric)} (run {fig.run_id}, {fig.params})")))
    if isinstance(rule, CodeRatio):
        from sobranie_bench.report import comparison
        head = (f"rule: code lines of {rule.transport} / {rule.other} {rule.op} "
                f"{rule.threshold:g} ({rule.reason})")
        size = comparison.code_size(res, rule.transport)
        if rule.other == "smallest":
            sizes = [s for t in comparison.TRANSPORTS if (s := comparison.code_size(res, t))]
            other = min(sizes, key=lambda s: s.total) if sizes else None
        else:
            other = comparison.code_size(res, rule.other)
        if size is None or other is None:
            return Outcome(NOT_MEASURED, "counted", (head, "no reference adapter and client"))
        r = size.total / other.total
        counted = CONFIRMED if _cmp(r, rule.op, rule.threshold) else REFUTED
        return Outcome(counted, "counted", (
            head, (f"count: {size.transport} {size.total} lines ({size.server_file} "
                   f"{size.server_lines} + {size.client_file} {size.client_lines}) vs "
                   f"{other.transport} {other.total} = {text.ratio(r)}")))
    if isinstance(rule, Model):
        head = f"rule: model `{rule.name}` {rule.op} {rule.threshold:g} ({rule.reason})"
        try:
            value, evidence = MODELS[rule.name](ctx)
        except Exception as exc:  # noqa: BLE001 - a failing model is a result, shown
            return Outcome(FAILED, "modelled", (head, (f"the model raised {type(exc).__name__}: "
                                                      f"{exc}")))
        if value is None:
            return Outcome(NOT_MEASURED, "modelled", (head, *evidence))
        ok = _cmp(value, rule.op, rule.threshold)
        return Outcome(rule.holds if ok else _other(rule.holds), "modelled",
                       (head, f"model value: {text.num(value)}", *evidence))
    if isinstance(rule, Tests):
        head = f"rule: these tests pass in the recorded test run ({rule.shows})"
        if ctx.tests.path is None:
            return Outcome(NOT_TESTED, "tested", (head, ("no recorded test run (JUnit XML under "
                                                        f"results/{JUNIT_DIR}/)"), *(
                f"test `{n}`" for n in rule.nodes)))
        got = {n: ctx.tests.outcome(n) for n in rule.nodes}
        lines = tuple(f"test `{n}`: {o or 'not in the recorded run'}" for n, o in got.items())
        stamp = f"recorded test run {ctx.tests.timestamp or ctx.tests.path.name}"
        if any(o in ("failed", "error") for o in got.values()):
            return Outcome(FAILED, "tested", (head, stamp, *lines))
        if all(o == "passed" for o in got.values()):
            return Outcome(rule.passing, "tested", (head, stamp, *lines))
        return Outcome(NOT_TESTED, "tested", (head, stamp, *lines))
    if isinstance(rule, Cited):
        stance = {True: "the sources bear the note out", False: "the sources contradict the "
                  "note", None: "the sources bear the note out in part"}[rule.agrees]
        return Outcome(CITED, "cited", (f"{stance}: {rule.says}",
                                        f"source: {cite(*rule.sources)}"))
    if isinstance(rule, Browser):
        return _browser(rule, res)
    if isinstance(rule, SseProbe):
        return _sse_probe(rule, res)
    if isinstance(rule, Prefer):
        tried: list[Outcome] = []
        for option in rule.rules:
            out = judge(option, ctx)
            if out.verdict != NOT_MEASURED:
                return Outcome(out.verdict, out.basis, (*out.evidence, *(
                    f"not judged on {judged_on(r)}: not measured there"
                    for r in rule.rules[:len(tried)])))
            tried.append(out)
        return Outcome(NOT_MEASURED, tried[0].basis, tuple(e for o in tried for e in o.evidence))
    if isinstance(rule, AllOf):
        outs = [judge(r, ctx) for r in rule.rules]
        verdicts = [o.verdict for o in outs]
        verdict: str
        if all(v == CONFIRMED for v in verdicts):
            verdict = CONFIRMED
        else:
            verdict = next(v for v in (FAILED, REFUTED, NOT_MEASURED, NOT_TESTED, CITED)
                           if v in verdicts)
        basis = next((o.basis for o in outs if o.verdict == verdict), outs[0].basis)
        return Outcome(verdict, basis, tuple(e for o in outs for e in o.evidence))
    if isinstance(rule, Stars):
        row = ctx.table[rule.technology]
        note = row.technology.note_stars[rule.column]
        ours = row.ours[rule.column]
        head = f"rule: |our stars − the note's {note}| ≤ {rule.tolerance}"
        if ours.stars is None:
            return Outcome(NOT_MEASURED, "measured", (head, ours.basis))
        if ours.sources:
            return Outcome(CITED, "cited", (f"ours: {text.stars(ours.stars)} from {ours.basis}",
                                            f"source: {cite(*ours.sources)}"))
        stars_basis: Basis = "measured" if rule.column in ("performance", "scalability") else "counted"
        ok = abs(ours.stars - note) <= rule.tolerance
        return Outcome(CONFIRMED if ok else REFUTED, stars_basis, (
            head, f"ours: {text.stars(ours.stars)} from {ours.basis} (rules in comparison.md)"))
    raise TypeError(f"not a rule: {rule!r}")


def _other(verdict: Decided) -> Decided:
    return REFUTED if verdict == CONFIRMED else CONFIRMED


def _browser(rule: Browser, res: Results) -> Outcome:
    from sobranie_bench.report import browser

    which = (" and ".join(browser.ENGINE_TITLES.get(e, e) for e in rule.engines)
             or "every engine it ran")
    claim = "works" if rule.works else "does not work"
    head = (f"rule: in the browser scenario, {', '.join(rule.transports)} {claim} in {which} "
            f"({rule.reason})")
    found = [r for t in rule.transports for r in browser.engine_results(res, t)
             if not rule.engines or r.engine in rule.engines]
    ran = [r for r in found if r.works is not None]
    lines = tuple(f"figure: {r.transport} in {r.title}: {r.verdict()} (run {r.run_id})"
                  for r in found)
    if not ran:
        return Outcome(NOT_MEASURED, "measured", (head, *(lines or (
            "no `browser` run in these results (`sobranie-bench run --scenarios browser`)",))))
    works = all(r.works for r in ran)
    return Outcome(CONFIRMED if works == rule.works else REFUTED, "measured", (head, *lines))


def _sse_probe(rule: SseProbe, res: Results) -> Outcome:
    from sobranie_bench.report import browser

    if rule.over == "http/1.1":
        head = (f"rule: over HTTP/1.1 the seventh EventSource of one browser profile to one "
                f"host waits ({rule.reason})")
    else:
        head = (f"rule: through an HTTP/2 proxy (HAProxy) every one of seven EventSources "
                f"gets its events ({rule.reason})")
    probes: list[tuple[str, str, bool | None, str]] = []
    for transport, engine, lim, run in browser.sse_limits(res):
        if transport not in rule.transports:
            continue
        record = lim if rule.over == "http/1.1" else lim.get("http2", {})
        if not isinstance(record.get("seventh_blocked"), bool):
            why = record.get("not_run") or record.get("error") or "no result"
            probes.append((transport, engine, None, f"not measured ({why})"))
            continue
        blocked = bool(record["seventh_blocked"])
        if rule.over == "http/1.1":
            other = lim.get("other_host_blocked")
            ok = blocked
            said = (f"7th tab {'waited' if blocked else 'was not held'}; under another host "
                    f"name {'held too' if other else 'not held' if other is False else '—'}")
        else:
            ok = not blocked and record.get("first_six_hello") == 6
            said = (f"{record.get('first_six_hello')}/6 first tabs got their hello, the 7th "
                    f"{'waited' if blocked else 'did too'} (protocol {record.get('protocol')})")
        probes.append((transport, engine, ok, f"{said} (run {run})"))
    lines = tuple(f"figure: {t} in {e}: {said}" for t, e, _, said in probes)
    decided = [ok for _, _, ok, _ in probes if ok is not None]
    if not decided:
        return Outcome(NOT_MEASURED, "measured", (head, *(lines or (
            "no SSE limit probe in these results (the `browser` scenario of sse)",))))
    return Outcome(CONFIRMED if all(decided) else REFUTED, "measured", (head, *lines))


def test_nodes(rule: Rule) -> tuple[str, ...]:
    """Every test node id a rule rests on."""
    if isinstance(rule, Tests):
        return rule.nodes
    if isinstance(rule, (AllOf, Prefer)):
        return tuple(n for r in rule.rules for n in test_nodes(r))
    return ()


def judged_on(rule: Rule) -> str:
    """The scenarios / network profiles (or tests, sources) a rule reads, in a few words."""
    if isinstance(rule, Ratio):
        refs = [rule.a, rule.b]
    elif isinstance(rule, (NearBest, Threshold)):
        refs = [rule.ref]
    elif isinstance(rule, AllOf):
        return "; ".join(dict.fromkeys(judged_on(r) for r in rule.rules))
    elif isinstance(rule, Prefer):
        return ", else ".join(dict.fromkeys(judged_on(r) for r in rule.rules))
    elif isinstance(rule, Browser):
        return "browser (" + (", ".join(rule.engines) or "every engine run") + ")"
    else:
        return {CodeRatio: "code lines", Model: "model", Tests: "test run", Cited: "sources",
                SseProbe: "browser (SSE limit probe)", Stars: "comparison.md"}[type(rule)]
    return ", ".join(dict.fromkeys(r.where() for r in refs))
