"""What the aiohttp-based clients share: one connection pool, errors a person can read."""

from __future__ import annotations

from typing import Any

import aiohttp

from sobranie_bench.clients.base import Client, ClientError
from sobranie_contract import wire


class AiohttpClient(Client):
    """A client whose bytes travel over an aiohttp session (its own, or a shared pool)."""

    def __init__(self, url: str, token: str, *, session: aiohttp.ClientSession | None = None,
                 **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        self._session = session
        self._own_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Keep cookies from IP hosts too, as browsers do: a balancer's sticky-session
            # cookie (HAProxy ``cookie SRV insert``) on http://127.0.0.1 must come back.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, force_close=False, keepalive_timeout=KEEPALIVE_SECONDS,
                    ssl=self.ssl_context or True,
                    local_addr=(self.source, 0) if self.source else None),
                cookie_jar=aiohttp.CookieJar(unsafe=True))
        return self._session

    async def close(self) -> None:
        await super().close()
        if self._own_session and self._session is not None:
            await self._session.close()


KEEPALIVE_SECONDS = 1.0
"""How long an idle pooled connection is reused: well under the servers' header timeout
(``Limits.header_timeout``, which also closes idle kept-alive connections), so a request never
goes out on a connection the server is closing ("Server disconnected")."""


def refused(resp: aiohttp.ClientResponse, body: str) -> ClientError:
    return ClientError(f"{resp.method} {resp.url.path}: HTTP {resp.status}: {body[:200]}")


class OneWayClient(AiohttpClient):
    """SSE and long-polling: the server speaks on a stream; the client speaks by POST
    (/publish answers with the ack; /echo, /subscribe, /unsubscribe answer on the stream)."""

    async def _send(self, req: wire.Request) -> None:
        body = wire.request_to_dict(req)
        op = body.pop("op")
        if op != "publish":
            if self.conn is None:
                raise ClientError("not connected")
            body["conn"] = self.conn
        async with self.session.post(f"{self.url}/{op}", json=body,
                                     headers={"Authorization": f"Bearer {self.token}"}) as resp:
            text = await resp.text()
            if resp.status == 401:
                raise refused(resp, text)
            if resp.status != 202:
                try:
                    env = wire.decode(text)
                except (ValueError, wire.WireError):
                    raise refused(resp, text) from None
                if env["type"] == "error":  # the answer to this request, whatever its ref
                    raise wire.WireError(wire.ErrorCode(env["code"]), env["message"], req.ref)
                self._dispatch(env)

    @property
    def channel_query(self) -> str:
        return ",".join(self.channels)
