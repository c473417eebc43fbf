"""Start a reference server in this process: ``SERVERS`` maps each ``serve`` kind to a starter.

A starter binds (port 0 = chosen by the OS) and returns a :class:`Running` with the URLs a
client needs and a coroutine that stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import importlib
import multiprocessing
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from servers import auth, static
from servers.aiohttp_common import FD_GUARD
from servers.brokers import make_broker
from servers.hub import Hub, Limits
from sobranie_contract import tls, tokens


@dataclass(frozen=True, slots=True)
class Options:
    host: str = "127.0.0.1"
    """Interface to bind (loopback by default)."""
    port: int = 0
    """Port to bind; 0 lets the OS choose."""
    secret: str | None = None
    """JWT secret; None reads SOBRANIE_JWT_SECRET or the development default."""
    origins: Sequence[str] = ()
    """Origin allow-list (WebSocket upgrades and CORS, servers/cors.py); empty allows all."""
    broker: str = "memory"
    """memory, redis://host:port, redis+cluster://host:port or nats://host:port."""
    limits: Limits = field(default_factory=Limits)
    """Per-connection limits."""
    history_size: int = 1000
    """Messages kept per channel for resume."""
    extra: dict[str, str] = field(default_factory=dict)
    """Transport-specific options (certificates, log directories, ``static``: a folder of
    pages to serve at /web/)."""
    tls: tls.CertPaths | None = None
    """Serve the TCP transports over TLS 1.3 with these files (:func:`sobranie_contract.tls.ensure`)."""
    tls_resumption: bool = False
    """Issue TLS session tickets (off: every connect pays a full handshake)."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, so that several processes share ``port`` (``serve
    --processes N``; the kernel spreads new connections over them)."""
    processes: int = 1
    """Processes of a server that starts its own (Elysia: N Bun servers on one port); the
    aiohttp kinds are forked by :func:`serve_processes` instead."""

    def ssl_context(self) -> ssl.SSLContext | None:
        return (tls.server_context(self.tls, resumption=self.tls_resumption)
                if self.tls else None)

    def base_url(self, port: int) -> str:
        return f"{'https' if self.tls else 'http'}://{_host(self.host)}:{port}"

    def tls_endpoints(self) -> dict[str, str]:
        """``{"ca": path}`` when serving TLS: what a client must trust."""
        return {"ca": str(self.tls.ca)} if self.tls else {}


@dataclass(frozen=True, slots=True)
class Running:
    url: str
    """Base URL of the server (http://host:port)."""
    stop: Callable[[], Awaitable[None]]
    """Stops the server and releases what it holds."""
    endpoints: dict[str, str] = field(default_factory=dict)
    """Extra URLs worth printing (the WebSocket endpoint, the cert hash...)."""
    pids: tuple[int, ...] = ()
    """The processes serving (``serve --processes N``); empty: this one."""


def core(opts: Options, server: str) -> tuple[Hub, auth.Authenticator]:
    """The hub and the authenticator of a server named ``server`` (its ``hello`` and /healthz
    say ``<server>/<version>``), built here once for every kind and injected into its
    factory."""
    hub = Hub(make_broker(opts.broker, opts.history_size), limits=opts.limits, server=server)
    return hub, auth.Authenticator(tokens.secret_from_env(opts.secret), opts.origins)


async def serve_app(app: web.Application, opts: Options,
                    endpoints: Callable[[str], dict[str, str]]) -> Running:
    """Bind an aiohttp app (handler cancellation on, so a client that leaves ends its
    handler); ``endpoints`` maps the base URL to the URLs worth printing. aiohttp's keep-alive
    timer also closes a connection whose request has not arrived whole: it is the header-read
    timeout (``Limits.header_timeout``)."""
    if "static" in opts.extra:
        static.mount(app, opts.extra["static"])
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=1.0, keepalive_timeout=opts.limits.header_timeout)
    await runner.setup()
    guard = app.get(FD_GUARD)
    if guard is not None and runner.server is not None:
        server = runner.server
        guard.connections = lambda: len(server.connections)
    site = web.TCPSite(runner, opts.host, opts.port, backlog=4096, reuse_address=True,
                       reuse_port=opts.reuse_port or None, ssl_context=opts.ssl_context())
    await site.start()
    url = opts.base_url(runner.addresses[0][1])
    return Running(url, runner.cleanup, {**endpoints(url), **opts.tls_endpoints()})


async def start_aiohttp(opts: Options) -> Running:
    from servers.http_app import make_app

    app = make_app(*core(opts, "sobranie-aiohttp"))
    return await serve_app(app, opts, lambda url: {
        "ws": url.replace("http", "ws", 1) + "/ws", "sse": f"{url}/sse", "poll": f"{url}/poll"})


