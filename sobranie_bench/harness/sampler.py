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

__all__ = ["Sample", "Sampler", "cpu_model", "raise_fd_limit", "read", "schedstat"]

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


def ours_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds used so far by this process, every descendant of it (servers, workers,
    the Redis, NATS and HAProxy we started) and ``pids`` (a ``--server-pid``), each once."""
    me = psutil.Process()
    procs = {me.pid: me}
    with contextlib.suppress(psutil.Error):
        procs.update((p.pid, p) for p in me.children(recursive=True))
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.setdefault(pid, psutil.Process(pid))
    total = 0.0
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            total += read(proc)[0]
    return total


class Sampler:
    """Samples processes every INTERVAL_SECONDS in the background (``async with``)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.samples: dict[str, list[Sample]] = {name: [] for name in pids}
        self.machine: list[list[float]] = []
        """[t, busy CPU seconds of the whole machine, CPU seconds of our processes]."""
        self._task: asyncio.Task[None] | None = None

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
            ours = ours_cpu_s(p.pid for p in self.procs.values())
            self.machine.append([round(now, 4), round(busy, 3), round(ours, 4)])
        return out

    async def _loop(self) -> None:
        while True:
            self.mark()
            await asyncio.sleep(INTERVAL_SECONDS)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        self.mark()

    def add(self, name: str, pid: int) -> None:
        self.procs[name] = psutil.Process(pid)
        self.samples.setdefault(name, [])

    def machine_dict(self) -> dict[str, Any]:
        """The machine's samples and its core count (raw files' ``machine``)."""
        return {"cores": os.cpu_count() or 1, "samples": self.machine}

    def as_dict(self) -> dict[str, list[list[float]]]:
        return {name: [s.as_list() for s in samples] for name, samples in self.samples.items()}


class MetricsSampler:
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
        self._task: asyncio.Task[None] | None = None

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

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def as_list(self) -> list[list[float]]:
        return [s.as_list() for s in self.samples]


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return os.uname().machine
