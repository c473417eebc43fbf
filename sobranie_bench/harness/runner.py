"""The runner: a fresh server per run, the load in-process or in worker processes, resources
sampled throughout, one raw file per run, and the summary regenerated at the end."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from sobranie_bench import __version__, services
from sobranie_bench.clients import TRANSPORTS, base_transport
from sobranie_bench.harness import complexity, figures, results
from sobranie_bench.harness.recorder import merge
from sobranie_bench.harness.sampler import MetricsSampler, Sampler, cpu_model, raise_fd_limit
from sobranie_bench.harness.scenarios import RESOLVED_PROFILES, PartContext, Scenario
from sobranie_bench.harness.scenarios.registry import registry
from sobranie_contract import tokens

SERVER_START_SECONDS = 30.0
WORKER_GRACE_SECONDS = 120.0
"""Seconds a worker process may run past its load's planned end (drains, closes)."""
CLUSTER_KINDS = {"http", "ws", "sse", "longpoll", "elysia"}
"""Server kinds a cluster instance serves (``serve http``, or ``serve elysia`` for theirs)."""
LIBRARIES = ("aiohttp", "websockets", "aioquic", "python-socketio", "aiortc", "uvloop",
             "hdrhistogram", "psutil", "redis", "nats-py")


class HarnessError(Exception):
    """Something a person must fix before benchmarking (dead target, bad arguments)."""


SERVER_START_S = 2.2
"""Starting and stopping one fresh server, seconds: a planning figure, measured once on the
2-core machine (4 overhead points of ws and sse@elysia took 17.8 s, 6 s of it load and
about 3 s the CLI's start)."""


