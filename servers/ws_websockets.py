"""The same WebSocket contract on the `websockets` library, to compare the two Python stacks.

Auth and Origin are checked in ``process_request`` (401/403 before the upgrade); /healthz and
/metrics are answered there too. Everything else is the same hub as the aiohttp server, and the
same :class:`~servers.sender.Sender` and :class:`~servers.sender.Cut` (replies inline, no writer task per connection); no
permessage-deflate, as on the aiohttp server.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from ssl import SSLContext
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from servers import auth
from servers.hub import Hub
from servers.sender import Cut, Sender
from sobranie_contract import wire


class WebsocketsServer:
    def __init__(self, hub: Hub, authenticator: auth.Authenticator) -> None:
        self.hub = hub
        self.auth = authenticator

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> Server:
        await self.hub.start()
        return await serve(self._session, host, port, process_request=self._check,
                           max_size=self.hub.limits.hard_frame, compression=None,
                           open_timeout=self.hub.limits.header_timeout, ssl=ssl)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return connection.respond(HTTPStatus.OK, json.dumps(
                {"status": "ok", "server": self.hub.server}) + "\n")
        if url.path == "/metrics":
            return connection.respond(HTTPStatus.OK, self.hub.metrics.render(self.hub))
        if url.path != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        try:
            query = dict(parse_qsl(url.query))
            user = self.auth.user(query, request.headers)
        except auth.Unauthorized as exc:
            envelope = self.hub.refused(wire.WireError(wire.ErrorCode.UNAUTHORIZED, str(exc)))
            refusal = connection.respond(HTTPStatus.UNAUTHORIZED, wire.encode(envelope) + "\n")
            refusal.headers["WWW-Authenticate"] = "Bearer"
            refusal.headers["Content-Type"] = "application/json"
            return refusal
        if not self.auth.origin_allowed(request.headers.get("Origin")):
            return connection.respond(HTTPStatus.FORBIDDEN, "origin not allowed\n")
        try:
            self.hub.admit(user)
        except wire.WireError as exc:
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS,
                                      wire.encode(self.hub.refused(exc)) + "\n")
        connection.user = user  # type: ignore[attr-defined]
        return None

    async def _session(self, ws: ServerConnection) -> None:
        conn = await self.hub.connect(ws.user, "ws")  # type: ignore[attr-defined]
        sender = Sender(conn, ws.send, gone=(ConnectionClosed,))
        conn.on_close = Cut(sender, ws.close, ws.transport.abort)
        try:
            await sender.flush()  # hello
            async for raw in ws:
                await sender.handle(raw)
        except ConnectionClosed:
            pass
        finally:
            sender.stop()
            await self.hub.disconnect(conn)
