"""The same WebSocket contract on the `websockets` library, to compare the two Python stacks.

Auth and Origin are checked in ``process_request`` (401/403 before the upgrade); /healthz and
/metrics are answered there too. Everything else is the same hub as the aiohttp server, and the
same :class:`~servers.hub.Sender` (replies inline, no writer task per connection); no
permessage-deflate, as on the aiohttp server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from servers import auth
from servers.brokers import Broker
from servers.hub import Hub, Limits, Sender
from servers.ws import CLOSE_GRACE_SECONDS
from sobranie_contract import tokens, wire


class WebsocketsServer:
    def __init__(self, *, secret: str | None = None, origins: Sequence[str] = (),
                 broker: Broker | None = None, limits: Limits | None = None) -> None:
        self.hub = Hub(broker, limits=limits, server="sobranie-websockets")
        self.auth = auth.Authenticator(tokens.secret_from_env(secret), origins)

    async def start(self, host: str, port: int) -> Server:
        await self.hub.start()
        return await serve(self._session, host, port, process_request=self._check,
                           max_size=self.hub.limits.hard_frame, compression=None,
                           open_timeout=self.hub.limits.header_timeout)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return connection.respond(HTTPStatus.OK, '{"status":"ok"}\n')
        if url.path == "/metrics":
            return connection.respond(HTTPStatus.OK, self.hub.metrics.render(self.hub))
        if url.path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        try:
            query = dict(parse_qsl(url.query))
            user = self.auth.user(query, request.headers)
        except auth.Unauthorized as exc:
            refusal = connection.respond(
                HTTPStatus.UNAUTHORIZED,
                wire.encode(wire.error(wire.ErrorCode.UNAUTHORIZED, str(exc))) + "\n")
            refusal.headers["WWW-Authenticate"] = "Bearer"
            refusal.headers["Content-Type"] = "application/json"
            return refusal
        if not self.auth.origin_allowed(request.headers.get("Origin")):
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        connection.user = user  # type: ignore[attr-defined]
        return None

    async def _session(self, ws: ServerConnection) -> None:
        conn = await self.hub.connect(ws.user, "ws")  # type: ignore[attr-defined]
        sender = Sender(conn, ws.send, gone=(ConnectionClosed,))
        conn.on_close = _Cut(ws, sender)
        try:
            await sender.flush()  # hello
            async for raw in ws:
                await sender.handle(raw)
        except ConnectionClosed:
            pass
        finally:
            sender.stop()
            await self.hub.disconnect(conn)


class _Cut:
    """The hub gave up on this connection: close with its reason; abort a stalled reader
    (whose full socket buffer would hold the closing handshake up)."""

    __slots__ = ("sender", "ws")

    def __init__(self, ws: ServerConnection, sender: Sender) -> None:
        self.ws, self.sender = ws, sender

    def __call__(self, code: int, reason: str) -> None:
        self.sender.stop()
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code, reason[:120]), CLOSE_GRACE_SECONDS)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self.ws.transport.abort()

