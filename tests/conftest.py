"""Shared fixtures: in-process reference servers on port 0, clients, one scalable time unit,
and our own Redis / NATS for the session (never a service that was already running).

``SOBRANIE_TEST_UNIT`` (seconds, default 5) scales every wait in socket tests, so a slow machine
makes tests slower, never red.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from servers import run
from sobranie_bench import services
from sobranie_bench.clients import TRANSPORTS, Client
from sobranie_contract import tokens

UNIT = float(os.environ.get("SOBRANIE_TEST_UNIT", "5"))
SECRET = "test-secret-of-at-least-thirty-two-bytes"


def token(user: str, ttl: float = 600, **kwargs: Any) -> str:
    return tokens.make_token(user, SECRET, ttl, **kwargs)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a redis-server of this session's own (no persistence),
    stopped at the end. Tests share it: each uses its own namespace and purges it."""
    with services.started("redis") as redis:
        yield redis.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[services.RedisClusterService]:
    """A Redis Cluster of this session's own (3 masters + 3 replicas on free ports)."""
    with services.start_redis_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: services.RedisClusterService) -> str:
    """``redis+cluster://127.0.0.1:PORT`` of the session's cluster."""
    return redis_cluster.url


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """``nats://127.0.0.1:PORT`` of a nats-server with JetStream of this session's own."""
    with services.started("nats") as nats:
        yield nats.url


@pytest.fixture(scope="session")
def haproxy() -> str:
    """The haproxy binary (``make setup`` installs it); a clear failure when it is missing."""
    try:
        return services.executable("haproxy")
    except services.ServiceError as exc:
        pytest.fail(str(exc))


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Any]]:
    """``await start_server(kind, **Options)`` -> Running; everything is stopped afterwards."""
    running: list[run.Running] = []

    async def start(kind: str, **kwargs: Any) -> run.Running:
        opts = run.Options(secret=SECRET, **kwargs)
        server = await run.starter(kind)(opts)
        running.append(server)
        return server

    yield start
    for server in reversed(running):
        await server.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Any]]:
    """``make(transport, url, user, **kw)`` -> an unconnected client, closed afterwards."""
    made: list[Client] = []

    def make(transport: str, url: str, user: str = "alice", **kwargs: Any) -> Client:
        kwargs.setdefault("timeout", UNIT)
        client = TRANSPORTS[transport].client_class()(url, token(user), **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def next_of(client, kind, channel=None):
    """The next envelope of ``kind`` (optionally on ``channel``), skipping others."""
    while True:
        env = await client.recv(UNIT)
        if env["type"] == kind and (channel is None or env.get("channel") == channel):
            return env


async def messages(client, n, channel):
    return [await next_of(client, "message", channel) for _ in range(n)]


async def subscriber_and_publisher(make, transport, url, channel):
    """``(bob, alice)`` from ``make`` (the ``clients`` fixture), connected to ``url`` over
    ``transport``: bob subscribed to ``channel``, alice to publish on it."""
    sub, pub = make(transport, url, "bob"), make(transport, url, "alice")
    await sub.connect([channel])
    await pub.connect()
    return sub, pub


def http_url(server: run.Running) -> str:
    """Where ``server`` answers plain HTTP (/metrics, /healthz): its URL, or for WebTransport
    the TCP listener on the same port."""
    return server.endpoints.get("http", server.url)


async def metrics_text(url: str) -> str:
    """``GET <url>/metrics``."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def until_metric(url: str, pattern: str, within: float = UNIT) -> str:
    """/metrics of ``url`` once it matches ``pattern`` (polled for up to ``within`` seconds)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(int(within / 0.05)):
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            if re.search(pattern, text):
                return text
            await asyncio.sleep(0.05)
    raise AssertionError(f"/metrics never showed {pattern}:\n{text}")