@dataclass(frozen=True, slots=True)
class Plan:
    profile: str = "ci"
    """ci (the smoke profile, under 5 minutes on 2 cores), standard (the committed evidence,
    at most 30 minutes: 3 trials, ladders, resolved windows), quick or full."""
    transports: tuple[str, ...] = ()
    """Transports to run (default: every registered one)."""
    scenarios: tuple[str, ...] = ()
    """Scenarios to run (default: all)."""
    only: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(scenario, transports) pairs: that scenario runs for those transports alone (the
    others' points of it are left out), e.g. a small 4g fan-out beside echo for every one."""
    target: str | None = None
    """Benchmark this running server instead of starting fresh ones."""
    out: Path = Path("results")
    """Results root: raw files go to out/runs/<run-id>/, the summary to out/summary.csv."""
    workers: int = 1
    """Harness processes sharing the load."""
    trials: int | None = None
    """Trials per point (default per profile: 1 for ci, 3 otherwise)."""
    first_trial: int = 1
    """The number of this plan's first trial (a calibration takes turns between two profiles'
    points, one trial of each at a time: each turn a plan of its own)."""
    seed: int = 1
    """Seed for schedules and payloads."""
    broker: str = "memory"
    """Broker of the servers the harness starts: memory, a URL, or a bare ``redis`` / ``nats``
    (our own, fresh per run, :mod:`sobranie_bench.services`)."""
    cluster: int = 0
    """Run against N instances behind HAProxy (fresh per run) instead of one server."""
    processes: int = 1
    """Server processes sharing one port (``serve --processes N``); a grid point's
    ``processes`` parameter overrides it. N > 1 over the memory broker uses our own Redis."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """(parameter, value) pairs set in every grid point that has that parameter; a parameter
    ``SCENARIO.NAME`` in that scenario's points only (``fanout.rate``)."""
    timing: tuple[float, float] | None = None
    """(warm-up, duration) seconds for every scenario instead of the profile's."""
    secret: str = field(default_factory=lambda: tokens.secret_from_env())
    """JWT secret shared with the server."""
    tls: bool = True
    """TCP transports over TLS 1.3 (what production pays; QUIC and DTLS always encrypt).
    False = plaintext, labelled so in every result."""
    ca: str | None = None
    """CA certificate clients trust for an https:// ``target`` (default: our local CA)."""
    server_pid: int | None = None
    """The ``target``'s process id, sampled like a server we start (psutil, schedstat);
    without it the target's CPU comes from its /metrics (``process_cpu_seconds_total``)."""
    tls_compare: bool = False
    """Run every point of a TCP transport twice, plaintext then TLS, each on a fresh server:
    the TLS cost per message and per handshake measured in one run (``tls`` is then moot)."""
    tls_compare_only: tuple[str, ...] = ()
    """With ``tls_compare``: only the points of these scenarios and transports (either kind of
    name; none of a kind = all of it) run both ways, the rest over TLS only; the run is then
    a main run whose compared points also ran plaintext (:meth:`compared`)."""
    network: str = "loopback"
    """Network profile (:mod:`sobranie_bench.netlab.profiles`): anything but loopback runs the
    server and the load in two namespaces joined by the emulated link."""
    lab: Any = None
    """The running :class:`~sobranie_bench.netlab.lab.Lab` (set by :func:`run_plan`)."""

    def scenario_names(self) -> tuple[str, ...]:
        """The scenarios asked for, or by default every one that is not named-only (those
        needing a cluster only with ``cluster`` >= 2)."""
        return self.scenarios or tuple(n for n, s in registry().items()
                                       if (self.cluster >= 2 or not s.needs_cluster)
                                       and not s.named_only)

    def command(self) -> str:
        """The ``sobranie-bench run`` line that makes this plan (defaults left out); the run's
        metadata records it, and results/README.md quotes it."""
        args = ["sobranie-bench", "run", "--profile", self.profile]
        for flag, value, default in (
                ("--transports", ",".join(self.transports), ""),
                ("--scenarios", ",".join(self.scenarios), ""),
                ("--trials", self.trials, None), ("--workers", self.workers, 1),
                ("--processes", self.processes, 1), ("--seed", self.seed, 1),
                ("--broker", self.broker, "memory"), ("--cluster", self.cluster, 0),
                ("--network", self.network, "loopback"), ("--target", self.target, None)):
            if value != default:
                args += [flag, str(value)]
        for key, value in self.overrides:
            args += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        for name, transports in self.only:
            args += ["--only", f"{name}={','.join(transports)}"]
        if self.tls_compare:
            args += ["--tls-compare"] + ([",".join(self.tls_compare_only)]
                                         if self.tls_compare_only else [])
        elif not self.tls:
            args.append("--no-tls")
        return shlex.join(args)

    @property
    def trial_count(self) -> int:
        return self.trials or (1 if self.profile == "ci" else 3)

    def points(self) -> Iterator[tuple[str, Scenario, dict[str, Any], int]]:
        scenarios = registry()
        names = self.scenario_names()
        trials = self.trial_count
        only = dict(self.only)
        for transport in self.transports or tuple(TRANSPORTS):
            for name in names:
                if scenarios[name].network and self.network == "loopback":
                    continue  # it cuts the lab's link: there is none on loopback
                if name in only and transport not in only[name]:
                    continue
                for params in self.grid(scenarios[name]):
                    for trial in range(self.first_trial, self.first_trial + trials):
                        yield transport, scenarios[name], params, trial

    def compared(self, transport: str, scenario: str) -> bool:
        """Whether this point runs plaintext and over TLS (``tls_compare``, ``_only``)."""
        if not self.tls_compare or base_transport(transport) in ALWAYS_ENCRYPTED:
            return False
        only = set(self.tls_compare_only)
        scenarios, transports = only & set(registry()), only & set(TRANSPORTS)
        return (not scenarios or scenario in scenarios) and (
            not transports or transport in transports)

    def variants(self, transport: str, scenario: str) -> tuple[Plan, ...]:
        """The plans one point runs under: itself (over TLS when ``tls_compare``: a
        transport that always encrypts, or a point ``tls_compare_only`` leaves out), or a
        plaintext and a TLS one (:meth:`compared`)."""
        if not self.tls_compare:
            return (self,)
        if not self.compared(transport, scenario):
            return (replace(self, tls=True),)
        return replace(self, tls=False), replace(self, tls=True)

    def runs(self) -> Iterator[tuple[Plan, str, Scenario, dict[str, Any], int]]:
        """Every run of the plan: each point under each of its :meth:`variants`."""
        for transport, scenario, params, trial in self.points():
            for variant in self.variants(transport, scenario.name):
                yield variant, transport, scenario, params, trial
    def planned_seconds(self) -> float:
        """The plan's duration by its declared timings: every trial of every point's
        set-up, warm-up, window and ramps, plus SERVER_START_S for its fresh server."""
        return sum(scenario.planned_seconds(self.profile, params) + SERVER_START_S
                   for _v, _t, scenario, params, _trial in self.runs())

    def grid(self, scenario: Scenario) -> list[dict[str, Any]]:
        """The profile's points with the overrides applied (points that become equal, once);
        none for a scenario without that profile (the capacity model's ``calibrate``)."""
        points: list[dict[str, Any]] = []
        for params in scenario.grid.get(self.profile, []):
            mine = ((k.removeprefix(f"{scenario.name}."), v) for k, v in self.overrides)
            point = {**params, **{k: v for k, v in mine if k in params}}
            if point not in points:
                points.append(point)
        return points


@dataclass
class Server:
    url: str
    pid: int
    process: asyncio.subprocess.Process
    client_options: dict[str, Any] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    """Every process serving (``serve --processes N``), the first being ``pid``."""

    def sampled(self) -> dict[str, int]:
        """The sampler's names for the serving processes: server, server-2, ..."""
        return {("server" if i == 0 else f"server-{i + 1}"): pid
                for i, pid in enumerate(self.pids or [self.pid])}

    async def check_alive(self, kind: str) -> None:
        """Raise HarnessError when the server exited during the run (its figures would be the
        harness timing out, not the server serving): the run is recorded as failed."""
        proc = self.process
        if proc.returncode is None:
            return
        tail = ""
        if proc.stderr is not None:
            with contextlib.suppress(TimeoutError):
                err = await asyncio.wait_for(proc.stderr.read(), 2)
                tail = " / ".join(err.decode(errors="replace").strip().splitlines()[-3:])
        raise HarnessError(f"server {kind!r} died during the run (exit code {proc.returncode})"
                           + (f": {tail}" if tail else ""))

    async def stop(self) -> None:
        proc = self.process
        if proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def spawn_server(kind: str, plan: Plan, processes: int = 1) -> Server:
    """A fresh server (``processes`` of them on one port) on an OS-chosen loopback port, ready
    when it prints its URL: ``sobranie-bench serve KIND``, or for one Elysia server Bun itself
    (what ``serve elysia`` would start, without its Python process: about 0.4 s a point)."""
    # under --network the server runs in the lab's server namespace, on the link's address
    netns = plan.lab.server_exec if plan.lab else []
    host = plan.lab.server_addr if plan.lab else "127.0.0.1"
    cwd, env, announced = None, None, {}
    if kind == "elysia" and processes == 1:
        from servers import elysia
        from servers.run import Options
        from sobranie_contract import tls

        try:
            elysia.require_bun()
        except elysia.ElysiaUnavailable as exc:
            raise HarnessError(f"server 'elysia' did not start: {exc}") from None
        opts = Options(host=host, secret=plan.secret, broker=plan.broker,
                       tls=tls.ensure(None, [host]) if plan.tls else None)
        argv, cwd, env = elysia.command(opts), elysia.HERE, elysia.environment(opts)
        announced = opts.tls_endpoints()  # what `serve` adds to the server's line
    else:
        argv = [sys.executable, "-m", "sobranie_bench.cli", "serve", kind, "--host", host,
                "--port", "0", "--json", "--broker", plan.broker, "--jwt-secret", plan.secret,
                *(["--tls"] if plan.tls else []),
                *(["--processes", str(processes)] if processes > 1 else [])]
    # Bun stops when its stdin closes (the runner gone); `serve` ignores it
    proc = await asyncio.create_subprocess_exec(
        *netns, *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), SERVER_START_SECONDS)
        info = {**json.loads(line), **announced}
    except (TimeoutError, ValueError):
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            proc.kill()
        err = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
        raise HarnessError(f"server {kind!r} did not start: {' / '.join(err[-3:])}") from None
    options = {"cert_hash": info["cert_sha256"]} if "cert_sha256" in info else {}
    if "ca" in info:
        options["ca"] = info["ca"]
    # a server that runs in a child of `serve` (Elysia) announces the pid to sample, and
    # `serve --processes N` the pids of its N processes
    pids = [int(p) for p in info.get("pids", [info.get("pid", proc.pid)])]
    return Server(info["url"], pids[0], proc, options, pids)


