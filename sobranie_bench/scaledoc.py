"""The measured part of docs/scale.md, generated from results (never typed by hand).

``python -m sobranie_bench.scaledoc [RUN_DIR ...] [--broker-cost FILE] [--doc docs/scale.md]``
(default: the newest run under results/scale/runs and results/scale/broker_cost.json)
rewrites what lies between the ``<!-- figures:start -->`` and ``<!-- figures:end -->`` markers:
the connections ladder of one run (every level, transport and trial it holds), Python's
servers against Elysia's at the same levels, memory per connection from the lowest level to
the highest, and the broker cost per message, classic vs sharded
(:mod:`sobranie_bench.brokercost`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sobranie_bench.harness import figures, results

START, END = "<!-- figures:start -->", "<!-- figures:end -->"
RUNS = Path("results/scale/runs")
"""Where the committed scale runs live (``run --out results/scale``)."""


def ladder_rows(raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per connections run: what was asked, what was held, and what it cost."""
    rows = []
    for raw in raws:
        if raw.get("scenario") != "connections":
            continue
        p, m = raw["params"], figures.metrics(raw)
        row: dict[str, Any] = {"transport": raw["transport"], "asked": p["connections"],
                               "processes": raw.get("processes", 1), "workers": raw.get("parts", p.get("workers", 1)),
                               "sources": p.get("sources", 1), "trial": raw["trial"],
                               "tls": raw.get("tls", False)}
        if "error" in raw:
            row["error"] = raw["error"]
            rows.append(row)
            continue
        t, c = raw["times"], raw["counters"]
        ramp = max(t["ramp_end"] - t["ramp_start"], 1e-9)
        per10k = max(c["connected"], 1) / 10000
        causes = {k.removeprefix("failed_"): int(v) for k, (v, _) in m.items()
                  if k.startswith("failed_")}
        row.update({
            "connected": c["connected"], "held": c.get("held"), "peak": c.get("peak_open"),
            "failed": c["failures"], "causes": causes,
            "connects_per_s": c["connected"] / ramp,
            "connect_p50_ms": m.get("connect_p50_us", (0, ""))[0] / 1000,
            "connect_p99_ms": m.get("connect_p99_us", (0, ""))[0] / 1000,
            "rss_per_conn_kib": (m["server_rss_bytes_per_conn"][0] / 1024
                                 if "server_rss_bytes_per_conn" in m else None),
            "connect_cpu_s_per_10k": (m["server_cpu_us_per_conn"][0] * 1e4 / 1e6
                                      if "server_cpu_us_per_conn" in m else None),
            "keepalive_cpu_pct_per_10k": (m["keepalive_cpu_percent"][0] / per10k
                                          if "keepalive_cpu_percent" in m else None)})
        rows.append(row)
    rows.sort(key=lambda r: (r["transport"], r["asked"], r["trial"]))
    return rows


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return sum(values) / len(values) if values else None


