"""``recommendation.md``: a transport and a fallback per Sobranie feature, from the data.

Each feature weighs seven criteria (latency, CPU, memory, bytes, browser support, complexity,
bidirectionality). A measured criterion scores ``best / value`` among the candidates (1 for
the best), a cited one its stars / 5, bidirectionality 1 for one full-duplex connection and
0.5 for a stream plus separate HTTP requests. The weighted mean ranks the candidates;
candidates are the transports measured in the main run (ratios are never taken across
runs). The fallback is the best candidate that runs over plain HTTP request/response, so it
passes wherever HTTPS does. What the choice costs at one million online users comes from the
capacity model (``sobranie_bench.capacity.plan``), calibrated from the same results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sobranie_bench.report import comparison, text
from sobranie_bench.report.data import Measured, Results, summary_frame
from sobranie_bench.report.sources import BIDIRECTIONAL, BROWSER, TECHNOLOGY_OF

CRITERIA = ("latency", "cpu", "memory", "bytes", "browser", "complexity", "bidirectional")
FALLBACK_POOL = ("sse", "longpoll", "socketio-polling")
"""Transports that need nothing beyond HTTP request/response through intermediaries."""
ONLINE_USERS = 1_000_000


@dataclass(frozen=True)
class Feature:
    """A real-time feature of Sobranie and how much each criterion matters to it."""

    key: str
    title: str
    direction: str
    """``both`` (clients send as much as they receive), ``push`` (server to client) or
    ``media`` (audio/video: outside this suite)."""
    capacity_features: tuple[str, ...]
    """The capacity model's features it stands for."""
    weights: dict[str, float]
    """Weight per criterion (CRITERIA)."""


def _w(latency: float, cpu: float, memory: float, nbytes: float, browser: float,
       complexity: float, bidirectional: float) -> dict[str, float]:
    return dict(zip(CRITERIA, (latency, cpu, memory, nbytes, browser, complexity,
                               bidirectional)))


FEATURES: tuple[Feature, ...] = (
    Feature("chat", "Chat (instant messages)", "both", ("chat",), _w(3, 1, 1, 1, 2, 1, 3)),
    Feature("notifications", "Notifications (likes, comments, follows)", "push",
            ("notifications",), _w(1, 2, 3, 2, 3, 2, 0)),
    Feature("presence", "Presence (online/offline)", "push", ("presence",),
            _w(1, 2, 3, 2, 2, 1, 1)),
    Feature("feed", "Live feed and counters", "push", ("feed", "counters"),
            _w(2, 3, 2, 2, 3, 2, 0)),
    Feature("collab", "Collaborative editing", "both", ("collab",), _w(3, 1, 1, 2, 2, 1, 3)),
    Feature("calls", "Calls (audio/video)", "media", (), _w(0, 0, 0, 0, 0, 0, 0)),
)

WEIGHTINGS: dict[str, dict[str, float]] = {
    "as weighted": {},
    "latency first": {"latency": 3},
    "cost first": {"cpu": 3, "memory": 3, "bytes": 3},
    "reach and simplicity first": {"browser": 3, "complexity": 3},
}
"""Alternative weightings: multipliers applied to each feature's own weights."""


# --- candidates and scores -------------------------------------------------------------------

def _measure(res: Results, transport: str, feature: Feature, criterion: str) -> Measured | None:
    both = feature.direction == "both"
    if criterion == "latency":
        return (res.figure(transport, "echo", "rtt_p99_us") if both
                else res.figure(transport, "fanout", "latency_p99_us"))
    if criterion == "cpu":
        return (res.figure(transport, "echo", "server_cpu_us_per_msg") if both
                else res.figure(transport, "fanout", "server_cpu_us_per_delivery"))
    if criterion == "memory":
        return res.figure(transport, "connections", "server_rss_bytes_per_conn")
    if criterion == "bytes":
        point = res.point("overhead", transport, payload=64)
        metric = "bytes_per_msg" if both else "bytes_down_per_msg"
        return res.figure(transport, "overhead", metric, point) if point else None
    return None


MEASURED_CRITERIA = ("latency", "cpu", "memory", "bytes")
SCENARIO_OF = {"memory": "connections", "bytes": "overhead"}


