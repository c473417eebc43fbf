"""The report's network section: echo p50 / p99 per transport per network profile, the
comparison's performance column judged per profile, the first-message, hol and reconnect
scenarios, and a chart of latency against the profile's loss.

Runs under ``--network`` are kept out of the main comparison (:func:`report.data.load` reads
loopback runs only); this section reads every raw result, newest run per transport x scenario x
network profile, and writes ``network.md`` and ``charts/network_loss.{png,svg}``. Its loopback
echo figures are the comparison's (:func:`loopback_echo`), never another run's, at the point
the network runs measured where that run has it (else at its lowest rate, said in the cell).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sobranie_bench.clients import TRANSPORTS
from sobranie_bench.harness import figures
from sobranie_bench.harness import results as raw_results
from sobranie_bench.netlab.profiles import PROFILES

if TYPE_CHECKING:
    from sobranie_bench.report.data import Results

Key = tuple[str, str, str]


def network(raw: dict[str, Any]) -> str:
    return str(raw.get("network", "loopback"))


def select(raws: Iterable[dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    """(transport, scenario, network) -> the raws of its newest run (one-instance runs)."""
    raws = [r for r in raws if not r.get("metadata", {}).get("cluster")
            and str(r.get("metadata", {}).get("broker") or "memory") == "memory"]
    newest: dict[Key, str] = {}
    for raw in raws:
        key = (raw["transport"], raw["scenario"], network(raw))
        newest[key] = max(newest.get(key, ""), str(raw["metadata"]["run_id"]))
    out: dict[Key, list[dict[str, Any]]] = {}
    for raw in raws:
        key = (raw["transport"], raw["scenario"], network(raw))
        if str(raw["metadata"]["run_id"]) == newest[key]:
            out.setdefault(key, []).append(raw)
    return out


def loopback_echo(res: Results) -> dict[Key, list[dict[str, Any]]]:
    """(transport, ``echo``, ``loopback``) -> the echo raws the report's comparison reads (its
    selection: the newest one-instance loopback run, ``--tls-compare`` runs left out)."""
    return {(t, "echo", "loopback"): res.raw(t, "echo") for t in res.transports
            if res.raw(t, "echo")}


def figure(chosen: dict[Key, list[dict[str, Any]]], key: Key, metric: str,
           params: str | None = None) -> float | None:
    """Median over trials of ``metric`` at ``params`` (default: the first point)."""
    raws = [r for r in chosen.get(key, []) if "error" not in r]
    if params is None and raws:
        params = raw_results.params_key(raws[0]["params"])
    values = [m[metric][0] for r in raws if raw_results.params_key(r["params"]) == params
              and metric in (m := figures.metrics(r))]
    return statistics.median(values) if values else None


def profiles_in(chosen: dict[Key, list[dict[str, Any]]]) -> list[str]:
    seen = {k[2] for k in chosen}
    return [p for p in PROFILES if p in seen] + sorted(seen - set(PROFILES))


def transports_in(chosen: dict[Key, list[dict[str, Any]]], scenario: str) -> list[str]:
    seen = {k[0] for k in chosen if k[1] == scenario}
    return [t for t in TRANSPORTS if t in seen] + sorted(seen - set(TRANSPORTS))


def echo_point(chosen: dict[Key, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The echo point (its parameters) most transports measured under the network profiles:
    the table compares every profile at it (loopback runs, with ladders of their own, do not
    choose it; without network runs, loopback's most measured point)."""
    keys = [k for k in chosen if k[1] == "echo" and k[2] != "loopback"] or [
        k for k in chosen if k[1] == "echo"]
    counts = Counter(raw_results.params_key(chosen[k][0]["params"]) for k in keys if chosen[k])
    if not counts:
        return None
    best = counts.most_common(1)[0][0]
    return next(r["params"] for k in keys for r in chosen[k]
                if raw_results.params_key(r["params"]) == best)


def _but_rate(params: dict[str, Any]) -> str:
    return raw_results.params_key({k: v for k, v in params.items() if k != "rate"})