async def check_target(url: str) -> None:
    """A clear error for a dead or wrong ``--target``, before any load is sent."""
    if not url.startswith(("http://", "https://")):
        raise HarnessError(f"--target must be an http(s):// base URL, got {url!r}")
    health = url.replace("https://", "http://", 1).rstrip("/") + "/healthz"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                session.get(health) as resp:
            body = await resp.text()
            ok = resp.status == 200 and json.loads(body).get("status") == "ok"
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise HarnessError(f"no server answers at {url} ({exc.__class__.__name__}: {exc}); "
                           "start one with `sobranie-bench serve ws --port 8080` or check "
                           "the URL") from None
    except ValueError:
        ok = False
    if not ok:
        raise HarnessError(f"{url} answers, but GET /healthz is not the contract's "
                           '{"status":"ok"}: is it a Sobranie contract server? '
                           "(docs/benchmark-your-server.md)")


def metadata(plan: Plan, run_id: str) -> dict[str, Any]:
    versions = {}
    for lib in LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[lib] = importlib.metadata.version(lib)
    commit = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip() or None
    return {"run_id": run_id, "suite": __version__, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "libraries": versions,
            "cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
            "git_commit": commit, "profile": plan.profile, "seed": plan.seed,
            "workers": plan.workers, "broker": plan.broker, "target": plan.target,
            "cluster": plan.cluster, "tls": plan.tls, "tls_resumption": False,
            "tls_compare": list(plan.tls_compare_only) or plan.tls_compare,
            "command": plan.command(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "complexity": complexity.record(),
            "started": datetime.now(UTC).isoformat(timespec="seconds")}


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Histograms merged, counters summed, series joined, times spanned."""
    out: dict[str, Any] = {"histograms": {}, "counters": {}, "series": {}, "times": {},
                           "per_channel": {}}
    for name in {n for p in parts for n in p.get("histograms", {})}:
        out["histograms"][name] = {
            phase: merge([p["histograms"][name][phase] for p in parts
                          if name in p.get("histograms", {})]).encode().decode()
            for phase in ("warmup", "measured")}
        thirds = [p["histograms"][name]["thirds"] for p in parts
                  if "thirds" in p.get("histograms", {}).get(name, {})]
        if thirds:
            out["histograms"][name]["thirds"] = [merge([t[i] for t in thirds]).encode().decode()
                                                 for i in range(3)]
    for p in parts:
        for k, v in p.get("counters", {}).items():
            out["counters"][k] = out["counters"].get(k, 0) + v
        for k, v in p.get("series", {}).items():
            out["series"][k] = sorted(out["series"].get(k, []) + v)
        for k, v in p.get("times", {}).items():
            pick = min if k.endswith("start") else max
            out["times"][k] = pick(out["times"].get(k, v), v)
        for table, values in p.get("per_channel", {}).items():
            acc = out["per_channel"].setdefault(table, {})
            for ch, n in values.items():  # acks come from the one publishing part: sums too
                acc[ch] = acc.get(ch, 0) + n
        for key in ("steps", "info"):  # descriptive, from the one part that has them
            if key in p:
                out[key] = p[key]
    return out


async def run_parts(scenario: Scenario, ctx: PartContext, workers: int,
                    sampler: Sampler, lab: Any = None) -> list[dict[str, Any]]:
    """The load: in this process, or split across ``workers`` worker processes. Under a
    running ``lab`` the load runs in its client namespace: one part in a thread of this
    process inside it (no worker process to start per point), several parts in worker
    processes started there."""
    if workers <= 1 or not scenario.workers:
        if lab is None:
            return [await scenario.part(ctx)]
        return [await asyncio.to_thread(part_in_netns, scenario, ctx, lab.client_ns)]
    procs = []
    for i in range(workers):
        spec = json.dumps({"scenario": scenario.name,
                           "ctx": {**asdict(ctx), "index": i, "count": workers}})
        proc = await asyncio.create_subprocess_exec(
            *(lab.client_exec if lab else []), sys.executable, "-m",
            "sobranie_bench.harness.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=RESULT_LINE_BYTES)
        assert proc.stdin is not None
        proc.stdin.write(spec.encode() + b"\n")  # stdin stays open: barriers come that way
        sampler.add(f"worker-{i + 1}", proc.pid)
        procs.append(proc)
    # a worker that outlives its load by this much is stuck (a hung connection): the point fails
    budget = max(0.0, (ctx.end_ns - time.monotonic_ns()) / 1e9) + WORKER_GRACE_SECONDS
    if scenario.longest is not None:
        budget = max(budget, scenario.longest(ctx.params, ctx.timeout) + WORKER_GRACE_SECONDS)
    try:
        outs = await asyncio.wait_for(Barriers(procs).results(), budget)
    except TimeoutError:
        for p in procs:
            if p.returncode is None:
                p.kill()
        raise HarnessError(f"a worker of {scenario.name} did not finish within {budget:.0f} s "
                           "of its load's start (stuck)") from None
    if any(p.returncode for p in procs):
        raise HarnessError(f"a worker of {scenario.name} failed (exit codes "
                           f"{[p.returncode for p in procs]})")
    return [json.loads(out) for out in outs]


def part_in_netns(scenario: Scenario, ctx: PartContext, netns: str) -> dict[str, Any]:
    """One part on an event loop of its own in this thread, moved into network namespace
    ``netns`` for it (every socket it opens is there), then what it shared closed, as a
    worker process does after its part (its loop ends with it)."""
    from sobranie_bench.netlab.link import in_netns

    async def part() -> dict[str, Any]:
        try:
            return await scenario.part(ctx)
        finally:
            if scenario.teardown is not None:
                await scenario.teardown()

    with in_netns(netns):
        return asyncio.run(part())


RESULT_LINE_BYTES = 1 << 30
"""Longest line read from a worker (its result is one JSON line: series of 100k times)."""
BARRIER_MARGIN_S = 0.05
"""Seconds between the runner's go and the instant every worker goes on (the go must reach
them all first)."""


class Barriers:
    """The runner's side of :meth:`PartContext.together`: a worker's ``{"barrier": name}``
    line waits until every worker still running has sent it; then each gets the same instant,
    ``{"barrier": name, "at_ns": t}``. A worker that ends (or dies) no longer counts."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs
        self.running = set(range(len(procs)))
        self.waiting: dict[str, set[int]] = {}

    async def results(self) -> list[bytes]:
        return list(await asyncio.gather(*(self._follow(i) for i in range(len(self.procs)))))

    async def _follow(self, i: int) -> bytes:
        proc = self.procs[i]
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                if line.startswith(b'{"barrier"'):
                    self.waiting.setdefault(json.loads(line)["barrier"], set()).add(i)
                    self._release()
                    continue
                return line  # the result: the last line
            return b"null"
        finally:
            self.running.discard(i)
            self._release()
            if proc.stdin is not None:
                proc.stdin.close()
            await proc.wait()

    def _release(self) -> None:
        for name, arrived in list(self.waiting.items()):
            if self.running <= arrived:
                del self.waiting[name]
                go = json.dumps({"barrier": name, "at_ns": time.monotonic_ns()
                                 + int(BARRIER_MARGIN_S * 1e9)}).encode() + b"\n"
                for j in arrived & self.running:
                    stdin = self.procs[j].stdin
                    if stdin is not None and not stdin.is_closing():
                        stdin.write(go)


