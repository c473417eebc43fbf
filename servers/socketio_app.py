"""Socket.IO adapter (python-socketio on aiohttp): the contract's ops are events, replies are acks.

- One Socket.IO session (default namespace) is one hub Connection.
- Events ``subscribe``, ``unsubscribe``, ``publish`` and ``echo`` carry the request envelope
  (``op`` may be left out: the event name is the op). The handler's return value, sent back as
  the Socket.IO ack, is the reply envelope: ``ack``, ``echo`` or ``error``. Any other event gets
  a ``bad_request`` error the same way.
- Everything else the hub queues (``hello``, ``message``, ``presence``) is pumped to the session
  as an event named after the envelope type.
- Rooms are not used: the hub already owns channels, ids, history and resume. A Socket.IO room
  would be a second subscription table that knows nothing of ids, so ``subscribe`` with
  ``since`` could not replay from it; one pump per session keeps every transport's delivery path
  the same (docs/socketio-webrtc.md).
- The token is checked by middleware on the handshake request, before engine.io opens a session:
  a bad ``?token=`` / ``Authorization: Bearer`` is HTTP 401. A handshake without either may still
  present ``{"token": ...}`` in Socket.IO's ``auth`` dict; that arrives only inside the CONNECT
  packet, after the engine.io session exists, so its refusal is a CONNECT_ERROR, not a 401.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import socketio
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from engineio.async_drivers import aiohttp as aiohttp_driver
from engineio.payload import Payload
from socketio import packet

from servers import auth
from servers.aiohttp_common import admit, authenticate, hub_app
from servers.hub import Connection, Hub
from servers.run import Options, Running, core, serve_app
from servers.sender import CLOSE_GRACE_SECONDS
from servers.ws import MaskedResponse
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode

log = logging.getLogger("sobranie.socketio")

PATH = "/socket.io/"
OPS = ("subscribe", "unsubscribe", "publish", "echo")
USER = web.RequestKey("sobranie.user", str)
"""Request key where the middleware leaves the user id a valid handshake token proved."""


class SocketIOAdapter:
    """The Socket.IO server and its sessions, each bound to one hub Connection."""

    def __init__(self, hub: Hub, authenticator: auth.Authenticator) -> None:
        self.hub = hub
        self.auth = authenticator
        self.sio = _Server(
            self.undecodable,
            async_mode="aiohttp",
            async_handlers=False,  # a session's requests run in order, like a WebSocket's
            max_http_buffer_size=hub.limits.hard_frame,
            cors_allowed_origins=list(authenticator.origins) or "*")
        self.sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # python-engineio refuses a polling POST of more than 16 packets (a class-wide guard,
        # python-engineio#142) although its clients put every queued emit in one POST; the hub's
        # token bucket is the flood guard here, so accept up to a burst's worth.
        Payload.max_decode_packets = max(Payload.max_decode_packets, int(hub.limits.burst))
        self.sio.on("connect", self.connect)
        self.sio.on("disconnect", self.disconnect)
        for op in OPS:
            self.sio.on(op, self._handler(op))
        self.sio.on("*", self.unknown)

    async def connect(self, sid: str, environ: dict[str, Any], auth_data: Any) -> None:
        request: web.Request = environ["aiohttp.request"]
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        try:
            user = request.get(USER) or self._user_from_auth(auth_data)
        except socketio.exceptions.ConnectionRefusedError:
            # CONNECT_ERROR is queued when this returns; then end the engine.io session too,
            # rather than keep it open for another attempt.
            self.background(self.sio.eio.disconnect(eio_sid))
            raise
        conn = await self.hub.connect(user, "socketio")
        carrier = request.transport if request.query.get("transport") == "websocket" else None
        conn.replies_apart = True  # replies are the calls' acks, not events
        session = Session(self, sid, eio_sid, conn, carrier)
        self.sessions[sid] = session
        conn.on_close = session.cut
        # The CONNECT packet is queued as soon as this handler returns, before the pump's first
        # step, so ``hello`` always follows it.
        session.start()

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the current handler, holding it until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _user_from_auth(self, auth_data: Any) -> str:
        token = auth_data.get("token") if isinstance(auth_data, dict) else None
        try:
            return str(self.auth.claims(token if isinstance(token, str) else None)["sub"])
        except auth.Unauthorized as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                f"unauthorized: {exc}",
                self.hub.refused(wire.WireError(ErrorCode.UNAUTHORIZED, str(exc)))) from None

    async def disconnect(self, sid: str, reason: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        await session.end()
        # One engine.io session carries one Socket.IO session: end it too. Its CLOSE packet also
        # answers a pending long-poll, which python-engineio would otherwise hold open until the
        # client's poll timeout (30 s) when the client closes first.
        socket = self.sio.eio.sockets.get(session.eio_sid)
        if socket is not None and not (socket.closing or socket.closed):
            await socket.close(wait=False)

    def _handler(self, op: str) -> Callable[..., Awaitable[dict[str, Any] | None]]:
        async def handle(sid: str, *args: Any) -> dict[str, Any] | None:
            return await self.request(sid, op, args)

        return handle

    async def unknown(self, event: str, sid: str, *args: Any) -> dict[str, Any] | None:
        return await self.request(sid, event, args)

    async def request(self, sid: str, op: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
        """Run one request through the hub; return its reply (the Socket.IO ack)."""
        session = self.sessions.get(sid)
        if session is None:
            return None
        body = args[0] if len(args) == 1 else list(args)
        try:
            raw = wire.reencode({**body, "op": op} if isinstance(body, dict) else body)
        except wire.WireError as exc:
            return self.hub.refused(exc)
        replies = await self.hub.handle(session.conn, raw)
        return replies[0] if replies else None

    async def undecodable(self, eio_sid: str, data: Any, exc: BaseException) -> None:
        """A Socket.IO packet python-socketio could not decode (broken or too deeply nested
        JSON, a number too long, an event with no name): ``bad_request``, as the ack of the
        call when the packet names one, else as an ``error`` event; a session that never
        connected is ended."""
        log.info("socket.io packet refused: %s: %s", type(exc).__name__, str(exc)[:200])
        sid = self.sio.manager.sid_from_eio_sid(eio_sid, "/")
        session = self.sessions.get(sid) if sid is not None else None
        if session is None:
            await self.sio.eio.disconnect(eio_sid)
            return
        error = wire.WireError(ErrorCode.BAD_REQUEST,
                               f"undecodable Socket.IO packet: {type(exc).__name__}")
        call = _ACK_ID.match(data) if isinstance(data, str) else None
        if call is None:
            self.hub.reject(session.conn, error)  # pumped as an ``error`` event
            return
        await self.sio.send_ack(eio_sid, int(call[1]), self.hub.refused(error))


_ACK_ID = re.compile(r"[25](?:/[^,]*,)?(\d{1,15})")
"""The ack id of an EVENT packet, which names the call its reply answers."""


class _Server(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server, with the packets it cannot decode handed to ``undecodable``
    instead of raising out of its handler (a traceback in the log, and no answer)."""

    def __init__(self, undecodable: Callable[[str, Any, BaseException], Awaitable[None]],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.undecodable = undecodable
        self.eio._async = {**self.eio._async, "websocket": _MaskedWebSocket}

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (ValueError, RecursionError, IndexError, KeyError, TypeError) as exc:
            await self.undecodable(eio_sid, data, exc)

    async def send_ack(self, eio_sid: str, ack_id: int, envelope: dict[str, Any]) -> None:
        await self._send_packet(eio_sid, self.packet_class(
            packet.ACK, namespace="/", data=[envelope], id=ack_id))


class _MaskedWebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
    """engine.io's aiohttp WebSocket on the ws adapter's response, which closes 1002 on an
    unmasked client frame (RFC 6455 5.1; aiohttp's own parser takes one)."""

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = MaskedResponse(max_msg_size=self.server.max_http_buffer_size)
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock


class Session:
    """One Socket.IO session: pumps the hub's outbox to it as events, cut off when the hub says."""

    def __init__(self, adapter: SocketIOAdapter, sid: str, eio_sid: str, conn: Connection,
                 carrier: asyncio.Transport | None) -> None:
        self.adapter = adapter
        self.sid = sid
        self.eio_sid = eio_sid
        self.conn = conn
        self.carrier = carrier
        """The TCP transport of a websocket-only session (aborted when the hub cuts it off)."""
        self.pump: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        eio = self.adapter.sio.eio
        while not self.conn.closed:
            for item in await self.conn.outgoing():
                await eio.send(self.eio_sid, event_packet(item.type, item.text))
            socket = eio.sockets.get(self.eio_sid)
            if socket is None:
                return
            # engine.io's own queue is unbounded: wait until its writer (or the next poll) took
            # what we sent, so a stalled client backs up into the hub's bounded outbox instead.
            await socket.queue.join()

    async def end(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        await self.adapter.hub.disconnect(self.conn)

    def cut(self, code: int, reason: str) -> None:
        """The hub gave up on this session (slow consumer, flood): disconnect it, and abort a
        stalled websocket whose writer can no longer drain."""
        if self.pump is not None:
            self.pump.cancel()

        async def close() -> None:
            for item in self.conn.last_words():  # the flood's error
                await self.adapter.sio.eio.send(self.eio_sid, event_packet(item.type, item.text))
            await self.adapter.sio.disconnect(self.sid)  # and its engine.io session
            if self.carrier is not None:  # a reader gets the last words; a stalled one is cut
                await asyncio.sleep(CLOSE_GRACE_SECONDS)
                self.carrier.abort()

        self.adapter.background(close())


def event_packet(event: str, envelope_text: str) -> str:
    """The Socket.IO (v5) EVENT packet for the default namespace, ``2["<event>",<envelope>]``,
    built around the envelope text the hub encoded once for all recipients (python-socketio's
    ``emit`` takes the envelope as a dict and encodes it again on every call)."""
    return f'2["{event}",{envelope_text}]'


def _middleware(authenticator: auth.Authenticator) -> Middleware:
    @web.middleware
    async def check_handshake(request: web.Request, handler: Handler) -> web.StreamResponse:
        """The token on the handshake (no ``sid`` yet), so a bad one is HTTP 401 before
        engine.io allocates anything. (A foreign ``Origin`` is refused before this, by
        servers/cors.py; a same-origin polling GET carries none.)"""
        if request.path == PATH:
            presented = "token" in request.query or "Authorization" in request.headers
            if "sid" not in request.query and presented:
                request[USER] = str(authenticate(request)["sub"])
                admit(request, request[USER])
        return await handler(request)

    return check_handshake


def make_app(hub: Hub, authenticator: auth.Authenticator) -> web.Application:
    adapter = SocketIOAdapter(hub, authenticator)
    app = hub_app(hub, authenticator, middlewares=[_middleware(authenticator)],
                  closing=[adapter.sio.shutdown])
    adapter.sio.attach(app, socketio_path=PATH.strip("/"))
    return app


async def start(opts: Options) -> Running:
    """``sobranie-bench serve socketio``: the Socket.IO app on its own port."""
    app = make_app(*core(opts, "sobranie-socketio"))
    return await serve_app(app, opts, lambda url: {"socketio": f"{url}{PATH}"})
