"""Long-polling client: GET /poll in a loop, carrying the cursor; a lost poll resumes from it."""

from __future__ import annotations

import json

import aiohttp

from sobranie_bench.clients.base import ClientError
from sobranie_bench.clients.http import OneWayClient, refused
from sobranie_contract import wire


class PollClient(OneWayClient):
    transport = "longpoll"
    path = "/poll"
    poll_timeout = wire.POLL_TIMEOUT_SECONDS
    _resp: aiohttp.ClientResponse | None = None

    async def _open(self, resume: bool) -> None:
        self.conn = None
        await self._poll(0)

    async def _read(self) -> None:
        while True:
            await self._poll(self.poll_timeout)

    async def _poll(self, timeout: float) -> None:
        params = {"channels": self.channel_query, "cursor": wire.format_cursor(self.cursor),
                  "timeout": str(timeout), "token": self.token}
        if self.conn:
            params["conn"] = self.conn
        try:
            self._resp = resp = await self.session.get(
                f"{self.url}{self.path}", params=params,
                timeout=aiohttp.ClientTimeout(total=timeout + self.timeout))
            async with resp:
                text = await resp.text()
        except aiohttp.ClientError as exc:
            raise ClientError(f"poll failed: {exc}") from None
        finally:
            self._resp = None
        if resp.status != 200:
            raise refused(resp, text)
        body = json.loads(text)
        for env in body["messages"]:
            self._dispatch(env)
        self.merge_cursor(wire.parse_cursor(body.get("cursor")))

    async def _abort(self, graceful: bool = False) -> None:
        if self._resp is not None:
            self._resp.close()