@dataclass(frozen=True)
class Candidate:
    transport: str
    figures: dict[str, Measured | None]
    """The measured criteria's figures."""
    cited: dict[str, float]
    """Browser support (stars / 5), complexity (1 / ratio to the simplest), bidirectional."""


def candidates(res: Results, feature: Feature) -> tuple[list[Candidate], dict[str, str]]:
    """Transports that can be ranked for ``feature`` (measured in the main run for every
    measured criterion it weighs), and why the others cannot."""
    out, excluded = [], {}
    for t in res.transports:
        figs = {c: _measure(res, t, feature, c) for c in MEASURED_CRITERIA}
        needed = [c for c in MEASURED_CRITERIA if feature.weights.get(c, 0) > 0]
        missing = [c for c in needed if figs[c] is None]
        other_run = [c for c in needed if figs[c] is not None
                     and figs[c].run_id != res.main_run]  # type: ignore[union-attr]
        if missing:
            excluded[t] = "not measured: " + ", ".join(missing)
            continue
        if other_run:
            excluded[t] = "measured in another run than the main one: not compared"
            continue
        cx = comparison.complexity(res, t).ratio
        tech = TECHNOLOGY_OF.get(t)
        out.append(Candidate(t, figs, {
            "browser": BROWSER[tech].stars / 5 if tech else 0.0,
            "complexity": 1 / cx if cx else 0.0,
            "bidirectional": BIDIRECTIONAL.get(t, 0.0),
        }))
    return out, excluded


@dataclass(frozen=True)
class Scored:
    transport: str
    score: float
    """Weighted mean of the criterion scores, 0..1 (1 = best on everything)."""
    parts: dict[str, float]
    """Score per criterion, 0..1."""


def score(cands: list[Candidate], weights: Mapping[str, float]) -> list[Scored]:
    """Candidates ranked by weighted score, best first (ties: registry order)."""
    best: dict[str, float | None] = {}
    for c in MEASURED_CRITERIA:
        values = [f.value for cand in cands if (f := cand.figures[c]) is not None and f.value > 0]
        best[c] = min(values) if values else None
    total = sum(weights.values()) or 1.0
    ranked = []
    for cand in cands:
        parts: dict[str, float] = {}
        for c in CRITERIA:
            if c in MEASURED_CRITERIA:
                fig, low = cand.figures[c], best[c]
                parts[c] = low / fig.value if fig is not None and low and fig.value > 0 else 0.0
            else:
                parts[c] = cand.cited[c]
        ranked.append(Scored(cand.transport,
                             sum(weights.get(c, 0) * parts[c] for c in CRITERIA) / total, parts))
    return sorted(ranked, key=lambda s: -s.score)


@dataclass(frozen=True)
class Choice:
    feature: Feature
    ranking: list[Scored]
    excluded: dict[str, str]
    weights: dict[str, float]

    @property
    def winner(self) -> str | None:
        return self.ranking[0].transport if self.ranking else None

    @property
    def fallback(self) -> str | None:
        for s in self.ranking:
            if s.transport in FALLBACK_POOL and s.transport != self.winner:
                return s.transport
        return None


def reweight(feature: Feature, multipliers: Mapping[str, float]) -> dict[str, float]:
    return {c: w * multipliers.get(c, 1.0) for c, w in feature.weights.items()}


def choose(res: Results, feature: Feature, multipliers: Mapping[str, float] | None = None
           ) -> Choice:
    weights = reweight(feature, multipliers or {})
    cands, excluded = candidates(res, feature) if feature.direction != "media" else ([], {})
    return Choice(feature, score(cands, weights), excluded, weights)


def choices(res: Results) -> dict[str, Choice]:
    return {f.key: choose(res, f) for f in FEATURES}


def sensitivity(res: Results) -> dict[str, dict[str, str | None]]:
    """Feature -> weighting name -> winner."""
    return {f.key: {name: choose(res, f, mult).winner for name, mult in WEIGHTINGS.items()}
            for f in FEATURES if f.direction != "media"}


# --- capacity at one million online ----------------------------------------------------------