@contextlib.asynccontextmanager
async def server_for(plan: Plan, transport: str,
                     processes: int = 1) -> AsyncIterator[dict[str, Any]]:
    """What a run talks to: the --target, a fresh cluster, or a fresh server; yields the base
    URL (``url``), client ``options`` it announced, a cluster's ``instances`` and
    ``instance_pids``, and the pids to sample (``server``, ``server-2``..., ``broker``)."""
    if plan.target:
        yield {"url": plan.target, "options": {"ca": plan.ca} if plan.ca else {},
               **({"server": plan.server_pid} if plan.server_pid else {})}
    elif plan.cluster:
        from sobranie_bench.cluster import Cluster

        if TRANSPORTS[transport].server not in CLUSTER_KINDS:
            raise HarnessError(f"{transport} cannot run in a cluster (the cluster's instances "
                               f"serve {', '.join(sorted(CLUSTER_KINDS - {'http', 'elysia'}))}"
                               " and their @elysia forms)")
        kind = "elysia" if TRANSPORTS[transport].server == "elysia" else "http"
        async with Cluster(plan.cluster, plan.broker, kind=kind, secret=plan.secret) as cluster:
            pids = {("server" if i == 0 else f"server-{i + 1}"): inst.pid
                    for i, inst in enumerate(cluster.instances)}
            sampled = {"broker": cluster.broker_pid} if cluster.broker_pid else {}
            yield {"url": cluster.lb_url, **pids, **sampled,
                   "instances": tuple(i.url for i in cluster.instances),
                   "instance_pids": tuple(i.pid for i in cluster.instances)}
    else:
        shared = "redis" if processes > 1 and plan.broker == "memory" else plan.broker
        async with services.broker(shared) as broker:
            server = await spawn_server(TRANSPORTS[transport].server, replace(plan, broker=broker),
                                        processes)
            await servers_stopped()
            try:
                yield {"url": server.url, **server.sampled(), "options": server.client_options}
                await server.check_alive(TRANSPORTS[transport].server)
            finally:
                if broker == shared == "memory":  # nothing of its own to stop after it
                    stop_later(server)
                else:
                    await server.stop()


