"""Long-polling adapter: each GET /poll takes what the session's outbox holds, or waits for it.

A session is a hub connection that lives between polls. The client's cursor is the truth: a poll
whose cursor is behind what the session already sent (a response lost with a dropped
connection), a poll racing another on the same session, or a poll for an expired session starts
a fresh session that replays the history after the cursor, so nothing acknowledged is lost.
Between polls a session is parked in the hub, which says when it expires (``Limits.idle``, or
at once when the hub cut it off); one timer per app follows the hub's next deadline.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from aiohttp import web

from servers.aiohttp_common import HUB, admit, authenticate, error_response
from servers.hub import Connection, Hub
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

MAX_TIMEOUT_SECONDS = 60.0


@dataclass
class _Session:
    conn: Connection
    cursor: wire.Cursor
    """What the session has sent so far."""
    polling: bool = False


class _Sessions(dict[str, _Session]):
    """The app's poll sessions by id, and the one timer that ends those the hub expires."""

    def __init__(self, hub: Hub) -> None:
        super().__init__()
        self.hub = hub
        self.timer: asyncio.TimerHandle | None = None
        self.at: float | None = None
        """The hub deadline the timer is set for."""
        self.ending: set[asyncio.Task[None]] = set()

    def follow(self) -> None:
        """Set the timer for the hub's next deadline, unless it is set for one as early."""
        deadline = self.hub.next_deadline()
        if deadline is None or (self.at is not None and self.at <= deadline):
            return
        if self.timer is not None:
            self.timer.cancel()
        self.at = deadline
        self.timer = asyncio.get_running_loop().call_later(
            max(0.0, deadline - self.hub.clock()), self._expire)

    def _expire(self) -> None:
        self.timer = self.at = None
        for conn in self.hub.expire(self.hub.clock()):
            session = self.get(conn.id)
            if session is not None:
                task = asyncio.get_running_loop().create_task(_end(self.hub, self, session))
                self.ending.add(task)
                task.add_done_callback(self.ending.discard)
        self.follow()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


SESSIONS: web.AppKey[_Sessions] = web.AppKey("poll_sessions", _Sessions)


async def handle(request: web.Request) -> web.Response:
    user = str(authenticate(request)["sub"])
    hub = request.app[HUB]
    try:
        channels, cursor = hub.stream_channels(user, request.query.get("channels"),
                                               request.query.get("cursor"))
        timeout = _timeout(request.query.get("timeout"))
    except WireError as exc:
        return error_response(hub, exc)

    sessions = request.app[SESSIONS]
    found = sessions.get(request.query.get("conn", ""))
    fresh = found is None or found.conn.user != user or not _continues(found, cursor)
    if found is not None and not fresh:
        session = found
    else:
        if found is not None and found.conn.user == user:
            await _end(hub, sessions, found)
        admit(request, user)
        session = await _open(hub, sessions, user, channels, cursor)
    session.polling = True
    hub.unpark(session.conn)
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
        hub.park(session.conn)
        sessions.follow()
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


async def _open(hub: Hub, sessions: _Sessions, user: str, channels: list[str],
                cursor: wire.Cursor) -> _Session:
    conn = await hub.connect(user, "longpoll")
    conn.on_close = lambda code, reason: sessions.follow()  # a parked session cut off ends now
    session = sessions[conn.id] = _Session(conn, {})
    for channel in channels:
        session.cursor[channel] = await hub.subscribe(conn, channel, cursor.get(channel))
    return session


async def _end(hub: Hub, sessions: dict[str, _Session], session: _Session) -> None:
    sessions.pop(session.conn.id, None)
    await hub.disconnect(session.conn)


def mount(app: web.Application) -> None:
    """GET /poll on ``app``, with its sessions (ended with the app)."""
    app[SESSIONS] = sessions = _Sessions(app[HUB])
    app.router.add_get("/poll", handle)

    async def stop(app: web.Application) -> None:
        sessions.stop()

    app.on_cleanup.append(stop)
