"""WebSocket client: one envelope per text frame, both ways (RFC 6455).

A small asyncio protocol rather than aiohttp's or websockets' client: frames are parsed as bytes
arrive and handed straight to the dispatcher, with no task or future per message. The harness
must be cheaper than the server it measures (docs/methodology.md has the measured difference);
the handshake, masking, fragmentation, ping/pong and the closing handshake are all done as the
RFC says, so servers see an ordinary browser-like client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from urllib.parse import urlsplit

from websockets.speedups import apply_mask

from sobranie_bench.clients.base import Client, ClientError
from sobranie_contract import wire

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + apply_mask(payload, key)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: WsClient, key: bytes) -> None:
        self.client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a handshake that fails after its waiter gave up (a timeout) is no orphan error
        self.handshake.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = bytearray()
        self.fragments: list[bytes] = []
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded and not self._upgrade():
            return
        self._frames()

    def _upgrade(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        body = bytes(self.buf[end + 4:])
        del self.buf[:]
        status = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (h.partition(":") for h in head[1:])}
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        if len(status) < 2 or status[1] != "101":
            self._fail(ClientError(f"WebSocket upgrade refused: HTTP {' '.join(status[1:])}: "
                                   f"{body[:200].decode(errors='replace')}"))
            return False
        if headers.get("sec-websocket-accept") != accept:
            self._fail(ClientError("WebSocket upgrade: bad Sec-WebSocket-Accept"))
            return False
        self.upgraded = True
        if self.handshake.done():  # its waiter gave up (timed out): nobody wants this one
            self._fail(ClientError("WebSocket upgrade answered after the client gave up"))
            return False
        self.handshake.set_result(None)
        self.buf += body
        return True

    def _frames(self) -> None:
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, start = b1 & 0x7F, pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
            if size < start + n:
                break
            payload = bytes(buf[start:start + n])
            pos = start + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            self.fragments.append(payload)
            if fin:
                data = b"".join(self.fragments) if len(self.fragments) > 1 else payload
                self.fragments.clear()
                self.client._dispatch(wire.decode(data))
        elif opcode == OP_PING:
            self.send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.client.close_code = code
            self.send(OP_CLOSE, payload[:2])
            assert self.transport is not None
            self.transport.close()

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ClientError("not connected")
        self.transport.write(frame(opcode, payload))

    def _fail(self, exc: Exception) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ClientError(f"connection lost during the upgrade: {exc}"))
        if not self.ended.done():
            self.ended.set_result(None)


class WsClient(Client):
    transport = "ws"
    path = "/ws"
    sends_at_once = True
    _proto: _Protocol | None = None

    async def _open(self, resume: bool) -> None:
        url = urlsplit(self.url)
        ctx = self.ssl_context
        host, port = url.hostname or "127.0.0.1", url.port or (443 if ctx else 80)
        key = base64.b64encode(os.urandom(16))
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(loop.create_connection(
                lambda: _Protocol(self, key), host, port, ssl=ctx,
                server_hostname=host if ctx else None,
                local_addr=(self.source, 0) if self.source else None), self.timeout)
        except OSError as exc:  # ssl.SSLError included
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert proto.transport is not None
        proto.transport.write(
            (f"GET {self.path}?{self.token_query} HTTP/1.1\r\nHost: {authority}\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
             ).encode())
        try:
            await asyncio.wait_for(proto.handshake, self.timeout)
        except BaseException:  # timed out or cancelled: the socket must not stay half-open
            proto.transport.abort()
            raise
        self._proto = proto
        for channel in self.channels:
            await self._send(self._subscription(channel, self.cursor.get(channel)))

    async def _read(self) -> None:
        assert self._proto is not None
        await asyncio.shield(self._proto.ended)

    async def _send(self, req: wire.Request) -> None:
        if self._proto is None:
            raise ClientError("not connected")
        self._proto.send(OP_TEXT, wire.encode(wire.request_to_dict(req)).encode())

    async def send_raw(self, data: str | bytes) -> None:
        """Send bytes as they are (tests of malformed and oversize frames)."""
        assert self._proto is not None
        if isinstance(data, bytes):
            self._proto.send(OP_BINARY, data)
        else:
            self._proto.send(OP_TEXT, data.encode())

    async def _abort(self, graceful: bool = False) -> None:
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return
        if graceful:
            proto.send(OP_CLOSE, (1000).to_bytes(2, "big"))
            try:
                await asyncio.wait_for(asyncio.shield(proto.ended), 1.0)
            except TimeoutError:
                pass
        proto.transport.abort()