async def start_websockets(opts: Options) -> Running:
    from servers.ws_websockets import WebsocketsServer

    server = WebsocketsServer(*core(opts, "sobranie-websockets"))
    ws_server = await server.start(opts.host, opts.port, opts.ssl_context())
    port = ws_server.sockets[0].getsockname()[1]
    url = opts.base_url(port)

    async def stop() -> None:
        ws_server.close()
        await server.hub.close()
        await ws_server.wait_closed()

    return Running(url, stop, {"ws": url.replace("http", "ws", 1) + "/ws",
                               **opts.tls_endpoints()})


SERVERS: dict[str, str] = {
    "http": "servers.run:start_aiohttp",
    "ws": "servers.run:start_aiohttp",
    "sse": "servers.run:start_aiohttp",
    "longpoll": "servers.run:start_aiohttp",
    "ws-websockets": "servers.run:start_websockets",
    "webtransport": "servers.webtransport:start",
    "socketio": "servers.socketio_app:start",
    "webrtc": "servers.webrtc:start",
    "demo": "servers.demo:start",
    "elysia": "servers.elysia:start",
}
"""``serve`` kind -> ``module:starter``; the aiohttp kinds share one app; ``elysia`` is the
Bun + Elysia server (/ws, /sse, /poll on one port), a subprocess (servers/elysia/)."""


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


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (10k+ connections need it);
    returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def serve_forever(kind: str, opts: Options, announce: Callable[[Running], None]) -> None:
    """Run until Ctrl-C or SIGTERM, then stop cleanly."""
    raise_fd_limit()
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


REUSE_PORT_KINDS = frozenset({"http", "ws", "sse", "longpoll", "elysia"})
"""Kinds that can share one port across processes (the aiohttp app binds with SO_REUSEPORT;
Elysia's Bun.serve with ``reusePort``)."""


class ProcessesError(RuntimeError):
    """``serve --processes N`` cannot start; the message says why."""


def die_with_parent() -> Callable[[], None] | None:
    """A function that makes the calling process get SIGKILL when its parent dies (Linux's
    PR_SET_PDEATHSIG; None elsewhere). libc is loaded now, so the function itself is one
    prctl call: safe between fork and exec (a ``preexec_fn``)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def hook() -> None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return hook


def _child(kind: str, opts: Options, conn: Any) -> None:
    hook = die_with_parent()
    if hook is not None:
        hook()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGTERM
    try:
        serve_forever(kind, opts, lambda running: conn.send(("ok", running.url,
                                                             running.endpoints)))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(exc).__name__}: {exc}", {}))
        raise SystemExit(1) from None


def serve_processes(kind: str, opts: Options, processes: int,
                    announce: Callable[[Running], None]) -> None:
    """Run ``processes`` copies of a server on one port (SO_REUSEPORT: the kernel spreads new
    connections over them) until Ctrl-C or SIGTERM. Each process has its own hub, so they
    must share a broker (Redis, Redis Cluster, NATS): the memory broker is refused. The
    aiohttp kinds are forked here; Elysia's starter starts its N Bun processes itself."""
    if kind not in REUSE_PORT_KINDS:
        raise ProcessesError(f"--processes works for {', '.join(sorted(REUSE_PORT_KINDS))} "
                             f"(servers on a shared port), not {kind}")
    if opts.broker in ("", "memory"):
        raise ProcessesError("--processes N > 1 needs a shared broker: with the memory broker "
                             "each process would be its own island (pass --broker "
                             "redis://..., redis+cluster://... or nats://...)")
    if kind == "elysia":
        serve_forever(kind, dataclasses.replace(opts, processes=processes), announce)
        return
    family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)  # reserves the port until all listen
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((opts.host, opts.port))
    child_opts = dataclasses.replace(opts, port=holder.getsockname()[1], reuse_port=True)
    ctx = multiprocessing.get_context("fork")  # before any event loop or thread exists
    children = []
    stop = {"signal": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for _ in range(processes):
            mine, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(kind, child_opts, theirs), daemon=True)
            proc.start()
            children.append((proc, mine))
        urls = []
        for proc, conn in children:
            if not conn.poll(60):
                raise ProcessesError(f"server process {proc.pid} did not start in 60 s")
            status, url, endpoints = conn.recv()
            if status != "ok":
                raise ProcessesError(url)
            urls.append((url, endpoints))
        holder.close()
        url, endpoints = urls[0]
        announce(Running(url, _no_stop, endpoints, tuple(p.pid or 0 for p, _ in children)))
        while not stop["signal"]:
            if any(not p.is_alive() for p, _ in children):
                dead = [p.pid for p, _ in children if not p.is_alive()]
                raise ProcessesError(f"server process(es) {dead} died; stopping the others")
            signal.sigtimedwait([signal.SIGCHLD], 0.5)
    finally:
        holder.close()
        for proc, _ in children:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        for proc, _ in children:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


async def _no_stop() -> None:
    """The supervisor stops its processes itself."""
