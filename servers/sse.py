"""Server-Sent Events adapter: one GET opens the stream; every event carries the full cursor.

Clients send with POST /publish, /echo, /subscribe (http_app.py) naming this stream's ``conn``.
A reconnect with ``Last-Event-ID: <cursor>`` replays what was missed on every channel.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from servers import auth
from servers.aiohttp_common import HUB, authenticate, error_response
from servers.hub import Connection
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
           "X-Accel-Buffering": "no"}
CLOSE_GRACE_SECONDS = 1.0


async def handle(request: web.Request) -> web.StreamResponse:
    user = str(authenticate(request)["sub"])
    hub = request.app[HUB]
    try:
        cursor = wire.parse_cursor(request.headers.get("Last-Event-ID")
                                   or request.query.get("last_event_id"))
        channels = wire.split_channels(request.query.get("channels")) or list(cursor)
        for channel in channels:
            if not auth.may_subscribe(user, channel):
                raise WireError(ErrorCode.FORBIDDEN, f"{channel} is private")
    except WireError as exc:
        return error_response(exc)
    resp = web.StreamResponse(headers=HEADERS)
    await resp.prepare(request)
    conn = await hub.connect(user, "sse")
    conn.on_close = lambda code, reason: _cut(request)
    try:
        start = {ch: await hub.subscribe(conn, ch, cursor.get(ch)) for ch in channels}
        await _pump(conn, resp, start)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        await hub.disconnect(conn)
    return resp


async def _pump(conn: Connection, resp: web.StreamResponse, cursor: wire.Cursor) -> None:
    last_id = wire.format_cursor(cursor)
    while not conn.closed:
        items = await conn.outgoing(timeout=wire.SSE_PING_SECONDS)
        if not items:
            await resp.write(b": ping\n\n")
            continue
        parts = []
        for item in items:
            if item.id:
                cursor[item.channel] = item.id  # type: ignore[index]
                last_id = wire.format_cursor(cursor)
            parts.append(f"id: {last_id}\nevent: {wire.sse_event(item.type)}\n"
                         f"data: {item.text}\n\n")
        await resp.write("".join(parts).encode())
    reason = wire.encode(wire.error("closed", conn.close_reason))
    await resp.write(f"event: {wire.SSE_FAULT_EVENT}\ndata: {reason}\n\n".encode())


def _cut(request: web.Request) -> None:
    """The hub gave up on this stream: a stalled reader gets its socket aborted."""
    def abort() -> None:
        if request.transport is not None:
            request.transport.abort()

    asyncio.get_running_loop().call_later(CLOSE_GRACE_SECONDS, abort)
