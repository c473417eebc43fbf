"""The contract over real sockets, for every core transport (ws, ws-websockets, sse, longpoll)."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import aiohttp
import pytest

from servers.hub import Limits
from sobranie_bench import wire
from sobranie_bench.clients import ClientError
from sobranie_bench.wire import ErrorCode, WireError
from tests.conftest import CORE_TRANSPORTS, UNIT, messages, next_of, token

pytestmark = pytest.mark.parametrize("transport", CORE_TRANSPORTS)


async def test_publish_delivers_in_order_with_ids_and_acks(transport, start_server, clients):
    server = await start_server(transport)
    sub = clients(transport, server.url, "bob")
    pub = clients(transport, server.url, "alice")
    await sub.connect(["chat:1"])
    await pub.connect()
    ids = [await pub.publish("chat:1", {"n": i}) for i in range(20)]
    assert ids == list(range(1, 21))
    got = await messages(sub, 20, "chat:1")
    assert [m["id"] for m in got] == ids
    assert [m["data"]["n"] for m in got] == list(range(20))
    assert {m["from"] for m in got} == {"alice"}


async def test_echo_goes_to_sender_only(transport, start_server, clients):
    server = await start_server(transport)
    a = clients(transport, server.url, "alice")
    b = clients(transport, server.url, "bob")
    await a.connect(["room:x"])
    await b.connect(["room:x"])
    await a.echo({"seq": 7})
    env = await next_of(a, "echo")
    assert env["data"] == {"seq": 7}
    await a.publish("room:x", "marker")
    env = await next_of(b, "message", "room:x")
    assert env["data"] == "marker"  # b saw the marker and no echo before it
    assert b._inbox.empty()


async def test_presence_on_connect_and_disconnect(transport, start_server, clients):
    server = await start_server(transport)
    watcher = clients(transport, server.url, "watcher")
    await watcher.connect(["presence"])
    carol = clients(transport, server.url, "carol")
    await carol.connect()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "online")
    await carol.close()
    if transport == "longpoll":  # a poll session ends when the client stops polling
        from servers import longpoll
        longpoll.IDLE_SECONDS, saved = 0.1, longpoll.IDLE_SECONDS
        try:
            env = await asyncio.wait_for(next_of(watcher, "presence"), 3 * UNIT)
        finally:
            longpoll.IDLE_SECONDS = saved
    else:
        env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "offline")


async def test_resume_after_drop_replays_exactly_the_missed(transport, start_server, clients):
    server = await start_server(transport)
    sub = clients(transport, server.url, "bob")
    pub = clients(transport, server.url, "alice")
    await sub.connect(["feed:global"])
    await pub.connect()
    for i in range(5):
        await pub.publish("feed:global", i)
    first = await messages(sub, 5, "feed:global")
    await sub.drop()
    for i in range(5, 15):  # published while (possibly) disconnected
        await pub.publish("feed:global", i)
    rest = await messages(sub, 10, "feed:global")
    ids = [m["id"] for m in first + rest]
    assert ids == list(range(1, 16)), "none lost, none duplicated, in order"
    await pub.publish("feed:global", "after")
    assert (await next_of(sub, "message"))["id"] == 16
    assert sub.reconnects >= 1 or transport == "longpoll"


async def test_history_gap_when_too_old(transport, start_server, clients):
    server = await start_server(transport, history_size=5)
    pub = clients(transport, server.url, "alice")
    await pub.connect()
    for i in range(12):
        await pub.publish("chat:old", i)
    late = clients(transport, server.url, "bob")
    if transport in ("ws", "ws-websockets"):
        await late.connect()
        with pytest.raises(WireError) as err:
            await late.subscribe("chat:old", since=2)
        assert err.value.code == ErrorCode.HISTORY_GAP
    else:
        late.cursor["chat:old"] = 2
        late.channels["chat:old"] = None
        await late._open(resume=True)
        late._runner = asyncio.ensure_future(late._run())
        env = await next_of(late, "error")
        assert env["code"] == "history_gap"
    got = await messages(late, 5, "chat:old")  # what is retained still arrives
    assert [m["id"] for m in got] == [8, 9, 10, 11, 12]


async def test_unauthorized_without_valid_token(transport, start_server):
    server = await start_server(transport)
    path = {"ws": "/ws", "ws-websockets": "/ws", "sse": "/sse?channels=a", "longpoll": "/poll"}
    expired = token("alice", ttl=-10)
    forged = json.dumps({"alg": "none"})
    from servers.auth import make_token
    bad_sig = make_token("alice", "not-the-secret")
    headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    async with aiohttp.ClientSession() as session:
        sep = "&" if "?" in path[transport] else "?"
        for tok in ("", expired, forged, bad_sig):
            url = f"{server.url}{path[transport]}{sep}token={tok}"
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 401, tok
        async with session.get(f"{server.url}{path[transport]}",
                               headers={**headers, "Authorization": f"Bearer {bad_sig}"}) as r:
            assert r.status == 401


async def test_client_reports_refusal_clearly(transport, start_server):
    server = await start_server(transport)
    from sobranie_bench.clients import TRANSPORTS
    client = TRANSPORTS[transport].client_class()(server.url, "garbage", reconnect=False,
                                                  timeout=UNIT)
    with pytest.raises(ClientError, match="401"):
        await client.connect()
    await client.close()


async def test_forbidden_for_another_users_private_channel(transport, start_server, clients):
    server = await start_server(transport)
    alice = clients(transport, server.url, "alice")
    await alice.connect()
    with pytest.raises(WireError) as err:
        await alice.subscribe("user:bob")
    assert err.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(WireError) as err:
        await alice.publish("user:alice", "clients may not publish here")
    assert err.value.code == ErrorCode.FORBIDDEN
    await alice.subscribe("user:alice")  # own private channel is fine
    backend = clients(transport, server.url, "notifier")
    backend.token = token("notifier", scope="server")
    await backend.connect()
    if transport in ("sse", "longpoll"):  # server-side path: POST /publish with a back-end token
        assert await backend.publish("user:alice", {"note": "liked"}) >= 1
        assert (await next_of(alice, "message", "user:alice"))["data"] == {"note": "liked"}


async def test_bad_envelopes_get_errors_and_connection_stays(transport, start_server, clients):
    server = await start_server(transport)
    client = clients(transport, server.url)
    await client.connect(["chat:1"])
    if transport in ("ws", "ws-websockets"):
        for raw, code in [("not json", "bad_request"), ('{"op":"dance"}', "bad_request"),
                          ('{"op":"publish","channel":"chat:1"}', "bad_request"),
                          ('[1,2]', "bad_request"), ('{"op":"subscribe","channel":"NO!"}',
                                                     "unknown_channel"),
                          (json.dumps({"op": "echo", "data": "x" * 70_000}), "too_large")]:
            await client.send_raw(raw)
            assert (await next_of(client, "error"))["code"] == code
    else:
        async with aiohttp.ClientSession() as session:
            auth = {"Authorization": f"Bearer {token('alice')}"}
            for path, body, status, code in [
                    ("/publish", b"not json", 400, "bad_request"),
                    ("/publish", b'{"channel":"chat:1"}', 400, "bad_request"),
                    ("/echo", json.dumps({"data": 1}).encode(), 400, "bad_request"),
                    ("/publish", json.dumps({"channel": "chat:1", "data": "x" * 70_000}).encode(),
                     413, "too_large"),
                    ("/publish", b'{"channel":"BAD CHANNEL","data":1}', 404, "unknown_channel")]:
                async with session.post(server.url + path, data=body, headers=auth) as resp:
                    assert resp.status == status
                    assert (await resp.json())["code"] == code
    assert await client.publish("chat:1", "still usable") >= 1
    assert (await next_of(client, "message", "chat:1"))["data"] == "still usable"


async def test_frame_over_hard_limit_closes(transport, start_server, clients):
    server = await start_server(transport)
    big = json.dumps({"op": "echo", "data": "x" * (wire.HARD_FRAME_BYTES + 10)})
    if transport in ("ws", "ws-websockets"):
        client = clients(transport, server.url, reconnect=False)
        await client.connect()
        await client.send_raw(big)
        await asyncio.wait_for(client._runner, UNIT)
        assert client.close_code == wire.CLOSE_TOO_BIG
    else:
        async with aiohttp.ClientSession() as session:
            async with session.post(server.url + "/publish", data=big.encode(),
                                    headers={"Authorization": f"Bearer {token('a')}"}) as resp:
                assert resp.status == 413


async def test_stalled_reader_is_cut_off_and_others_keep_receiving(transport, start_server,
                                                                   clients):
    server = await start_server(transport, limits=Limits(send_queue=64))
    good = clients(transport, server.url, "good")
    await good.connect(["live:1"])
    host, port = server.url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    path = {"ws": "/ws", "ws-websockets": "/ws", "sse": "/sse", "longpoll": "/poll"}[transport]
    stalled.sendall(
        (f"GET {path}?channels=live:1&token={token('stalled')} HTTP/1.1\r\nHost: x\r\n"
         "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
    if transport in ("ws", "ws-websockets"):
        await asyncio.sleep(0.2)
        stalled.sendall(_masked_text(json.dumps({"op": "subscribe", "channel": "live:1"})))
    await asyncio.sleep(0.3)
    pub = clients(transport, server.url, "pub")
    await pub.connect()
    payload = "y" * 16000  # enough to fill the kernel's socket buffers and the outbox
    n = 1200
    for i in range(n):
        await pub.publish("live:1", {"i": i, "pad": payload})
    got = await messages(good, n, "live:1")
    assert [m["data"]["i"] for m in got] == list(range(n))
    async with aiohttp.ClientSession() as session:
        for _ in range(int(10 * UNIT)):
            async with session.get(server.url + "/metrics") as resp:
                text = await resp.text()
            if 'reason="slow consumer"' in text:
                break
            await asyncio.sleep(0.1)
    assert re.search(r'sobranie_disconnects_total\{reason="slow consumer"\} [1-9]', text)
    stalled.close()


async def test_metrics_count_what_happened(transport, start_server, clients):
    server = await start_server(transport)
    client = clients(transport, server.url)
    await client.connect(["m:1"])
    await client.publish("m:1", 1)
    with pytest.raises(WireError):
        await client.subscribe("user:someone-else")
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
    kind = "ws" if transport.startswith("ws") else transport
    assert re.search(rf'sobranie_connections\{{transport="{kind}"\}} 1', text)
    assert re.search(r'sobranie_errors_total\{code="forbidden"\} 1', text)
    assert re.search(r"sobranie_published_total 1", text)


def _masked_text(text: str) -> bytes:
    data = text.encode()
    mask = b"\x01\x02\x03\x04"
    header = bytes([0x81, 0x80 | len(data)]) if len(data) < 126 else b""
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