_STOPPING: set[asyncio.Task[None]] = set()
"""Servers signalled to stop whose exit is still awaited (:func:`stop_later`)."""


def stop_later(server: Server) -> None:
    """Stop ``server`` in the background: it exits while the next point's server starts
    (0.05-0.2 s a point), and :func:`servers_stopped` waits for it before that point's load,
    so no stopping server shares a measured window."""
    task = asyncio.ensure_future(server.stop())
    _STOPPING.add(task)
    task.add_done_callback(_STOPPING.discard)


async def servers_stopped() -> None:
    """Every server :func:`stop_later` was given has exited (a stop's own failure is not the
    next point's)."""
    await asyncio.gather(*_STOPPING, return_exceptions=True)


async def run_one(plan: Plan, run_id: str, meta: dict[str, Any], transport: str,
                  scenario: Scenario, params: dict[str, Any], trial: int) -> dict[str, Any]:
    processes = int(params.get("processes", plan.processes))
    workers = int(params.get("workers", plan.workers))
    async with server_for(plan, transport, processes) as target:
        warmup, duration = plan.timing or scenario.window(plan.profile, params)
        start_ns = time.monotonic_ns() + int(scenario.setup_budget(params) * 1e9)
        ctx = PartContext(transport=transport, url=str(target.pop("url")), params=params,
                          index=0, count=1, seed=plan.seed * 1000 + trial, start_ns=start_ns,
                          warmup=warmup, duration=duration, secret=plan.secret,
                          client_options=target.pop("options", {}),
                          instances=target.pop("instances", ()),
                          instance_pids=target.pop("instance_pids", ()))
        pids = {"harness": os.getpid(), **{k: int(v) for k, v in target.items()}}
        remote = target_metrics(plan, pids)
        async with Sampler(pids) as sampler, remote or contextlib.nullcontext():
            parts = await run_parts(scenario, ctx, workers, sampler, plan.lab)
    merged = merge_parts(parts)
    if scenario.combine is not None:
        merged["counters"].update(scenario.combine(merged))
    resources = sampler.as_dict()
    if remote is not None and remote.samples:
        resources["server"] = remote.as_list()
    raw = {**identity(plan, meta, transport, scenario, params, trial),
           "parts": len(parts), "processes": processes, "tls": encrypted(ctx.url, transport),
           "window": window(ctx, merged["times"]),
           "timing": {"warmup": ctx.warmup, "duration": ctx.duration},
           "resources": resources, "machine": sampler.machine_dict(),
           **({"server_cpu_source": "metrics"} if "server" in resources and remote else {}),
           **merged}
    results.write_raw(plan.out / "runs" / run_id, raw)
    return raw


