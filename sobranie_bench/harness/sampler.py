"""Resource sampling with psutil: CPU and RSS of the server and of each harness process, and
the scheduler's own accounting (``/proc/PID/task/*/schedstat``: nanoseconds on a CPU and
waiting for one) where Linux has it; and the machine as a whole (``/proc/stat``) beside what
our own processes used, so that other processes' share of the cores (``noisy``) is known."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

import psutil

from servers.run import raise_fd_limit

__all__ = ["OurProcesses", "Sample", "Sampler", "cpu_model", "proc_table", "raise_fd_limit",
           "read", "schedstat", "tree"]

INTERVAL_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    """``time.monotonic()`` when taken (one clock for every process on the host)."""
    cpu_s: float
    """User + system CPU seconds the process has used so far (children included)."""
    rss: int
    """Resident set size, bytes."""
    run_ns: int | None = None
    """Nanoseconds the process's threads have run on a CPU (schedstat), None off Linux."""
    wait_ns: int | None = None
    """Nanoseconds its threads have waited in a run queue for a CPU (schedstat)."""

    def as_list(self) -> list[float]:
        row = [round(self.t, 4), round(self.cpu_s, 4), self.rss]
        return row if self.run_ns is None else [*row, self.run_ns, self.wait_ns or 0]


def read(proc: psutil.Process) -> tuple[float, int]:
    cpu = proc.cpu_times()
    return cpu.user + cpu.system + cpu.children_user + cpu.children_system, proc.memory_info().rss


def schedstat(pid: int) -> tuple[int, int] | None:
    """(run ns, run-queue wait ns) summed over the process's threads, or None without
    ``/proc/PID/task/*/schedstat`` (not Linux, or no schedstats in this kernel)."""
    run = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        with contextlib.suppress(OSError, ValueError), \
                open(f"/proc/{pid}/task/{task}/schedstat") as f:
            fields = f.read().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
    return run, wait


def machine_busy_s() -> float | None:
    """CPU seconds every core together has been busy since boot (``/proc/stat``: user, nice,
    system, irq, softirq, steal; not idle or iowait), None off Linux."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, f.readline().split()[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return None


@dataclass(frozen=True, slots=True)
class ProcStat:
    """One process as ``/proc/PID/stat`` shows it."""

    ppid: int
    """Its parent now (1, or a subreaper, once its parent has exited)."""
    sid: int
    """Its session (a process that called ``setsid`` leads one: sid == pid)."""
    start: int
    """Clock ticks after boot when it started: with the pid, one process (pids are reused)."""
    user_s: float
    """User CPU seconds, its own and its reaped children's."""
    system_s: float
    """System CPU seconds, its own and its reaped children's."""

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds, its own and its reaped children's."""
        return self.user_s + self.system_s


def proc_table() -> dict[int, ProcStat]:
    """Every process of the machine by pid (empty without ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, ProcStat] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:  # os.read, not open(): a few hundred processes four times a second
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                data = os.read(fd, 4096)
            finally:
                os.close(fd)
            # after "comm) " come fields 3 (state) on: ppid is field 4, session 6, utime,
            # stime, cutime, cstime 14-17, starttime 22 (proc(5))
            rest = data[data.rindex(b")") + 2:].split(None, 20)
            utime, stime, cutime, cstime = map(int, rest[11:15])
            table[int(name)] = ProcStat(int(rest[1]), int(rest[3]), int(rest[19]),
                                        (utime + cutime) / tick, (stime + cstime) / tick)
        except (OSError, ValueError, IndexError):  # it ended meanwhile
            continue
    return table


def tree(table: dict[int, ProcStat], roots: Iterable[int]) -> set[int]:
    """The ``roots`` still in ``table`` (:func:`proc_table`), every descendant of them and
    every member of a session that one of them leads (a process started with ``setsid`` whose
    helpers are forked twice and re-parented away from the tree keeps its session)."""
    children: dict[int, list[int]] = {}
    members: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st.ppid, []).append(pid)
        members.setdefault(st.sid, []).append(pid)
    todo = [pid for pid in roots if pid in table]
    found: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo += children.get(pid, [])
        if table[pid].sid == pid:
            todo += members.get(pid, [])
    return found


class OurProcesses:
    """The processes a run is charged for, and the CPU seconds they have used.

    Ours: the given roots (the harness, a ``--server-pid``), every descendant of them (servers,
    workers, the Redis, NATS and HAProxy we started), every member of a session that one of ours
    leads, and every process once seen as ours for as long as it lives. The last two catch what
    a tree walk misses: a browser (Playwright and puppeteer start it in a session of its own)
    whose zygote, renderer and crash handler are forked twice and re-parented to init or a
    subreaper, away from our tree, yet keep the browser's session. A process that is not ours
    and was not started in one of our sessions (a busy loop of someone else's) never is.

    CPU seconds only grow: a process that has gone keeps what it used when its parent was not
    ours (a re-parented helper, reaped by init); when its parent is ours, the parent's reaped
    children's time holds it already. What a process used after the last sample before it
    ended (under INTERVAL_SECONDS) is lost, like a process that lived and ended between two
    samples without a parent of ours.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[int, int], tuple[int, float]] = {}
        """(pid, start) of each process of ours at the last sample -> (ppid, CPU seconds)."""
        self._gone_s = 0.0
        """CPU seconds of processes of ours that have gone, not held by a parent of ours."""
        self.pids: set[int] = set()
        """The processes of ours at the last sample."""

    def cpu_s(self, roots: Iterable[int]) -> float:
        """CPU seconds every process of ours has used so far (each process once)."""
        table = proc_table()
        seen = [pid for pid, start in self._seen if pid in table and table[pid].start == start]
        ours = tree(table, [*roots, *seen])
        now = {(pid, table[pid].start): (table[pid].ppid, table[pid].cpu_s) for pid in ours}
        self._gone_s += sum(cpu for key, (ppid, cpu) in self._seen.items()
                            if key not in now and ppid not in ours)
        self._seen, self.pids = now, ours
        return self._gone_s + sum(cpu for _ppid, cpu in now.values())


