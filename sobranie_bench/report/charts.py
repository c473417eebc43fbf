"""Charts of the results, as matplotlib figures (Agg canvas, no pyplot state) saved as PNG and
SVG. Each function takes the selected :class:`~sobranie_bench.report.data.Results` and returns
a figure, so notebooks display the same charts the report writes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sobranie_bench.clients import TRANSPORTS
from sobranie_bench.harness.recorder import merge, stats
from sobranie_bench.report import text
from sobranie_bench.report.data import Results

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)
DPI = 110


def color(transport: str) -> str:
    names = list(TRANSPORTS)
    index = names.index(transport) if transport in names else len(names) + sum(map(ord,
                                                                                  transport))
    return PALETTE[index % len(PALETTE)]


class Chart(Figure):
    """A figure that shows itself in a notebook: IPython calls ``_repr_png_`` on a cell's
    value, and no pyplot backend is involved (a bare Figure shows only its repr)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png")
        return buf.getvalue()


def new_figure(width: float = 8.0, height: float = 4.5) -> Figure:
    fig = Chart(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def readable_log(ax: Any, axis: str = "y") -> None:
    """Log scale with plain tick labels (``0.5``, ``2``, ``1,000``; never ``6×10⁰``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def plain(v: float, _pos: int) -> str:
        if v >= 1e5:
            return thousands()(v, _pos)  # type: ignore[no-any-return]
        return f"{v:,.0f}" if v >= 10 else f"{v:g}"

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(plain))
    target.set_minor_formatter(NullFormatter())


def thousands() -> Any:
    """Tick labels as ``20k``, ``1.5M`` (never ``80000100000`` run together)."""
    from matplotlib.ticker import FuncFormatter

    def short(v: float, _pos: int) -> str:
        for div, unit in ((1e6, "M"), (1e3, "k")):
            if abs(v) >= div:
                return f"{v / div:g}{unit}"
        return f"{v:g}"
    return FuncFormatter(short)


MIN_TAIL_SAMPLES = 10
"""A percentile is shown only when at least this many samples lie beyond it."""


def supported(percentile: float, count: int) -> bool:
    """Whether ``count`` samples support ``percentile`` (MIN_TAIL_SAMPLES beyond it)."""
    return count * (1 - percentile / 100) >= MIN_TAIL_SAMPLES


def _label(res: Results, transport: str, scenario: str) -> str:
    figs = [f for m in ("rtt_p50_us", "latency_p50_us", "bytes_per_msg",
                        "server_rss_bytes_per_conn")
            if (f := res.figure(transport, scenario, m)) is not None]
    bound = any(f.client_bound for f in figs)
    flags = (f" {text.SATURATED_MARK}" if any(f.saturated for f in figs) else "") + (
        f" {text.NOISY_MARK}" if any(f.noisy for f in figs) else "")
    return transport + (f" {text.CLIENT_BOUND_MARK} client-bound" if bound else "") + flags


def _nothing(fig: Figure, what: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, f"{what}: not measured", ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    return fig


def latency_percentiles(res: Results) -> Figure:
    """Echo round trip by percentile (from the raw HDR histograms), one line per transport."""
    fig = new_figure()
    params = res.reference_params("echo")
    drawn = False
    top = 50.0
    ax = fig.add_subplot()
    for t in res.transports:
        raws = [r for r in res.raw(t, "echo")
                if text_params(r) == params and "rtt" in r.get("histograms", {})]
        if not raws:
            continue
        hist = merge([r["histograms"]["rtt"]["measured"] for r in raws])
        if hist.get_total_count() == 0:
            continue
        count = hist.get_total_count()
        shown = [p for p in PERCENTILES if supported(p, count)]
        xs = [-math.log10(1 - p / 100) for p in shown]
        at = stats(hist, tuple(shown))
        ys = [at[f"p{p:g}"] / 1000 for p in shown]
        ax.plot(xs, ys, marker="o", ms=3, color=color(t),
                label=f"{_label(res, t, 'echo')} ({count:,} samples)")
        drawn = True
        top = max(top, shown[-1]) if shown else top
    if not drawn:
        fig.delaxes(ax)
        return _nothing(fig, "echo latency")
    ticks = [p for p in (50, 90, 99, 99.9, 99.99) if p <= top]
    ax.set_xticks([-math.log10(1 - p / 100) for p in ticks], [f"p{p:g}" for p in ticks])
    readable_log(ax)
    ax.set_ylabel("round trip, ms (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Echo round trip by percentile (open loop)", fontsize=10)
    ax.set_xlabel(f"percentile (shown where ≥{MIN_TAIL_SAMPLES} samples lie beyond it; "
                  f"{params})", fontsize=8)
    return fig


def text_params(raw: dict[str, object]) -> str:
    from sobranie_bench.harness.results import params_key
    return params_key(raw["params"])  # type: ignore[arg-type]


def _err(figs: Sequence[Any], scale: float = 1.0) -> list[list[float]]:
    """Error bars (below, above) from each figure's interval (bootstrap CI with 3+ trials,
    else min-max of the trials)."""
    return [[(f.value - f.ci_low) * scale for f in figs], [(f.ci_high - f.value) * scale
                                                           for f in figs]]


def fanout(res: Results) -> Figure:
    """Left: deliveries one server core can make per second (1e6 / server CPU µs per
    delivery), with error bars. Right: fan-out p99 against subscribers per channel."""
    fig = new_figure(9.5, 4.2)
    left, right = fig.subplots(1, 2)
    bars = []
    for t in res.transports:
        f = res.figure(t, "fanout", "server_cpu_us_per_delivery")
        if f is not None and f.value > 0:
            bars.append((t, f))
        points = []
        for key in res.params_points("fanout", t):
            params = dict(i.split("=") for i in key.split(";"))
            p99 = res.value(t, "fanout", "latency_p99_us", key)
            if p99 is not None:
                points.append((float(params["subscribers"]), p99))
        points.sort()
        if points:
            right.plot([p[0] for p in points], [p[1] / 1000 for p in points], marker="o",
                       color=color(t), label=_label(res, t, "fanout"))
    if not bars and not right.lines:
        fig.clear()
        return _nothing(fig, "fan-out")
    if bars:
        rates = [1e6 / f.value for _, f in bars]
        # the interval of a reciprocal: 1e6/high .. 1e6/low
        err = [[r - 1e6 / f.ci_high for r, (_, f) in zip(rates, bars, strict=True)],
               [1e6 / f.ci_low - r if f.ci_low > 0 else 0.0
                for r, (_, f) in zip(rates, bars, strict=True)]]
        names = [t for t, _ in bars]
        drawn = left.barh(names, rates, xerr=err, color=[color(t) for t in names], capsize=3)
        left.bar_label(drawn, [text.num(r) for r in rates], padding=4, fontsize=7)
        left.invert_yaxis()
        left.set_xlim(0, max(rates) * 1.35)
        left.xaxis.set_major_formatter(thousands())
        left.set_xlabel("deliveries per second per server core")
        left.set_title("Fan-out cost (1e6 / server CPU µs per delivery)", fontsize=10)
        left.grid(True, axis="x", alpha=0.3)
    subs = sorted({x for line in right.lines for x in line.get_xdata()})
    right.set_xticks(subs, [f"{x:,.0f}" for x in subs])
    right.set_xlabel("subscribers per channel")
    right.set_ylabel("publish-to-delivery p99, ms (log)")
    if right.lines:
        readable_log(right)
        right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    right.set_title("Fan-out latency p99", fontsize=10)
    right.grid(True, alpha=0.3)
    return fig


def _capacity_steps_on(ax: Any, res: Results) -> float | None:
    """Each transport's capacity steps (fan-out p95 against subscribers) on ``ax``; the SLA."""
    sla = None
    for t in res.transports:
        steps = [s for s in res.capacity_steps(t) if math.isfinite(s.get("p95_us", math.inf))]
        if not steps:
            continue
        sla = res.value(t, "capacity", "sla_ms") or sla
        ax.plot([s["subscribers"] for s in steps], [s["p95_us"] / 1000 for s in steps],
                marker="o", color=color(t), label=_label(res, t, "capacity"))
    return sla


