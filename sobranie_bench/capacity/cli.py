"""``sobranie-bench capacity``: plan servers and Redis, simulate reconnect storms, validate.

The main CLI calls :func:`register` with its subparsers; each subcommand sets ``func``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sobranie_bench.capacity.calibration import (
    DEFAULT_SUMMARY,
    TRANSPORTS,
    TransportCosts,
    calibrate,
)
from sobranie_bench.capacity.errors import processes_text
from sobranie_bench.capacity.fit import MAX_RUN_QUEUE_WAIT, CalibrationRefused
from sobranie_bench.capacity.fleet import (
    FD_LIMIT,
    GIB,
    INSTANCE_JOBS,
    SLO_S,
    HostSpec,
    InstanceSpec,
    Plan,
    scaling_table,
    simulate_fleet_hour,
)
from sobranie_bench.capacity.measure import DEFAULT_OUT
from sobranie_bench.capacity.storm import (
    JITTER_WINDOW_S,
    STRATEGIES,
    TIMEOUT_S,
    StormResult,
    storm,
)
from sobranie_bench.capacity.tables import (
    COST_HEADERS,
    RESIDUAL_HEADERS,
    THRESHOLDS,
    VALIDATION_HEADERS,
    CalibrationTables,
    calibrated_plan,
    cell,
    tables,
)
from sobranie_bench.capacity.tables import load as load_calibration
from sobranie_bench.capacity.validation import CASES, JOBS, ValidationRow, validate
from sobranie_bench.capacity.workload import FEATURES

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _costs(summary: str | None, console: Console) -> tuple[dict[str, TransportCosts], str]:
    """Calibrate from ``summary`` (default results/summary.csv), or say loudly why not."""
    path = Path(summary) if summary else DEFAULT_SUMMARY
    if path.exists():
        return calibrate(path), f"measured from {path} (figures not in it are fallbacks)"
    if summary:
        console.print(f"[bold red]error:[/] no summary at {path}", highlight=False)
        raise SystemExit(2)
    note = (
        f"no summary at {path}: every figure is a FALLBACK constant, not a measurement "
        "(run `sobranie-bench run` first, or pass --summary)"
    )
    console.print(f"[bold yellow]warning:[/] {note}", highlight=False)
    return calibrate(None), note


def _json(records: Sequence[StormResult | ValidationRow]) -> str:
    """Frozen dataclass records as a JSON list (tuples become lists)."""
    return json.dumps([dataclasses.asdict(r) for r in records], indent=2)


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal, or 150 columns when writing to a file or pipe."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=150)


def _err_console(as_json: bool) -> Console:
    """Tables go to stdout; with --json, notes go to stderr so stdout stays parseable."""
    return _console(stderr=as_json)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _carried(result: Plan) -> str:
    if all(len(f.features) == len(FEATURES) for f in result.fleets):
        return "What-if: each transport carries every feature"
    return "; ".join(f"{f.transport}: {', '.join(f.features)}" for f in result.fleets)


def _plan_tables(result: Plan) -> list[Table]:
    users = result.workload.online_users
    fleets = Table(
        title=f"Fleets for {users:,} online users (p95 SLO {result.slo_s * 1000:g} ms)",
        caption=_carried(result)
        + ". processes: event-loop processes needed + spares (one core each), ± the larger "
        "distance to the 5th or 95th percentile over the fitted costs' bootstrap; hosts: "
        f"{result.instance.host.processes_per_host} processes per {result.instance.host.cores}"
        "-core host; extrapolation: a process's load beyond the measured range. conns: connections (file "
        "descriptors) per process. fallbacks: "
        "calibration figures not measured.",
    )
    for column in ("transport", "processes", "hosts", "binding", "CPU", "conns", "memory",
                   "egress", "p95", "handshakes/s", "fallbacks"):  # fmt: skip
        fleets.add_column(column)
    for f in result.fleets:
        fleets.add_row(
            f.transport,
            f"{processes_text(f)} (N+{f.instances - f.instances_needed})",
            str(f.hosts),
            f.binding,
            f"{f.cpu_utilisation:.0%}",
            _fmt(f.connections_per_instance),
            f"{f.memory_bytes_per_instance / GIB:.2f} GiB",
            f"{f.egress_bytes_per_s_per_instance / 1e6:.1f} MB/s",
            f"{f.p95_delivery_s * 1000:.1f} ms",
            _fmt(f.connect_capacity_per_instance_s),
            str(len(f.fallbacks)),
        )
    for row in result.infeasible:  # a measured fact, a row where the count would be
        fleets.add_row(row.transport, "none", "-", row.reason, *("-" for _ in range(7)))
    redis = Table(
        title="Redis pub/sub",
        caption="classic: every PUBLISH reaches every node; sharded: SPUBLISH reaches the "
        "channel's shard only. inst/pub: instances subscribed per publish; shards needed "
        "and messages per second on each node.",
    )
    for column in ("transport", "publish/s", "deliver/s", "inst/pub", "per inst/s",
                   "classic", "per node/s", "sharded", "per shard/s"):  # fmt: skip
        redis.add_column(column)
    for f in result.fleets:
        c, s = f.redis_classic, f.redis_sharded
        redis.add_row(
            f.transport,
            _fmt(c.publishes_per_s),
            _fmt(c.deliveries_per_s),
            _fmt(c.subscribed_instances_per_publish, 1),
            _fmt(c.deliveries_per_instance_s),
            "cannot" if c.shards is None else str(c.shards),
            "-"
            if c.shards is None
            else _fmt(c.per_shard_publishes_per_s + c.per_shard_deliveries_per_s),
            str(s.shards),
            _fmt(s.per_shard_publishes_per_s + s.per_shard_deliveries_per_s),
        )
    return [fleets, redis]


def _plan(args: argparse.Namespace) -> int:
    console = _err_console(args.json)
    costs, note = _costs(args.summary, console)
    transports = list(TRANSPORTS) if args.transport == ["all"] else args.transport
    host = HostSpec(
        cores=args.host_cores,
        memory_bytes=int(args.host_memory_gib * GIB),
        processes=args.processes_per_host,
    )
    instance = InstanceSpec(
        host=host,
        max_utilisation=args.max_utilisation,
        fd_limit=args.fd_limit,
        spare_instances=args.spares,
    )
    try:
        result, costs, notes = calibrated_plan(
            costs,
            Path(args.calibration),
            transports,
            online_users=args.online_users,
            slo_s=args.slo_ms / 1000,
            instance=instance,
            calibration=note,
            latency_jobs=args.latency_jobs,
            seed=args.seed,
        )
    except ValueError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        return 2
    for line in notes:
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
    hours = []
    if args.hour:
        for fleet in result.fleets:
            scenario = result.workload.all_over(fleet.transport) if transports else result.workload
            hours.append(
                simulate_fleet_hour(
                    fleet, scenario, costs[fleet.transport], seed=args.seed
                )
            )
    if args.json:
        payload = dataclasses.asdict(result)
        payload["fleet_hours"] = [dataclasses.asdict(h) for h in hours]
        print(json.dumps(payload, indent=2, default=str))
        return 0
    console.print(f"calibration: {note}", highlight=False)
    for table in _plan_tables(result):
        console.print(table)
    if hours:
        table = Table(title="One simulated hour per fleet (one instance lost at 30 min)")
        for column in ("transport", "instances", "mean util", "p99 util", "overloaded ticks",
                       "max backlog delay", "wall time"):  # fmt: skip
            table.add_column(column)
        for h in hours:
            table.add_row(
                h.transport,
                str(h.instances),
                f"{h.mean_utilisation:.0%}",
                f"{h.p99_utilisation:.0%}",
                f"{h.overloaded_fraction:.2%}",
                f"{h.max_backlog_delay_s:.2f} s",
                f"{h.wall_time_s:.2f} s",
            )
        console.print(table)
    return 0


def _storm_table(results: list[StormResult]) -> Table:
    first = results[0]
    table = Table(
        title=f"Reconnect storm: {first.clients:,} clients onto {first.instances} instances "
        f"(connect capacity {first.connect_capacity_per_s:,.0f}/s per instance)"
    )
    for column in ("strategy", "peak attempts/s", "peak handshakes/s", "x capacity",
                   "time to 99% connected", "attempts / inst", "CPU wasted"):  # fmt: skip
        table.add_column(column)
    for r in results:
        table.add_row(
            r.strategy,
            _fmt(r.peak_attempts_per_s),
            _fmt(r.peak_handshakes_per_s),
            f"{r.peak_over_capacity:.2f}",
            "not recovered" if r.time_to_recover_s is None else f"{r.time_to_recover_s:.0f} s",
            _fmt(r.attempts),
            f"{r.wasted_share:.0%}",
        )
    return table


def _storm(args: argparse.Namespace) -> int:
    console = _err_console(args.json)
    capacity = args.connect_capacity
    if capacity is None:
        costs, note = _costs(args.summary, console)
        transport_costs = (
            costs.get(args.transport) or calibrate(None, (args.transport,))[args.transport]
        )
        capacity = 1e6 / transport_costs.cpu_us_per_connection.value
        console.print(
            f"connect capacity: {capacity:,.0f} handshakes/s per instance "
            f"({args.transport}, {transport_costs.cpu_us_per_connection.source} CPU per "
            f"connection; calibration {note})",
            highlight=False,
        )
    results = [
        storm(
            args.clients,
            instances=args.instances,
            strategy=strategy,
            connect_capacity_per_s=capacity,
            jitter_window_s=args.jitter_window_s,
            timeout_s=args.timeout_s,
            seed=args.seed,
        )
        for strategy in args.strategy or STRATEGIES
    ]
    if args.json:
        print(_json(results))
    else:
        console.print(_storm_table(results))
    return 0


def _rich(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]],
          caption: str | None = None) -> Table:
    """A rich table of plain rows (pass / FAIL coloured)."""
    table = Table(title=title, caption=caption)
    for column in headers:
        table.add_column(column)
    colours = {"pass": "[green]pass[/]", "FAIL": "[red]FAIL[/]"}
    for row in rows:
        table.add_row(*(colours.get(value, value) for value in row))
    return table


def calibration_rich(shown: CalibrationTables) -> list[Table]:
    """The fitted costs, the residuals and the held-out validation as rich tables."""
    return [
        _rich("Fitted costs of one server process (90% bootstrap interval over trials)",
              COST_HEADERS, shown.costs,
              "cores = fixed[scenario] + inbound x rate + delivery x factor(load) x "
              "deliveries/s; harness: "
              f"the benchmark's client, the other queue on the path; host {shown.host}"),
        _rich("Fit points: measured against fitted CPU", RESIDUAL_HEADERS, shown.residuals,
              "fitted: the line with its delivery cost curve over load (through each point's "
              "mean); line residual: the least-squares line alone"),
        _rich("Held-out validation: the calibrated model against measurements it was not "
              "fitted to", VALIDATION_HEADERS, shown.validation,
              "error: predicted / measured - 1; extrapolation: the point's load lies outside "
              "the fitted range; host share: run / (run + run-queue wait) of the process"),
    ]  # fmt: skip


def _validate_against(args: argparse.Namespace) -> int:
    from sobranie_bench.capacity.reality import validate_against

    console = _console()
    root = Path(args.against)
    if not root.exists():
        console.print(f"[bold red]error:[/] no results at {root}", highlight=False)
        return 2
    loaded = load_calibration(root, args.max_run_queue_wait, args.seed)
    if loaded is None:
        console.print(f"[bold red]error:[/] {root} holds no fit trials (profile calibrate): "
                      "run `sobranie-bench capacity calibrate` first", highlight=False)
        return 2
    trials, fits, host = loaded
    result = validate_against(trials, fits)
    if args.json:
        print(json.dumps({"host": host, "refused": result.refused,
                          "checks": [dataclasses.asdict(c) for c in result.checks],
                          "passed": {t: result.passed(t) for t in fits}}, indent=2))
        return 0
    shown = tables(fits, result, host)
    for table in calibration_rich(shown):
        console.print(table)
    for why in shown.refused.values():
        console.print(f"[bold yellow]refused:[/] {why}", highlight=False)
    for transport, passed in shown.verdicts.items():
        verdict = "[green]PASS[/]" if passed else "[red]FAIL[/]"
        console.print(f"{transport}: {verdict} ({THRESHOLDS})", highlight=False)
    return 0


def _validate_cluster(args: argparse.Namespace) -> int:
    from sobranie_bench.capacity.clustercheck import TOLERANCES
    from sobranie_bench.capacity.tables import CLUSTER_CAPTION, cluster_rows, cluster_verdicts

    console = _console()
    run = Path(args.cluster)
    if not run.exists():
        console.print(f"[bold red]error:[/] no results at {run}", highlight=False)
        return 2
    rows = cluster_rows(run, args.summary or DEFAULT_SUMMARY)
    if not rows:
        console.print(f"[bold red]error:[/] {run} holds no cluster fanout, failover or "
                      "backplane result (run `sobranie-bench run --cluster 3 --broker redis "
                      "--scenarios fanout,failover,backplane`)", highlight=False)  # fmt: skip
        return 2
    if args.json:
        print(json.dumps([dict(zip(VALIDATION_HEADERS, row, strict=True)) for row in rows],
                         indent=2))  # fmt: skip
        return 0
    console.print(_rich(f"The fleet model against a measured cluster ({run.name})",
                        VALIDATION_HEADERS, rows, CLUSTER_CAPTION))  # fmt: skip
    for transport, passed in cluster_verdicts(rows).items():
        verdict = "[green]PASS[/]" if passed else "[red]FAIL[/]"
        console.print(f"{transport} on the cluster: {verdict} ({TOLERANCES})", highlight=False)
    return 0


def _validate(args: argparse.Namespace) -> int:
    if args.against and args.cluster and args.json:
        _console(stderr=True).print("[bold red]error:[/] --json takes one of --against or "
                                    "--cluster", highlight=False)  # fmt: skip
        return 2
    if args.against or args.cluster:
        code = _validate_against(args) if args.against else 0
        return code or (_validate_cluster(args) if args.cluster else 0)
    rows = validate(jobs=args.jobs, seed=args.seed)
    if args.json:
        print(_json(rows))
        return 0
    table = Table(title="SimPy instance model versus closed form (mean wait in queue)")
    for column in ("model", "ρ", "λ /s", "μ /s", "simulated", "analytic (Erlang C)",
                   "95% CI (batch means)", "error", "in CI", "L", "λW"):  # fmt: skip
        table.add_column(column)
    for r in rows:
        low, high = r.ci95
        table.add_row(
            r.model,
            f"{r.utilisation:.2f}",
            _fmt(r.arrival_rate),
            _fmt(r.service_rate),
            f"{r.simulated_mean_wait * 1e6:.2f} µs",
            f"{r.analytic_mean_wait * 1e6:.2f} µs",
            f"[{low * 1e6:.2f}, {high * 1e6:.2f}] µs",
            f"{r.relative_error:+.2%}",
            "yes" if r.analytic_in_ci else "NO",
            f"{r.time_average_in_system:.4f}",
            f"{r.arrival_rate_times_sojourn:.4f}",
        )
    _console().print(table)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from servers.run import install_uvloop
    from sobranie_bench.capacity import measure

    console = _console(stderr=True)
    out = Path(args.out)
    transports = args.transport
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        task = progress.add_task("calibration", total=measure.points(args.quick, transports))

        def on_result(label: str, raw: dict[str, object] | None) -> None:
            if raw is None:
                progress.update(task, description=label)
            else:
                progress.advance(task)

        install_uvloop()
        for attempt in range(args.retries + 1):
            if args.wait_load is not None and not measure.wait_for_quiet(
                args.wait_load, args.wait_timeout,
                lambda load: progress.update(task, description=f"waiting: load average "
                                             f"{load:.2f} >= {args.wait_load:g}")):  # fmt: skip
                console.print(f"[bold yellow]warning:[/] the load average stayed above "
                              f"{args.wait_load:g} for {args.wait_timeout:g} s: measuring "
                              "anyway", highlight=False)  # fmt: skip
            progress.reset(task)
            done = measure.measure(out, transports, args.quick, on_result)
            loaded = load_calibration(out, args.max_run_queue_wait, args.seed)
            refused = [] if loaded is None else [
                t for t, f in loaded[1].items() if isinstance(f, CalibrationRefused)]
            if not refused or attempt == args.retries:
                break
            console.print(f"attempt {attempt + 1}: {', '.join(refused)} refused (the machine "
                          "was busy): measuring again", highlight=False)  # fmt: skip
    console.print(f"fit runs: {', '.join(str(run) for run in done.fit_runs)}\nheld-out runs: "
                  f"{', '.join(str(run) for run in done.holdout_runs)}", highlight=False)
    args.against = str(out)
    return _validate_against(args)


def _scaling(args: argparse.Namespace) -> int:
    console = _err_console(args.json)
    costs, _ = _costs(args.summary, console)
    frame = scaling_table(args.users, costs=costs, duration_s=args.duration_s, seed=args.seed)
    if args.json:
        print(frame.to_json(orient="records", indent=2))
        return 0
    table = Table(title=f"Run time versus online users ({args.duration_s:g} s simulated)")
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*(cell(value) for value in row))
    console.print(table)
    return 0


def _common(parser: argparse.ArgumentParser, summary: bool = True) -> None:
    if summary:
        parser.add_argument(
            "--summary",
            metavar="PATH",
            help=f"tidy results summary to calibrate from (default: {DEFAULT_SUMMARY}; when "
            "that file does not exist, fallback constants are used and the output says so)",
        )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``capacity`` command and its subcommands to the main CLI."""
    capacity = subparsers.add_parser(
        "capacity",
        help="plan servers and Redis for N online users; reconnect storms; model checks",
        description="SimPy capacity models calibrated from results/summary.csv: how many "
        "server processes (one event loop, one core each) and hosts each transport needs for "
        "N online users, how much Redis pub/sub load that makes, how reconnect storms play out, and how the queueing model compares "
        "with Erlang C.",
        formatter_class=_FORMATTER,
    )
    commands = capacity.add_subparsers(dest="capacity_command", required=True, metavar="SUBCOMMAND")

    p = commands.add_parser(
        "plan",
        help="processes, hosts, memory, egress and Redis load for N online users",
        description="Size one fleet of server processes per transport (one event loop each, "
        "at most one core) so the simulated p95 publish-to-delivery latency stays under the "
        "SLO, the load below the measured latency knee, the core under --max-utilisation, "
        "connections under the per-process file limit, connection memory and egress within "
        "the process's share of its host, then add --spares processes (N+1). Without --transport "
        "the default mapping is planned (chat/presence/collab over ws, notifications/feed/"
        "counters over sse); with --transport each named transport is planned as if it "
        "carried every feature, for comparison.\n\nexample:\n"
        "  sobranie-bench capacity plan --online-users 1000000 --transport ws sse longpoll",
        formatter_class=_FORMATTER,
    )
    p.add_argument("--online-users", type=int, required=True, metavar="N",
                   help="users online at the same time (the peak)")  # fmt: skip
    p.add_argument("--transport", nargs="+", metavar="T", choices=[*TRANSPORTS, "all"],
                   help=f"what-if: plan each transport carrying every feature; 'all' for "
                        f"all of {', '.join(TRANSPORTS)}")  # fmt: skip
    p.add_argument("--slo-ms", type=float, default=SLO_S * 1000,
                   help="p95 delivery latency objective in ms (default 500)")  # fmt: skip
    p.add_argument("--host-cores", type=int, default=HostSpec.cores,
                   help="cores per host (default 2, the benchmark machine); an instance is "
                        "one event-loop process using at most one core")  # fmt: skip
    p.add_argument("--host-memory-gib", type=float, default=HostSpec.memory_bytes / GIB,
                   help="RAM per host in GiB, shared by its processes (default 8)")  # fmt: skip
    p.add_argument("--processes-per-host", type=int, metavar="N",
                   help="server processes per host (default: one per core)")  # fmt: skip
    p.add_argument("--fd-limit", type=int, default=FD_LIMIT,
                   help=f"open files per process: one per connection "
                        f"(default {FD_LIMIT:,})")  # fmt: skip
    p.add_argument("--max-utilisation", type=float, default=InstanceSpec.max_utilisation,
                   help="highest planned utilisation of a process's core "
                        "(default 0.75)")  # fmt: skip
    p.add_argument("--spares", type=int, default=InstanceSpec.spare_instances,
                   help="spare instances per fleet (default 1: N+1)")  # fmt: skip
    p.add_argument("--latency-jobs", type=int, default=INSTANCE_JOBS, metavar="N",
                   help=f"messages simulated per instance latency check "
                        f"(default {INSTANCE_JOBS:,}; fewer is faster and noisier)")  # fmt: skip
    p.add_argument("--calibration", metavar="RESULTS", default=str(DEFAULT_OUT),
                   help="results root of `capacity calibrate` (default "
                        f"{DEFAULT_OUT}): CPU costs and the knee fitted there, with bootstrap "
                        "error bars on the process counts, instead of the summary's medians; "
                        "without one there, no error bars (the output says so)")  # fmt: skip
    p.add_argument("--hour", action="store_true",
                   help="also simulate each fleet for an hour as aggregate flows, losing one "
                        "instance half-way")  # fmt: skip
    _common(p)
    p.set_defaults(func=_plan)

    s = commands.add_parser(
        "storm",
        help="reconnect storm: no jitter vs full jitter vs token-bucket admission",
        description="N clients lose their connections at once (a deploy, an instance loss) "
        "and reconnect to K instances. Compares reconnecting at once, exponential backoff "
        "with full jitter, and token-bucket admission at the load balancer: peak handshake "
        "rate against an instance's connect capacity, and time until 99% are back.\n\n"
        "example:\n  sobranie-bench capacity storm --clients 1000000 --instances 10",
        formatter_class=_FORMATTER,
    )
    s.add_argument("--clients", type=int, required=True, metavar="N",
                   help="clients reconnecting, fleet-wide")  # fmt: skip
    s.add_argument("--instances", type=int, default=10, metavar="K",
                   help="instances they reconnect to (default 10)")  # fmt: skip
    s.add_argument("--strategy", nargs="+", choices=STRATEGIES,
                   help="strategies to simulate (default: all three)")  # fmt: skip
    s.add_argument("--transport", default="ws", choices=TRANSPORTS,
                   help="whose CPU per connection sets the connect capacity (default ws)")  # fmt: skip
    s.add_argument("--connect-capacity", type=float, metavar="PER_S",
                   help="handshakes per second per instance (overrides the calibration)")  # fmt: skip
    s.add_argument("--jitter-window-s", type=float, default=JITTER_WINDOW_S,
                   help=f"full jitter: spread of the first attempt in s (default {JITTER_WINDOW_S:g})")  # fmt: skip
    s.add_argument("--timeout-s", type=float, default=TIMEOUT_S,
                   help=f"client handshake timeout in s (default {TIMEOUT_S:g})")  # fmt: skip
    _common(s)
    s.set_defaults(func=_storm)

    v = commands.add_parser(
        "validate",
        help="the model against held-out measurements (--against), or against Erlang C",
        description="With --against RESULTS: fit the model's costs to the RESULTS' fit points "
        "(profile calibrate), predict every other measured point (CPU, p50/p95/p99, "
        "throughput, the capacity scenario's knee) and print predicted / measured / error; "
        "passes when CPU is within ±15%, p95 within 2x below the knee and the knee within "
        "±20%. Without it: simulate the instance model as M/M/1 and M/M/c at utilisations "
        f"up to 0.8 ({', '.join(f'c={c} ρ={r}' for c, r in CASES)}) and print the simulated "
        "mean wait beside the Erlang C value, with its 95% batch-means confidence interval and "
        "Little's law (L against λW). Times are in seconds in --json. With --cluster RUN: "
        "the fleet model against a measured cluster run.\n\nexamples:\n"
        "  sobranie-bench capacity validate --against results/calibrate\n"
        "  sobranie-bench capacity validate --cluster results/runs/<cluster run>",
        formatter_class=_FORMATTER,
    )
    v.add_argument("--against", metavar="RESULTS",
                   help="results root of `capacity calibrate` (fit and held-out runs)")  # fmt: skip
    v.add_argument("--cluster", metavar="RUN",
                   help="a cluster run (`run --cluster N --broker redis`, its run directory "
                        "or a results root): the fleet model's broker cost per message, "
                        "other-instance latency, instance loss and reconnect storm (with and "
                        "without jitter) beside the measurement")  # fmt: skip
    v.add_argument("--summary", metavar="PATH",
                   help=f"summary whose connection costs set the storm's connect capacity "
                        f"(default {DEFAULT_SUMMARY})")  # fmt: skip
    v.add_argument("--max-run-queue-wait", type=float, default=MAX_RUN_QUEUE_WAIT,
                   metavar="SHARE", help="refuse fit trials whose server waited for a CPU "
                   f"longer than this share of the window (default {MAX_RUN_QUEUE_WAIT:g})")  # fmt: skip
    v.add_argument("--jobs", type=int, default=JOBS,
                   help=f"messages measured per case (default {JOBS:,})")  # fmt: skip
    v.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    v.add_argument("--json", action="store_true", help="print JSON instead of a table")
    v.set_defaults(func=_validate)

    c = commands.add_parser(
        "calibrate",
        help="measure the model's fit points and held-out points (about an hour; --quick: "
        "40 min)",
        description="Run the harness's calibrate profile (echo at 100, 200, 250 and 400/s, "
        "fan-out of 100, 400 and 800 subscribers at 20/s, 3 trials of 30 s each; 3 capacity "
        "trials stepping subscribers up to their knee) and its holdout profile (echo at 150 and "
        "300/s and fan-out of 300, 3 trials each judged on their median; 3 capacity trials at "
        "other steps, judged on their median knee), taking turns, on fresh servers; record the "
        "host (CPU, cores, load), then fit and validate (`capacity validate --against OUT`). "
        "The machine's other load shows in the server's run-queue wait: a fit point whose "
        "server waited for a CPU more "
        "than 10% of its window is refused.\n\nexample:\n"
        "  sobranie-bench capacity calibrate --transport ws sse",
        formatter_class=_FORMATTER,
    )
    c.add_argument("--transport", nargs="+", default=["ws", "sse"], choices=TRANSPORTS,
                   metavar="T", help="transports to measure (default: ws sse)")  # fmt: skip
    c.add_argument("--out", default="results/calibrate",
                   help="results root for the two runs (default results/calibrate)")  # fmt: skip
    c.add_argument("--quick", action="store_true",
                   help="8 s windows instead of 30 s (about 40 minutes on 2 cores instead "
                        "of an hour): more chances of a quiet machine; the record says quick")
    c.add_argument("--max-run-queue-wait", type=float, default=MAX_RUN_QUEUE_WAIT,
                   metavar="SHARE", help="refuse fit trials whose server waited for a CPU "
                   f"longer than this share of the window (default {MAX_RUN_QUEUE_WAIT:g})")  # fmt: skip
    c.add_argument("--wait-load", type=float, metavar="L",
                   help="start only once the 1-minute load average is below L (default: "
                        "start now)")  # fmt: skip
    c.add_argument("--wait-timeout", type=float, default=1800.0, metavar="S",
                   help="give up waiting after S seconds and measure anyway (default 1800)")
    c.add_argument("--retries", type=int, default=0, metavar="N",
                   help="measure again (up to N times) while a transport's fit is refused "
                        "(default 0)")  # fmt: skip
    _common(c, summary=False)
    c.set_defaults(func=_calibrate)

    g = commands.add_parser(
        "scaling",
        help="how run time grows with online users (plan + one simulated hour per fleet)",
        description="Plan and simulate the default fleets for each user count and report "
        "the wall-clock time each step took.",
        formatter_class=_FORMATTER,
    )
    g.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000],
                   help="online user counts (default 100000 1000000 10000000)")  # fmt: skip
    g.add_argument("--duration-s", type=float, default=3600.0,
                   help="simulated time per fleet in s (default 3600)")  # fmt: skip
    _common(g)
    g.set_defaults(func=_scaling)


def main(argv: list[str] | None = None) -> int:
    """Run the capacity command on its own (``python -m sobranie_bench.capacity.cli``)."""
    parser = argparse.ArgumentParser(prog="sobranie-bench")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
