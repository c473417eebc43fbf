"""One aiohttp app: /ws, /sse, /poll and the plain HTTP endpoints of the contract.

The transport adapters (ws.py, sse.py, longpoll.py) are mounted here, with /publish and the
requests of the one-way streams (/echo, /subscribe, /unsubscribe naming a stream's ``conn``);
what every aiohttp app shares is in aiohttp_common.py.
"""

from __future__ import annotations

from aiohttp import web

from servers import auth, longpoll, sse, ws
from servers.aiohttp_common import HUB, authenticate, error_response, hub_app, read_body
from servers.hub import Hub
from sobranie_contract import wire
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
        return error_response(hub, exc)
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
        return error_response(hub, exc)
    return web.json_response({"status": "accepted"}, status=202)


def make_app(hub: Hub, authenticator: auth.Authenticator) -> web.Application:
    """The one app of the WebSocket, SSE and long-polling transports."""
    app = hub_app(hub, authenticator)
    app.router.add_get("/ws", ws.handle)
    app.router.add_get("/sse", sse.handle)
    app.router.add_post("/publish", publish)
    for path in ("/echo", "/subscribe", "/unsubscribe"):
        app.router.add_post(path, stream_request)

    longpoll.mount(app)
    return app