@dataclass
class Capacity:
    """Capacity plans for the recommended mapping and for the note's stack."""

    ours: Any = None
    """capacity Plan for our recommended transports (None if the model is unavailable)."""
    note: Any = None
    """capacity Plan for the note's stack (WebSocket for chat, presence, editing; SSE for
    notifications, feed, counters)."""
    notes: list[str] = field(default_factory=list)
    """Substitutions made and errors met."""


def transport_for(chosen: Mapping[str, Choice]) -> dict[str, str] | None:
    """The capacity workload's feature -> transport mapping for our choices.

    A user holds one connection per transport in use, so features whose winners speak the
    same protocol (say ws and ws-websockets, two servers of WebSocket) share one connection:
    the transport of that protocol that wins the most of them (ties: the higher total score).
    """
    winners: dict[str, Scored] = {}
    for key, choice in chosen.items():
        if choice.feature.direction == "media":
            continue
        if not choice.ranking:
            return None
        winners[key] = choice.ranking[0]
    by_tech: dict[str, list[Scored]] = {}
    for s in winners.values():
        by_tech.setdefault(TECHNOLOGY_OF.get(s.transport, s.transport), []).append(s)
    pick = {}
    for tech, wins in by_tech.items():
        tally: dict[str, tuple[int, float]] = {}
        for s in wins:
            n, total = tally.get(s.transport, (0, 0.0))
            tally[s.transport] = (n + 1, total + s.score)
        pick[tech] = max(tally, key=lambda t: tally[t])
    mapping = {}
    for key, s in winners.items():
        transport = pick[TECHNOLOGY_OF.get(s.transport, s.transport)]
        for cap_feature in chosen[key].feature.capacity_features:
            mapping[cap_feature] = transport
    return mapping


def capacity(res: Results, chosen: Mapping[str, Choice], online_users: int = ONLINE_USERS
             ) -> Capacity:
    """Plan our mapping and the note's with the capacity model, calibrated from ``res``."""
    out = Capacity()
    try:
        from sobranie_bench.capacity import Workload, calibrate, plan
        from sobranie_bench.capacity.workload import DEFAULT_TRANSPORT_FOR
    except ImportError as exc:  # the capacity package is being written alongside
        out.notes.append(f"capacity model not available: {exc}")
        return out
    if res.empty:
        out.notes.append("no results: the capacity model would run on fallback constants only")
        return out
    costs = calibrate(summary_frame(res))
    base = Workload(online_users=online_users)
    label = f"calibrated from run {res.main_run}"
    mapping = transport_for(chosen)
    try:
        if mapping:
            out.ours = plan(workload=base.with_(transport_for=mapping), costs=costs,
                            calibration=label)
        else:
            out.notes.append("no transport could be ranked for some feature: no plan")
        note_stack = dict(DEFAULT_TRANSPORT_FOR)
        if all(t in costs for t in note_stack.values()):
            out.note = plan(workload=base.with_(transport_for=note_stack), costs=costs,
                            calibration=label)
    except Exception as exc:  # noqa: BLE001 - report the model's failure, do not hide it
        out.notes.append(f"capacity model failed: {type(exc).__name__}: {exc}")
    return out


def fleet_rows(plan: Any) -> list[list[str]]:
    rows = []
    for f in plan.fleets:
        rows.append([
            f.transport, ", ".join(f.features), str(f.instances), f.binding,
            f"{f.cpu_utilisation:.0%}", text.nbytes(f.memory_bytes_per_instance),
            text.ms(f.p95_delivery_s * 1e6), text.num(f.deliveries_per_s),
            str(f.redis_classic.shards or "none fits"), str(f.redis_sharded.shards),
            ", ".join(f.fallbacks) or "none",
        ])
    for row in getattr(plan, "infeasible", ()):  # a measured fact, where the count would be
        rows.append([row.transport, ", ".join(row.features), row.reason,
                     *("—" for _ in FLEET_HEADERS[3:])])
    return rows


def unplanned(plan: Any) -> str:
    """What the instance total leaves out: fleets no number of instances serves."""
    rows = getattr(plan, "infeasible", ())
    if not rows:
        return ""
    return (" for the fleets that can be planned; no number of instances serves "
            + ", ".join(f"{r.transport} ({', '.join(r.features)})" for r in rows)
            + " within the objective (the table says why)")


