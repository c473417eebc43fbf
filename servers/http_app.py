"""One aiohttp app: /ws, /sse, /poll and the plain HTTP endpoints of the contract.

The transport adapters (ws.py, sse.py, longpoll.py) are mounted here, with /publish and the
requests of the one-way streams (/echo, /subscribe, /unsubscribe naming a stream's ``conn``);
what every aiohttp app shares is in aiohttp_common.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from servers import auth, longpoll, sse, ws
from servers.aiohttp_common import HUB, authenticate, error_response, hub_app, read_body
from servers.brokers import Broker
from servers.hub import Hub, Limits
from sobranie_contract import tokens, wire
from sobranie_contract.wire import WireError


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


def make_app(*, secret: str | None = None, origins: Sequence[str] = (),
             broker: Broker | None = None, limits: Limits | None = None,
             hub: Hub | None = None) -> web.Application:
    """The one app of the WebSocket, SSE and long-polling transports."""
    hub = hub or Hub(broker, limits=limits, server="sobranie-aiohttp")
    app = hub_app(hub, auth.Authenticator(tokens.secret_from_env(secret), origins))
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
