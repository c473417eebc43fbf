"""Server-Sent Events client: reads the event stream, resumes with ``Last-Event-ID``."""

from __future__ import annotations

import asyncio

import aiohttp

from sobranie_bench.clients.base import ClientError
from sobranie_bench.clients.http import OneWayClient, refused
from sobranie_contract import wire


class SseClient(OneWayClient):
    transport = "sse"
    path = "/sse"
    _resp: aiohttp.ClientResponse | None = None

    async def _open(self, resume: bool) -> None:
        headers = {"Accept": "text/event-stream"}
        if resume and self.cursor:
            headers["Last-Event-ID"] = wire.format_cursor(self.cursor)
        url = f"{self.url}{self.path}?channels={self.channel_query}&{self.token_query}"
        # the stream itself has no deadline, but its answer does: a server that accepted the
        # connection and never answers (busy, or its accept queue full) must not hang connect()
        try:
            resp = await asyncio.wait_for(self.session.get(
                url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)), self.timeout)
        except TimeoutError:
            raise ClientError(f"cannot reach {self.url}{self.path}: no answer in "
                              f"{self.timeout:g} s "
                              "(timeout)") from None
        except aiohttp.ClientConnectionError as exc:
            # the URL without its query: the token stays out of logs, the OS's words stay in
            raise ClientError(f"cannot reach {self.url}{self.path}: {exc}") from None
        if resp.status != 200:
            body = await resp.text()
            resp.release()
            raise refused(resp, body)
        self._resp = resp

    async def _read(self) -> None:
        assert self._resp is not None
        data: bytes | None = None
        event_id: str | None = None
        event = "message"  # the SSE default
        async for raw in self._resp.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data is not None:
                    if event_id:
                        self.merge_cursor(wire.parse_cursor(event_id))
                    env = wire.decode(data)
                    if wire.sse_event(env["type"]) != event:
                        raise ClientError(f"SSE event {event!r} carries a {env['type']!r} "
                                          f"envelope (expected {wire.sse_event(env['type'])!r})")
                    self._dispatch(env)
                data = event_id = None
                event = "message"
            elif line.startswith(b"data:"):
                data = line[5:].lstrip(b" ") if data is None else data + b"\n" + line[5:]
            elif line.startswith(b"id:"):
                event_id = line[3:].strip().decode()
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()

    async def _abort(self, graceful: bool = False) -> None:
        if self._resp is not None:
            self._resp.close()

