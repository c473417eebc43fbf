"""WebSocket client (aiohttp): one envelope per text frame, both ways."""

from __future__ import annotations

import socket

import aiohttp

from sobranie_bench import wire
from sobranie_bench.clients.base import ClientError
from sobranie_bench.clients.http import AiohttpClient


class WsClient(AiohttpClient):
    transport = "ws"
    path = "/ws"
    _ws: aiohttp.ClientWebSocketResponse | None = None

    async def _open(self, resume: bool) -> None:
        url = self.url.replace("http", "ws", 1) + f"{self.path}?{self.token_query}"
        try:
            self._ws = await self.session.ws_connect(url, max_msg_size=0, autoping=True,
                                                     timeout=aiohttp.ClientWSTimeout(
                                                         ws_close=self.timeout))
        except aiohttp.WSServerHandshakeError as exc:
            raise ClientError(f"WebSocket upgrade refused: HTTP {exc.status} {exc.message}"
                              ) from None
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(f"cannot reach {url}: {exc}") from None
        for channel in self.channels:
            await self._send(self._subscription(channel, self.cursor.get(channel)))

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._dispatch(wire.decode(msg.data))
        self.close_code = ws.close_code

    async def _send(self, req: wire.Request) -> None:
        if self._ws is None or self._ws.closed:
            raise ClientError("not connected")
        await self._ws.send_str(wire.encode(wire.request_to_dict(req)))

    async def send_raw(self, data: str | bytes) -> None:
        """Send bytes as they are (tests of malformed and oversize frames)."""
        assert self._ws is not None
        if isinstance(data, bytes):
            await self._ws.send_bytes(data)
        else:
            await self._ws.send_str(data)

    async def _abort(self, graceful: bool = False) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        if graceful:
            await ws.close()
            return
        sock = ws.get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