def capacity_steps(res: Results) -> Figure:
    """The capacity scenario's steps: fan-out p95 against subscribers, with the SLA."""
    fig = new_figure(7.5, 4.0)
    ax = fig.add_subplot()
    sla = _capacity_steps_on(ax, res)
    if not ax.lines:
        fig.clear()
        return _nothing(fig, "capacity steps")
    if sla:
        ax.axhline(sla, color="red", lw=1, ls="--", label=f"SLA {sla:g} ms")
    readable_log(ax)
    ax.set_xlabel("subscribers of one channel")
    ax.set_ylabel("fan-out p95, ms (log)")
    ax.set_title("One instance: capacity steps (p95)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def sla_headroom(res: Results) -> Figure:
    """Per feature, each transport's p99 over its SLA (log; below 1 meets it), the SLA at 1."""
    from sobranie_bench.report import recommendation

    fig = new_figure(8.5, 4.2)
    chosen = recommendation.choices(res)
    feats = [c for c in chosen.values() if c.feature.sla is not None
             and (c.ranking or c.rejected)]
    if not feats:
        return _nothing(fig, "SLA headroom")
    ax = fig.add_subplot()
    transports = [t for t in res.transports if any(
        o.transport == t for c in feats for o in (*c.ranking, *(o for o, _ in c.rejected)))]
    width = 0.8 / max(len(transports), 1)
    for ti, t in enumerate(transports):
        xs, ys, lo, hi = [], [], [], []
        for fi, c in enumerate(feats):
            opts = {o.transport: o for o in (*c.ranking, *(o for o, _ in c.rejected))}
            o = opts.get(t)
            if o is None or o.check.fig is None or c.feature.sla is None:
                continue
            limit = c.feature.sla.limit_us
            xs.append(fi + (ti - (len(transports) - 1) / 2) * width)
            ys.append(o.check.fig.value / limit)
            lo.append((o.check.fig.value - o.check.fig.ci_low) / limit)
            hi.append((o.check.fig.ci_high - o.check.fig.value) / limit)
        ax.bar(xs, ys, width * 0.9, yerr=[lo, hi], color=color(t), label=t, capsize=2)
    ax.axhline(1.0, color="red", lw=1, ls="--", label="SLA")
    ax.set_xticks(range(len(feats)), [c.feature.title.split(" (")[0] for c in feats],
                  fontsize=8)
    readable_log(ax)
    nets = {o.check.network for c in feats for o in (*c.ranking, *(o for o, _ in c.rejected))}
    ax.set_ylabel("measured p99 / SLA deadline (log; < 1 meets it)")
    ax.set_title("How far each transport is from each feature's SLA (judged on "
                 f"{', '.join(sorted(nets))})", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def memory_per_connection(res: Results) -> Figure:
    """Server memory per open connection (RSS slope), per transport."""
    fig = new_figure(7.0, 3.8)
    rows = [(t, f) for t in res.transports
            if (f := res.figure(t, "connections", "server_rss_bytes_per_conn")) is not None]
    if not rows:
        return _nothing(fig, "memory per connection")
    ax = fig.add_subplot()
    names = [_label(res, t, "connections") for t, _ in rows]
    values = [f.value / 1024 for _, f in rows]
    bars = ax.barh(names, values, xerr=_err([f for _, f in rows], 1 / 1024),
                   color=[color(t) for t, _ in rows], capsize=3)
    ax.bar_label(bars, [f"{v:.1f} KiB" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("server RSS per open connection, KiB")
    ax.set_xlim(0, max(values) * 1.25)
    ax.set_title("Memory per idle connection (slope of RSS over the ramp)", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def bytes_per_message(res: Results) -> Figure:
    """Bytes on the wire per delivered message at 64 B and 4 KiB payloads, split into the
    subscriber's downstream and the publisher's upstream, with the payload marked."""
    fig = new_figure(9.0, 4.0)
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, payload in zip(axes, (64, 4096)):
        rows: list[tuple[str, float, float, float, float]] = []
        for t in res.transports:
            point = res.point("overhead", t, payload=payload)
            if point is None:
                continue
            down = res.value(t, "overhead", "bytes_down_per_msg", point)
            up = res.value(t, "overhead", "bytes_up_per_msg", point)
            total = res.value(t, "overhead", "bytes_per_msg", point)
            if down is None or up is None or total is None:
                continue
            rows.append((t, down, up, max(total - down - up, 0.0), total))
        if not rows:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center")
            ax.set_axis_off()
            continue
        drawn = True
        names = [r[0] for r in rows]
        colors = [color(n) for n in names]
        bottom = [0.0] * len(rows)
        for part, alpha, label in ((1, 1.0, "subscriber down (deliveries)"),
                                   (2, 0.5, "publisher up (publishes)"),
                                   (3, 0.2, "other directions (acks, handshake replies)")):
            heights = [float(r[part]) for r in rows]
            ax.bar(names, heights, bottom=bottom, color=colors, alpha=alpha, label=label,
                   edgecolor="black", linewidth=0.3)
            bottom = [b + h for b, h in zip(bottom, heights)]
        for i, r in enumerate(rows):
            ax.annotate(f"{r[4]:,.0f}", (i, r[4]), ha="center", va="bottom", fontsize=8)
        ax.axhline(payload, color="black", lw=0.8, ls=":", label="payload")
        ax.set_ylim(0, max(r[4] for r in rows) * (1.45 if payload == 64 else 1.1))
        ax.set_title(f"{payload} B payload", fontsize=10)
        ax.set_ylabel("bytes per delivered message")
        ax.tick_params(axis="x", labelsize=8)
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
        if payload == 64:
            ax.legend(fontsize=7, loc="upper left")
        ax.grid(True, axis="y", alpha=0.3)
    if not drawn:
        fig.clear()
        return _nothing(fig, "bytes per message")
    fig.suptitle("Bytes on the wire per message (handshakes and framing included)",
                 fontsize=10)
    return fig


def capacity_curves(res: Results, users: Sequence[int] = (100_000, 1_000_000, 10_000_000)
                    ) -> Figure:
    """Left: the capacity scenario's steps (p95 against subscribers, with the SLA). Right: the
    capacity model's instances against online users, each transport carrying every feature."""
    fig = new_figure(9.5, 4.2)
    left, right = fig.subplots(1, 2)
    sla = _capacity_steps_on(left, res)
    if sla:
        left.axhline(sla, color="red", lw=1, ls="--", label=f"SLA {sla:g} ms")
    if left.lines:
        readable_log(left)
        left.legend(fontsize=7)
    else:
        left.text(0.5, 0.5, "capacity scenario: not measured", ha="center", va="center")
    left.set_xlabel("subscribers of one channel")
    left.set_ylabel("fan-out p95, ms (log)")
    left.set_title("One instance: capacity steps", fontsize=10)
    left.grid(True, alpha=0.3)

    curves, note = model_instances(res, users)
    for t, points in curves.items():
        right.plot([u for u, _ in points], [n for _, n in points], marker="o", color=color(t),
                   label=t)
    if curves:
        from matplotlib.ticker import LogLocator
        readable_log(right, "x")
        right.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0,)))
        readable_log(right)
        right.legend(fontsize=7)
        if note:
            right.annotate(note, (0.02, 0.02), xycoords="axes fraction", fontsize=7,
                           color="dimgrey")
    else:
        right.text(0.5, 0.5, note or "capacity model: no plan", ha="center", va="center",
                   fontsize=8, wrap=True)
    right.set_xlabel("online users (log)")
    right.set_ylabel("instances, N+1 (log)")
    right.set_title("Capacity model: one transport carrying everything", fontsize=10)
    right.grid(True, which="both", alpha=0.3)
    return fig


def model_instances(res: Results, users: Sequence[int]
                    ) -> tuple[dict[str, list[tuple[int, int]]], str | None]:
    """Transport -> [(online users, instances)] from ``capacity.plan`` (what-if per transport),
    calibrated from ``res``; or an empty mapping and the reason."""
    if res.empty:
        return {}, "no results to calibrate the model"
    try:
        from sobranie_bench.capacity import calibrate
        from sobranie_bench.report.data import summary_frame
        from sobranie_bench.report.recommendation import plan_each
        costs = calibrate(summary_frame(res))
    except Exception as exc:  # noqa: BLE001 - a chart says why it is empty
        return {}, f"capacity model unavailable: {type(exc).__name__}"
    curves: dict[str, list[tuple[int, int]]] = {}
    skipped: set[str] = set()
    measured = list(res.with_figures)
    for n in users:
        fleets, notes = plan_each(costs, n, measured)
        for fleet in fleets:
            curves.setdefault(fleet.transport, []).append((n, fleet.instances))
        skipped.update(note.split(":")[0] for note in notes)
    if not curves:
        return {}, "the model could plan no transport"
    return curves, ("not planned (the model's reason is in recommendation.md): "
                    + ", ".join(sorted(skipped)) if skipped else None)


def verdicts(by_topic: Mapping[str, Mapping[str, int]]) -> Figure:
    """Claims per topic, stacked by verdict (``{topic: {verdict: count}}``)."""
    fig = new_figure(8.0, 0.45 * max(len(by_topic), 4) + 1.2)
    if not by_topic:
        return _nothing(fig, "claims")
    ax = fig.add_subplot()
    topics = sorted(by_topic)
    kinds = sorted({v for counts in by_topic.values() for v in counts})
    left = [0] * len(topics)
    for i, kind in enumerate(kinds):
        widths = [by_topic[t].get(kind, 0) for t in topics]
        ax.barh(topics, widths, left=left, label=kind, color=PALETTE[i % len(PALETTE)])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("claims of the note")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Verdicts per topic (this run)")
    return fig


def storm_curves(storms: Sequence[object]) -> Figure:
    """Share of clients connected over time in reconnect storms (``capacity.storm`` results),
    one line per strategy."""
    fig = new_figure(7.0, 3.8)
    ax = fig.add_subplot()
    for i, result in enumerate(storms):
        share = getattr(result, "connected_share", ())
        ax.plot(range(1, len(share) + 1), [100 * v for v in share],
                color=PALETTE[i % len(PALETTE)],
                label=f"{getattr(result, 'strategy', i)} (peak "
                      f"{getattr(result, 'peak_over_capacity', float('nan')):.2f}× capacity)")
    ax.set_xlabel("seconds after every client lost its connection")
    ax.set_ylabel("clients connected, %")
    ax.set_ylim(0, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Reconnect storm (capacity model)", fontsize=10)
    return fig


CHARTS: dict[str, Callable[[Results], Figure]] = {
    "latency_percentiles": latency_percentiles,
    "fanout": fanout,
    "capacity_steps": capacity_steps,
    "sla_headroom": sla_headroom,
    "memory_per_connection": memory_per_connection,
    "bytes_per_message": bytes_per_message,
    "capacity_curves": capacity_curves,
}


def save(fig: Figure, stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.svg`` (reproducible: no dates, fixed SVG ids)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with matplotlib.rc_context({"svg.hashsalt": "sobranie", "svg.fonttype": "none"}):
        for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
            path = stem.with_suffix(f".{ext}")
            fig.savefig(path, metadata=meta)
            out.append(path)
    return out


def write_all(res: Results, out_dir: Path) -> list[Path]:
    """Every chart as PNG and SVG under ``out_dir``."""
    paths = []
    for name, make in CHARTS.items():
        paths += save(make(res), Path(out_dir) / name)
    return paths