FLEET_HEADERS = ["Transport", "Features", "Instances (N+1)", "Bound by", "CPU at N",
                 "Connection memory / instance", "p95 delivery (model)", "Deliveries/s",
                 "Redis nodes (classic pub/sub)", "Redis shards (sharded pub/sub)",
                 "Fallback figures"]


# --- rendering -------------------------------------------------------------------------------

def _value(fig: Measured | None, criterion: str) -> str:
    fmt = {"latency": "ms", "cpu": "num", "memory": "bytes", "bytes": "bytes"}[criterion]
    return text.measured(fig, fmt)


def feature_section(choice: Choice, cands: dict[str, Candidate]) -> list[str]:
    f = choice.feature
    if f.direction == "media":
        return [f"### {f.title}", "",
                ("**WebRTC media** (SRTP over ICE, peer-to-peer or through an SFU), with TURN "
                "as the path of last resort. Not measured here: this suite carries messages, "
                "not audio or video, so no figure backs this row."), ""]
    lines = [f"### {f.title}", ""]
    if not choice.ranking:
        lines += ["Nothing measured can be ranked for this feature yet"
                  + (": " + "; ".join(f"{t}: {why}" for t, why in choice.excluded.items())
                     if choice.excluded else "") + ".", ""]
        return lines
    win = choice.ranking[0]
    runner = choice.ranking[1] if len(choice.ranking) > 1 else None
    lead = (f", {win.score / runner.score:.2f}× the score of {runner.transport}"
            if runner and runner.score > 0 else "")
    figs = [fig for fig in cands[win.transport].figures.values() if fig is not None]
    flagged = [name for name, on in (("client-bound", any(f.client_bound for f in figs)),
                                     ("saturated", any(f.saturated for f in figs)),
                                     ("noisy", any(f.noisy for f in figs))) if on]
    lines += [(f"**Recommended: {win.transport}** (score {win.score:.2f}{lead}); "
              f"**fallback: {choice.fallback or 'none measured'}**."
               + (f" The winner's figures are flagged ({', '.join(flagged)}): read its "
                  "ranking with that in mind." if flagged else "")), ""]
    latency_label = "echo p99" if f.direction == "both" else "fan-out p99"
    cpu_label = "CPU µs/msg" if f.direction == "both" else "CPU µs/delivery"
    bytes_label = "bytes/msg (64 B)" if f.direction == "both" else "bytes down/msg (64 B)"
    headers = ["Transport", "Score", latency_label, cpu_label, "memory/conn", bytes_label,
               "browser", "complexity (1/ratio)", "bidirectional"]
    rows = []
    for s in choice.ranking:
        c = cands[s.transport]
        rows.append([s.transport, f"{s.score:.2f}",
                     *(_value(c.figures[k], k) for k in MEASURED_CRITERIA),
                     f"{c.cited['browser']:.1f}", f"{c.cited['complexity']:.2f}",
                     f"{c.cited['bidirectional']:.1f}"])
    lines += [text.table(headers, rows), "",
              "Weights: " + ", ".join(f"{k} {v:g}" for k, v in choice.weights.items()) + ".", ""]
    if choice.excluded:
        lines += ["Not ranked: " + "; ".join(f"{t} ({why})" for t, why in
                                               choice.excluded.items()) + ".", ""]
    return lines


