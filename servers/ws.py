"""WebSocket adapter (aiohttp): text frames in -> hub; the outbox -> text frames out.

Replies go out inline after each request, other envelopes from a short-lived task
(:class:`~servers.hub.Sender`): no writer task per connection. permessage-deflate is not
negotiated (``compress=False``): browsers offer it on every connection, and a deflate context
costs about 90 KiB per connection and a fifth more CPU per small envelope (docs/performance.md).
"""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from servers.aiohttp_common import AUTH, HUB, authenticate
from servers.hub import Sender

CLOSE_GRACE_SECONDS = 1.0
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


async def handle(request: web.Request) -> web.WebSocketResponse:
    user = str(authenticate(request)["sub"])
    if not request.app[AUTH].origin_allowed(request.headers.get("Origin")):
        raise web.HTTPForbidden(text="origin not allowed")
    hub = request.app[HUB]
    ws = web.WebSocketResponse(max_msg_size=hub.limits.hard_frame, compress=False)
    await ws.prepare(request)
    conn = await hub.connect(user, "ws")
    sender = Sender(conn, ws.send_str)
    conn.on_close = _Cut(request, ws, sender)
    try:
        await sender.flush()  # hello
        async for msg in ws:
            if msg.type in _DATA:
                await sender.handle(msg.data)
    finally:
        sender.stop()
        await hub.disconnect(conn)
    return ws


class _Cut:
    """The hub gave up on this connection: close with its reason; abort a stalled reader."""

    __slots__ = ("request", "sender", "ws")

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, sender: Sender) -> None:
        self.request, self.ws, self.sender = request, ws, sender

    def __call__(self, code: int, reason: str) -> None:
        self.sender.stop()
        if not self.ws.closed:
            asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason[:120].encode()),
                                   CLOSE_GRACE_SECONDS)
        except (TimeoutError, ConnectionError):
            pass
        finally:  # also when close() is cancelled with the sender's drain it shared
            if self.request.transport is not None:
                self.request.transport.abort()
