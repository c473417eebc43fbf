"""WebSocket adapter (aiohttp): text frames in -> hub.handle; outbox -> text frames out."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from servers.http_app import AUTH, HUB, authenticate
from servers.hub import Connection

CLOSE_GRACE_SECONDS = 1.0


async def handle(request: web.Request) -> web.WebSocketResponse:
    user = str(authenticate(request)["sub"])
    if not request.app[AUTH].origin_allowed(request.headers.get("Origin")):
        raise web.HTTPForbidden(text="origin not allowed")
    hub = request.app[HUB]
    ws = web.WebSocketResponse(max_msg_size=hub.limits.hard_frame)
    await ws.prepare(request)
    conn = await hub.connect(user, "ws")
    writer = asyncio.create_task(_pump(conn, ws))
    conn.on_close = lambda code, reason: _cut(request, ws, writer, code, reason)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await hub.handle(conn, msg.data)
    finally:
        writer.cancel()
        await hub.disconnect(conn)
    return ws


async def _pump(conn: Connection, ws: web.WebSocketResponse) -> None:
    while not conn.closed:
        for item in await conn.outgoing():
            await ws.send_str(item.text)


def _cut(request: web.Request, ws: web.WebSocketResponse, writer: asyncio.Task[None],
         code: int, reason: str) -> None:
    """The hub gave up on this connection: close with its reason; abort a stalled reader."""
    writer.cancel()

    async def close() -> None:
        try:
            await asyncio.wait_for(ws.close(code=code, message=reason[:120].encode()),
                                   CLOSE_GRACE_SECONDS)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        if request.transport is not None:
            request.transport.abort()

    if not ws.closed:
        asyncio.get_running_loop().create_task(close())