def render(res: Results, online_users: int = ONLINE_USERS) -> str:
    chosen = choices(res)
    sens = sensitivity(res)
    cap = capacity(res, chosen, online_users)
    summary_rows = []
    for choice in chosen.values():
        f = choice.feature
        if f.direction == "media":
            summary_rows.append([f.title, "WebRTC media (not measured here)", "WebRTC",
                                 "TURN relay", "—"])
            continue
        win = choice.ranking[0] if choice.ranking else None
        basis = "—"
        if win is not None:
            cand = {c.transport: c for c in candidates(res, f)[0]}[win.transport]
            unit = "msg" if f.direction == "both" else "delivery"
            basis = (f"p99 {_value(cand.figures['latency'], 'latency')}, "
                     f"{_value(cand.figures['cpu'], 'cpu')} µs CPU/{unit}, "
                     f"{_value(cand.figures['memory'], 'memory')}/connection")
        summary_rows.append([f.title, choice.winner or text.NOT_MEASURED,
                             TECHNOLOGY_OF.get(choice.winner or "", "—"),
                             choice.fallback or "—", basis])
    parts = [
        "# Recommendation: which transport for which Sobranie feature",
        "",
        (f"Generated by `sobranie-bench report` from run {res.main_run or '(none)'}. Every "
        "figure below comes from that run or from the capacity model calibrated on it; "
        "transports not measured there are not ranked."),
        "",
        text.table(["Feature", "Transport", "Technology", "Fallback", "Numbers behind it"],
                   summary_rows),
        "",
        "## How the choice is made",
        "",
        ("Each criterion scores 0..1: measured ones (latency p99, server CPU, memory per "
        "connection, bytes on the wire) as best / value among the ranked transports; browser "
        "support as its cited stars / 5; complexity as 1 / (its ratio to the simplest, see "
        "comparison.md); bidirectionality 1 for one full-duplex connection, 0.5 for a stream "
        "plus HTTP requests upstream. The score is the weighted mean. Bidirectional features "
        "use the echo round trip and CPU per echoed message; push features the fan-out "
        "latency and CPU per delivery. The fallback is the best-ranked transport that needs "
        "only HTTP request/response (SSE, long-polling, Socket.IO polling), so it works "
        "wherever HTTPS does."),
        "",
        "## Per feature",
        "",
    ]
    for choice in chosen.values():
        cands = {c.transport: c for c in candidates(res, choice.feature)[0]}
        parts += feature_section(choice, cands)
    parts += ["## When the weights move", "",
              "The winner of each feature under alternative weightings (multipliers on the "
              "feature's own weights: " + "; ".join(
                  f"{name}: " + (", ".join(f"{c} ×{m:g}" for c, m in mult.items()) or "none")
                  for name, mult in WEIGHTINGS.items()) + ").", "",
              text.table(["Feature", *WEIGHTINGS],
                         [[next(f.title for f in FEATURES if f.key == key),
                           *((w or text.NOT_MEASURED) for w in winners.values())]
                          for key, winners in sens.items()]), ""]
    stable = [k for k, w in sens.items() if len(set(w.values())) == 1 and None not in w.values()]
    parts += [f"The choice holds under every weighting for {len(stable)} of {len(sens)} "
              "features" + (f" ({', '.join(stable)})" if stable else "") + ".", ""]
    parts += [f"## Cost at {online_users:,} online users", ""]
    if cap.ours is not None:
        total = sum(f.instances for f in cap.ours.fleets)
        parts += [("Our mapping (features whose winners speak the same protocol share one "
                   "connection: that protocol's transport that wins the most of them), planned "
                   "with `sobranie_bench.capacity.plan` (an instance is one event-loop "
                  f"process, one core of a {cap.ours.instance.host.cores}-core host, "
                  f"{text.nbytes(cap.ours.instance.memory_bytes)} of its RAM; p95 delivery objective "
                  f"{cap.ours.slo_s * 1000:.0f} ms; {cap.ours.calibration}): "
                  f"**{total} instances** in all{unplanned(cap.ours)}."), "",
                  text.table(FLEET_HEADERS, fleet_rows(cap.ours)), ""]
    if cap.note is not None:
        total = sum(f.instances for f in cap.note.fleets)
        parts += [(f"The note's stack (WebSockets + SSE) on the same model: **{total} "
                  f"instances**{unplanned(cap.note)}."), "",
                  text.table(FLEET_HEADERS, fleet_rows(cap.note)), ""]
    if cap.ours is None and cap.note is None:
        parts += ["The capacity model gave no plan.", ""]
    parts += [f"- {n}" for n in cap.notes] + ([""] if cap.notes else [])
    parts += [("A Redis node count of 'none fits' means classic (broadcast) pub/sub cannot carry "
              "the publish rate on any number of nodes: every node sees every publish; sharded "
              "pub/sub (SPUBLISH) spreads it. Workload assumptions (messages per user, room "
              "sizes, presence audience) are the model's defaults, "
              "`sobranie_bench.capacity.Workload`."), ""]
    return "\n".join(parts)


