"""Start a reference server in this process: ``SERVERS`` maps each ``serve`` kind to a starter.

A starter binds (port 0 = chosen by the OS) and returns a :class:`Running` with the URLs a
client needs and a coroutine that stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from servers.brokers import make_broker
from servers.hub import Limits


@dataclass(frozen=True, slots=True)
class Options:
    host: str = "127.0.0.1"
    """Interface to bind (loopback by default)."""
    port: int = 0
    """Port to bind; 0 lets the OS choose."""
    secret: str | None = None
    """JWT secret; None reads SOBRANIE_JWT_SECRET or the development default."""
    origins: Sequence[str] = ()
    """WebSocket Origin allow-list; empty allows all."""
    broker: str = "memory"
    """memory, redis://host:port or nats://host:port."""
    limits: Limits = field(default_factory=Limits)
    """Per-connection limits."""
    history_size: int = 1000
    """Messages kept per channel for resume."""
    extra: dict[str, str] = field(default_factory=dict)
    """Transport-specific options (certificates, log directories)."""


@dataclass(frozen=True, slots=True)
class Running:
    url: str
    """Base URL of the server (http://host:port)."""
    stop: Callable[[], Awaitable[None]]
    """Stops the server and releases what it holds."""
    endpoints: dict[str, str] = field(default_factory=dict)
    """Extra URLs worth printing (the WebSocket endpoint, the cert hash...)."""


async def serve_app(app: web.Application, opts: Options,
                    endpoints: Callable[[str], dict[str, str]]) -> Running:
    """Bind an aiohttp app (handler cancellation on, so a client that leaves ends its
    handler); ``endpoints`` maps the base URL to the URLs worth printing. aiohttp's keep-alive
    timer also closes a connection whose request has not arrived whole: it is the header-read
    timeout (``Limits.header_timeout``)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=1.0, keepalive_timeout=opts.limits.header_timeout)
    await runner.setup()
    site = web.TCPSite(runner, opts.host, opts.port, backlog=4096, reuse_address=True)
    await site.start()
    url = f"http://{_host(opts.host)}:{runner.addresses[0][1]}"
    return Running(url, runner.cleanup, endpoints(url))


async def start_aiohttp(opts: Options) -> Running:
    from servers.http_app import make_app

    app = make_app(secret=opts.secret, origins=opts.origins,
                   broker=make_broker(opts.broker, opts.history_size), limits=opts.limits)
    return await serve_app(app, opts, lambda url: {
        "ws": url.replace("http", "ws", 1) + "/ws", "sse": f"{url}/sse", "poll": f"{url}/poll"})


async def start_websockets(opts: Options) -> Running:
    from servers.ws_websockets import WebsocketsServer

    server = WebsocketsServer(secret=opts.secret, origins=opts.origins,
                              broker=make_broker(opts.broker, opts.history_size), limits=opts.limits)
    ws_server = await server.start(opts.host, opts.port)
    port = ws_server.sockets[0].getsockname()[1]
    url = f"http://{_host(opts.host)}:{port}"

    async def stop() -> None:
        ws_server.close()
        await server.hub.close()
        await ws_server.wait_closed()

    return Running(url, stop, {"ws": f"ws://{_host(opts.host)}:{port}/ws"})


SERVERS: dict[str, str] = {
    "http": "servers.run:start_aiohttp",
    "ws": "servers.run:start_aiohttp",
    "sse": "servers.run:start_aiohttp",
    "longpoll": "servers.run:start_aiohttp",
    "ws-websockets": "servers.run:start_websockets",
    "webtransport": "servers.webtransport:start",
    "socketio": "servers.socketio_app:start",
    "webrtc": "servers.webrtc:start",
}
"""``serve`` kind -> ``module:starter``; the aiohttp kinds share one app."""


def starter(kind: str) -> Callable[[Options], Awaitable[Running]]:
    module, _, name = SERVERS[kind].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def install_uvloop() -> bool:
    """Use uvloop when it is installed (it is a dependency; the fallback is asyncio)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def serve_forever(kind: str, opts: Options, announce: Callable[[Running], None]) -> None:
    """Run until Ctrl-C or SIGTERM, then stop cleanly."""
    install_uvloop()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = await starter(kind)(opts)
        announce(running)  # only now: a signal sent as soon as the URL shows is handled
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await running.stop()

    asyncio.run(main())
