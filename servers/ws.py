"""WebSocket adapter (aiohttp): text frames in -> hub; the outbox -> text frames out.

Replies go out inline after each request, other envelopes from a short-lived task
(:class:`~servers.hub.Sender`): no writer task per connection. permessage-deflate is not
negotiated (``compress=False``): browsers offer it on every connection, and a deflate context
costs about 90 KiB per connection and a fifth more CPU per small envelope (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.helpers import set_exception
from aiohttp.http_websocket import WebSocketError

from servers.aiohttp_common import AUTH, HUB, authenticate
from servers.hub import Sender

CLOSE_GRACE_SECONDS = 1.0
_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


class _MaskedOnly:
    """Stands in front of aiohttp's frame parser and refuses the first unmasked client frame:
    RFC 6455 5.1 says a server must close (1002) on one, and aiohttp's parser unmasks only when
    the mask bit is set. It reads frame headers only (payloads are skipped by length)."""

    __slots__ = ("head", "parser", "queue", "skip")

    def __init__(self, parser: Any, queue: Any) -> None:
        self.parser = parser
        self.queue = queue
        """Where the parser puts messages (and errors) for ``receive()``."""
        self.head = b""
        """The start of a frame header split across reads."""
        self.skip = 0
        """Payload bytes of the current frame still to come."""

    def feed_eof(self) -> None:
        self.parser.feed_eof()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        pos, end = 0, len(data)
        while pos < end:
            if self.skip:
                step = min(self.skip, end - pos)
                self.skip -= step
                pos += step
                continue
            head = self.head + data[pos:pos + 14]
            if len(head) < 2:
                break
            if not head[1] & 0x80:
                if pos:
                    self.parser.feed_data(data[:pos])
                set_exception(self.queue, WebSocketError(
                    WSCloseCode.PROTOCOL_ERROR, "unmasked client frame"))
                return True, b""
            size = head[1] & 0x7F
            ext = 2 if size == 126 else 8 if size == 127 else 0
            if len(head) < 2 + ext + 4:
                break
            if ext:
                size = int.from_bytes(head[2:2 + ext], "big")
            pos += 2 + ext + 4 - len(self.head)
            self.head = b""
            self.skip = size
        self.head += data[pos:]  # a header split across reads (nothing when pos == end)
        return self.parser.feed_data(data)  # type: ignore[no-any-return]


class _Response(web.WebSocketResponse):
    """aiohttp's WebSocket response, its frame parser behind :class:`_MaskedOnly`."""

    def _post_start(self, request: web.BaseRequest, protocol: str | None,
                    writer: Any) -> None:
        handler: Any = request.protocol
        tail, handler._message_tail = handler._message_tail, b""  # frames sent with the upgrade
        super()._post_start(request, protocol, writer)
        handler._payload_parser = guard = _MaskedOnly(handler._payload_parser, self._reader)
        if tail:
            guard.feed_data(tail)


async def handle(request: web.Request) -> web.WebSocketResponse:
    user = str(authenticate(request)["sub"])
    if not request.app[AUTH].origin_allowed(request.headers.get("Origin")):
        raise web.HTTPForbidden(text="origin not allowed")
    hub = request.app[HUB]
    ws = _Response(max_msg_size=hub.limits.hard_frame, compress=False)
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
