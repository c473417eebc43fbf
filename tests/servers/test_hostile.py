"""Regressions for what an outside probe broke, each over real sockets against one server (the
attacks every transport must survive run for all of them in test_transports.py, "hostile")."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from sobranie_bench import wire
from sobranie_bench.clients.ws import OP_TEXT, frame
from tests.conftest import UNIT, token

NINES = "9" * 5000
"""A cursor id with more digits than Python's int() takes from text (4300)."""


async def _get(url: str, **kwargs) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def _raw(server, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    return reader, writer


@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_huge_sse_cursor_is_a_bad_request(start_server, where):
    server = await start_server("sse")
    cursor = f"chat:x={NINES}"
    url = f"{server.url}/sse?channels=chat:x&token={token('a')}"
    if where == "header":
        status, body, _ = await _get(url, headers={"Last-Event-ID": cursor})
    else:
        status, body, _ = await _get(f"{url}&last_event_id={cursor}")
    assert status == 400
    assert json.loads(body)["code"] == "bad_request"
    assert "2^63" in json.loads(body)["message"]


async def test_a_huge_poll_cursor_says_what_is_wrong(start_server):
    server = await start_server("longpoll")
    status, body, _ = await _get(f"{server.url}/poll?channels=chat:x&cursor=chat:x={NINES}"
                                 f"&token={token('a')}")
    assert status == 400
    assert "timeout" not in json.loads(body)["message"]
    status, body, _ = await _get(f"{server.url}/poll?channels=chat:x&timeout=61"
                                 f"&token={token('a')}")
    assert (status, json.loads(body)["code"]) == (400, "bad_request")
    assert "timeout" in json.loads(body)["message"]


async def test_the_aiohttp_server_closes_1002_on_an_unmasked_frame(start_server):
    """RFC 6455 5.1: a client frame without a mask is a protocol error."""
    server = await start_server("ws")
    from tests.servers.test_transports import UPGRADE

    headers = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
    reader, writer = await _raw(server, f"GET /ws?token={token('a')} HTTP/1.1\r\nHost: x\r\n"
                                        f"{headers}\r\n".encode())
    try:
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await reader.readuntil(b'"hello"')
        masked = frame(OP_TEXT, json.dumps({"op": "echo", "data": 1, "ref": "m"}).encode())
        for i in range(len(masked)):  # a byte at a time: headers split across reads
            writer.write(masked[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0)
        await asyncio.wait_for(reader.readuntil(b'"ref":"m","data":1}'), UNIT)
        payload = json.dumps({"op": "echo", "data": 1, "ref": "u"}).encode()
        writer.write(bytes([0x80 | OP_TEXT, len(payload)]) + payload)  # mask bit clear
        got = await asyncio.wait_for(reader.read(), UNIT)  # until the server closes
        assert got.startswith(b"\x88"), got[:40]
        assert int.from_bytes(got[2:4], "big") == 1002
    finally:
        writer.close()


async def test_a_poll_with_timeout_0_on_a_session_answers_at_once(start_server):
    server = await start_server("longpoll")
    base = f"{server.url}/poll?channels=chat:t&token={token('a')}"
    status, body, _ = await _get(base + "&timeout=0")
    first = json.loads(body)
    assert status == 200 and first["messages"][0]["type"] == "hello"
    again = f"{base}&timeout=0&conn={first['conn']}&cursor={first['cursor']}"
    status, body, _ = await asyncio.wait_for(_get(again), UNIT)
    assert status == 200 and json.loads(body)["messages"] == []


async def test_a_poll_with_a_cursor_and_no_session_holds(start_server):
    """The documented contract (poll with the cursor, no session id) must not spin: the poll
    holds until a message after the cursor arrives, then brings it with the session's hello."""
    server = await start_server("longpoll")
    base = f"{server.url}/poll?channels=chat:h&token={token('a')}"
    _, body, _ = await _get(base + "&timeout=0")
    cursor = json.loads(body)["cursor"]
    assert cursor == "chat:h=0"
    held = asyncio.ensure_future(_get(f"{base}&cursor={cursor}&timeout={2 * UNIT}"))
    await asyncio.sleep(UNIT / 10)
    assert not held.done(), "a poll with a cursor and nothing after it answered at once"
    async with aiohttp.ClientSession() as session, session.post(
            f"{server.url}/publish", json={"channel": "chat:h", "data": "news"},
            headers={"Authorization": f"Bearer {token('b')}"}) as resp:
        assert resp.status == 200
    status, body, _ = await asyncio.wait_for(held, UNIT)
    assert status == 200
    types = [m["type"] for m in json.loads(body)["messages"]]
    assert types == ["hello", "ack", "message"]
    assert json.loads(body)["cursor"] == "chat:h=1"


async def test_sse_errors_are_fault_events_not_error_events(start_server):
    """EventSource fires its own ``error`` on connection failures; the contract's errors use
    another event name, on resume gaps and on the final event alike."""
    server = await start_server("sse", history_size=2)
    async with aiohttp.ClientSession() as session:
        for i in range(5):
            async with session.post(f"{server.url}/publish", json={"channel": "chat:f",
                                                                    "data": i},
                                    headers={"Authorization": f"Bearer {token('b')}"}):
                pass
        async with session.get(f"{server.url}/sse?channels=chat:f&token={token('a')}",
                               headers={"Last-Event-ID": "chat:f=1"}) as resp:
            events = b""
            while b"history_gap" not in events:
                events += await asyncio.wait_for(resp.content.readany(), UNIT)
            await server.stop()  # the server ends the stream: its final event
            events += await asyncio.wait_for(resp.content.read(), UNIT)
    text = events.decode()
    assert "event: error" not in text
    blocks = [b for b in text.split("\n\n") if "event: fault" in b]
    assert [json.loads(b.split("data: ", 1)[1])["code"] for b in blocks] == [
        "history_gap", "closed"]
    assert wire.sse_event("error") == "fault"
