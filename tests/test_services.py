"""Our own Redis and NATS (sobranie_bench.services): on free ports, ready when returned,
gone (process and directory) when stopped, and gone even when the process that started them
is killed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest
import redis

from sobranie_bench import services
from tests.conftest import UNIT


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (polled for up to UNIT seconds)."""
    deadline = time.monotonic() + UNIT
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def listener_is_ours(port: int) -> bool:
    """Whether the process listening on ``port`` descends from this test process (a service we
    started, not one that was already running)."""
    pids = {c.pid for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid}
    return bool(pids) and all(
        os.getpid() in {p.pid for p in psutil.Process(pid).parents()} for pid in pids)


@pytest.mark.parametrize("kind", ["redis", "nats"])
def test_a_service_is_ours_ready_and_stopped_with_its_directory(kind):
    with services.started(kind) as service:
        assert service.url.startswith(f"{kind}://127.0.0.1:")
        assert listener_is_ours(service.port)
        assert service.dir.is_dir()
        assert service.process.poll() is None
    assert service.process.returncode is not None
    assert not service.dir.exists()


def test_a_redis_cluster_is_ours_ready_and_stopped(redis_cluster):
    """The session's cluster: six nodes of ours, three masters with a synced replica each,
    ``cluster_state:ok``; a cluster of its own stops every node and removes their folders."""
    assert redis_cluster.url.startswith("redis+cluster://127.0.0.1:")
    assert redis_cluster.ok()
    assert len(redis_cluster.nodes) == 6
    assert all(listener_is_ours(node.port) for node in redis_cluster.nodes)
    roles = []
    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        try:
            info = client.info("replication")
            roles.append((info["role"], info.get("master_link_status", "-")))
        finally:
            client.close()
    assert sorted(roles) == [("master", "-")] * 3 + [("slave", "up")] * 3
    with services.started("redis-cluster") as own:
        nodes = list(own.nodes)
    assert all(n.process.returncode is not None and not n.dir.exists() for n in nodes)


def test_redis_is_usable_and_keeps_nothing_on_disk(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.close()


async def test_a_url_is_used_as_it_is_and_a_bare_name_starts_our_own():
    async with services.broker("redis://example.invalid:1/0") as url:
        assert url == "redis://example.invalid:1/0"
    async with services.broker("memory") as url:
        assert url == "memory"
    async with services.broker("nats") as url:
        assert url.startswith("nats://127.0.0.1:")
        assert listener_is_ours(int(url.rsplit(":", 1)[1]))


def test_what_a_killed_process_started_dies_with_it():
    script = ("import os, signal\n"
              "from sobranie_bench import services\n"
              "r, n = services.start_redis(), services.start_nats()\n"
              "print(r.process.pid, n.process.pid, r.dir, n.dir, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=6 * UNIT, check=False)
    printed = done.stdout.split()
    assert len(printed) == 4, done.stderr
    for left in printed[2:]:  # a SIGKILL leaves the directories; the processes must not stay
        shutil.rmtree(left, ignore_errors=True)
    assert all(gone(int(pid)) for pid in printed[:2])


def test_a_missing_program_says_how_to_get_it():
    with pytest.raises(services.ServiceError, match=r"no-such-server not found: run `make setup`"):
        services.executable("no-such-server", "apt-get install no-such-server")