def identity(plan: Plan, meta: dict[str, Any], transport: str, scenario: Scenario,
             params: dict[str, Any], trial: int) -> dict[str, Any]:
    """The fields that say which run a raw file is (a measured or a failed one)."""
    return {"version": results.RAW_VERSION, "metadata": meta, "transport": transport,
            "scenario": scenario.name, "params": params, "trial": trial,
            "profile": plan.profile, "network": plan.network,
            "tls": plan.tls or base_transport(transport) in ALWAYS_ENCRYPTED,
            **({"tls_compared": True} if plan.compared(transport, scenario.name) else {})}


def target_metrics(plan: Plan, pids: dict[str, int]) -> MetricsSampler | None:
    """For a ``--target`` without ``--server-pid``: its CPU and RSS from its /metrics."""
    if not plan.target or "server" in pids:
        return None
    context = None
    if plan.target.startswith("https://") and plan.ca:
        import ssl

        context = ssl.create_default_context(cafile=plan.ca)
    return MetricsSampler(plan.target, context)


ALWAYS_ENCRYPTED = {"webtransport", "webrtc"}
"""Transports that encrypt whatever the plan says (QUIC, DTLS)."""


def encrypted(url: str, transport: str) -> bool:
    """Whether a run's traffic was encrypted: https:// (TLS over TCP) or QUIC / DTLS."""
    return url.startswith("https://") or transport in ALWAYS_ENCRYPTED


