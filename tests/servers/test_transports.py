"""The contract over real sockets, once, for every transport in the client registry.

Each test runs through the one client interface against each reference server (``TRANSPORTS``:
ws, ws-websockets, sse, longpoll, webtransport, socketio, socketio-polling, webrtc). Where a
transport must do something its own way -- provoke the 401 at its handshake, get a malformed
envelope past its client, resume from an old cursor, stall a reader, let presence go offline --
that is a method of its :class:`Probe` in ``PROBES``, never a copy of a test. What only one
transport has lives in its own file (test_webtransport.py, test_socketio.py, test_webrtc.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from servers.hub import Limits
from servers.run import Running
from sobranie_bench.clients import TRANSPORTS, Client, ClientError
from sobranie_bench.clients.webtransport import ByteCounter, connect_quic
from sobranie_bench.clients.ws import OP_TEXT, frame
from sobranie_contract import wire
from sobranie_contract.tokens import make_token
from sobranie_contract.wire import ErrorCode, WireError
from tests.conftest import (
    UNIT,
    http_url,
    messages,
    metrics_text,
    next_of,
    subscriber_and_publisher,
    token,
    until_metric,
)

UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
"""The headers of a WebSocket upgrade request (RFC 6455, 4.1), for handshakes by hand."""

RAW_BAD = (("not json", "bad_request"), ('{"op":"dance"}', "bad_request"),
           ('{"op":"publish","channel":"chat:1"}', "bad_request"), ("[1,2]", "bad_request"),
           ('{"op":"subscribe","channel":"NO!"}', "unknown_channel"),
           (json.dumps({"op": "echo", "data": "x" * 70_000}), "too_large"))
"""Malformed envelopes as a message-oriented transport carries them, and the error each gets."""

HTTP_STATUS = {"bad_request": 400, "unknown_channel": 404, "too_large": 413}


class Probe:
    """What a contract test needs done through one transport that the client interface does
    not do. The base class is the way of a transport that carries envelopes both ways on one
    connection; subclasses override only what their transport does differently."""

    endpoint: str
    """The handshake's path (and query), where a token is checked."""
    bad: tuple[tuple[Any, str], ...] = RAW_BAD
    """Malformed requests (in the form :meth:`send_bad` takes) and the error code each gets."""
    reconnects_on_drop = True
    """``drop()`` always cuts a live transport (a poll between two requests has none)."""
    ordered_upstream = True
    """Requests sent without waiting reach the hub in the order sent (concurrent HTTP POSTs
    may overtake each other)."""
    publishes_by_post = False
    """The client publishes with POST /publish, so a back-end token's publish is the server-side
    path that may write to ``user:`` channels."""
    stall_messages = 0
    """Messages of 16 kB that fill a stalled reader's buffers (0: no stalled reader test)."""
    serve_extra: tuple[tuple[str, str], ...] = ()
    """``Options.extra`` of the servers this probe's tests start (a subprocess server takes
    what a test would patch in-process as a start-up option)."""

    def __init__(self, label: str, endpoint: str, headers: dict[str, str] | None = None) -> None:
        self.label = label
        """The ``transport`` label of this transport's connections in /metrics."""
        self.endpoint = endpoint
        self.headers = headers or {}
        """Headers the handshake request needs besides the token."""

    def target(self, path: str | None, token: str | None) -> str:
        """``path`` (the handshake endpoint by default) with ``token`` in its query."""
        path = path or self.endpoint
        return path if token is None else f"{path}{'&' if '?' in path else '?'}token={token}"

    async def handshake(self, server: Running, token: str | None = None,
                        bearer: str | None = None, path: str | None = None) -> tuple[int, str]:
        """Status and body of a handshake with ``?token=`` and/or ``Authorization: Bearer``."""
        headers = {**self.headers, **({"Authorization": f"Bearer {bearer}"} if bearer else {})}
        async with aiohttp.ClientSession() as session, session.get(
                http_url(server) + self.target(path, token), headers=headers) as resp:
            return resp.status, await resp.text()

    def nothing_spent(self, metrics: str) -> None:
        """After refused handshakes: no connection of this transport was ever opened."""
        assert f'transport="{self.label}"' not in metrics

    async def send_raw(self, client: Any, raw: str) -> None:
        await client.send_raw(raw)

    async def send_bad(self, client: Any, bad: Any) -> dict[str, Any]:
        """Send one malformed request past the client; the error envelope it got."""
        await self.send_raw(client, bad)
        return await next_of(client, "error")

    async def subscribe_since(self, client: Client, channel: str, since: int) -> str:
        """Connect ``client`` and subscribe to ``channel`` from ``since``; the error code."""
        await client.connect()
        with pytest.raises(WireError) as err:
            await client.subscribe(channel, since=since)
        return err.value.code

    async def stall(self, server: Running, clients: Callable[..., Client],
                    channel: str) -> asyncio.StreamWriter | None:
        """A connection subscribed to ``channel`` that reads nothing from now on (the writer
        to close at the end, if it is a socket of ours)."""
        raise NotImplementedError


