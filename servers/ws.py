"""WebSocket adapter (aiohttp): text frames in -> hub; the outbox -> text frames out.

Replies go out inline after each request, other envelopes from a short-lived task
(:class:`~servers.sender.Sender`): no writer task per connection. permessage-deflate is not
negotiated (``compress=False``): browsers offer it on every connection, and a deflate context
costs about 90 KiB per connection and a fifth more CPU per small envelope (docs/performance.md).
"""

from __future__ import annotations

from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.helpers import set_exception
from aiohttp.http_websocket import WebSocketError

from servers.aiohttp_common import AUTH, HUB, admit, authenticate
from servers.sender import Cut, Sender

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


class MaskedResponse(web.WebSocketResponse):
    """aiohttp's WebSocket response, its frame parser behind :class:`_MaskedOnly` (also what
    the Socket.IO adapter's engine.io WebSockets are)."""

    def _post_start(self, request: web.BaseRequest, protocol: str | None,
                    writer: Any) -> None:
        handler: Any = request.protocol
        tail, handler._message_tail = handler._message_tail, b""  # frames sent with the upgrade
        super()._post_start(request, protocol, writer)
        handler._payload_parser = guard = _MaskedOnly(handler._payload_parser, self._reader)
        # the HTTP parser is done once the upgrade is accepted (frames go to the guard, and
        # aiohttp checks for None wherever it could still reach it): freeing it saves about
        # 1.7 KiB per open WebSocket (docs/performance.md)
        handler._parser = None
        if tail:
            guard.feed_data(tail)


async def handle(request: web.Request) -> web.WebSocketResponse:
    user = str(authenticate(request)["sub"])
    if not request.app[AUTH].origin_allowed(request.headers.get("Origin")):
        raise web.HTTPForbidden(text="origin not allowed")
    admit(request, user)
    hub = request.app[HUB]
    ws = MaskedResponse(max_msg_size=hub.limits.hard_frame, compress=False)
    await ws.prepare(request)
    conn = await hub.connect(user, "ws")
    sender = Sender(conn, ws.send_str)
    conn.on_close = Cut(sender, lambda code, reason: ws.close(code=code, message=reason.encode()),
                        lambda: _abort(request), lambda: ws.closed)
    try:
        await sender.flush()  # hello
        async for msg in ws:
            if msg.type in _DATA:
                await sender.handle(msg.data)
    finally:
        sender.stop()
        await hub.disconnect(conn)
    return ws


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
