"""Shared fixtures: in-process reference servers on port 0, clients, one scalable time unit.

``SOBRANIE_TEST_UNIT`` (seconds, default 5) scales every wait in socket tests, so a slow machine
makes tests slower, never red.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from servers import auth, run
from sobranie_bench.clients import TRANSPORTS, Client

UNIT = float(os.environ.get("SOBRANIE_TEST_UNIT", "5"))
SECRET = "test-secret-of-at-least-thirty-two-bytes"
CORE_TRANSPORTS = ["ws", "ws-websockets", "sse", "longpoll"]


def token(user: str, ttl: float = 600, **kwargs: Any) -> str:
    return auth.make_token(user, SECRET, ttl, **kwargs)


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