async def _raw_stall(server: Running, target: str, subscribed: bytes | None,
                     upgrade_then: bytes = b"") -> asyncio.StreamWriter:
    """GET ``target`` on a socket with a tiny receive buffer (as a WebSocket upgrade, then
    ``upgrade_then``), read until ``subscribed`` shows the subscription stands, and never read
    again."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    headers = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items()) if upgrade_then else ""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
    if upgrade_then:
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(upgrade_then)
    if subscribed is not None:
        await asyncio.wait_for(reader.readuntil(subscribed), UNIT)
    return writer


class WsProbe(Probe):
    stall_messages = 1200

    async def stall(self, server, clients, channel):
        subscribe = json.dumps({"op": "subscribe", "channel": channel, "ref": "s"})
        return await _raw_stall(server, self.target(None, token("stalled")), b'"ack"',
                                frame(OP_TEXT, subscribe.encode()))


class OneWayProbe(Probe):
    """SSE and long-polling: the server speaks on a stream, the client by HTTP POST."""

    bad = ((("/publish", b"not json"), "bad_request"),
           (("/publish", b"[1,2]"), "bad_request"),
           (("/publish", b'{"channel":"chat:1"}'), "bad_request"),
           (("/echo", json.dumps({"data": 1}).encode()), "bad_request"),  # no conn
           (("/publish", json.dumps({"channel": "chat:1", "data": "x" * 70_000}).encode()),
            "too_large"),
           (("/publish", b'{"channel":"BAD CHANNEL","data":1}'), "unknown_channel"))
    """Over HTTP the ops are POSTs, each answered with its error (and its HTTP status)."""
    ordered_upstream = False
    publishes_by_post = True
    stall_messages = 1200

    async def send_bad(self, client, bad):
        path, body = bad
        async with aiohttp.ClientSession() as session, session.post(
                client.url + path, data=body,
                headers={"Authorization": f"Bearer {client.token}"}) as resp:
            env = await resp.json()
            assert resp.status == HTTP_STATUS[env["code"]], (path, body[:40])
            return env

    async def subscribe_since(self, client, channel, since):
        """Resume is the stream's own: ``Last-Event-ID`` (SSE) or ``cursor`` (polling)."""
        client.cursor[channel] = since
        client.channels[channel] = None
        await client._open(resume=True)
        client._runner = asyncio.ensure_future(client._run())
        return (await next_of(client, "error"))["code"]

    async def stall(self, server, clients, channel):
        path = f"{self.endpoint.partition('?')[0]}?channels={channel}"
        return await _raw_stall(server, self.target(path, token("stalled")),
                                b"hello")  # sent once subscribed


class PollProbe(OneWayProbe):
    reconnects_on_drop = False


class ElysiaPollProbe(PollProbe):
    """Long-polling on the Elysia server, a subprocess: its idle time is set when it starts."""

    serve_extra = (("poll_idle", "0.5"),)

    @contextlib.contextmanager
    def offline_soon(self):
        yield