def _levels(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Completed rows by (transport, connections asked)."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["transport"], r["asked"]), []).append(r)
    return out


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or not b else f"{a / b:,.2f}x"


COMPARED = (("server KiB/conn", "rss_per_conn_kib", ",.1f"), ("connects/s", "connects_per_s", ",.0f"),
            ("keep-alive CPU % per 10k", "keepalive_cpu_pct_per_10k", ",.2f"))
"""(label, row key, format) of the Python-vs-Elysia table."""


def comparison(rows: list[dict[str, Any]]) -> list[str]:
    """Python's server against Elysia's at each level both ran (means over trials; ratio
    Python / Elysia): the issue's goal is within 2x on memory and connect rate."""
    levels = _levels(rows)
    pairs = sorted((t, n) for t, n in levels if (f"{t}@elysia", n) in levels)
    if not pairs:
        return []
    lines = ["", ("Python vs Elysia at the same level (means over trials; ratio Python / "
             "Elysia; goal: within 2x on memory and connect rate):"), "",
             "| pair | asked | " + " | ".join(f"{label} Python / Elysia | ratio"
                                             for label, _, _ in COMPARED) + " |",
             "|---|---:|" + "---:|---:|" * len(COMPARED)]
    for t, n in pairs:
        py, ely = levels[(t, n)], levels[(f"{t}@elysia", n)]
        cells = []
        for _, key, spec in COMPARED:
            a, b = _mean(py, key), _mean(ely, key)
            cells += [f"{_fmt(a, spec)} / {_fmt(b, spec)}", _ratio(a, b)]
        lines.append(f"| {t} vs {t}@elysia | {n:,} | " + " | ".join(cells) + " |")
    return lines


def memory_by_level(rows: list[dict[str, Any]]) -> list[str]:
    """Server memory per connection at each transport's highest level against its lowest
    (the goal: within 10%)."""
    levels = _levels(rows)
    lines = []
    for t in sorted({t for t, _ in levels}):
        asked = sorted(n for u, n in levels if u == t)
        low = _mean(levels[(t, asked[0])], "rss_per_conn_kib")
        high = _mean(levels[(t, asked[-1])], "rss_per_conn_kib")
        if len(asked) < 2 or low is None or high is None:
            continue
        lines.append(f"| {t} | {asked[0]:,} -> {asked[-1]:,} | {low:,.1f} -> {high:,.1f} | "
                     f"{(high - low) / low:+.0%} |")
    if not lines:
        return []
    return ["", ("Server memory per connection, lowest level against highest (goal: within "
            "10%):"), "", "| transport | connections | KiB/conn | change |",
            "|---|---|---|---:|", *lines]


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def render(run_dirs: Path | list[Path], broker_cost: Path | None) -> str:
    dirs = [run_dirs] if isinstance(run_dirs, Path) else run_dirs
    raws = [raw for d in dirs for raw in results.load_raw(d)]
    lines = []
    for d in dirs:
        meta = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
        lines.append(f"- run `{meta.get('run_id', d.name)}`: profile {meta.get('profile', '?')}"
                     f", {meta.get('cores', '?')} cores, load average at its start "
                     f"{meta.get('load_average', '?')}, TLS {meta.get('tls', '?')}")
    lines += ["", "One trial per row.", "",
              ("| transport | asked | server procs | workers | sources | connected | held | "
               "peak open | failed (by cause) | connects/s | connect p50 / p99 ms | "
               "server KiB/conn | server CPU s per 10k connects | keep-alive CPU % per 10k |"),
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in ladder_rows(raws):
        if "error" in r:
            lines.append(f"| {r['transport']} | {r['asked']:,} | {r['processes']} | "
                         f"{r['workers']} | {r['sources']} | run failed: "
                         f"{r['error'][:100]} |||||||||")
            continue
        causes = ", ".join(f"{k} {v:,}" for k, v in r["causes"].items()) or "-"
        lines.append(
            f"| {r['transport']} | {r['asked']:,} | {r['processes']} | {r['workers']} | "
            f"{r['sources']} | {r['connected']:,} | {_fmt(r['held'])} | {_fmt(r['peak'])} | "
            f"{r['failed']:,} ({causes}) | {r['connects_per_s']:,.0f} | "
            f"{r['connect_p50_ms']:,.1f} / {r['connect_p99_ms']:,.1f} | "
            f"{_fmt(r['rss_per_conn_kib'], ',.1f')} | "
            f"{_fmt(r['connect_cpu_s_per_10k'], ',.2f')} | "
            f"{_fmt(r['keepalive_cpu_pct_per_10k'], ',.2f')} |")
    rows = [r for r in ladder_rows(raws) if "error" not in r]
    lines += comparison(rows) + memory_by_level(rows)
    if broker_cost is not None and broker_cost.exists():
        cost = json.loads(broker_cost.read_text())
        c, s = cost["classic"], cost["sharded"]
        lines += [
            "", (f"Broker cost per message ({c['messages']:,} messages over {c['channels']} "
                f"channels, {c['instances']} subscribing instances, load average "
                f"{[round(x, 1) for x in cost['load_average']]}):"), "",
            ("| broker | redis processes | CPU µs/msg, all processes | busiest process µs/msg |"
            " msgs/s |"),
            "|---|---:|---:|---:|---:|",
            (f"| classic pub/sub (one redis-server) | {c['redis_processes']} | "
            f"{c['broker_cpu_us_per_msg']:,.1f} | {c['busiest_process_us_per_msg']:,.1f} | "
            f"{c['msgs_per_s']:,.0f} |"),
            (f"| sharded pub/sub (Redis Cluster, {s['masters']} masters + replicas) | "
            f"{s['redis_processes']} | {s['broker_cpu_us_per_msg']:,.1f} | "
            f"{s['busiest_process_us_per_msg']:,.1f} | {s['msgs_per_s']:,.0f} |")]
    return "\n".join(lines)


def rewrite(doc: Path, figures: str, start: str = START, end: str = END) -> None:
    """Replace what lies between the ``start`` and ``end`` markers of ``doc``."""
    text = doc.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{doc} has no {start} ... {end} block to rewrite")
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    doc.write_text(f"{head}{start}\n{figures}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="*",
                        help="results/.../runs/<run-id> of connections runs (default: the "
                             f"newest under {RUNS})")
    parser.add_argument("--broker-cost", type=Path, default=RUNS.parent / "broker_cost.json",
                        help="brokercost's JSON (default %(default)s)")
    parser.add_argument("--doc", type=Path, default=Path("docs/scale.md"))
    args = parser.parse_args()
    dirs = args.run_dir or (sorted(p for p in RUNS.iterdir() if p.is_dir())[-1:]
                            if RUNS.is_dir() else [])
    if not dirs:
        parser.error(f"no run under {RUNS}: run `sobranie-bench run --profile full --scenarios "
                     f"connections --out {RUNS.parent}` first (docs/scale.md)")
    rewrite(args.doc, render(dirs, args.broker_cost))


if __name__ == "__main__":
    main()
