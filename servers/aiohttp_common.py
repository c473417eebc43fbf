"""What every aiohttp-based adapter shares: the hub and authenticator on the app, the request's
token (401 first), contract errors as JSON answers with their HTTP status, a strict JSON body,
/healthz and /metrics, the guard that refuses new requests near the open-file limit, and
:func:`hub_app` that puts them together around a hub.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from servers import auth, cors
from servers.hub import Hub
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

log = logging.getLogger("sobranie.server")

HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
AUTH: web.AppKey[auth.Authenticator] = web.AppKey("auth", auth.Authenticator)
EXTRA_METRICS: web.AppKey[Callable[[web.Application], str]] = web.AppKey("extra_metrics")
"""A transport's own Prometheus lines, appended to the hub's at /metrics."""

_STATUS = {ErrorCode.BAD_REQUEST: 400, ErrorCode.UNKNOWN_CHANNEL: 404, ErrorCode.FORBIDDEN: 403,
           ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429, ErrorCode.HISTORY_GAP: 409,
           ErrorCode.UNAUTHORIZED: 401, ErrorCode.UNAVAILABLE: 503}


FD_HEADROOM = 64
"""Open files kept free at the limit, at least (or 2% of it): the answer that refuses a
connection needs a file itself, and so do the broker's reconnects and the logs."""
RETRY_AFTER_SECONDS = 5
"""What a refused client is told to wait (``Retry-After``)."""
UNGUARDED = frozenset({"/healthz", "/metrics"})
"""Paths still answered at the limit (monitoring must see a full server)."""


def open_files() -> int:
    """Files this process has open now (``/proc/self/fd``; 0 where there is none)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


@dataclass
class FdGuard:
    """Refuses new requests with HTTP 503 + ``Retry-After`` while this process is within
    ``headroom`` files of its open-file limit, instead of letting ``accept()`` fail with
    EMFILE (which a client sees as a reset, and the server logs nothing). Its count is the
    files open when the server started plus the server's open connections (cheap: no
    ``/proc`` walk per request)."""

    limit: int = field(default_factory=lambda: resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    """The soft RLIMIT_NOFILE of this process."""
    base: int = field(default_factory=open_files)
    """Files open before the first connection (listeners, broker, logs, the interpreter)."""
    connections: Callable[[], int] = lambda: 0
    """The server's open connections now (set once the server is bound)."""
    refused: int = 0
    """Requests refused at the limit so far."""
    _logged: float = field(default=-1e9, repr=False)

    @property
    def headroom(self) -> int:
        return max(FD_HEADROOM, self.limit // 50)

    @property
    def in_use(self) -> int:
        return self.base + self.connections()

    def full(self) -> bool:
        return self.in_use >= self.limit - self.headroom

    def refuse(self) -> str:
        """Count one refusal, log it (at most every 10 s), and say why."""
        self.refused += 1
        why = (f"server at its open-file limit ({self.in_use} of {self.limit} in use, "
               f"{self.headroom} kept free); retry in {RETRY_AFTER_SECONDS} s or use "
               "another instance")
        now = time.monotonic()
        if now - self._logged >= 10.0:
            self._logged = now
            log.warning("refusing new connections: %s (%d refused so far); raise the hard "
                        "nofile limit or run more processes (serve --processes N)", why,
                        self.refused)
        return why

    def render(self) -> str:
        return ("# HELP sobranie_open_files Files open (estimate the fd guard uses).\n"
                "# TYPE sobranie_open_files gauge\n"
                f"sobranie_open_files {self.in_use}\n"
                "# HELP sobranie_open_files_limit Soft RLIMIT_NOFILE of the process.\n"
                "# TYPE sobranie_open_files_limit gauge\n"
                f"sobranie_open_files_limit {self.limit}\n"
                "# HELP sobranie_fd_limit_refused_total Requests refused with 503 near the "
                "open-file limit.\n"
                "# TYPE sobranie_fd_limit_refused_total counter\n"
                f"sobranie_fd_limit_refused_total {self.refused}\n")


FD_GUARD: web.AppKey[FdGuard] = web.AppKey("fd_guard", FdGuard)


@web.middleware
async def fd_guard(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
    guard = request.app[FD_GUARD]
    if guard.full() and request.path not in UNGUARDED:
        envelope = request.app[HUB].refused(WireError(ErrorCode.UNAVAILABLE, guard.refuse()))
        return web.Response(text=wire.encode(envelope), status=503,
                            content_type="application/json",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS),
                                     "Connection": "close"})
    return await handler(request)


