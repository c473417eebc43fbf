"""Long-polling adapter: each GET /poll takes what the session's outbox holds, or waits for it.

A session is a hub connection that lives between polls. The client's cursor is the truth: a poll
whose cursor is behind what the session already sent (a response lost with a dropped
connection), a poll racing another on the same session, or a poll for an expired session starts
a fresh session that replays the history after the cursor, so nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web

from servers import auth
from servers.aiohttp_common import HUB, authenticate, error_response
from servers.hub import Connection, Hub
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

MAX_TIMEOUT_SECONDS = 60.0
IDLE_SECONDS = 30.0
"""A session with no poll for this long is closed (presence goes offline)."""
REAP_EVERY_SECONDS = 1.0


@dataclass
class _Session:
    conn: Connection
    cursor: wire.Cursor
    """What the session has sent so far."""
    polling: bool = False
    idle_since: float = field(default=0.0)


SESSIONS: web.AppKey[dict[str, _Session]] = web.AppKey("poll_sessions", dict)


async def handle(request: web.Request) -> web.Response:
    user = str(authenticate(request)["sub"])
    hub = request.app[HUB]
    try:
        cursor = wire.parse_cursor(request.query.get("cursor"))
        channels = wire.split_channels(request.query.get("channels")) or list(cursor)
        timeout = _timeout(request.query.get("timeout"))
        for channel in channels:
            if not auth.may_subscribe(user, channel):
                raise WireError(ErrorCode.FORBIDDEN, f"{channel} is private")
    except WireError as exc:
        return error_response(exc)

    sessions = request.app[SESSIONS]
    found = sessions.get(request.query.get("conn", ""))
    fresh = found is None or found.conn.user != user or not _continues(found, cursor)
    if found is not None and not fresh:
        session = found
    else:
        if found is not None and found.conn.user == user:
            await _end(hub, sessions, found)
        session = await _open(hub, sessions, user, channels, cursor)
    session.polling = True
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        items = await session.conn.outgoing(timeout=timeout)
        while fresh and cursor and items and all(item.type in _NOT_NEWS for item in items):
            # a fresh session for a poll that carries a cursor: its hello and acks are not
            # news after that cursor, so the poll holds on as any other would
            left = deadline - asyncio.get_running_loop().time()
            more = await session.conn.outgoing(timeout=left) if left > 0 else []
            if not more:
                break
            items += more
    finally:
        session.polling = False
        session.idle_since = hub.clock()
    messages = []
    for item in items:
        if item.id:
            session.cursor[item.channel] = item.id  # type: ignore[index]
        messages.append(item.text)
    body = (f'{{"messages":[{",".join(messages)}],'
            f'"cursor":{json.dumps(wire.format_cursor(session.cursor))},'
            f'"conn":{json.dumps(session.conn.id)}}}')
    return web.Response(text=body, content_type="application/json")


_NOT_NEWS = frozenset({"hello", "ack"})
"""What a fresh session queues before anything a poll's cursor has not seen."""


def _timeout(text: str | None) -> float:
    """The poll's ``timeout`` (seconds, 0..MAX_TIMEOUT_SECONDS; default POLL_TIMEOUT_SECONDS)."""
    try:
        timeout = wire.POLL_TIMEOUT_SECONDS if text is None else float(text)
    except ValueError:
        timeout = -1.0
    if not 0 <= timeout <= MAX_TIMEOUT_SECONDS:  # also NaN
        raise WireError(ErrorCode.BAD_REQUEST, f"timeout must be 0..{MAX_TIMEOUT_SECONDS:g} s")
    return timeout


def _continues(session: _Session, cursor: wire.Cursor) -> bool:
    if session.polling or session.conn.closed:
        return False
    return all(cursor.get(ch, 0) >= sent for ch, sent in session.cursor.items())


async def _open(hub: Hub, sessions: dict[str, _Session], user: str, channels: list[str],
                cursor: wire.Cursor) -> _Session:
    conn = await hub.connect(user, "longpoll")
    session = sessions[conn.id] = _Session(conn, {})
    for channel in channels:
        session.cursor[channel] = await hub.subscribe(conn, channel, cursor.get(channel))
    return session


async def _end(hub: Hub, sessions: dict[str, _Session], session: _Session) -> None:
    sessions.pop(session.conn.id, None)
    await hub.disconnect(session.conn)


def start_reaper(app: web.Application) -> None:
    """Close sessions idle past IDLE_SECONDS, and sessions the hub cut off."""
    app[SESSIONS] = {}
    hub = app[HUB]

    async def reap() -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_SECONDS)
            now = hub.clock()
            for session in list(app[SESSIONS].values()):
                expired = not session.polling and now - session.idle_since > IDLE_SECONDS
                if expired or (session.conn.closed and not session.polling):
                    await _end(hub, app[SESSIONS], session)

    task = asyncio.get_running_loop().create_task(reap())

    async def stop(app: web.Application) -> None:
        task.cancel()

    app.on_cleanup.append(stop)
