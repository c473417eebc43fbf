"""The contract over Socket.IO (python-socketio on aiohttp), for its websocket and its long-polling
transport, over real sockets: the same cases as test_transports.py, plus what is Socket.IO's own
(acks as replies, the ``auth`` dict, engine.io framing)."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import aiohttp
import pytest
import socketio

from servers.hub import Limits
from servers.socketio_app import event_packet
from sobranie_bench import wire
from sobranie_bench.clients import ClientError
from sobranie_bench.wire import ErrorCode, WireError
from tests.conftest import UNIT, messages, next_of, token

TRANSPORTS = ["socketio", "socketio-polling"]
ENGINEIO = {"socketio": "websocket", "socketio-polling": "polling"}
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


async def test_publish_delivers_in_order_with_ids_and_acks(transport, start_server, clients):
    server = await start_server("socketio")
    sub = clients(transport, server.url, "bob")
    pub = clients(transport, server.url, "alice")
    await sub.connect(["chat:1"])
    await pub.connect()
    ids = [await pub.publish("chat:1", {"n": i}) for i in range(20)]
    assert ids == list(range(1, 21))
    burst = await asyncio.gather(*(pub.publish_nowait("chat:1", {"n": i})
                                   for i in range(20, 40)))
    assert [ack["id"] for ack in burst] == list(range(21, 41)), "replies are the emits' acks"
    got = await messages(sub, 40, "chat:1")
    assert [m["id"] for m in got] == list(range(1, 41))
    assert [m["data"]["n"] for m in got] == list(range(40))
    assert {m["from"] for m in got} == {"alice"}


async def test_echo_goes_to_sender_only(transport, start_server, clients):
    server = await start_server("socketio")
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
    server = await start_server("socketio")
    watcher = clients(transport, server.url, "watcher")
    await watcher.connect(["presence"])
    carol = clients(transport, server.url, "carol")
    await carol.connect()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "online")
    await carol.close()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "offline")


async def test_resume_after_drop_replays_exactly_the_missed(transport, start_server, clients):
    server = await start_server("socketio")
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
    assert sub.reconnects == 1


async def test_history_gap_when_too_old(transport, start_server, clients):
    server = await start_server("socketio", history_size=5)
    pub = clients(transport, server.url, "alice")
    await pub.connect()
    for i in range(12):
        await pub.publish("chat:old", i)
    late = clients(transport, server.url, "bob")
    await late.connect()
    with pytest.raises(WireError) as err:
        await late.subscribe("chat:old", since=2)
    assert err.value.code == ErrorCode.HISTORY_GAP
    got = await messages(late, 5, "chat:old")  # what is retained still arrives
    assert [m["id"] for m in got] == [8, 9, 10, 11, 12]


async def test_unauthorized_handshake_is_401(transport, start_server):
    server = await start_server("socketio")
    from servers.auth import make_token
    bad_sig = make_token("alice", "not-the-secret")
    kind = ENGINEIO[transport]
    headers = UPGRADE if kind == "websocket" else {}
    url = f"{server.url}/socket.io/?EIO=4&transport={kind}"
    async with aiohttp.ClientSession() as session:
        for tok in ("", token("alice", ttl=-10), json.dumps({"alg": "none"}), bad_sig):
            async with session.get(f"{url}&token={tok}", headers=headers) as resp:
                assert resp.status == 401, tok
                assert (await resp.json())["code"] == "unauthorized"
        async with session.get(url, headers={**headers, "Authorization": f"Bearer {bad_sig}"}
                               ) as resp:
            assert resp.status == 401
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/metrics") as resp:
        text = await resp.text()
    assert not re.search(r'sobranie_connections_total\{transport="socketio"\} [1-9]', text)


async def test_client_reports_refusal_clearly(transport, start_server):
    server = await start_server("socketio")
    from sobranie_bench.clients import TRANSPORTS as ALL
    client = ALL[transport].client_class()(server.url, "garbage", reconnect=False, timeout=UNIT)
    with pytest.raises(ClientError, match="401"):
        await client.connect()
    await client.close()


async def test_token_in_the_auth_dict(transport, start_server):
    """Socket.IO's own way: the token travels in the CONNECT packet; a bad one is refused with
    CONNECT_ERROR (no HTTP status exists by then)."""
    server = await start_server("socketio")
    hello: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    sio.on("hello", hello.set_result)
    await sio.connect(server.url, auth={"token": token("dora")},
                      transports=[ENGINEIO[transport]], wait_timeout=UNIT)
    assert (await asyncio.wait_for(hello, UNIT))["user"] == "dora"
    await sio.disconnect()

    refused: list[dict] = []
    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    sio.on("connect_error", refused.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(server.url, auth={"token": token("dora", ttl=-10)},
                          transports=[ENGINEIO[transport]], wait_timeout=UNIT)
    assert refused[0]["message"] == "unauthorized: token expired"
    assert refused[0]["data"]["code"] == "unauthorized"


async def test_forbidden_for_another_users_private_channel(transport, start_server, clients):
    server = await start_server("socketio")
    alice = clients(transport, server.url, "alice")
    await alice.connect()
    with pytest.raises(WireError) as err:
        await alice.subscribe("user:bob")
    assert err.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(WireError) as err:
        await alice.publish("user:alice", "clients may not publish here")
    assert err.value.code == ErrorCode.FORBIDDEN
    await alice.subscribe("user:alice")  # own private channel is fine


async def test_bad_requests_get_error_acks_and_connection_stays(transport, start_server,
                                                                clients):
    server = await start_server("socketio")
    client = clients(transport, server.url)
    await client.connect(["chat:1"])
    for event, data, code in [("dance", {"x": 1}, "bad_request"),
                              ("publish", "not an object", "bad_request"),
                              ("publish", [1, 2], "bad_request"),
                              ("publish", {"channel": "chat:1"}, "bad_request"),
                              ("subscribe", {"channel": "NO!"}, "unknown_channel"),
                              ("echo", {"data": "x" * 70_000}, "too_large")]:
        reply = await client.call(event, data)
        assert (reply["type"], reply["code"]) == ("error", code), event
    with pytest.raises(WireError) as err:  # through the client: the ack id ties it to the call
        await client.publish("chat:1", "x" * 70_000)
    assert err.value.code == ErrorCode.TOO_LARGE
    assert await client.publish("chat:1", "still usable") >= 1
    assert (await next_of(client, "message", "chat:1"))["data"] == "still usable"


async def test_frame_over_hard_limit_closes(transport, start_server, clients):
    server = await start_server("socketio")
    client = clients(transport, server.url, reconnect=False)
    await client.connect()
    big = "x" * (wire.HARD_FRAME_BYTES + 10)
    await client._sio.emit("echo", {"data": big})
    await asyncio.wait_for(client._runner, UNIT)  # the transport ended
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as resp:
        text = await resp.text()
    assert re.search(r'sobranie_connections\{transport="socketio"\}', text) is None


async def test_stalled_reader_is_cut_off_and_others_keep_receiving(transport, start_server,
                                                                   clients):
    server = await start_server("socketio", limits=Limits(send_queue=64))
    good = clients(transport, server.url, "good")
    await good.connect(["live:1"])
    stalled = await _stalled_session(server.url, ENGINEIO[transport], "live:1")
    pub = clients(transport, server.url, "pub")
    await pub.connect()
    payload = "y" * 16000  # enough to fill the kernel's socket buffers and the outbox
    n = 600
    for i in range(n):
        await pub.publish("live:1", {"i": i, "pad": payload})
    got = await messages(good, n, "live:1")
    assert [m["data"]["i"] for m in got] == list(range(n))
    await _until_metric(server.url, r'sobranie_disconnects_total\{reason="slow consumer"\} 1')
    await _until_metric(server.url, r'sobranie_connections\{transport="socketio"\} 2')
    if stalled is not None:
        stalled.close()


async def test_metrics_count_what_happened(transport, start_server, clients):
    server = await start_server("socketio")
    client = clients(transport, server.url)
    await client.connect(["m:1"])
    await client.publish("m:1", 1)
    with pytest.raises(WireError):
        await client.subscribe("user:someone-else")
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
        async with session.get(server.url + "/healthz") as resp:
            assert (await resp.json())["status"] == "ok"
    assert re.search(r'sobranie_connections\{transport="socketio"\} 1', text)
    assert re.search(r'sobranie_errors_total\{code="forbidden"\} 1', text)
    assert re.search(r"sobranie_published_total 1", text)


def test_event_packet_is_what_python_socketio_encodes(transport):
    envelope = wire.message("chat:1", 3, {"t": 1, "pad": "é"}, "alice")
    mine = socketio.packet.Packet(encoded_packet=event_packet("message", wire.encode(envelope)))
    assert (mine.packet_type, mine.namespace, mine.id) == (socketio.packet.EVENT, None, None)
    assert mine.data == ["message", envelope]


async def _stalled_session(url: str, kind: str, channel: str) -> asyncio.StreamWriter | None:
    """A Socket.IO session subscribed to ``channel`` that never reads again: a websocket with a
    tiny receive buffer, or a polling session that stops polling."""
    host, port = url.removeprefix("http://").split(":")
    subscribe = "42" + json.dumps(["subscribe", {"channel": channel}])
    path = f"/socket.io/?EIO=4&transport={kind}&token={token('stalled')}"
    if kind == "polling":
        async with aiohttp.ClientSession() as session:
            async with session.get(url + path) as resp:
                opened = json.loads((await resp.text())[1:])
            for packet in ("40", subscribe):  # answered once handled
                async with session.post(f"{url}{path}&sid={opened['sid']}", data=packet) as resp:
                    assert resp.status == 200
        return None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                  + "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items()) + "\r\n").encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.write(_masked_text("40") + _masked_text(subscribe))
    await _until_metric(url, r'sobranie_messages_in_total\{transport="socketio"\} 2')
    return writer


async def _until_metric(url: str, pattern: str) -> str:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(10 * UNIT)):
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            if re.search(pattern, text):
                return text
            await asyncio.sleep(0.1)
    raise AssertionError(f"/metrics never showed {pattern}:\n{text}")


def _masked_text(text: str) -> bytes:
    data = text.encode()
    mask = b"\x01\x02\x03\x04"
    header = bytes([0x81, 0x80 | len(data)]) if len(data) < 126 else b""
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
