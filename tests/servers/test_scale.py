"""Servers past one process: at its open-file limit a server (Python's aiohttp app and the
Bun + Elysia one) refuses new connections with HTTP 503 + Retry-After, a log line and a
metric, and keeps serving the connections it holds (instead of resets from a failing
``accept()``); the limit is lowered in the server's own process (``setrlimit`` before exec),
so the test needs a few hundred connections, not 20,000. ``serve elysia --processes N``
shares one port between N Bun processes over one broker."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import sys

import aiohttp
import psutil
import pytest

from sobranie_bench.clients.base import ClientError
from tests.conftest import SECRET, UNIT, metrics_text, next_of

LIMIT = 300
"""Open files the server may hold (soft = hard: serve cannot raise it)."""


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


@pytest.fixture(params=["ws", "elysia"])
def low_limit_server(request):
    """The aiohttp server, or the Elysia one (whose Bun process inherits the limit)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sobranie_bench.cli", "serve", request.param, "--port", "0",
         "--json", "--jwt-secret", SECRET], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_low_limit)  # noqa: PLW1509 - one setrlimit between fork and exec
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        yield json.loads(line)["url"], proc
    finally:
        proc.terminate()
        proc.wait(10)


async def test_near_the_fd_limit_new_connections_get_503_and_old_ones_are_served(
        low_limit_server, clients):
    url, proc = low_limit_server
    held, refusals, other = [], [], []
    for i in range(LIMIT):  # more than fit: the guard must refuse before accept() fails
        client = clients("ws", url, f"u{i}", reconnect=False)
        try:
            await client.connect()
        except ClientError as exc:
            (refusals if "HTTP 503" in str(exc) else other).append(str(exc))
            if len(refusals) >= 5:
                break
            continue
        held.append(client)
    assert not other, f"not a clear refusal: {other[:3]}"
    assert refusals, "the limit was never reached"
    assert LIMIT // 2 < len(held) < LIMIT
    assert "open-file limit" in refusals[0]

    async with aiohttp.ClientSession() as session, session.get(f"{url}/sse") as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"].isdigit()
        assert (await resp.json())["code"] == "unavailable"
    text = await metrics_text(url)  # monitoring is still answered at the limit
    found = re.search(r"^sobranie_fd_limit_refused_total (\d+)", text, re.MULTILINE)
    assert found is not None
    refused = int(found.group(1))
    assert refused >= len(refusals) + 1
    assert re.search(rf"^sobranie_open_files_limit {LIMIT}$", text, re.MULTILINE)

    await held[0].echo("still served")
    assert (await next_of(held[0], "echo"))["data"] == "still served"
    await asyncio.gather(*(c.close() for c in held[:50]))  # room again: connections come back
    async with asyncio.timeout(UNIT):
        while True:
            again = clients("ws", url, "again", reconnect=False)
            try:
                await again.connect()
                break
            except ClientError:
                await asyncio.sleep(0.1)
    proc.terminate()
    proc.wait(10)
    err = proc.stderr.read().decode()
    assert "refusing new connections" in err and "open-file limit" in err
    assert "Traceback" not in err


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sobranie_bench.cli", "serve", *args,
                             "--port", "0", "--json", "--jwt-secret", SECRET],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_elysia_processes_over_the_memory_broker_are_refused_in_one_line():
    proc = _serve("elysia", "--processes", "2")
    out, err = proc.communicate(timeout=6 * UNIT)
    assert proc.returncode == 1 and not out
    assert "needs a shared broker" in err and "Traceback" not in err


async def test_elysia_processes_share_one_port_and_the_broker(redis_url, clients):
    """Two Bun processes on one port (reusePort): connections land on both, each process is
    announced (the harness samples every one), and a message published through one process
    reaches subscribers held by the other."""
    proc = _serve("elysia", "--processes", "2", "--broker", redis_url)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 6 * UNIT)
        assert line, proc.stderr.read()
        info = json.loads(line)
        pids = [int(p) for p in info["pids"]]
        assert len(pids) == 2 and all(psutil.Process(p).name().startswith("bun") for p in pids)
        port = int(info["url"].rsplit(":", 1)[1])
        subs = [clients("ws", info["url"], f"u{i}", reconnect=False) for i in range(24)]
        for sub in subs:
            await sub.connect(["room"])
        held = {pid: sum(1 for c in psutil.Process(pid).net_connections("tcp")
                         if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)
                for pid in pids}
        assert all(held.values()), f"connections per process: {held}"
        publisher = clients("sse", info["url"], "pub", reconnect=False)
        await publisher.connect()
        await publisher.publish("room", "to every process")
        for sub in subs:
            assert (await next_of(sub, "message", "room"))["data"] == "to every process"
    finally:
        proc.terminate()
        proc.wait(10 * UNIT)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids), "a Bun process outlived its supervisor"
