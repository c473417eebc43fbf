"""One aiohttp app: /ws, /sse, /poll and the plain HTTP endpoints of the contract.

The transport adapters (ws.py, sse.py, longpoll.py) are mounted here; this module keeps only what
they share: authentication of a request, the JSON answers, /publish, /echo, /subscribe,
/unsubscribe (for the one-way streams), /healthz and /metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from servers import auth, cors
from servers.brokers import Broker
from servers.hub import Hub, Limits
from sobranie_bench import wire
from sobranie_bench.wire import ErrorCode, WireError

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


async def publish(request: web.Request) -> web.Response:
    claims = authenticate(request)
    hub = request.app[HUB]
    try:
        body = await read_body(request, "channel", "data")
        ref = body.get("ref")
        if ref is not None and not isinstance(ref, str):
            ref = str(ref)  # as on every other transport (wire.request_from_dict)
        channel = wire.check_channel(body["channel"], ref)
        user = None if claims.get("scope") == "server" else str(claims["sub"])
        msg = await hub.publish(user, channel, body["data"], ref)
    except WireError as exc:
        hub.metrics.errors[exc.code] += 1
        return error_response(exc)
    return web.json_response(wire.ack(ref, msg.id))


async def stream_request(request: web.Request) -> web.Response:
    """/echo, /subscribe, /unsubscribe: an op for the SSE or poll stream ``conn``."""
    user = str(authenticate(request)["sub"])
    hub = request.app[HUB]
    op = request.path.strip("/")
    try:
        body = await read_body(request, "conn")
        conn = hub.lookup(str(body["conn"]), user)
        body["op"] = op
        await hub.execute(conn, wire.request_from_dict(body))
    except WireError as exc:
        hub.metrics.errors[exc.code] += 1
        return error_response(exc)
    return web.json_response({"status": "accepted"}, status=202)


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


def make_app(*, secret: str | None = None, origins: Sequence[str] = (),
             broker: Broker | None = None, limits: Limits | None = None,
             hub: Hub | None = None) -> web.Application:
    """The one app of the WebSocket, SSE and long-polling transports."""
    from servers import longpoll, sse, ws

    hub = hub or Hub(broker, limits=limits, server="sobranie-aiohttp")
    app = hub_app(hub, auth.Authenticator(auth.secret_from_env(secret), origins))
    app.router.add_get("/ws", ws.handle)
    app.router.add_get("/sse", sse.handle)
    app.router.add_get("/poll", longpoll.handle)
    app.router.add_post("/publish", publish)
    for path in ("/echo", "/subscribe", "/unsubscribe"):
        app.router.add_post(path, stream_request)

    async def start_reaper(app: web.Application) -> None:
        longpoll.start_reaper(app)

    app.on_startup.append(start_reaper)
    return app