def error_response(hub: Hub, exc: WireError) -> web.Response:
    """The HTTP answer to a refused request (counted by the hub)."""
    return web.json_response(hub.refused(exc), status=_STATUS.get(exc.code, 400))


def authenticate(request: web.Request) -> dict[str, object]:
    """The token's claims, or HTTP 401 (counted) before anything else is spent on the
    request."""
    try:
        return request.app[AUTH].claims(
            request.app[AUTH].token_from(request.query, request.headers))
    except auth.Unauthorized as exc:
        envelope = request.app[HUB].refused(WireError(ErrorCode.UNAUTHORIZED, str(exc)))
        raise web.HTTPUnauthorized(
            text=wire.encode(envelope), content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"}) from None


def admit(request: web.Request, user: str) -> None:
    """Before a handshake opens a hub connection: HTTP 429 (counted) when ``user`` holds
    ``Limits.user_connections`` already."""
    hub = request.app[HUB]
    try:
        hub.admit(user)
    except WireError as exc:
        raise web.HTTPTooManyRequests(text=wire.encode(hub.refused(exc)),
                                      content_type="application/json") from None


async def read_body(request: web.Request, *fields: str) -> dict[str, Any]:
    hub = request.app[HUB]
    raw = await request.read()
    if len(raw) > hub.limits.max_envelope:
        raise WireError(ErrorCode.TOO_LARGE, f"body of {len(raw)} bytes")
    body = wire.loads(raw)  # strict: what is published can always be sent on
    if not isinstance(body, dict):
        raise WireError(ErrorCode.BAD_REQUEST, "body must be a JSON object")
    missing = [f for f in fields if f not in body]
    if missing:
        raise WireError(ErrorCode.BAD_REQUEST, f"missing {', '.join(missing)}", body.get("ref"))
    return body


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "server": request.app[HUB].server})


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    extra = request.app.get(EXTRA_METRICS)
    guard = request.app.get(FD_GUARD)
    text = (hub.metrics.render(hub) + (guard.render() if guard else "")
            + (extra(request.app) if extra else ""))
    return web.Response(text=text, content_type="text/plain")


def hub_app(hub: Hub, authenticator: auth.Authenticator, *,
            middlewares: Sequence[Any] = (),
            closing: Sequence[Callable[[], Awaitable[Any]]] = (),
            extra_metrics: Callable[[web.Application], str] | None = None) -> web.Application:
    """An aiohttp app around ``hub``: its authenticator, the fd guard (first of the
    middlewares; :func:`servers.run.serve_app` tells it the connection count), /healthz and
    /metrics (plus what ``extra_metrics`` renders), the hub started with the app and closed with it (after
    ``closing``: what the transport must end first)."""
    app = web.Application(client_max_size=hub.limits.hard_frame,
                          middlewares=[fd_guard, *middlewares])
    app[HUB] = hub
    app[FD_GUARD] = FdGuard()
    app[AUTH] = authenticator
    cors.install(app, authenticator)
    if extra_metrics is not None:
        app[EXTRA_METRICS] = extra_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)

    async def start(app: web.Application) -> None:
        await hub.start()

    async def stop(app: web.Application) -> None:
        for close in closing:
            await close()
        await hub.close()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    return app