def write(res: Results, out_dir: Path, online_users: int = ONLINE_USERS) -> Path:
    path = Path(out_dir) / "recommendation.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(res, online_users))
    return path


def choice_frame(res: Results) -> pd.DataFrame:
    """Feature -> winner, score, runner-up, fallback (for notebooks)."""
    records = []
    for choice in choices(res).values():
        ranking = choice.ranking
        records.append({
            "feature": choice.feature.title,
            "winner": choice.winner if choice.feature.direction != "media" else "WebRTC media",
            "score": ranking[0].score if ranking else None,
            "runner-up": ranking[1].transport if len(ranking) > 1 else None,
            "runner-up score": ranking[1].score if len(ranking) > 1 else None,
            "fallback": choice.fallback,
        })
    return pd.DataFrame.from_records(records).set_index("feature")


def ranking_frame(res: Results, key: str, multipliers: Mapping[str, float] | None = None
                  ) -> pd.DataFrame:
    """Every ranked transport of one feature with its score per criterion."""
    feature = next(f for f in FEATURES if f.key == key)
    choice = choose(res, feature, multipliers)
    return pd.DataFrame.from_records(
        [{"transport": s.transport, "score": s.score, **s.parts} for s in choice.ranking],
        columns=["transport", "score", *CRITERIA]).set_index("transport")


def sensitivity_frame(res: Results) -> pd.DataFrame:
    """Feature x weighting -> winner."""
    titles = {f.key: f.title for f in FEATURES}
    return pd.DataFrame.from_dict({titles[k]: v for k, v in sensitivity(res).items()},
                                  orient="index")


def plan_each(costs: Mapping[str, Any], online_users: int, transports: Sequence[str]
              ) -> tuple[list[Any], list[str]]:
    """Each transport planned as if it carried every feature alone (``capacity.plan`` what-if);
    a transport the model cannot plan (say, its measured p95 already misses the objective at
    the lowest load) is left out, with the model's reason."""
    from sobranie_bench.capacity import plan

    fleets, notes = [], []
    for t in transports:
        try:
            planned = plan(online_users, costs=costs, transports=[t])
            fleets += list(planned.fleets)
            notes += [f"{t}: not planned: {row.reason}" for row in planned.infeasible]
        except Exception as exc:  # noqa: BLE001 - the reason is reported, not hidden
            notes.append(f"{t}: not planned ({type(exc).__name__}: {exc})")
    return fleets, notes


def fleet_frame(plan: Any) -> pd.DataFrame:
    """A capacity plan's fleets (or a list of fleets) as a DataFrame (numbers, not strings)."""
    fleets = getattr(plan, "fleets", plan)
    return pd.DataFrame.from_records([{
        "transport": f.transport, "features": ", ".join(f.features),
        "instances": f.instances, "bound by": f.binding, "cpu": f.cpu_utilisation,
        "memory per instance (GiB)": f.memory_bytes_per_instance / 1024 ** 3,
        "p95 delivery (ms)": f.p95_delivery_s * 1000, "deliveries/s": f.deliveries_per_s,
        "redis nodes (classic)": f.redis_classic.shards,
        "redis shards (sharded)": f.redis_sharded.shards,
        "fallback figures": ", ".join(f.fallbacks)} for f in fleets],
        columns=["transport", "features", "instances", "bound by", "cpu",
                 "memory per instance (GiB)", "p95 delivery (ms)", "deliveries/s",
                 "redis nodes (classic)", "redis shards (sharded)", "fallback figures"],
    ).set_index("transport")


def calibration_frame(costs: Mapping[str, Any]) -> pd.DataFrame:
    """Per transport and figure: value, unit and whether it was measured or a fallback."""
    return pd.DataFrame.from_records([
        {"transport": name, "figure": fig_name, "value": fig.value, "unit": fig.unit,
         "source": fig.source}
        for name, tc in costs.items() for fig_name, fig in tc.figures().items()])