class WebTransportProbe(Probe):
    stall_messages = 300

    async def handshake(self, server, token=None, bearer=None, path=None):
        """The extended CONNECT of a session: its status and body (from the refusal)."""
        proto = await connect_quic("127.0.0.1", int(server.url.rsplit(":", 1)[1]),
                                   server.endpoints["cert_sha256"], ByteCounter(), UNIT)
        headers = [(b"authorization", f"Bearer {bearer}".encode())] if bearer else []
        try:
            await proto.open_session(b"127.0.0.1", self.target(path, token).encode(),
                                     UNIT, headers)
            return 200, ""
        except ClientError as exc:
            refusal = re.fullmatch(r"WebTransport CONNECT refused: HTTP (\d+): (.*)", str(exc),
                                   re.DOTALL)
            assert refusal, exc
            return int(refusal[1]), refusal[2]
        finally:
            proto.shutdown(graceful=True)

    async def send_raw(self, client, raw):
        await client.send_raw(raw.encode() + b"\n")  # one envelope per line

    async def stall(self, server, clients, channel):
        stalled = clients("webtransport", server.url, "stalled", reconnect=False)
        await stalled.connect([channel])
        await next_of(stalled, "ack")
        stalled._proto.datagram_received = lambda data, addr: None  # reads nothing, acks nothing


class SocketIOProbe(Probe):
    bad = ((("dance", {"x": 1}), "bad_request"), (("publish", "not an object"), "bad_request"),
           (("publish", [1, 2]), "bad_request"),
           (("publish", {"channel": "chat:1"}), "bad_request"),
           (("subscribe", {"channel": "NO!"}), "unknown_channel"),
           (("echo", {"data": "x" * 70_000}), "too_large"))
    """Socket.IO encodes whatever is emitted: a bad request is an unknown event or bad data."""
    stall_messages = 600

    def __init__(self, engineio: str) -> None:
        super().__init__("socketio", f"/socket.io/?EIO=4&transport={engineio}",
                         UPGRADE if engineio == "websocket" else {})
        self.engineio = engineio

    async def send_bad(self, client, bad):
        return await client.call(*bad)  # the reply is the event's ack

    async def stall(self, server, clients, channel):
        """A websocket with a tiny receive buffer, or a polling session that stops polling."""
        subscribe = "42" + json.dumps(["subscribe", {"channel": channel}])
        path = self.target(None, token("stalled"))
        if self.engineio == "polling":
            async with aiohttp.ClientSession() as session:
                async with session.get(server.url + path) as resp:
                    opened = json.loads((await resp.text())[1:])
                for packet in ("40", subscribe):  # answered once handled
                    async with session.post(f"{server.url}{path}&sid={opened['sid']}",
                                            data=packet) as resp:
                        assert resp.status == 200
            return None
        writer = await _raw_stall(server, path, None,
                                  frame(OP_TEXT, b"40") + frame(OP_TEXT, subscribe.encode()))
        await until_metric(server.url, r'sobranie_messages_in_total\{transport="socketio"\} 2')
        return writer


class WebRTCProbe(Probe):
    async def handshake(self, server, token=None, bearer=None, path=None):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        async with aiohttp.ClientSession() as session, session.post(
                server.url + self.target(path, token), json={"sdp": "v=0\r\n", "type": "offer"},
                headers=headers) as resp:
            return resp.status, await resp.text()

    def nothing_spent(self, metrics):
        super().nothing_spent(metrics)
        assert re.search(r"^sobranie_peer_connections 0$", metrics, re.MULTILINE)


PROBES: dict[str, Probe] = {
    "ws": WsProbe("ws", "/ws", UPGRADE),
    "ws-websockets": WsProbe("ws", "/ws", UPGRADE),
    "sse": OneWayProbe("sse", "/sse?channels=a"),
    "longpoll": PollProbe("longpoll", "/poll"),
    "webtransport": WebTransportProbe("webtransport", "/wt"),
    "socketio": SocketIOProbe("websocket"),
    "socketio-polling": SocketIOProbe("polling"),
    "webrtc": WebRTCProbe("webrtc", "/webrtc/offer"),
    "ws@elysia": WsProbe("ws", "/ws", UPGRADE),
    "sse@elysia": OneWayProbe("sse", "/sse?channels=a"),
    "longpoll@elysia": ElysiaPollProbe("longpoll", "/poll"),
}


