"""Regressions for what an outside probe broke, each over real sockets against one server (the
attacks every transport must survive run for all of them in test_transports.py, "hostile")."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest

from sobranie_bench.clients.ws import OP_TEXT, frame
from sobranie_contract import wire
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


@pytest.mark.parametrize("kind", ["sse", "elysia"])
@pytest.mark.parametrize("where", ["header", "query"])
async def test_a_huge_sse_cursor_is_a_bad_request(start_server, where, kind):
    server = await start_server(kind)
    cursor = f"chat:x={NINES}"
    url = f"{server.url}/sse?channels=chat:x&token={token('a')}"
    if where == "header":
        status, body, _ = await _get(url, headers={"Last-Event-ID": cursor})
    else:
        status, body, _ = await _get(f"{url}&last_event_id={cursor}")
    assert status == 400
    assert json.loads(body)["code"] == "bad_request"
    assert "2^63" in json.loads(body)["message"]


@pytest.mark.parametrize("kind", ["longpoll", "elysia"])
async def test_a_huge_poll_cursor_says_what_is_wrong(start_server, kind):
    server = await start_server(kind)
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


@pytest.mark.parametrize("kind", ["longpoll", "elysia"])
async def test_a_poll_with_timeout_0_on_a_session_answers_at_once(start_server, kind):
    server = await start_server(kind)
    base = f"{server.url}/poll?channels=chat:t&token={token('a')}"
    status, body, _ = await _get(base + "&timeout=0")
    first = json.loads(body)
    assert status == 200 and first["messages"][0]["type"] == "hello"
    again = f"{base}&timeout=0&conn={first['conn']}&cursor={first['cursor']}"
    status, body, _ = await asyncio.wait_for(_get(again), UNIT)
    assert status == 200 and json.loads(body)["messages"] == []


@pytest.mark.parametrize("kind", ["longpoll", "elysia"])
async def test_a_poll_with_a_cursor_and_no_session_holds(start_server, kind):
    """The documented contract (poll with the cursor, no session id) must not spin: the poll
    holds until a message after the cursor arrives, then brings it with the session's hello."""
    server = await start_server(kind)
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


@pytest.mark.parametrize("kind", ["sse", "elysia"])
async def test_sse_errors_are_fault_events_not_error_events(start_server, kind):
    """EventSource fires its own ``error`` on connection failures; the contract's errors use
    another event name, on resume gaps and on the final event alike."""
    server = await start_server(kind, history_size=2)
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


class RawSocketIO:
    """A Socket.IO session over a WebSocket of our own, packets written and read verbatim."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server, user: str = "raw") -> RawSocketIO:
        from tests.servers.test_transports import UPGRADE

        headers = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
        reader, writer = await _raw(server, (
            f"GET /socket.io/?EIO=4&transport=websocket&token={token(user)} HTTP/1.1\r\n"
            f"Host: x\r\n{headers}\r\n").encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        raw = cls(reader, writer)
        assert (await raw.recv()).startswith("0{")  # engine.io OPEN
        raw.send("40")
        assert (await raw.recv()).startswith("40")
        assert (await raw.recv()).startswith('42["hello"')
        return raw

    def send(self, packet: str) -> None:
        self.writer.write(frame(OP_TEXT, packet.encode()))

    async def recv(self) -> str:
        """The next engine.io packet that is not a ping (answered)."""
        while True:
            head = await asyncio.wait_for(self.reader.readexactly(2), UNIT)
            size = head[1] & 0x7F
            if size >= 126:
                size = int.from_bytes(await self.reader.readexactly(2 if size == 126 else 8),
                                      "big")
            text = (await self.reader.readexactly(size)).decode()
            if head[0] & 0x0F == 0x8:
                raise ConnectionError(f"closed: {text!r}")
            if text == "2":
                self.send("3")
                continue
            return text

    async def reply(self, packet: str) -> dict:
        """Send an EVENT packet; the envelope of the ACK or ``error`` event that answers."""
        self.send(packet)
        got = await self.recv()
        kind, _, body = got.partition("[")
        call = re.match(r"42(\d*)", packet)
        assert kind in ("42", f"43{call[1] if call else ''}"), got[:80]
        return json.loads("[" + body)[-1]

    def close(self) -> None:
        self.writer.close()


async def test_a_lone_surrogate_publish_over_socketio_is_refused_and_cuts_no_one(
        start_server, clients):
    server = await start_server("socketio")
    sub = clients("socketio", server.url, "sub")
    await sub.connect(["chat:x"])
    raw = await RawSocketIO.open(server)
    try:
        env = await raw.reply('421["publish",{"channel":"chat:x","data":"\\ud800"}]')
        assert (env["type"], env["code"]) == ("error", "bad_request"), env
        env = await raw.reply('422["publish",{"channel":"chat:x","data":"fine"}]')
        assert env == {"type": "ack", "ref": None, "id": 1}
        got = await sub.recv(UNIT)
        while got["type"] != "message":
            got = await sub.recv(UNIT)
        assert got["data"] == "fine"
        assert sub.reconnects == 0
    finally:
        raw.close()


async def test_socketio_packets_that_fail_to_decode_get_bad_request(start_server, caplog):
    server = await start_server("socketio")
    raw = await RawSocketIO.open(server)
    deep = "[" * 3000 + "]" * 3000
    try:
        for packet in (f'423["echo",{{"data":{deep}}}]',
                       '424["echo",{"data":' + "[" * 30000 + "]" * 30000 + "}]",
                       f'425["subscribe",{{"channel":"c","since":{NINES}}}]',
                       '426["echo",{"data":' + "[" * 100 + "]" * 100 + "}]",
                       '427[]', '428{"op":"echo"}', '429["echo",{"data":1}'):
            env = await raw.reply(packet)
            assert (env["type"], env["code"]) == ("error", "bad_request"), packet[:40]
        for packet in ("42[]", "4", "42{broken", '42["echo"'):  # no call to answer
            env = await raw.reply(packet)
            assert (env["type"], env["code"]) == ("error", "bad_request"), packet
        assert await raw.reply('4210["echo",{"data":"ok"}]') == {
            "type": "echo", "ref": None, "data": "ok"}
    finally:
        raw.close()
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
    assert tracebacks == []