def window(ctx: PartContext, times: dict[str, float]) -> dict[str, float]:
    """Monotonic seconds: load start, measurement start (later than planned when set-up
    overran its budget), and the end of the measured window (the last measured reply if the
    server fell behind the schedule; the load's end when the scenario has no timed window)."""
    start = times.get("load_start", ctx.start_ns / 1e9)
    measure = times.get("measure_start", ctx.measure_ns / 1e9)
    end = measure + ctx.duration if ctx.duration else times.get("load_end", ctx.end_ns / 1e9)
    return {"start": start, "measure": measure, "end": max(end, times.get("last_rx", 0.0))}


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


async def run_plan(plan: Plan, on_result: Callable[[str, dict[str, Any] | None], None]
                   = lambda label, raw: None) -> Path:
    """Run every point of the plan; returns the run directory. ``on_result`` is called before
    (raw None) and after each run, for progress display (a point :class:`Ladders` skips: once,
    with a raw that holds only its identity and ``skipped``, the reason; no file is written)."""
    unknown = set(plan.transports) - set(TRANSPORTS)
    if unknown:
        raise HarnessError(f"unknown transport(s) {sorted(unknown)}; known: {sorted(TRANSPORTS)}")
    unknown = set(plan.scenarios) - set(registry())
    if unknown:
        raise HarnessError(f"unknown scenario(s) {sorted(unknown)}; known: {sorted(registry())}")
    for name, transports in plan.only:
        if name not in registry() or not set(transports) <= set(TRANSPORTS):
            raise HarnessError(f"--only {name}={','.join(transports)}: expected a scenario "
                               f"and known transports (scenarios: "
                               f"{', '.join(sorted(registry()))})")
    unknown = set(plan.tls_compare_only) - set(registry()) - set(TRANSPORTS)
    if unknown:
        raise HarnessError(f"--tls-compare {','.join(sorted(unknown))}: neither a scenario nor "
                           f"a transport (scenarios: {', '.join(sorted(registry()))})")
    lonely = [n for n in plan.scenarios if registry()[n].needs_cluster and plan.cluster < 2]
    if lonely:
        raise HarnessError(f"{', '.join(lonely)} needs a cluster: add --cluster 2 (or more) "
                           "and a shared --broker (redis or nats)")
    if plan.tls_compare and (plan.target or plan.cluster):
        raise HarnessError("--tls-compare runs servers the harness starts, one per point and "
                           "mode: not with --target or --cluster")
    if plan.target:
        await check_target(plan.target)
    if plan.server_pid is not None and not psutil.pid_exists(plan.server_pid):
        raise HarnessError(f"--server-pid {plan.server_pid}: no such process")
    with network_lab(plan) as lab:
        return await _run_points(replace(plan, lab=lab), on_result)


@contextlib.contextmanager
def network_lab(plan: Plan) -> Iterator[Any]:
    """The plan's emulated network, verified (None for loopback; a link out of its profile's
    bounds flags the run's figures noisy); HarnessError if it cannot run."""
    from sobranie_bench.netlab import lab, profiles

    try:
        profile = profiles.get(plan.network)
    except ValueError as exc:
        raise HarnessError(str(exc)) from None
    if not profile.emulated:
        yield None
        return
    if plan.target or plan.cluster or plan.broker != "memory":
        raise HarnessError("--network runs a fresh server with the memory broker inside the "
                           "lab; it cannot be combined with --target, --cluster or --broker")
    try:
        with lab.Lab(profile, seed=plan.seed) as running:
            yield running
    except lab.LabError as exc:
        raise HarnessError(str(exc)) from None