@pytest.fixture(params=list(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def probe(transport: str) -> Probe:
    return PROBES[transport]


@pytest.fixture
def serve(transport, probe, start_server):
    """``await serve(**Options)``: the server of ``transport`` (its ``serve`` kind)."""
    return lambda **kwargs: start_server(TRANSPORTS[transport].server,
                                         **{"extra": dict(probe.serve_extra), **kwargs})


def test_every_registered_transport_has_a_probe():
    assert set(PROBES) == set(TRANSPORTS)
    for probe in PROBES.values():
        assert {code for _, code in probe.bad} == {"bad_request", "unknown_channel", "too_large"}


async def test_publish_delivers_in_order_with_ids_and_acks(transport, probe, serve, clients):
    server = await serve()
    sub, pub = await subscriber_and_publisher(clients, transport, server.url, "chat:1")
    ids = [await pub.publish("chat:1", {"n": i}) for i in range(20)]
    assert ids == list(range(1, 21))
    burst = await asyncio.gather(*(pub.publish_nowait("chat:1", {"n": i})
                                   for i in range(20, 40)))
    burst_ids = [ack["id"] for ack in burst]
    assert sorted(burst_ids) == list(range(21, 41)), "each reply settles its own request"
    if probe.ordered_upstream:
        assert burst_ids == list(range(21, 41))
    got = await messages(sub, 40, "chat:1")
    assert [m["id"] for m in got] == list(range(1, 41))
    assert [m["data"]["n"] for m in got[:20]] == list(range(20))
    assert [got[id - 1]["data"]["n"] for id in burst_ids] == list(range(20, 40))
    assert {m["from"] for m in got} == {"alice"}


async def test_echo_goes_to_sender_only(transport, serve, clients):
    server = await serve()
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


async def test_presence_on_connect_and_disconnect(transport, probe, serve, clients):
    """A closed client goes offline: at once, or once its connection has had no carrier for
    ``Limits.idle`` (a poll session whose client stopped polling)."""
    server = await serve(limits=Limits(idle=UNIT / 2))
    watcher = clients(transport, server.url, "watcher")
    await watcher.connect(["presence"])
    carol = clients(transport, server.url, "carol")
    await carol.connect()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "online")
    await carol.close()
    env = await asyncio.wait_for(next_of(watcher, "presence"), 3 * UNIT)
    assert (env["user"], env["status"]) == ("carol", "offline")


async def test_resume_after_drop_replays_exactly_the_missed(transport, probe, serve, clients):
    server = await serve()
    sub, pub = await subscriber_and_publisher(clients, transport, server.url, "feed:global")
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
    assert sub.reconnects == 1 or not probe.reconnects_on_drop


async def test_history_gap_when_too_old(transport, probe, serve, clients):
    server = await serve(history_size=5)
    pub = clients(transport, server.url, "alice")
    await pub.connect()
    for i in range(12):
        await pub.publish("chat:old", i)
    late = clients(transport, server.url, "bob")
    assert await probe.subscribe_since(late, "chat:old", since=2) == ErrorCode.HISTORY_GAP
    got = await messages(late, 5, "chat:old")  # what is retained still arrives
    assert [m["id"] for m in got] == [8, 9, 10, 11, 12]


async def test_unauthorized_without_valid_token(probe, serve):
    """Missing, expired, forged: HTTP 401 at the handshake, before any connection exists."""
    server = await serve()
    bad_sig = make_token("alice", "not-the-secret")
    for tok in ("", token("alice", ttl=-10), json.dumps({"alg": "none"}), bad_sig):
        status, body = await probe.handshake(server, token=tok)
        assert status == 401, tok
        assert json.loads(body)["code"] == "unauthorized"
    assert (await probe.handshake(server, bearer=bad_sig))[0] == 401
    assert (await probe.handshake(server, token=token("alice"), path="/nope"))[0] == 404
    probe.nothing_spent(await metrics_text(http_url(server)))


async def test_client_reports_refusal_clearly(transport, serve):
    server = await serve()
    client = TRANSPORTS[transport].client_class()(server.url, "garbage", reconnect=False,
                                                  timeout=UNIT)
    with pytest.raises(ClientError, match="401"):
        await client.connect()
    await client.close()


async def test_forbidden_for_another_users_private_channel(transport, probe, serve, clients):
    server = await serve()
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
    if probe.publishes_by_post:  # the server-side path: POST /publish with a back-end token
        assert await backend.publish("user:alice", {"note": "liked"}) >= 1
        assert (await next_of(alice, "message", "user:alice"))["data"] == {"note": "liked"}


async def test_bad_envelopes_get_errors_and_connection_stays(transport, probe, serve, clients):
    server = await serve()
    client = clients(transport, server.url)
    await client.connect(["chat:1"])
    for bad, code in probe.bad:
        env = await probe.send_bad(client, bad)
        assert (env["type"], env["code"]) == ("error", code), bad
    assert await client.publish("chat:1", "still usable") >= 1
    assert (await next_of(client, "message", "chat:1"))["data"] == "still usable"


@pytest.mark.parametrize("transport", ["ws", "ws-websockets", "ws@elysia"])
async def test_frame_over_hard_limit_closes(transport, serve, clients):
    server = await serve()
    client = clients(transport, server.url, reconnect=False)
    await client.connect()
    await client.send_raw(json.dumps({"op": "echo", "data": "x" * (wire.HARD_FRAME_BYTES + 10)}))
    await asyncio.wait_for(client._runner, UNIT)
    assert client.close_code == wire.CLOSE_TOO_BIG


@pytest.mark.parametrize("transport", ["sse", "longpoll", "sse@elysia", "longpoll@elysia"])
async def test_post_over_hard_limit_is_413(transport, serve):
    server = await serve()
    big = json.dumps({"channel": "a", "data": "x" * (wire.HARD_FRAME_BYTES + 10)})
    async with aiohttp.ClientSession() as session, session.post(
            server.url + "/publish", data=big.encode(),
            headers={"Authorization": f"Bearer {token('a')}"}) as resp:
        assert resp.status == 413


@pytest.mark.parametrize("transport", [t for t in TRANSPORTS if PROBES[t].stall_messages])
async def test_stalled_reader_is_cut_off_and_others_keep_receiving(transport, probe, serve,
                                                                   clients):
    server = await serve(limits=Limits(send_queue=64))
    good = clients(transport, server.url, "good")
    await good.connect(["live:1"])
    stalled = await probe.stall(server, clients, "live:1")
    pub = clients(transport, server.url, "pub")
    await pub.connect()
    n = probe.stall_messages  # enough to fill the kernel's socket buffers and the outbox
    for i in range(n):
        await pub.publish("live:1", {"i": i, "pad": "y" * 16000})
    got = await messages(good, n, "live:1")
    assert [m["data"]["i"] for m in got] == list(range(n))
    await until_metric(http_url(server), r'sobranie_disconnects_total\{reason="slow consumer"\} 1')
    # the stalled one is gone from the hub; good and pub remain
    await until_metric(http_url(server), rf'sobranie_connections\{{transport="{probe.label}"\}} 2')
    if stalled is not None:
        stalled.close()


async def test_an_oversize_publish_fails_its_own_request(transport, probe, serve, clients):
    server = await serve()
    client = clients(transport, server.url)
    await client.connect(["big:1"])
    with pytest.raises(WireError) as err:
        await client.publish("big:1", "x" * 70_000)
    assert err.value.code == ErrorCode.TOO_LARGE
    assert await client.publish("big:1", "small") == 1


async def test_metrics_count_what_happened(transport, probe, serve, clients):
    server = await serve()
    client = clients(transport, server.url)
    await client.connect(["m:1"])
    await client.publish("m:1", 1)
    with pytest.raises(WireError):
        await client.subscribe("user:someone-else")
    text = await metrics_text(http_url(server))
    assert re.search(rf'sobranie_connections\{{transport="{probe.label}"\}} 1', text)
    assert re.search(r'sobranie_errors_total\{code="forbidden"\} 1', text)
    assert re.search(r"sobranie_published_total 1", text)
    async with aiohttp.ClientSession() as session, session.get(
            http_url(server) + "/healthz") as resp:
        assert resp.status == 200
        assert json.loads(await resp.text())["status"] == "ok"
