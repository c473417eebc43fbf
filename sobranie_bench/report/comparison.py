"""``comparison.md``: the note's comparison table, its stars beside stars derived from our runs.

Performance and scalability stars come from measured figures, compared only with transports
measured in the same run; complexity from the size of each reference adapter and client plus
the handshake's round trips; browser support from what the ``browser`` scenario measured in the
engines installed here (report/browser.py), then cited public sources; framework support cited.
A transport without results gets "not measured".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sobranie_bench.clients import TRANSPORTS, base_transport
from sobranie_bench.harness import complexity as complexity_record
from sobranie_bench.harness.complexity import CodeSize
from sobranie_bench.report import browser as measured_browsers
from sobranie_bench.report import text, tls_cost
from sobranie_bench.report.data import Measured, Results
from sobranie_bench.report.sources import (
    BROWSER,
    BROWSER_RULE,
    COLUMN_TITLES,
    COLUMNS,
    FRAMEWORK,
    FRAMEWORK_RULE,
    HANDSHAKES,
    SPEC_FRAMING,
    TECHNOLOGIES,
    Technology,
    cite,
)

PERFORMANCE_RULE = (
    "echo scenario, at the parameter point all compared transports share: the ratio of each "
    "transport to the best of its run for round-trip p50, round-trip p99 and server CPU per "
    "message, combined by geometric mean")
SCALABILITY_RULE = (
    "server memory per open connection (the RSS slope of the connections scenario), the "
    "subscribers one instance held within the capacity scenario's SLA and, when a scale-out "
    "run exists, the fan-out p99 through the shared broker, each as a ratio to the best of "
    "its run, combined by geometric mean")
COMPLEXITY_RULE = (
    "non-blank, non-comment, non-docstring lines of the transport's server adapter "
    "(servers/<adapter>.py; for Elysia the adapter's own lines, marked in "
    "servers/elysia/src/app.ts, the routes, CORS and auth its three adapters share not counted, "
    "as the Python hub and HTTP app are not) and client (sobranie_bench/clients/<client>.py) "
    "as a ratio to the "
    "smallest, times the handshake's round trips as a ratio to the fewest; the same bands, "
    "turned round: as in the note, more stars = more complex (1 star for the simplest). The "
    "client count measures protocol weight in our Python clients; in a browser the WebSocket, "
    "EventSource and WebTransport clients are built in")


# --- code size -------------------------------------------------------------------------------

def code_size(res: Results, transport: str) -> CodeSize | None:
    """Adapter and client lines of ``transport`` as the main run recorded them (counted from
    today's files for a run older than that record, and marked so)."""
    return complexity_record.from_metadata(res.metadata(), transport)


# --- ratings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rating:
    """Our stars for one cell and what they rest on."""

    stars: int | None
    """1-5, or None when not measured."""
    basis: str
    """The figures (or the cited reason) behind the stars."""
    ratio: float | None = None
    """Combined ratio to the best of the run (1.0 = the best), for measured columns."""
    client_bound: bool = False
    """A figure behind it was client-bound."""
    sources: tuple[str, ...] = ()
    """Source keys when the stars are cited rather than measured."""
    saturated: bool = False
    """A figure behind it was saturated (the stars rank queueing, not service)."""
    noisy: bool = False
    """A figure behind it was measured on a noisy machine."""

    def cell(self) -> str:
        if self.stars is None:
            return "run failed" if "failed" in self.basis else text.NOT_MEASURED
        mark = f" {text.CLIENT_BOUND_MARK}" if self.client_bound else ""
        mark += f" {text.SATURATED_MARK}" if self.saturated else ""
        mark += f" {text.NOISY_MARK}" if self.noisy else ""
        return f"{text.stars(self.stars)}{mark}"


def _rated(stars: int, basis: str, ratio: float, figs: Iterable[Measured | None]) -> Rating:
    """A measured rating with the flags of the figures behind it (a flagged figure is never
    silently ranked: its stars carry the mark)."""
    shown = [f for f in figs if f is not None]
    return Rating(stars, basis, ratio, any(f.client_bound for f in shown),
                  saturated=any(f.saturated for f in shown), noisy=any(f.noisy for f in shown))


def _ratio_to_best(fig: Measured | None, best: float | None, higher_is_better: bool = False
                   ) -> float | None:
    if fig is None or best is None:
        return None
    if higher_is_better:
        return best / fig.value if fig.value > 0 else float("inf")
    return fig.value / best if best > 0 else None


def round_trips(res: Results, transport: str) -> tuple[int, str] | None:
    """Handshake round trips before the first message: counted by the overhead scenario's
    relay in this run (TLS included when the run was encrypted), else the cited figure."""
    measured = res.value(transport, "overhead", "handshake_round_trips")
    if measured is not None:
        return int(measured), "counted"
    hs = HANDSHAKES.get(base_transport(transport))  # ws@elysia does the handshake ws does
    return (hs.round_trips, "cited") if hs else None


def complexity(res: Results, transport: str) -> Rating:
    size, rtts = code_size(res, transport), round_trips(res, transport)
    if size is None or rtts is None:
        return Rating(None, "no reference adapter and client yet")
    sizes = {t: s for t in TRANSPORTS if (s := code_size(res, t)) is not None}
    fewest = min(s.total for s in sizes.values())
    least_rtts = min(r[0] for t in sizes if (r := round_trips(res, t)) is not None)
    ratio = size.total / fewest * rtts[0] / least_rtts
    counted = "" if size.counted == "run" else " (counted from today's files: the run " \
        "recorded no code size)"
    return Rating(6 - text.stars_from_ratio(ratio),
                  f"{size.total} lines ({size.server_lines} server + {size.client_lines} "
                  f"client){counted}, {rtts[0]} round trips ({rtts[1]})", ratio)


def performance(res: Results, transport: str) -> Rating:
    peers = res.peers(transport, "echo")
    params = res.reference_params("echo", peers)
    if res.failed(transport, "echo"):
        return Rating(None, "echo run failed")
    if not peers or params is None or params not in res.params_points("echo", transport):
        return Rating(None, "echo not measured")
    figs = {m: res.figure(transport, "echo", m, params)
            for m in ("rtt_p50_us", "rtt_p99_us", "server_cpu_us_per_msg")}
    ratios = [_ratio_to_best(fig, res.best(transport, "echo", m, params))
              for m, fig in figs.items()]
    ratio = text.geomean([r for r in ratios if r is not None])
    if ratio is None:
        return Rating(None, "echo not measured")
    p50, p99, cpu = figs.values()
    basis = (f"p50 {text.measured(p50, 'ms')}, p99 {text.measured(p99, 'ms')}, "
             f"{text.measured(cpu, 'num')} µs CPU/msg")
    return _rated(text.stars_from_ratio(ratio), basis, ratio, figs.values())


def scalability(res: Results, transport: str) -> Rating:
    memory = res.figure(transport, "connections", "server_rss_bytes_per_conn")
    held = res.figure(transport, "capacity", "max_clients_within_sla")
    ratios = [_ratio_to_best(memory, res.best(transport, "connections",
                                              "server_rss_bytes_per_conn")),
              _ratio_to_best(held, res.best(transport, "capacity", "max_clients_within_sla",
                                            higher_is_better=True), higher_is_better=True)]
    shared, shared_text = backplane_ratio(res, transport)
    ratios.append(shared)
    ratio = text.geomean([r for r in ratios if r is not None])
    if ratio is None:
        failed = res.failed(transport, "connections") or res.failed(transport, "capacity")
        return Rating(None, "connections and capacity "
                      + ("runs failed" if failed else "not measured"))
    parts = [shared_text] if shared_text else []
    if memory is not None:
        parts.append(f"{text.measured(memory, 'bytes')}/connection")
    if held is not None:
        parts.append(f"{text.measured(held, 'num')} subscribers within SLA")
    return _rated(text.stars_from_ratio(ratio), ", ".join(parts), ratio, (memory, held))


def browser(res: Results, tech: Technology) -> Rating:
    """Cited stars (breadth across engines and years); the basis starts with what our
    ``browser`` runs measured in the engines here (report/browser.py), then the sources."""
    c = BROWSER[tech.name]
    seen = measured_browsers.basis(res, tech.transports)
    return Rating(c.stars, f"{seen}; cited: {c.reason}" if seen else c.reason,
                  sources=c.sources)


def framework(tech: Technology) -> Rating:
    c = FRAMEWORK[tech.name]
    return Rating(c.stars, c.reason, sources=c.sources)


@dataclass(frozen=True)
class Row:
    """One technology of the note's table."""

    technology: Technology
    transport: str | None
    """The transport that represents it (the first measured one, else the first with code)."""
    ours: dict[str, Rating]


def representative(res: Results, tech: Technology) -> str | None:
    for t in tech.transports:
        if res.measured(t):
            return t
    for t in tech.transports:
        if code_size(res, t) is not None:
            return t
    return None


def rows(res: Results) -> list[Row]:
    out = []
    for tech in TECHNOLOGIES:
        t = representative(res, tech)
        none = Rating(None, "no transport of this technology yet")
        ours = {
            "browser": browser(res, tech),
            "complexity": complexity(res, t) if t else none,
            "performance": performance(res, t) if t else none,
            "scalability": scalability(res, t) if t else none,
            "framework": framework(tech),
        }
        out.append(Row(tech, t, ours))
    return out


def agreement(table_rows: list[Row]) -> tuple[int, int, int]:
    """(cells compared, within one star of the note, two or more stars apart)."""
    compared = close = 0
    for row in table_rows:
        if row.technology.note_stars is None:
            continue
        for col in COLUMNS:
            ours = row.ours[col].stars
            if ours is None:
                continue
            compared += 1
            close += abs(ours - row.technology.note_stars[col]) <= 1
    return compared, close, compared - close


# --- the measured values behind the stars ----------------------------------------------------

MEASURED_COLUMNS = ("Technology", "Transport", "Run", "Echo p50", "Echo p99",
                    "Server CPU / msg (µs)", "Memory / connection", "Subscribers within SLA",
                    "Bytes / msg (64 B)", "Bytes / msg (4 KiB)", "Code lines", "Handshake RTTs")


def measured_rows(res: Results) -> list[list[str]]:
    """One row per transport (measured or with code), the values behind the stars."""
    out = []
    for tech in TECHNOLOGIES:
        for t in tech.transports:
            size = code_size(res, t)
            if not res.measured(t) and size is None:
                continue
            echo = res.reference_params("echo", res.peers(t, "echo"))
            small, large = res.point("overhead", t, payload=64), res.point("overhead", t,
                                                                            payload=4096)
            runs = sorted({r for s in res.scenarios if (r := res.run_id(t, s))})
            rtts = round_trips(res, t)

            def cell(scenario: str, metric: str, params: str | None, fmt: str,
                     t: str = t) -> str:
                if res.failed(t, scenario):
                    return "run failed"
                if scenario == "overhead" and params is None:
                    return text.NOT_MEASURED
                return text.measured(res.figure(t, scenario, metric, params), fmt)

            out.append([
                tech.name, t, ", ".join(runs) or text.NOT_MEASURED,
                cell("echo", "rtt_p50_us", echo, "ms"),
                cell("echo", "rtt_p99_us", echo, "ms"),
                cell("echo", "server_cpu_us_per_msg", echo, "num"),
                cell("connections", "server_rss_bytes_per_conn", None, "bytes"),
                cell("capacity", "max_clients_within_sla", None, "num"),
                cell("overhead", "bytes_per_msg", small, "bytes"),
                cell("overhead", "bytes_per_msg", large, "bytes"),
                str(size.total) if size else "no code yet",
                f"{rtts[0]} ({rtts[1]})" if rtts else "—",
            ])
    return out


def compressed(res: Results) -> list[str]:
    """Overhead points where a transport put fewer bytes on the wire than the payload crossing
    twice (publisher up, subscriber down): it compressed them."""
    out = []
    for t in res.transports:
        for key in res.params_points("overhead", t):
            payload = float(dict(i.split("=") for i in key.split(";")).get("payload", 0))
            total = res.value(t, "overhead", "bytes_per_msg", key)
            if total is not None and payload and total < 2 * payload:
                out.append(f"{t} at {payload:g} B ({text.nbytes(total)})")
    return out


def backplane_ratio(res: Results, transport: str) -> tuple[float | None, str]:
    """Fan-out p99 through a shared broker, as a ratio to the best transport of the same
    scale-out run (the first set-up that measured this transport's fan-out)."""
    for name, scaled in res.scaleout.items():
        fig = scaled.figure(transport, "fanout", "latency_p99_us")
        if fig is None:
            continue
        best = scaled.best(transport, "fanout", "latency_p99_us")
        ratio = fig.value / best if best else None
        return ratio, f"fan-out p99 {text.measured(fig, 'ms')} on {name}"
    return None, ""


SCALEOUT_METRICS = {
    "fanout": (("latency_p99_us", "fan-out p99", "ms"),
               ("latency_local_p99_us", "p99 same instance", "ms"),
               ("latency_remote_p99_us", "p99 other instance", "ms"),
               ("delivered_per_s", "delivered/s", "num"),
               ("server_cpu_us_per_delivery", "server CPU µs/delivery (all instances)", "num"),
               ("broker_cpu_us_per_msg", "broker CPU µs/message", "num"),
               ("lost", "lost", "num")),
    "failover": (("acked", "acked", "num"), ("cut_off", "cut off", "num"),
                 ("lost", "lost", "num"), ("duplicated", "duplicated", "num"),
                 ("out_of_order", "out of order", "num"),
                 ("recovery_p50_s", "recovery p50 (s)", "num"),
                 ("recovery_max_s", "all recovered (s)", "num")),
    "backplane": (("acked_per_s", "acked/s (closed loop)", "num"),
                  ("delivered_per_s", "delivered/s", "num"),
                  ("latency_p99_us", "p99 (queueing)", "ms"),
                  ("broker_cpu_us_per_msg", "broker CPU µs/message", "num")),
}
"""Per scale-out scenario: the columns of its table (metric, heading, format)."""


def backplane(res: Results) -> str:
    """What the results say about scale-out (a shared broker between instances)."""
    if not res.scaleout:
        return ("**Backplane cost: not measured.** Every run here used one instance with the "
                "in-process memory broker, so the cost of a shared broker (Redis pub/sub or "
                "NATS) between instances is not in these results; the scalability stars rest "
                "on one instance only. The capacity model estimates the Redis load (see "
                "recommendation.md).")
    parts = [("Fan-out through a shared broker, beside the same transport's one-instance "
             "fan-out. The two come from different runs, so they stand side by side and no "
             "ratio is taken between them; within a scale-out run, the scalability stars "
             "above also weigh each transport's fan-out p99 against the best of that run."), ""]
    for name, scaled in res.scaleout.items():
        for scenario, metrics in SCALEOUT_METRICS.items():
            rows = []
            for t in scaled.transports:
                if not scaled.measured(t, scenario):
                    continue
                own = ([text.measured(res.figure(t, "fanout", "latency_p99_us"), "ms")]
                       if scenario == "fanout" else [])
                rows.append([t, scaled.run_id(t, scenario),
                             *(text.measured(scaled.figure(t, scenario, m), f)
                               for m, _, f in metrics), *own])
            if rows:
                extra = ["one-instance fan-out p99 (its own run)"] if scenario == "fanout" else []
                parts += [f"**{name}: {scenario}**", "",
                          text.table(["Transport", "Run", *(label for _, label, _ in metrics),
                                      *extra], rows), ""]
    return "\n".join(parts)


# --- technology vs implementation: one technology on several servers, in one run ------------

SERVER_NAMES = {"ws": "aiohttp", "sse": "aiohttp", "longpoll": "aiohttp", "http": "aiohttp",
                "ws-websockets": "websockets", "elysia": "Bun + Elysia"}
"""``serve`` kind -> the implementation as the report names it (other kinds: the kind)."""
SPREAD_METRICS = (("echo", "server_cpu_us_per_msg", "server CPU / echo (µs)", "num"),
                  ("echo", "rtt_p50_us", "echo p50", "ms"),
                  ("echo", "rtt_p99_us", "echo p99", "ms"),
                  ("connections", "server_rss_bytes_per_conn", "memory / connection", "bytes"))
"""(scenario, metric, label, format) of the technology-vs-implementation table; lower is
better for each."""
TECHNOLOGY_BY_NAME = {tech.name: tech for tech in TECHNOLOGIES}


def server_name(transport: str) -> str:
    """The implementation that serves ``transport`` (``ws@elysia`` -> ``Bun + Elysia``)."""
    kind = TRANSPORTS[transport].server if transport in TRANSPORTS else transport
    return SERVER_NAMES.get(kind, kind)


def implementations(tech: Technology) -> tuple[str, ...]:
    """The transports carrying ``tech``, one per server: its own and their ``@server`` forms
    (WebSockets: ws, ws-websockets, ws@elysia), the first of each server."""
    out: dict[str, str] = {}
    for t in TRANSPORTS:
        if t in tech.transports or base_transport(t) in tech.transports:
            out.setdefault(server_name(t), t)
    return tuple(out.values())


@dataclass(frozen=True)
class Spread:
    """One metric of one technology on each server measured in one run."""

    technology: str
    label: str
    """What the metric is (server CPU / echo, memory / connection...)."""
    fmt: str
    """How its figures print (text.measured's formats)."""
    run_id: str
    figures: tuple[tuple[str, str, Measured], ...]
    """(server, transport, figure), best (lowest) first."""
    encrypted: bool
    """The figures are the TLS ones (``run --tls``); False = plaintext."""

    @property
    def ratio(self) -> float | None:
        """Worst ÷ best: what choosing the implementation changes within the technology."""
        values = [f.value for _, _, f in self.figures]
        if len(values) < 2 or values[0] <= 0:
            return None
        return values[-1] / values[0]


def spread(res: Results, tech: Technology, scenario: str, metric: str, label: str,
           fmt: str) -> Spread | None:
    """``tech``'s ``metric`` on every server measured in the run holding most of them (ties:
    the newest), at the point they share; None when no server measured it."""
    measured_on = [t for t in implementations(tech) if res.measured(t, scenario)]
    runs = [r for t in measured_on if (r := res.run_id(t, scenario))]
    if not runs:
        return None
    run = max(set(runs), key=lambda r: (runs.count(r), r))
    same = [t for t in measured_on if res.run_id(t, scenario) == run]
    params = res.reference_params(scenario, same) if scenario == "echo" else None
    figures = sorted(((server_name(t), t, f) for t in same
                      if (f := res.figure(t, scenario, metric, params)) is not None),
                     key=lambda item: item[2].value)
    if not figures:
        return None
    _, first, fig = figures[0]
    tls = res.figure(first, scenario, metric, fig.params, tls=True) is not None
    return Spread(tech.name, label, fmt, run, tuple(figures), tls)


def spreads(res: Results) -> list[Spread]:
    """Every technology implemented by more than one server, for each of SPREAD_METRICS."""
    out = []
    for tech in TECHNOLOGIES:
        if len(implementations(tech)) < 2:
            continue
        for scenario, metric, label, fmt in SPREAD_METRICS:
            if (found := spread(res, tech, scenario, metric, label, fmt)) is not None:
                out.append(found)
    return out


def spread_rows(res: Results) -> list[list[str]]:
    rows = []
    for s in spreads(res):
        best_server, _, best = s.figures[0]
        each = "; ".join(f"{server} (`{t}`) {text.measured(f, s.fmt)}"
                         for server, t, f in s.figures)
        missing = [server_name(t) for t in implementations(TECHNOLOGY_BY_NAME[s.technology])
                   if server_name(t) not in {server for server, _, _ in s.figures}]
        if missing:
            each += f"; not measured in this run: {', '.join(missing)}"
        rows.append([s.technology, s.label, f"{best_server}: {text.measured(best, s.fmt)}",
                     each, text.ratio(s.ratio) if s.ratio else "one server",
                     f"{s.run_id}, {'TLS' if s.encrypted else 'plaintext'}"])
    return rows


def technology_vs_implementation(res: Results) -> str:
    """The section: each technology's best server and the spread across servers."""
    rows = spread_rows(res)
    head = "## Technology vs implementation"
    if not rows:
        return (f"{head}\n\n**Not measured.** No technology was measured on more than one "
                "server (`sobranie-bench run --transports ws,ws-websockets,ws@elysia,sse,"
                "sse@elysia,longpoll,longpoll@elysia`).\n")
    return "\n".join([head, "", (
        "The stars above rate a technology by one server of it (the Python reference). Here "
        "each technology runs on every server that implements it, in the same run, with the "
        "same client and load: *best* is the technology's figure on its best server, the "
        "spread (worst ÷ best) is what the choice of implementation changes. A difference "
        "between two technologies smaller than the spread inside one says more about the "
        "implementations than about the technologies."), "",
        text.table(["Technology", "Metric", "Best (server: figure)", "Each server (transport)",
                    "Spread (worst ÷ best)", "Run, encryption"], rows), "",
        f"Elysia's WebSocket support, the note's `@elysiajs/websocket`: {plugin_evidence()}.",
        ""])


@dataclass(frozen=True)
class PluginCheck:
    """The record ``servers/elysia/plugin-check.json``: the note's plugin claim, checked."""

    checked: str
    """Date of the registry look-up (ISO)."""
    how: str
    """The commands run."""
    plugin: str
    plugin_latest: str
    plugin_versions: tuple[str, ...]
    plugin_peer: str
    """The plugin's peer dependency on elysia."""
    elysia_pinned: str
    """The Elysia version servers/elysia installs (no plugin)."""
    verdict: str
    """``outdated`` (the plugin exists but belongs to Elysia 0.x) or another word."""
    tests: tuple[str, ...]
    """Tests that check the record against the installed packages."""


def plugin_check(path: Path | None = None) -> PluginCheck:
    import json

    from servers import elysia

    data = json.loads((path or elysia.HERE / "plugin-check.json").read_text())
    plugin = data["plugin"]
    return PluginCheck(data["checked"], data["how"], plugin["name"], plugin["latest"],
                       tuple(plugin["versions"]), plugin["peer"].get("elysia", "none"),
                       data["elysia"]["pinned"], data["verdict"], tuple(data["tests"]))


def plugin_evidence(check: PluginCheck | None = None) -> str:
    """One Markdown sentence: what the registry and our Elysia server say of the plugin."""
    c = check or plugin_check()
    tests = ", ".join(f"test `{t}`" for t in c.tests)
    return (f"**{c.verdict}**, checked against the npm registry on {c.checked}: "
            f"`{c.plugin}` exists (latest {c.plugin_latest}; versions "
            f"{', '.join(c.plugin_versions)}; peer `elysia {c.plugin_peer}`), the plugin of "
            f"Elysia's 0.x line; Elysia {c.elysia_pinned}, which our Elysia server pins, "
            f"serves WebSockets through its core `.ws()` with no plugin installed ({tests}), "
            "and `ws@elysia` passes the contract suite")


def render(res: Results) -> str:
    table_rows = rows(res)
    compared, close, apart = agreement(table_rows)
    meta = res.metadata()
    headers = ["Technology", *(COLUMN_TITLES[c] for c in COLUMNS)]
    star_rows = []
    for row in table_rows:
        cells = [row.technology.name]
        for col in COLUMNS:
            note = row.technology.note_stars
            cells.append(f"{text.stars(note[col]) if note else '—'} → {row.ours[col].cell()}")
        star_rows.append(cells)
    basis_rows = [[row.technology.name, row.transport or "—",
                   *(row.ours[c].basis for c in COLUMNS)] for row in table_rows]
    env = (f"run {res.main_run}, profile {meta.get('profile')}, {meta.get('cores')} cores "
           f"({meta.get('cpu')}), Python {meta.get('python')}, commit "
           f"{str(meta.get('git_commit') or '?')[:10]}" if meta else "no results")
    bound_any = any(r.ours[c].client_bound for r in table_rows for c in COLUMNS)
    parts = [
        "# Comparison: the note's table against our measurements",
        "",
        (f"Generated by `sobranie-bench report` from the raw results ({env}). Each cell shows "
        "the note's stars → our stars. Transports without results say *not measured*; no "
        "figure is invented."),
        "",
        text.table(headers, star_rows),
        "",
        (f"Of the {compared} cells rated by both, {close} agree within one star and "
         f"{apart} are two or more stars apart"
         + (": " + "; ".join(f"{tech} {col.lower()} (note {note}, ours {ours})"
                             for tech, col, note, ours, _ in disagreements(table_rows)) + "."
            if apart else ".") if compared else "No cell can be compared yet."),
        "",
        technology_vs_implementation(res),
        tls_cost.section(res),
        "## How our stars are derived",
        "",
        ("Ratio bands for measured columns: a transport within 1.5× of the best of its run gets "
        "5 stars, then one star less per doubling (under 3×: 4, under 6×: 3, under 12×: 2, "
        "else 1). Ratios are taken only between transports measured in the same run."),
        "",
        f"- **Performance** (measured): {PERFORMANCE_RULE}.",
        f"- **Scalability** (measured, one instance): {SCALABILITY_RULE}.",
        f"- **Complexity** (counted): {COMPLEXITY_RULE}.",
        (f"- **Browser support** (cited: {BROWSER_RULE}); each cell first says what our "
         "`browser` runs measured in the engines installed here (below)."),
        f"- **Elysia support** (not measurable here: cited): {FRAMEWORK_RULE}.",
        "",
        "## What each of our cells rests on",
        "",
        text.table(["Technology", "Transport", *(COLUMN_TITLES[c] for c in COLUMNS)],
                   basis_rows),
        "",
        "Sources of the cited columns:",
        "",
        text.table(["Technology", "Browser support", "Elysia support"],
                   [[row.technology.name, cite(*row.ours["browser"].sources),
                     cite(*row.ours["framework"].sources)] for row in table_rows]),
        "",
        "## Measured values per transport",
        "",
        text.table(MEASURED_COLUMNS, measured_rows(res)),
        "",
        ("Latency is the echo round trip from the *intended* send time (open loop), at the "
        "parameter point shared by the run's transports; CPU is the server process's, per "
        "echoed message; memory is the slope of server RSS against open connections; bytes "
        "are counted at the socket, both directions, handshakes amortised."),
        "",
        ("Fewer bytes than the payload crossing twice, so compressed on the wire: "
         + "; ".join(compressed(res)) + ". The harness pads messages with one repeated "
         "character, which compresses far better than real messages: read these as a best "
         "case." if compressed(res) else ""),
        "",
        text.CLIENT_BOUND_NOTE if bound_any or any(
            text.CLIENT_BOUND_MARK in c for r in measured_rows(res) for c in r)
        else "No figure in these tables was client-bound.",
        "",
        text.FLAGS_NOTE if any(mark in c for r in measured_rows(res) for c in r
                               for mark in (text.SATURATED_MARK, text.NOISY_MARK))
        or any(r.ours[c].saturated or r.ours[c].noisy for r in table_rows for c in COLUMNS)
        else "No figure in these tables was saturated or noisy.",
        "",
        measured_browsers.section(res),
        "## Handshakes",
        "",
        text.table(["Transport", "Round trips", "Counted as", "Sources"],
                   [[t, h.round_trips, h.how, cite(*h.sources)] for t, h in HANDSHAKES.items()]),
        "",
        "## Scale-out",
        "",
        backplane(res),
        "",
    ]
    return "\n".join(parts)


def write(res: Results, out_dir: Path) -> Path:
    path = Path(out_dir) / "comparison.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(res))
    return path


def star_frame(res: Results) -> pd.DataFrame:
    """The note's stars and ours per technology and column (for notebooks)."""
    records = []
    for row in rows(res):
        rec: dict[str, object] = {"technology": row.technology.name, "transport": row.transport}
        for col in COLUMNS:
            note = row.technology.note_stars
            rec[f"{col} (note)"] = note[col] if note else None
            rec[f"{col} (ours)"] = row.ours[col].stars
        records.append(rec)
    return pd.DataFrame.from_records(records).set_index("technology")


def measured_frame(res: Results) -> pd.DataFrame:
    """The measured-values table as a DataFrame of display strings."""
    return pd.DataFrame(measured_rows(res), columns=list(MEASURED_COLUMNS))


def disagreements(table_rows: list[Row]) -> list[tuple[str, str, int, int, str]]:
    """Cells two or more stars apart: (technology, column title, note, ours, basis)."""
    out = []
    for row in table_rows:
        note = row.technology.note_stars
        for col in COLUMNS:
            ours = row.ours[col].stars
            if note is not None and ours is not None and abs(ours - note[col]) >= 2:
                out.append((row.technology.name, COLUMN_TITLES[col], note[col], ours,
                            row.ours[col].basis))
    return out


def framing_frame(res: Results, payload: int = 64) -> pd.DataFrame:
    """Measured downstream bytes per delivered message beyond the payload (envelope JSON,
    framing, amortised handshake) beside the protocol's minimum framing from its spec."""
    records = []
    for t in res.transports:
        point = res.point("overhead", t, payload=payload)
        down = res.value(t, "overhead", "bytes_down_per_msg", point) if point else None
        spec = SPEC_FRAMING.get(t)
        records.append({"transport": t,
                        "measured down beyond payload (B)": None if down is None
                        else down - payload,
                        "spec minimum framing (B)": spec.bytes if spec else None,
                        "spec": spec.how if spec else ""})
    return pd.DataFrame.from_records(records).set_index("transport")
