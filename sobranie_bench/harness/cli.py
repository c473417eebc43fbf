"""``sobranie-bench run``: the benchmark matrix, with progress bars and a final table."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from servers.run import install_uvloop
from sobranie_bench.clients import TRANSPORTS
from sobranie_bench.harness import figures, results
from sobranie_bench.harness.runner import HarnessError, Plan, count_points, run_plan
from sobranie_bench.harness.scenarios import PROFILES
from sobranie_bench.harness.scenarios.registry import registry
from sobranie_bench.netlab.profiles import PROFILES as NETWORK_PROFILES


def final_table(raws: list[dict[str, Any]]) -> Table:
    table = Table(title="Sobranie benchmark (this run)", show_lines=False)
    for col in ("transport", "scenario", "params", "headline figures", "flags"):
        table.add_column(col)
    for raw in raws:
        if "error" in raw:
            table.add_row(raw["transport"], raw["scenario"], results.params_key(raw["params"]),
                          f"[red]failed: {raw['error'][:120]}[/]", "")
            continue
        m = figures.metrics(raw)
        scenario = registry().get(raw["scenario"])
        headline = ", ".join(f"{label} {m[name][0]:,.{2 if m[name][1] == 's' else 0}f}"
                             for name, label in (scenario.headline if scenario else [])
                             if name in m)
        causes = [f"{k.removeprefix('failed_')} {v:,.0f}" for k, (v, _) in m.items()
                  if k.startswith("failed_")]
        if causes:
            headline += f" ([red]{', '.join(causes)}[/])"
        flags = ", ".join(name.replace("_", "-") for name, on in results.flags(raw).items()
                          if on)
        table.add_row(raw["transport"], raw["scenario"], results.params_key(raw["params"]),
                      headline, f"[yellow]{flags}[/]" if flags else "")
    return table


def plan_of(args: argparse.Namespace) -> Plan:
    """The plan ``sobranie-bench run`` makes of its parsed arguments."""
    return Plan(profile=args.profile, transports=tuple(args.transports or ()),
                scenarios=tuple(args.scenarios or ()), only=tuple(args.only or ()),
                target=args.target, out=Path(args.out),
                workers=args.workers, trials=args.trials, seed=args.seed, broker=args.broker,
                cluster=args.cluster, overrides=tuple(args.set or ()), tls=args.tls,
                ca=args.ca, server_pid=args.server_pid, tls_compare=args.tls_compare is not None,
                tls_compare_only=tuple(args.tls_compare or ()),
                network=args.network, processes=args.processes)


def _run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if args.server_pid is not None and not args.target:
        console.print("[red]error:[/] --server-pid needs --target (the harness samples the "
                      "servers it starts itself)")
        return 2
    out = Path(args.out)
    if args.fresh and (out / "runs").exists():
        shutil.rmtree(out / "runs")
    plan = plan_of(args)
    raws: list[dict[str, Any]] = []
    try:
        total = count_points(plan)
    except KeyError as exc:
        console.print(f"[red]error:[/] unknown name {exc}")
        return 2
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task(f"{plan.profile} profile", total=total)

        def on_result(label: str, raw: dict[str, Any] | None) -> None:
            if raw is None:
                progress.update(task, description=label)
            elif "skipped" in raw:
                progress.console.print(f"{label}: {raw['skipped']}", highlight=False)
                progress.advance(task)
            else:
                raws.append(raw)
                progress.advance(task)

        install_uvloop()
        try:
            run_dir = asyncio.run(run_plan(plan, on_result))
        except HarnessError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 1
    from sobranie_bench.report import failures

    failed = failures.scenario_failures(raws)
    for line in failures.console_lines(failed):  # what failed comes first
        console.print(f"[red]{line}[/]", highlight=False)
    Console(width=max(Console().width, 140)).print(final_table(raws))
    console.print(f"raw results: {run_dir}\nsummary: {out / 'summary.csv'}")
    return failures.exit_code(bool(raws) and len(failed) == len(raws), bool(failed), args.strict)


def _only(text: str) -> tuple[str, tuple[str, ...]]:
    name, sep, transports = text.partition("=")
    if not sep or not name or not transports:
        raise argparse.ArgumentTypeError(f"expected SCENARIO=T,T, got {text!r}")
    return name, tuple(_csv(transports))


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def register(sub: Any) -> None:
    scenarios = registry()
    p = sub.add_parser(
        "run", help="run the benchmark matrix",
        description="Run scenarios x transports with open-loop load, a fresh server per run "
                    "(or --target), HDR latency and resource sampling. Raw results go to "
                    "OUT/runs/<run-id>/, the tidy summary to OUT/summary.csv. Profiles: ci "
                    "(the smoke profile, under 5 minutes on 2 cores, one trial), standard (the "
                    "committed evidence, at most 30 minutes: 3 trials with bootstrap intervals, "
                    "echo and fan-out ladders, windows resolving 1 µs of CPU per event), quick "
                    "(about 15), full (as long as it needs).\n\nscenarios: " + "; ".join(f"{n}: {s.doc}"
                                                         for n, s in scenarios.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=PROFILES,
                   default="ci", help="ci, standard, quick or full; calibrate and holdout: the capacity "
                   "model's fit and validation points (`sobranie-bench capacity calibrate`)")
    p.add_argument("--transports", type=_csv, metavar="T,T",
                   help=f"comma-separated (default all: {','.join(TRANSPORTS)})")
    p.add_argument("--scenarios", type=_csv, metavar="S,S",
                   help="comma-separated (default all but the named-only: "
                   f"{','.join(n for n, s in scenarios.items() if not s.named_only)}; named only: "
                   f"{','.join(n for n, s in scenarios.items() if s.named_only)})")
    p.add_argument("--only", type=_only, action="append", metavar="SCENARIO=T,T",
                   help="run SCENARIO for these transports alone (repeatable), e.g. "
                        "--scenarios echo,fanout --only fanout=ws,sse: echo for every "
                        "transport, fan-out for two")
    p.add_argument("--target", metavar="URL",
                   help="benchmark a running contract server at this base URL instead of "
                        "starting fresh ones (docs/benchmark-your-server.md)")
    p.add_argument("--out", default="results", help="results root (default results)")
    p.add_argument("--workers", type=int, default=1,
                   help="harness processes sharing the load (10k+ connections need 2-4)")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="server processes on one port (serve --processes N) for the servers "
                        "the harness starts; a grid point's processes=N overrides it; over the"
                        " memory broker N > 1 uses our own Redis")
    p.add_argument("--trials", type=int, help="trials per point (default: ci 1, else 3)")
    p.add_argument("--seed", type=int, default=1, help="seed for schedules (default 1)")
    p.add_argument("--broker", default="memory",
                   help="broker of the servers the harness starts: memory (default), redis or "
                        "nats (our own, started fresh per run), redis-cluster (our own 3 masters"
                        " + 3 replicas) or a redis:// / redis+cluster:// / nats:// URL")
    p.add_argument("--cluster", type=int, default=0, metavar="N",
                   help="run against N instances behind HAProxy over --broker (redis, nats "
                        "or a URL), fresh per run; ws, sse and longpoll only")
    p.add_argument("--set", type=_setting, action="append", metavar="KEY=VALUE",
                   help="set a scenario parameter in every grid point that has it, e.g. "
                        "--set subscribers=1000 --set rate=50 (repeatable); SCENARIO.KEY in "
                        "that scenario's points only, e.g. --set fanout.rate=20")
    p.add_argument("--network", default="loopback", choices=list(NETWORK_PROFILES),
                   metavar="PROFILE",
                   help="emulated network between harness and server (root): "
                        f"{', '.join(NETWORK_PROFILES)}; default loopback (docs/network.md)")
    p.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True,
                   help="TCP transports over TLS 1.3 with our local CA (default; WebTransport "
                        "and WebRTC always encrypt); --no-tls measures plaintext, labelled "
                        "tls=False in every result")
    p.add_argument("--ca", help="CA certificate to trust for an https:// --target")
    p.add_argument("--server-pid", type=int, metavar="PID",
                   help="the --target's process id, sampled for CPU and memory like a server "
                        "the harness starts; without it they are read from the target's "
                        "/metrics (process_cpu_seconds_total, process_resident_memory_bytes) "
                        "when it exposes them")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any run failed (default: 0 whenever something was "
                        "measured, the failures printed first; 1 when every run failed)")
    p.add_argument("--tls-compare", nargs="?", const=[], type=_csv, metavar="NAMES",
                   help="run every point of a TCP transport twice, plaintext then TLS (fresh "
                        "servers), so the report's TLS cost table compares them in one run "
                        "(replaces --tls/--no-tls; not with --target or --cluster). With "
                        "NAMES (scenarios and/or transports, e.g. echo,connections,ws,sse) "
                        "only those points run both ways and the rest over TLS: a main run "
                        "that also measures the TLS cost")
    p.add_argument("--fresh", action="store_true",
                   help="delete OUT/runs first, so the summary holds this run only")
    p.set_defaults(func=_run)