def cell_point(chosen: dict[Key, list[dict[str, Any]]], key: Key,
               point: dict[str, Any] | None) -> dict[str, Any] | None:
    """The echo point one cell shows: ``point`` where ``key``'s run measured it, else that
    run's lowest rate among its points that differ from ``point`` in the rate alone (a ladder
    without ``point``'s rate: the cell names the rate); None without either."""
    if point is None:
        return None
    fits = [r["params"] for r in chosen.get(key, [])
            if "error" not in r and _but_rate(r["params"]) == _but_rate(point)]
    exact = [p for p in fits if raw_results.params_key(p) == raw_results.params_key(point)]
    return (exact or sorted(fits, key=lambda p: float(p.get("rate", 0))) or [None])[0]


def echo_cell(chosen: dict[Key, list[dict[str, Any]]], key: Key,
              compared: dict[str, Any] | None) -> str:
    """``p50 / p99`` ms of one echo cell at its :func:`cell_point` (`` at R/s`` when that is
    not ``compared``), with its flags; ``failed``, ``other points`` (measured, but none that
    fits) or ``—`` (not measured)."""
    raws = chosen.get(key, [])
    shown = cell_point(chosen, key, compared)
    if shown is None:
        return ("failed" if raws and all("error" in r for r in raws)
                else "other points" if raws else "—")
    at = raw_results.params_key(shown)
    p50, p99 = (figure(chosen, key, m, at) for m in ("rtt_p50_us", "rtt_p99_us"))
    rate = ("" if compared is None or at == raw_results.params_key(compared)
            else f" at {float(shown['rate']):,.0f}/s")
    return f"{_ms(p50)} / {_ms(p99)}{rate}{flags(chosen, key, at)}"


def flags(chosen: dict[Key, list[dict[str, Any]]], key: Key, params: str | None = None) -> str:
    """`` (saturated)`` / `` (noisy)`` when any trial behind a cell (at ``params``, default
    all of them) was flagged so."""
    raws = [r for r in chosen.get(key, []) if "error" not in r
            and params in (None, raw_results.params_key(r["params"]))]
    marks = [name for name, test in (("saturated", raw_results.is_saturated),
                                     ("noisy", raw_results.is_noisy))
             if any(test(r) for r in raws)]
    return f" ({', '.join(marks)})" if marks else ""


def _ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1000:,.1f}"


HOL_MODES = (("ordered", "one ordered stream"), ("per_channel", "a stream per flow"),
             ("unreliable", "unreliable"), ("split", "a connection per flow"))
"""The hol scenario's modes (metric prefix, column heading), in table order."""


def performance_by_profile(res: Results) -> dict[str, dict[str, str]]:
    """Profile -> transport -> the comparison table's performance cell, the transports of each
    profile ranked among themselves (echo p50, p99 and server CPU per message, as on loopback)."""
    from sobranie_bench.report import comparison

    out: dict[str, dict[str, str]] = {}
    for net, judged in {"loopback": res, **res.networks}.items():
        cells = {t: comparison.performance(judged, t) for t in TRANSPORTS}
        out[net] = {t: r.cell() for t, r in cells.items() if r.stars is not None}
    return {net: cells for net, cells in out.items() if cells}


