"""What every aiohttp-based adapter shares: the hub and authenticator on the app, the request's
token (401 first), contract errors as JSON answers with their HTTP status, a strict JSON body,
/healthz and /metrics, and :func:`hub_app` that puts them together around a hub.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from servers import auth
from servers.hub import Hub
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
AUTH: web.AppKey[auth.Authenticator] = web.AppKey("auth", auth.Authenticator)
EXTRA_METRICS: web.AppKey[Callable[[web.Application], str]] = web.AppKey("extra_metrics")
"""A transport's own Prometheus lines, appended to the hub's at /metrics."""

_STATUS = {ErrorCode.BAD_REQUEST: 400, ErrorCode.UNKNOWN_CHANNEL: 404, ErrorCode.FORBIDDEN: 403,
           ErrorCode.TOO_LARGE: 413, ErrorCode.RATE_LIMITED: 429, ErrorCode.HISTORY_GAP: 409,
           ErrorCode.UNAUTHORIZED: 401, ErrorCode.UNAVAILABLE: 503}


def error_response(exc: WireError) -> web.Response:
    return web.json_response(exc.envelope(), status=_STATUS.get(exc.code, 400))


def authenticate(request: web.Request) -> dict[str, object]:
    """The token's claims, or HTTP 401 before anything else is spent on the request."""
    try:
        return request.app[AUTH].claims(
            request.app[AUTH].token_from(request.query, request.headers))
    except auth.Unauthorized as exc:
        raise web.HTTPUnauthorized(
            text=wire.encode(wire.error(ErrorCode.UNAUTHORIZED, str(exc))),
            content_type="application/json", headers={"WWW-Authenticate": "Bearer"}) from None


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
    text = hub.metrics.render(hub) + (extra(request.app) if extra else "")
    return web.Response(text=text, content_type="text/plain")


def hub_app(hub: Hub, authenticator: auth.Authenticator, *,
            middlewares: Sequence[Any] = (),
            closing: Sequence[Callable[[], Awaitable[Any]]] = (),
            extra_metrics: Callable[[web.Application], str] | None = None) -> web.Application:
    """An aiohttp app around ``hub``: its authenticator, /healthz and /metrics (plus what
    ``extra_metrics`` renders), the hub started with the app and closed with it (after
    ``closing``: what the transport must end first)."""
    app = web.Application(client_max_size=hub.limits.hard_frame, middlewares=list(middlewares))
    app[HUB] = hub
    app[AUTH] = authenticator
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
