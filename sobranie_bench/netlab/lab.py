"""The lab: two network namespaces (server side, client side) joined by the link process of
:mod:`.link`, verified with :mod:`.probe` before any load, and torn down on exit, Ctrl-C or a
crash. Names carry the owner's pid (``sbl<pid>s`` / ``sbl<pid>c``) so that the next lab
removes what a killed run left (:func:`cleanup_stale`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, replace
from typing import Any, Self, TypeVar

from sobranie_bench.netlab.link import in_netns
from sobranie_bench.netlab.profiles import Profile

PREFIX = "sbl"
DEV = "sbl0"
SERVER_ADDR = "10.77.0.1"
CLIENT_ADDR = "10.77.0.2"
PROBE_PORT = 9
VERIFY_ATTEMPTS = 3
"""Probes before a link still out of its profile's bounds is run anyway, its figures flagged
``noisy`` (a busy machine delays the packets the link carries: a measured fact, not a crash)."""
LINK_ENV = "SOBRANIE_NETLAB_LINK"
"""Environment variable with the running link's pid (its ``SIGUSR1`` / ``SIGUSR2`` cut it and
bring it back): the harness's worker processes inherit it."""
SERVER_NS_ENV = "SOBRANIE_NETLAB_SERVER_NS"
"""Environment variable with the running lab's server namespace (:func:`beside_server`)."""
T = TypeVar("T")
_NAME = re.compile(rf"^{PREFIX}(\d+)[sc]$")


class LabError(Exception):
    """The lab cannot run (no root, missing tool) or its link is not the profile."""


def _ip(*args: str, check: bool = True) -> str:
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                              check=False)
    except FileNotFoundError:
        raise LabError("the network lab needs `ip` (Debian package iproute2)") from None
    if check and proc.returncode:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("--network needs root (network namespaces and TUN devices); "
                       "run as root or use --network loopback")