def render(chosen: dict[Key, list[dict[str, Any]]],
           performance: dict[str, dict[str, str]] | None = None) -> str:
    nets = profiles_in(chosen)
    lines = ["# Transports under network profiles", "",
             ("Generated by `sobranie-bench report` from runs with `sobranie-bench run --network "
              "PROFILE` (docs/network.md: what each profile is and where its figures come "
              "from). Each figure is the median over trials of the newest run per transport, "
              "scenario and profile; — is not measured (or the run failed); (saturated) and "
              "(noisy) are the harness's flags (docs/methodology.md)."), ""]
    compared = echo_point(chosen)
    at = raw_results.params_key(compared) if compared else "—"
    lines += [f"## Echo round trip, p50 / p99 ms (point {at})", ""]
    loopback = sorted({str(r["metadata"]["run_id"]) for k, rs in chosen.items()
                       if k[1:] == ("echo", "loopback") for r in rs})
    if loopback:
        lines += [(f"The loopback column reads run{'s' if len(loopback) > 1 else ''} "
                   f"{', '.join(loopback)} (the comparison's) at this point where it measured "
                   "it; where it did not, at its lowest rate of the same connections and "
                   "payload, which the cell names (another rate: not the same load as the "
                   "other columns); \"other points\": it measured none of these."), ""]
    lines += ["| transport | " + " | ".join(nets) + " |", "|---|" + "---|" * len(nets)]
    for t in transports_in(chosen, "echo"):
        lines.append(f"| {t} | " + " | ".join(echo_cell(chosen, (t, "echo", n), compared)
                                             for n in nets) + " |")
    if performance:
        judged = [n for n in nets if n in performance]
        lines += ["", "## Performance column per network profile", "",
                  ("The comparison table's performance stars (docs/report.md: echo p50, p99 and "
                   "server CPU per message, as ratios to the best) with the transports of each "
                   "profile ranked among themselves."), "",
                  "| transport | " + " | ".join(judged) + " |", "|---|" + "---|" * len(judged)]
        for t in TRANSPORTS:
            if any(t in performance[n] for n in judged):
                lines.append(f"| {t} | " + " | ".join(performance[n].get(t, "—")
                                                       for n in judged) + " |")
    if any(k[1] == "first-message" for k in chosen):
        lines += ["", ("## First message: open -> first delivered message, p50 ms "
                       "(handshake round trips measured)"), "",
                  "| transport | " + " | ".join(nets) + " |", "|---|" + "---|" * len(nets)]
        for t in transports_in(chosen, "first-message"):
            cells = []
            for n in nets:
                first = figure(chosen, (t, "first-message", n), "first_message_p50_us")
                trips = figure(chosen, (t, "first-message", n), "handshake_round_trips")
                cells.append(f"{_ms(first)} ({trips:.1f} RT)" if first and trips else "—")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    if any(k[1] == "hol" for k in chosen):
        lines += ["", ("## Head-of-line: several flows on one connection, bystanders' p50 / p99 "
                       "ms (delivered %)"), "",
                  ("Bystanders: in each round (one message per flow, published together beside "
                   "the server) the messages other than the round's slowest, i.e. the flows that "
                   "did not lose the packet that delayed the round. Under head-of-line blocking "
                   "they wait too."), "",
                  "| transport | network | " + " | ".join(h for _, h in HOL_MODES) + " |",
                  "|---|---|" + "---|" * len(HOL_MODES)]
        for t in transports_in(chosen, "hol"):
            for n in nets:
                def g(metric: str, key: Key = (t, "hol", n)) -> float | None:
                    return figure(chosen, key, metric)
                if g("ordered_delivered_percent") is None:
                    continue
                cells = [f"{_ms(g(f'{m}_bystander_p50_us'))} / {_ms(g(f'{m}_bystander_p99_us'))}"
                         f" ({g(f'{m}_delivered_percent'):.1f} %)"
                         if g(f"{m}_delivered_percent") is not None else "—"
                         for m, _ in HOL_MODES]
                lines.append(f"| {t} | {n} | " + " | ".join(cells) + " |")
    if any(k[1] == "reconnect" for k in chosen):
        lines += ["", "## Reconnect: the link cut, then back; or the client's address changed", "",
                  ("An address change is a QUIC connection migration where the transport can "
                   "migrate (migrated), a new connection and a resume from the cursor elsewhere."),
                  "",
                  ("| transport | network | change | noticed | reconnected (migrated) | resume p50 "
                   "ms | resume max ms | lost | duplicated |"),
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in transports_in(chosen, "reconnect"):
            for n in nets:
                key: Key = (t, "reconnect", n)
                points = dict.fromkeys(raw_results.params_key(r["params"])
                                       for r in chosen.get(key, []) if "error" not in r)
                for point in points:
                    def f(metric: str, point: str = point, key: Key = key) -> float:
                        return figure(chosen, key, metric, point) or 0.0
                    change = ("address" if "change=address" in point
                              else f"cut {f('outage_ms'):.0f} ms")
                    lines.append(f"| {t} | {n} | {change} | {f('noticed'):.0f} of "
                                 f"{f('subscribers'):.0f} | {f('reconnected'):.0f} "
                                 f"({f('migrated'):.0f}) | {f('resume_p50_ms'):,.0f} | "
                                 f"{f('resume_max_ms'):,.0f} | {f('lost'):.0f} | "
                                 f"{f('duplicated'):.0f} |")
    lines += ["", "## The profiles", "", ("| profile | RTT ms | jitter ms | loss | burst | "
                                          "down / up Mbit/s | measured RTT p50 ms, loss up / "
                                          "down |"), "|---|---|---|---|---|---|---|"]
    for n in nets:
        prof = PROFILES.get(n)
        meta: dict[str, Any] = next((r["metadata"].get("network", {}) for k, rs in chosen.items() if k[2] == n
                     for r in rs), {})
        got = meta.get("measured") or {}
        measured = (f"{got['rtt_ms_p50']:.1f}, {got['loss_up']:.2%} / {got['loss_down']:.2%}"
                    if got else "—")
        if prof is not None:
            lines.append(f"| {n} | {prof.rtt_ms:g} | {prof.jitter_ms:g} | {prof.loss:.1%} | "
                         f"{prof.burst:g} | {prof.down_mbit:g} / {prof.up_mbit:g} | "
                         f"{measured} |")
    return "\n".join(lines) + "\n"


def loss_chart(chosen: dict[Key, list[dict[str, Any]]]) -> Any:
    """Echo p50 (solid) and p99 (dashed) against each profile's loss, per transport."""
    from sobranie_bench.report import charts

    fig = charts.new_figure()
    nets = [n for n in profiles_in(chosen) if n in PROFILES]
    point = echo_point(chosen)
    at = raw_results.params_key(point) if point else None
    ax = fig.add_subplot()
    drawn = False
    for t in transports_in(chosen, "echo"):
        pts: list[tuple[float, float, float]] = []
        for n in nets:  # at the network runs' point only (another rate is another load)
            p50 = figure(chosen, (t, "echo", n), "rtt_p50_us", at) if at else None
            p99 = figure(chosen, (t, "echo", n), "rtt_p99_us", at) if at else None
            if p50 is not None and p99 is not None:
                pts.append((PROFILES[n].loss * 100, p50, p99))
        pts.sort()
        if not pts:
            continue
        drawn = True
        xs = [x for x, _, _ in pts]
        ax.plot(xs, [a / 1000 for _, a, _ in pts], "-o", color=charts.color(t), label=f"{t} p50")
        ax.plot(xs, [b / 1000 for _, _, b in pts], "--", color=charts.color(t), label=f"{t} p99")
    if not drawn:
        return charts._nothing(fig, "echo under network profiles")
    ax.set_yscale("log")
    ax.set_xlabel("profile loss per direction, %  (" + ", ".join(
        f"{n} {PROFILES[n].loss:.1%}" for n in nets) + ")")
    ax.set_ylabel("echo round trip, ms (log)")
    ax.set_title("Echo p50 (solid) and p99 (dashed) against loss, per transport")
    ax.legend(fontsize=6, ncol=3)
    return fig


def write(results_dir: Path, out_dir: Path, with_charts: bool = True,
          res: Results | None = None) -> list[Path]:
    """``network.md`` (and the chart) from every raw result under ``results_dir`` (``res``: the
    report's selection of them, loaded here when not given)."""
    root = Path(results_dir)
    source = root / "runs" if (root / "runs").is_dir() else root
    if res is None:
        from sobranie_bench.report import data

        res = data.load(root)
    chosen = {key: raws for key, raws in select(raw_results.load_raw(source) if source.is_dir()
                                                else []).items()
              if key[1:] != ("echo", "loopback")} | loopback_echo(res)
    path = Path(out_dir) / "network.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(chosen, performance_by_profile(res)))
    paths = [path]
    if with_charts:
        from sobranie_bench.report import charts

        paths += charts.save(loss_chart(chosen), Path(out_dir) / "charts" / "network_loss")
    return paths