class Background:
    """Runs ``_loop`` in the background while inside ``async with`` (cancelled on exit)."""

    _task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.wait({self._task})  # its end (a cancel of ours still reaches us)
            if not self._task.cancelled():
                self._task.result()  # a loop that failed (not one that ended) says why


class Sampler(Background):
    """Samples processes every INTERVAL_SECONDS in the background (``async with``), and once
    more on the way out."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.samples: dict[str, list[Sample]] = {name: [] for name in pids}
        self.machine: list[list[float]] = []
        """[t, busy CPU seconds of the whole machine, CPU seconds of our processes]."""
        self.ours = OurProcesses()
        """Which processes are ours (what ``noisy`` leaves out)."""

    def mark(self) -> dict[str, Sample]:
        """Take one sample of every process now (also recorded)."""
        now = time.monotonic()
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                cpu, rss = read(proc)
                run_wait = schedstat(proc.pid)
                out[name] = Sample(now, cpu, rss, *(run_wait or (None, None)))
                self.samples[name].append(out[name])
        busy = machine_busy_s()
        if busy is not None:
            ours = self.ours.cpu_s([os.getpid(), *(p.pid for p in self.procs.values())])
            self.machine.append([round(now, 4), round(busy, 3), round(ours, 4)])
        return out

    async def _loop(self) -> None:
        while True:
            self.mark()
            await asyncio.sleep(INTERVAL_SECONDS)

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        self.mark()

    def add(self, name: str, pid: int) -> None:
        self.procs[name] = psutil.Process(pid)
        self.samples.setdefault(name, [])

    def machine_dict(self) -> dict[str, Any]:
        """The machine's samples and its core count (raw files' ``machine``)."""
        return {"cores": os.cpu_count() or 1, "samples": self.machine}

    def as_dict(self) -> dict[str, list[list[float]]]:
        return {name: [s.as_list() for s in samples] for name, samples in self.samples.items()}


class MetricsSampler(Background):
    """A ``--target``'s CPU and RSS from its ``/metrics`` every INTERVAL_SECONDS: Prometheus'
    standard ``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` (``async
    with``). Samples nothing when the target does not expose them."""

    def __init__(self, base_url: str, ssl_context: Any = None) -> None:
        self.url = base_url.rstrip("/") + "/metrics"
        self.urls = [self.url]
        if self.url.startswith("https://"):  # WebTransport: QUIC on the port, plain HTTP on TCP
            self.urls.append(self.url.replace("https://", "http://", 1))
        self.ssl = ssl_context
        self.samples: list[Sample] = []

    @staticmethod
    def parse(text: str) -> tuple[float, int] | None:
        """(CPU seconds, RSS bytes) from Prometheus text, None without the CPU line."""
        values: dict[str, float] = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
                with contextlib.suppress(ValueError):
                    values[name] = float(value.split()[0])
        if "process_cpu_seconds_total" not in values:
            return None
        return values["process_cpu_seconds_total"], int(
            values.get("process_resident_memory_bytes", 0))

    async def _loop(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    async with session.get(self.url, ssl=self.ssl) as resp:
                        found = self.parse(await resp.text()) if resp.status == 200 else None
                except (aiohttp.ClientError, OSError, TimeoutError):
                    found = None
                if found is None and not self.samples:
                    self.urls.remove(self.url)
                    if not self.urls:
                        return  # no standard process lines: no server CPU for this target
                    self.url = self.urls[0]
                    continue
                if found is not None:
                    self.samples.append(Sample(time.monotonic(), *found))
                await asyncio.sleep(INTERVAL_SECONDS)

    def as_list(self) -> list[list[float]]:
        return [s.as_list() for s in self.samples]


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return os.uname().machine