def namespaces() -> list[str]:
    """Every namespace a lab made (ours or a dead run's)."""
    names = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    return [n for n in names if _NAME.match(n)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(ns: str) -> None:
    """Kill every process inside ``ns``, then delete it (its devices go with it)."""
    for pid in _ip("netns", "pids", ns, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", ns, check=False)


def cleanup_stale() -> list[str]:
    """Remove the namespaces (and their processes) of labs whose owner is dead."""
    stale = [ns for ns in namespaces()
             if not _pid_alive(int(_NAME.match(ns).group(1)))]  # type: ignore[union-attr]
    for ns in stale:
        _remove(ns)
    return stale


@dataclass(frozen=True, slots=True)
class Bounds:
    """How far the probe may stray from the profile before the run is refused."""

    rtt_ms: float
    """Allowed distance of the median RTT from rtt + jitter (the median of two uniform
    one-way jitters is the jitter)."""
    loss: float
    """Allowed distance of each direction's measured loss from the profile's."""

    @staticmethod
    def of(profile: Profile, pings: int) -> Bounds:
        # 4 standard deviations of a loss count over `pings` samples, bursts counted once
        spread = (profile.loss * (1 - profile.loss) * profile.burst / pings) ** 0.5
        return Bounds(rtt_ms=2.0 + 0.05 * profile.rtt_ms + profile.jitter_ms / 2,
                      loss=4 * spread + 0.005)


RATE_CHECKED_MBIT = 50.0
"""Rates up to this are checked (0.6x-1.15x); faster ones are recorded only (the probe and the
user-space link are the limit there, not the profile)."""


def check(profile: Profile, measured: dict[str, Any]) -> list[str]:
    """What is out of bounds (empty = the link is the profile)."""
    b = Bounds.of(profile, int(measured["pings"]))
    problems = []
    want = profile.rtt_ms + profile.jitter_ms
    got = measured["rtt_ms_p50"]
    if got is None or abs(got - want) > b.rtt_ms:
        problems.append(f"RTT p50 {got if got is None else round(got, 1)} ms, want "
                        f"{want:.1f} ± {b.rtt_ms:.1f}")
    for way in ("up", "down"):
        loss = measured[f"loss_{way}"]
        if abs(loss - profile.loss) > b.loss:
            problems.append(f"loss {way} {loss:.2%}, want {profile.loss:.2%} ± {b.loss:.2%}")
        nominal = getattr(profile, f"{way}_mbit")
        rate = measured[f"{way}_mbit"]
        if 0 < nominal <= RATE_CHECKED_MBIT and not 0.6 * nominal <= rate <= 1.15 * nominal:
            problems.append(f"rate {way} {rate:.2f} Mbit/s, want {nominal:g}")
    return problems


class Lab:
    """``with Lab(profile) as lab:`` the server side runs under ``lab.server_exec``, the
    client side under ``lab.client_exec``; the server listens on ``lab.server_addr``."""

    server_addr = SERVER_ADDR
    client_addr = CLIENT_ADDR

    def __init__(self, profile: Profile, seed: int = 1, pings: int = 1000,
                 verify: bool = True) -> None:
        self.profile = profile
        self.seed = seed
        self.pings = pings
        self.verify = verify
        self.server_ns = f"{PREFIX}{os.getpid()}s"
        self.client_ns = f"{PREFIX}{os.getpid()}c"
        self.link: subprocess.Popen[str] | None = None
        self.measured: dict[str, Any] = {}
        self.off_profile: list[str] = []
        """What the last probe found out of bounds (empty: the link is the profile)."""

    @property
    def server_exec(self) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns]

    @property
    def client_exec(self) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns]

    def __enter__(self) -> Self:
        require_root()
        cleanup_stale()
        try:
            self._start()
            if self.verify:
                self._verify()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _verify(self) -> None:
        """Probe until the link is the profile, VERIFY_ATTEMPTS at most; a link that carries
        nothing is refused (LabError), one still out of bounds is kept in ``off_profile``."""
        for _ in range(VERIFY_ATTEMPTS):
            self.measured = self.probe(self.pings)
            if self.measured["rtt_ms_p50"] is None:
                raise LabError(f"the emulated link {self.profile.name!r} carried no ping back")
            self.off_profile = check(self.profile, self.measured)
            if not self.off_profile:
                return
        print(f"warning: the emulated link is not quite profile {self.profile.name!r} "
              f"({'; '.join(self.off_profile)}): the machine is busy; every figure of this "
              "run is flagged noisy", file=sys.stderr)

    def _start(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            if ns in namespaces():
                _remove(ns)
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        spec = {**asdict(self.profile), "server_ns": self.server_ns,
                "client_ns": self.client_ns, "dev": DEV, "seed": self.seed,
                "parent": os.getpid()}
        self.link = subprocess.Popen([sys.executable, "-m", "sobranie_bench.netlab.link",
                                      json.dumps(spec)], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.link.stdout is not None
        os.environ[LINK_ENV] = str(self.link.pid)  # for the harness's workers (reconnect)
        os.environ[SERVER_NS_ENV] = self.server_ns  # for their publishers beside the server
        line = self.link.stdout.readline().strip()
        if line != "ready":
            raise LabError(f"the link process did not start (exit {self.link.poll()})")
        for ns, addr in ((self.server_ns, SERVER_ADDR), (self.client_ns, CLIENT_ADDR)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", DEV)
            _ip("-n", ns, "link", "set", DEV, "up")

    def probe(self, pings: int = 1000) -> dict[str, Any]:
        """Measure the link end to end with the UDP probe."""
        server = subprocess.Popen([*self.server_exec, sys.executable, "-m",
                                   "sobranie_bench.netlab.probe", "serve", str(PROBE_PORT)])
        try:
            time.sleep(0.3)
            out = subprocess.run([*self.client_exec, sys.executable, "-m",
                                  "sobranie_bench.netlab.probe", "measure", SERVER_ADDR,
                                  str(PROBE_PORT), str(pings)], capture_output=True, text=True,
                                 timeout=120, check=False)
        finally:
            server.kill()
            server.wait()
        if out.returncode:
            raise LabError(f"the link probe failed: {out.stderr.strip().splitlines()[-1:]}")
        return dict(json.loads(out.stdout))

    def metadata(self) -> dict[str, Any]:
        """The profile and what the probe measured (the run's ``network`` metadata)."""
        return {"profile": asdict(self.profile), "measured": self.measured,
                "bounds": asdict(Bounds.of(self.profile, self.pings)), "emulator": "tun-link",
                **({"off_profile": self.off_profile} if self.off_profile else {})}

    def close(self) -> None:
        os.environ.pop(LINK_ENV, None)
        os.environ.pop(SERVER_NS_ENV, None)
        if self.link is not None and self.link.poll() is None:
            self.link.kill()
            self.link.wait()
        for ns in (self.server_ns, self.client_ns):
            _remove(ns)


def custom(base: Profile, **changes: Any) -> Profile:
    """A profile like ``base`` with some figures changed (tests, one-off runs)."""
    return replace(base, name=changes.pop("name", f"{base.name}*"), **changes)


def set_link_down(down: bool) -> None:
    """Cut the running lab's link or bring it back, from any process of the run (a worker in
    the client namespace); LabError outside a lab."""
    pid = os.environ.get(LINK_ENV)
    if not pid:
        raise LabError("no network lab is running (this scenario needs --network)")
    os.kill(int(pid), signal.SIGUSR1 if down else signal.SIGUSR2)


async def beside_server(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``await main()``, beside the server: under a running lab on an event loop of its own in a
    thread inside the server's namespace (every socket it opens, reconnects and pooled HTTP
    connections included, stays off the emulated link: a publisher in the data centre); here,
    on this loop, otherwise. Share only thread-safe objects with it (futures via
    ``concurrent.futures``)."""
    netns = os.environ.get(SERVER_NS_ENV)
    if not netns:
        return await main()

    def thread() -> T:
        with in_netns(netns):
            return asyncio.run(main())

    return await asyncio.to_thread(thread)
