"""Socket.IO client (python-socketio ``AsyncClient``): ops are emitted as events of the same name,
replies come back as their Socket.IO acks; ``hello``, ``message``, ``presence`` and ``error``
arrive as events carrying the envelope.

``SocketIOClient`` speaks the websocket transport only, ``SocketIOPollingClient`` HTTP
long-polling only (no upgrade), so each is measured on its own. python-socketio's own
reconnection is off: the base class reconnects with full-jitter backoff and resumes by
subscribing with ``since``. The token rides the handshake's ``Authorization`` header: checked
before engine.io opens a session (HTTP 401), and sent once per connection, as a browser's
``auth`` dict would be (``?token=`` would repeat in every poll's URL).
"""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any, ClassVar

import aiohttp
import socketio
from engineio.payload import Payload

from sobranie_bench.clients.base import Client, ClientError
from sobranie_bench.clients.http import KEEPALIVE_SECONDS
from sobranie_contract import wire

SERVER_EVENTS = ("hello", "message", "presence", "error")
"""Events whose single argument is a server envelope (replies travel as acks instead)."""
PACKETS_PER_POLL = 1 << 16
"""Packets one poll response may carry: python-engineio refuses more than 16 by default (a
class-wide guard, python-engineio#142), while a busy server batches a whole outbox (the hub
queues up to 4096 envelopes per connection) into one response."""


class SocketIOClient(Client):
    transport = "socketio"
    path = "/socket.io/"
    engineio_transports: ClassVar[list[str]] = ["websocket"]

    def __init__(self, url: str, token: str, **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        self._sio: socketio.AsyncClient | None = None
        self._ended = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._handshake_status: tuple[int, str] | None = None
        self._refusal: str | None = None

    async def _open(self, resume: bool) -> None:
        Payload.max_decode_packets = max(Payload.max_decode_packets, PACKETS_PER_POLL)
        sio = socketio.AsyncClient(reconnection=False, handle_sigint=False,
                                   http_session=self._session(), request_timeout=self.timeout)
        ended = asyncio.Event()
        for event in SERVER_EVENTS:
            sio.on(event, self._dispatch)
        sio.on("disconnect", lambda reason: ended.set())
        sio.on("connect_error", self._refused)
        self._handshake_status = self._refusal = None
        try:
            await sio.connect(self.url, headers={"Authorization": f"Bearer {self.token}"},
                              transports=self.engineio_transports, wait_timeout=self.timeout)
        except socketio.exceptions.ConnectionError as exc:
            raise ClientError(self._refusal_message(exc)) from None
        self._sio, self._ended = sio, ended
        for channel in self.channels:
            await self._send(self._subscription(channel, self.cursor.get(channel)))

    async def _read(self) -> None:
        await self._ended.wait()

    async def _send(self, req: wire.Request) -> None:
        sio = self._sio
        if sio is None or not sio.connected:
            raise ClientError("not connected")
        body = wire.request_to_dict(req)
        op = body.pop("op")
        await sio.emit(op, body, callback=lambda reply=None: self._reply(req, reply))

    async def call(self, event: str, data: Any) -> Any:
        """Emit any event and return its ack as it came (tests of malformed requests)."""
        if self._sio is None:
            raise ClientError("not connected")
        return await self._sio.call(event, data, timeout=self.timeout)

    async def _abort(self, graceful: bool = False) -> None:
        sio = self._sio
        if graceful:
            if sio is not None and sio.connected:
                await sio.disconnect()
            return
        # Abrupt: no DISCONNECT or CLOSE packet; the TCP connections just go away.
        ws = sio.eio.ws if sio is not None else None
        if ws is not None and not ws.closed:
            sock = ws.get_extra_info("socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        elif self._http is not None:
            await self._http.close()

    def _reply(self, req: wire.Request, reply: Any) -> None:
        """The ack of one emit: its envelope, matched to the request by the ack id (a reply the
        server could not tie to a ``ref`` -- say ``too_large`` -- still gets the request's)."""
        if not isinstance(reply, dict):
            return
        if reply.get("ref") is None and req.ref is not None:
            reply = {**reply, "ref": req.ref}
        self._dispatch(reply)

    def _refused(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        self._refusal = str(message) if message else "connection refused"

    def _refusal_message(self, exc: Exception) -> str:
        if self._handshake_status is not None:
            status, reason = self._handshake_status
            return f"Socket.IO handshake refused: HTTP {status} {reason}"
        if self._refusal is not None:
            return f"Socket.IO CONNECT refused: {self._refusal}"
        return f"cannot reach {self.url}: {exc}"

    def _session(self) -> aiohttp.ClientSession:
        """One HTTP session for every (re)connect, tracing the handshake's status: engine.io
        reports a refused websocket handshake only as 'Connection error'."""
        if self._http is None or self._http.closed:
            trace = aiohttp.TraceConfig()

            async def on_end(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                             params: aiohttp.TraceRequestEndParams) -> None:
                if params.response.status >= 400:
                    self._handshake_status = (params.response.status, params.response.reason or "")

            trace.on_request_end.append(on_end)
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS,
                                               ssl=self.ssl_context or True),
                trace_configs=[trace])
        return self._http

    async def close(self) -> None:
        await super().close()
        if self._http is not None:
            await self._http.close()


class SocketIOPollingClient(SocketIOClient):
    transport = "socketio-polling"
    engineio_transports: ClassVar[list[str]] = ["polling"]