async def _run_points(plan: Plan, on_result: Callable[[str, dict[str, Any] | None], None]
                      ) -> Path:
    raise_fd_limit()
    preflight(plan)
    run_id = new_run_id()
    meta = metadata(plan, run_id)
    meta["network"] = plan.lab.metadata() if plan.lab else {"profile": {"name": "loopback"}}
    run_dir = plan.out / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1))
    climbing = Ladders(plan)
    try:
        for variant, transport, scenario, params, trial in plan.runs():
            label = f"{transport} {scenario.name} {results.params_key(params)} #{trial}"
            if plan.tls_compare:
                label += " tls" if variant.tls else " plaintext"
            why = climbing.skip(variant, transport, scenario, params)
            if why:
                on_result(label, {**identity(variant, meta, transport, scenario, params, trial),
                                  "skipped": why})
                continue
            on_result(label, None)
            try:
                raw = await run_one(variant, run_id, meta, transport, scenario, params, trial)
            except Exception as exc:  # noqa: BLE001 - one failed run must not end the matrix
                raw = {**identity(variant, meta, transport, scenario, params, trial),
                       "error": f"{type(exc).__name__}: {exc}"}
                results.write_raw(run_dir, raw)
            climbing.record(variant, transport, scenario, params, raw)
            on_result(label, raw)
    finally:  # what the points shared (browsers) is closed, whatever happened
        await servers_stopped()
        for scenario in {s.name: s for _, s, _, _ in plan.points()}.values():
            if scenario.teardown is not None:
                await scenario.teardown()
    figures.write_summary(plan.out / "runs", plan.out / "summary.csv")
    return run_dir


class Ladders:
    """A ladder climbs until the server gives out, not further: in the profiles that climb
    (RESOLVED_PROFILES), once a rung of a scenario's ``ladder`` fell short of its offered rate
    (``results.short_of_offered``) in most of its trials, the transport's higher rungs (the
    other parameters equal) are skipped. Latency rising through a window alone (the other half
    of ``saturated``) does not stop it: a few ms of jitter can double a sub-ms p50."""

    def __init__(self, plan: Plan) -> None:
        self.on = plan.profile in RESOLVED_PROFILES
        self.trials = plan.trial_count
        self.saturated: dict[tuple[Any, ...], int] = {}
        self.broken: dict[tuple[Any, ...], float] = {}

    @staticmethod
    def _key(plan: Plan, transport: str, scenario: Scenario, params: dict[str, Any]
             ) -> tuple[Any, ...]:
        rest = sorted((k, str(v)) for k, v in params.items() if k != scenario.ladder)
        return transport, scenario.name, plan.tls, tuple(rest)

    def skip(self, plan: Plan, transport: str, scenario: Scenario, params: dict[str, Any]
             ) -> str | None:
        """Why this point is not run (None: run it)."""
        if not self.on or scenario.ladder is None:
            return None
        below = self.broken.get(self._key(plan, transport, scenario, params))
        if below is None or float(params[scenario.ladder]) <= below:
            return None
        return (f"skipped: {scenario.ladder}={below:g} fell short of its offered rate in most "
                "of its trials (the ladder stops where the server gave out)")

    def record(self, plan: Plan, transport: str, scenario: Scenario, params: dict[str, Any],
               raw: dict[str, Any]) -> None:
        if not self.on or scenario.ladder is None or "error" in raw or not (
                results.short_of_offered(results.achieved_share(raw))):
            return
        key = self._key(plan, transport, scenario, params)
        rung = (*key, params[scenario.ladder])
        self.saturated[rung] = self.saturated.get(rung, 0) + 1
        if self.saturated[rung] * 2 > self.trials:
            value = float(params[scenario.ladder])
            self.broken[key] = min(value, self.broken.get(key, value))


def preflight(plan: Plan) -> None:
    """Refuse, before anything starts, a plan whose points this machine cannot run (open
    files, ephemeral ports, backlog): one line naming the limit and the fix."""
    for transport, scenario, params, _ in plan.points():
        if scenario.preflight is None:
            continue
        why = scenario.preflight(params, workers=plan.workers,
                                 processes=None if plan.target or plan.cluster
                                 else plan.processes,
                                 url=plan.target or "http://127.0.0.1")
        if why:
            raise HarnessError(f"{scenario.name} {results.params_key(params)} ({transport}): "
                               f"{why}")


def count_points(plan: Plan) -> int:
    return sum(1 for _ in plan.runs())

