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
import gc
import itertools
import json
import logging
import re
import socket
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

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

HTTP_STATUS = {"bad_request": 400, "unknown_channel": 404, "too_large": 413, "forbidden": 403,
               "rate_limited": 429}
_REFS = itertools.count(1)


async def _reply(client: Any, ref: str) -> dict[str, Any]:
    """The next ``ack``, ``echo`` or ``error`` envelope of ``client`` that answers ``ref`` (an
    error that could not name its request answers any)."""
    while True:
        env = await client.recv(UNIT)
        if env["type"] in ("ack", "echo", "error") and env.get("ref") in (ref, None):
            return env


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
                        bearer: str | None = None, path: str | None = None
                        ) -> tuple[int, str, dict[str, str] | None]:
        """Status, body and headers (None where the client cannot see them) of a handshake
        with ``?token=`` and/or ``Authorization: Bearer``."""
        headers = {**self.headers, **({"Authorization": f"Bearer {bearer}"} if bearer else {})}
        async with aiohttp.ClientSession() as session, session.get(
                http_url(server) + self.target(path, token), headers=headers) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

    def nothing_spent(self, metrics: str) -> None:
        """After refused handshakes: no connection of this transport was ever opened."""
        assert f'transport="{self.label}"' not in metrics

    async def send_raw(self, client: Any, raw: str) -> None:
        await client.send_raw(raw)

    async def send_bad(self, client: Any, bad: Any) -> dict[str, Any]:
        """Send one malformed request past the client; the error envelope it got."""
        await self.send_raw(client, bad)
        return await next_of(client, "error")

    def raw_publish(self, data_text: str) -> Any:
        """A publish whose ``data`` is ``data_text`` verbatim (JSON no encoder here would
        write: 30000 levels, 5000 digits), in the form :meth:`send_bad` takes; None when the
        client cannot carry raw text (Socket.IO: test_hostile.py sends its packets by hand)."""
        return f'{{"op":"publish","channel":"chat:1","data":{data_text}}}'

    async def request_raw(self, client: Any, env: dict[str, Any]) -> dict[str, Any]:
        """Send ``env`` (an op and its fields, however hostile) past the client's own checks;
        the reply that answers it (``ack``, ``echo`` or ``error``)."""
        env.setdefault("ref", f"h{next(_REFS)}")
        await self.send_raw(client, json.dumps(env))
        return await _reply(client, env["ref"])

    async def flood(self, client: Any, n: int) -> None:
        """``n`` echo requests at once, none waiting for its reply."""
        for i in range(n):
            await self.send_raw(client, json.dumps({"op": "echo", "data": i}))

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
    cursor_param = "last_event_id"
    """The query parameter of the stream's opening cursor (or the ``Last-Event-ID`` header)."""

    async def send_bad(self, client, bad):
        path, body = bad
        async with aiohttp.ClientSession() as session, session.post(
                client.url + path, data=body,
                headers={"Authorization": f"Bearer {client.token}"}) as resp:
            env = await resp.json()
            assert resp.status == HTTP_STATUS[env["code"]], (path, body[:40])
            return env

    def raw_publish(self, data_text):
        return "/publish", f'{{"channel":"chat:1","data":{data_text}}}'.encode()

    async def request_raw(self, client, env):
        """The op as its POST (``/publish``, or ``/echo`` ... on the client's stream ``conn``):
        an error answers the POST; what is accepted answers on the stream."""
        op = env.pop("op")
        env.setdefault("ref", f"h{next(_REFS)}")
        if op != "publish":
            env["conn"] = client.conn
        async with aiohttp.ClientSession() as session, session.post(
                f"{client.url}/{op}", data=json.dumps(env).encode(),
                headers={"Authorization": f"Bearer {client.token}"}) as resp:
            reply = await resp.json()
            if resp.status != 202:
                assert resp.status == HTTP_STATUS.get(reply.get("code"), 200), (op, reply)
                return reply
        return await _reply(client, env["ref"])

    async def flood(self, client, n):
        """Over HTTP a flood is POSTs at once: ``n`` publishes of one user."""
        async with aiohttp.ClientSession() as session:
            async def post(i: int) -> None:
                async with session.post(f"{client.url}/publish",
                                        json={"channel": "flood:1", "data": i},
                                        headers={"Authorization": f"Bearer {client.token}"}
                                        ) as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        client._inbox.put_nowait({**body, "status": resp.status})

            await asyncio.gather(*(post(i) for i in range(n)))

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
    cursor_param = "cursor"


class ElysiaPollProbe(PollProbe):
    """Long-polling on the Elysia server, a subprocess: its idle time is set when it starts."""

    serve_extra = (("poll_idle", "0.5"),)

    @contextlib.contextmanager
    def offline_soon(self):
        yield


class WebTransportProbe(Probe):
    stall_messages = 300

    async def _connect(self, server, token, bearer, path):
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

    async def handshake(self, server, token=None, bearer=None, path=None):
        """The extended CONNECT of a session: its status and body (from the refusal)."""
        status, body = await self._connect(server, token, bearer, path)
        return status, body, None

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

    def raw_publish(self, data_text):
        return None

    async def request_raw(self, client, env):
        op = env.pop("op")
        return await client.call(op, env)

    async def flood(self, client, n):
        for i in range(n):  # emitted without an ack: nothing to wait for
            await client._sio.emit("echo", {"data": i})

    async def stall(self, server, clients, channel):
        """A websocket with a tiny receive buffer, or a polling session that stops polling."""
        subscribe = "421" + json.dumps(["subscribe", {"channel": channel}])  # acked: 431[...]
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
        # read until the subscription's ack (a count of messages in would count the canary's)
        return await _raw_stall(server, path, b'"ack"',
                                frame(OP_TEXT, b"40") + frame(OP_TEXT, subscribe.encode()))


class WebRTCProbe(Probe):
    stall_messages = 300  # past the server's HIGH_WATER (1 MiB buffered), then the outbox

    async def stall(self, server, clients, channel):
        """An aiortc client that acknowledges no SCTP DATA from now on, as a peer whose receive
        buffer is full: aiortc delivers every message to the application at once (no read
        backpressure) and its sender ignores the peer's advertised window, so the stall is
        one level down: without SACKs the server's congestion window stays full, its
        channel's ``bufferedAmount`` passes HIGH_WATER and its outbox grows until the hub
        cuts it (heartbeats are still answered: the association lives)."""
        stalled = clients("webrtc", server.url, "stalled", reconnect=False)
        await stalled.connect([channel])
        await next_of(stalled, "ack")

        async def unread(chunk: Any) -> None:
            return None

        stalled._pc.sctp._receive_data_chunk = unread

    async def handshake(self, server, token=None, bearer=None, path=None):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        async with aiohttp.ClientSession() as session, session.post(
                server.url + self.target(path, token), json={"sdp": "v=0\r\n", "type": "offer"},
                headers=headers) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

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
        status, body, _ = await probe.handshake(server, token=tok)
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


# --- hostile: every server held to the same rules (issue 12) ---------------------------------
#
# One server per transport with tight limits; on it a canary connection echoes all the time,
# and each attack of ATTACKS runs beside it. The canary must lose nothing and stay connected
# (its worst echo latency is recorded, never asserted beyond a generous bound), every attack
# must get its answer, and the server's log must hold no unhandled exception. Each transport's
# answers are written to <pytest basetemp>/hostile/<transport>.json and printed (``-s``);
# ``hostile_table(dir)`` joins them into one markdown table:
#   python -c "from tests.servers.test_transports import hostile_table as t; print(t('DIR'))"

HOSTILE_LIMITS = Limits(rate=20, burst=40, flood=20, send_queue=64, header_timeout=2.0,
                        history_bytes=100_000, user_connections=4, user_rate=6, user_burst=60,
                        user_channels=20)
"""Per connection: a bucket that a flood empties whatever the machine's speed (40 at once,
refilled at 20/s; the canary echoes slower), and a flood's replies fit the outbox (64); per
user: 4 connections, 60 requests at once refilled at 6/s (the canary's 5/s fits), 20 channels
per minute; 100 kB of history in all; half-sent headers cut after 2 s."""
CANARY_PERIOD = 0.2
"""Seconds between the canary's echoes (under ``HOSTILE_LIMITS.user_rate``)."""
LOG_MARKERS = ("Traceback", "Task exception was never retrieved",
               "Future exception was never retrieved", "Error handling request")
"""What an unhandled exception leaves in a server's log."""
CANARY_BOUND = UNIT
SLOWLORIS_BOUND = HOSTILE_LIMITS.header_timeout + 4 * UNIT
"""A half-sent request must be closed by then (Bun's socket timer moves in 4 s steps and may
close up to two steps after its ``idleTimeout``: docs/elysia.md)."""
ATTACK_SECONDS = 8 * UNIT
"""An attack that has not got its answer by then failed (it is recorded as a timeout)."""
"""The canary's echo must come back within this much, whatever the attack (a hang, not speed)."""


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth - 1):  # the envelope itself is one level
        value = [value]
    return value


class Canary:
    """A connection of the attacked transport that echoes every :data:`CANARY_PERIOD` and
    checks each echo."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sent = self.got = 0
        self.worst = 0.0
        """Worst echo round trip since :meth:`window` (seconds)."""
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            seq, self.sent = self.sent, self.sent + 1
            start = loop.time()
            await self.client.echo({"canary": seq})
            env = await asyncio.wait_for(next_of(self.client, "echo"), CANARY_BOUND)
            assert env["data"] == {"canary": seq}, f"canary lost echo {seq}: got {env}"
            self.got += 1
            self.worst = max(self.worst, loop.time() - start)
            await asyncio.sleep(CANARY_PERIOD)

    def window(self) -> None:
        self.worst = 0.0

    async def still_alive(self) -> float:
        """After an attack: the canary is connected, echoing, and lost nothing; its worst
        latency during the attack (ms)."""
        assert self.task is not None
        got = self.got
        for _ in range(int(3 * UNIT / 0.05)):
            if self.task.done() or self.got > got:
                break
            await asyncio.sleep(0.05)
        if self.task.done():
            self.task.result()  # raises what killed it
        assert self.got > got, "the canary stopped echoing"
        assert self.client.reconnects == 0, "the canary was cut off"
        return round(self.worst * 1000, 1)


class Hostile:
    """What an attack needs: the attacked server, its probe and fresh attacking clients."""

    def __init__(self, transport: str, probe: Probe, server: Running,
                 clients: Callable[..., Client]) -> None:
        self.transport, self.probe, self.server = transport, probe, server
        self._clients = clients
        self.one_way = isinstance(probe, OneWayProbe)
        self._users = itertools.count(1)

    def user(self, name: str = "mallory") -> str:
        """A user of this attack's own: what earlier attacks spent (connections a poll session
        still holds, a publish budget) is not this one's."""
        return f"{name}{next(self._users)}"

    async def client(self, user: str, channels: tuple[str, ...] = (), **kwargs: Any) -> Client:
        client = self._clients(self.transport, self.server.url, user, **kwargs)
        await client.connect(list(channels))
        return client

    async def codes_of(self, *envs: dict[str, Any]) -> str:
        """The answers to ``envs`` sent on one connection of a user of their own (the error
        code, else the reply's type), sorted and joined."""
        client = await self.client(self.user())
        codes = set()
        for env in envs:
            reply = await self.probe.request_raw(client, env)
            codes.add(reply["code"] if reply["type"] == "error" else reply["type"])
        await client.close()
        return ",".join(sorted(codes))


Answer = tuple[str, str]
"""(code, how it came): the error code (or ``closed``, ``ignored``) and, for the table, the
status or close code that carried it."""


async def _bad_tokens(h: Hostile) -> Answer:
    """None, garbage, wrong signature, expired, alg=none: 401 + ``WWW-Authenticate: Bearer``."""
    statuses = set()
    for tok in ("", "garbage", make_token("alice", "not-the-secret"), token("alice", ttl=-10),
                json.dumps({"alg": "none"})):
        status, body, headers = await h.probe.handshake(h.server, token=tok)
        assert json.loads(body)["code"] == "unauthorized", (tok, body)
        if headers is not None:
            assert headers.get("WWW-Authenticate") == "Bearer", (tok, headers)
        statuses.add(status)
    status, _, _ = await h.probe.handshake(h.server, bearer=token("alice", ttl=-10))
    statuses.add(status)
    how = "CONNECT" if h.transport == "webtransport" else "HTTP"
    return ("unauthorized" if statuses == {401} else f"status {statuses}",
            f"{how} 401" + (", WWW-Authenticate" if how == "HTTP" else ""))


async def _wrong_acl(h: Hostile) -> Answer:
    return (await h.codes_of({"op": "subscribe", "channel": "user:bob"},
                             {"op": "publish", "channel": "user:mallory1", "data": 1}),
            "HTTP 403" if h.one_way else "error")


async def _malformed(h: Hostile) -> Answer:
    client = await h.client(h.user())
    codes = set()
    for bad, code in h.probe.bad:
        env = await h.probe.send_bad(client, bad)
        codes.add("bad_request" if env["code"] == code else f"{env['code']} for {code}")
    await client.close()
    # a lone surrogate cannot be sent on to anyone (Socket.IO once acked it and cut a channel)
    codes |= set((await h.codes_of({"op": "publish", "channel": "chat:1", "data": "\ud800"},
                                   {"op": "echo", "data": {"\udfff": 1}})).split(","))
    return ",".join(sorted(codes)), "HTTP 400/404/413" if h.one_way else "error"


async def _oversized(h: Hostile) -> Answer:
    return (await h.codes_of({"op": "publish", "channel": "chat:1", "data": "x" * 70_000}),
            "HTTP 413" if h.one_way else "error")


async def _deep_nesting(h: Hostile) -> Answer:
    codes = set((await h.codes_of({"op": "publish", "channel": "chat:1", "data": nested(200)},
                                  {"op": "echo", "data": {"a": nested(64)}})).split(","))
    codes |= await _raw_publishes(h, *("[" * n + "]" * n for n in (984, 30_000)))
    return ",".join(sorted(codes)), "HTTP 400" if h.one_way else "error"


async def _raw_publishes(h: Hostile, *data_texts: str) -> set[str]:
    """The error codes of publishes whose ``data`` is written by hand (where the probe can)."""
    codes = set()
    if h.probe.raw_publish("0") is not None:
        client = await h.client(h.user())
        for text in data_texts:
            codes.add((await h.probe.send_bad(client, h.probe.raw_publish(text)))["code"])
        await client.close()
    return codes


async def _huge_ids(h: Hostile) -> Answer:
    codes = set((await h.codes_of(*({"op": "subscribe", "channel": "chat:1", "since": since}
                                    for since in (2**63, 10**30, int("9" * 4000), -1, 1.5,
                                                  "7")))).split(","))
    codes |= await _raw_publishes(h, "9" * 5000, "1e400", "-" + "9" * 5000)
    if h.one_way:  # and the stream's own cursor, at its opening
        assert isinstance(h.probe, OneWayProbe)
        path = f"{h.probe.endpoint.partition('?')[0]}?channels=chat:x&{h.probe.cursor_param}="
        for cursor in (f"chat:x={'9' * 5000}", f"chat:x={2**63}", "chat:x=-1"):
            status, body, _ = await h.probe.handshake(h.server, token=token(h.user()),
                                                      path=path + cursor)
            codes.add(json.loads(body)["code"] if status == 400 else f"HTTP {status}")
    return ",".join(sorted(codes)), "HTTP 400" if h.one_way else "error"


HOSTILE_CHANNELS = ("../../etc/passwd", "a" * 5000, "chat:\x00", "chat:<script>", "",
                    "presence\r\nX-Injected: 1", "chat:x y", "CHAT:x", "chat:\u00e9",
                    "chat:\ud800", "user:", ":x")


async def _hostile_channels(h: Hostile) -> Answer:
    return (await h.codes_of(*({"op": op, "channel": channel, "data": 1}
                               for channel in HOSTILE_CHANNELS
                               for op in ("subscribe", "publish"))),
            "HTTP 400/404" if h.one_way else "error")


def _errors_received(client: Client) -> list[dict[str, Any]]:
    """The ``error`` envelopes waiting in ``client``'s inbox (the rest are dropped)."""
    errors = []
    while not client._inbox.empty():
        env = client._inbox.get_nowait()
        if env["type"] == "error":
            errors.append(env)
    return errors


async def _flood(h: Hostile) -> Answer:
    """Requests at once past the bucket: ``rate_limited`` first, then the close (over HTTP:
    the user's publish bucket, 429)."""
    client = await h.client(h.user("flooder"), reconnect=False)
    if h.one_way:
        await h.probe.flood(client, HOSTILE_LIMITS.user_burst + 100)
        errors = _errors_received(client)
        await client.close()
        statuses = {e["status"] for e in errors}
        return ",".join(sorted({e["code"] for e in errors})), f"HTTP {statuses}"
    await h.probe.flood(client, HOSTILE_LIMITS.burst + HOSTILE_LIMITS.flood + 30)
    await asyncio.wait_for(asyncio.shield(client._runner), 2 * UNIT)
    errors = _errors_received(client)
    await client.close()
    last = next((e for e in errors if "flood" in e["message"]), None)
    assert last is not None, f"no flood error before the close: {errors[-3:]}"
    assert client.close_code in (None, wire.CLOSE_POLICY), client.close_code
    return last["code"], f"error, then close {client.close_code or '(disconnect)'}"


async def _user_connections(h: Hostile) -> Answer:
    user = h.user("crowd")
    crowd = [await h.client(user) for _ in range(HOSTILE_LIMITS.user_connections)]
    status, body, _ = await h.probe.handshake(h.server, token=token(user))
    for client in crowd:
        await client.close()
    code = json.loads(body)["code"] if body.startswith("{") else body[:60]
    return code, f"{'CONNECT' if h.transport == 'webtransport' else 'HTTP'} {status}"


async def _user_publishes(h: Hostile) -> Answer:
    """One user's publishes over 3 connections, each under the connection's limit, past the
    user's: some are refused ``rate_limited`` for this user."""
    user = h.user("swarm")
    swarm = [await h.client(user) for _ in range(3)]
    per = HOSTILE_LIMITS.burst - 2  # 114 in all: past the burst (60) unless they took 9 s
    replies = await asyncio.gather(*(c.publish_nowait("swarm:1", i) for c in swarm
                                     for i in range(per)), return_exceptions=True)
    for client in swarm:
        await client.close()
    refused = [r for r in replies if isinstance(r, WireError)]
    assert all("for this user" in str(r) for r in refused), refused[:3]
    assert not [r for r in replies if isinstance(r, BaseException)
                and not isinstance(r, WireError)], replies[:3]
    codes = {r.code.value for r in refused}
    return ",".join(sorted(codes)) or "all accepted", f"{len(refused)} of {len(replies)} refused"


async def _user_echoes(h: Hostile) -> Answer:
    """One user's echoes over all the connections they may hold, each under the connection's
    limit, past the user's: echoes count against the user's budget as publishes do."""
    user = h.user("echoer")
    crowd = [await h.client(user) for _ in range(HOSTILE_LIMITS.user_connections)]
    per = HOSTILE_LIMITS.burst - 2  # 152 in all: past the burst (60) unless they took 15 s

    async def echoes(client: Client) -> list[dict[str, Any]]:
        return [await h.probe.request_raw(client, {"op": "echo", "data": i})
                for i in range(per)]

    replies = [r for rs in await asyncio.gather(*(echoes(c) for c in crowd)) for r in rs]
    for client in crowd:
        await client.close()
    refused = [r for r in replies if r["type"] == "error"]
    assert all("for this user" in r["message"] for r in refused), refused[:3]
    assert len(refused) + sum(r["type"] == "echo" for r in replies) == len(replies)
    codes = {r["code"] for r in refused}
    return ",".join(sorted(codes)) or "all accepted", f"{len(refused)} of {len(replies)} refused"


async def _gone(h: Hostile, user: str, close: Callable[[], Any]) -> None:
    """``close()`` the last connection of ``user`` and wait until the server has let them go
    (presence ``offline``). A poll session outlives its client by ``Limits.idle``: the user
    stays online meanwhile, so there is nothing to wait for."""
    if isinstance(h.probe, PollProbe):
        await close()
        return
    witness = await h.client(h.user("witness"), ("presence",))
    await close()
    while True:
        env = await asyncio.wait_for(next_of(witness, "presence"), 3 * UNIT)
        if (env["user"], env["status"]) == (user, "offline"):
            break
    await witness.close()


async def _channel_spray(h: Hostile) -> Answer:
    """New channels past the user's window; then close and reconnect: the window stands."""
    user = h.user("sprayer")
    client = await h.client(user)
    codes = []
    for i in range(HOSTILE_LIMITS.user_channels + 5):
        try:
            await client.publish(f"spray:{i}", i)
            codes.append("ack")
        except WireError as exc:
            codes.append(exc.code.value)
    await _gone(h, user, client.close)
    client = await h.client(user)
    try:
        await client.publish("spray:after-reconnect", 1)
        codes.append("ack (after reconnect)")
    except WireError as exc:
        codes.append(exc.code.value)
    await client.close()
    assert codes[:HOSTILE_LIMITS.user_channels] == ["ack"] * HOSTILE_LIMITS.user_channels
    return ",".join(sorted(set(codes[HOSTILE_LIMITS.user_channels:]))), \
        f"from channel {HOSTILE_LIMITS.user_channels + 1}, also after a reconnect"


async def _history_budget(h: Hostile) -> Answer:
    """Big messages into fresh channels: history stays under the budget, the oldest goes."""
    hoarder = await h.client(h.user("hoarder"))
    for i in range(8):
        await hoarder.publish(f"hoard:{i}", "h" * 30_000)
    await hoarder.close()
    text = await metrics_text(http_url(h.server))
    held = int(re.search(r"^sobranie_history_bytes (\d+)$", text, re.MULTILINE)[1])
    evicted = int(re.search(r"^sobranie_history_evicted_total (\d+)$", text, re.MULTILINE)[1])
    assert held <= HOSTILE_LIMITS.history_bytes and evicted > 0, (held, evicted)
    late = h._clients(h.transport, h.server.url, h.user("late"))
    code = await h.probe.subscribe_since(late, "hoard:0", since=0)
    await late.close()
    return code, f"{held} B held, {evicted} evicted"


def _count(metrics: str, pattern: str) -> int:
    found = re.search(pattern + r" (\d+)$", metrics, re.MULTILINE)
    return int(found[1]) if found else 0


async def _slow_reader(h: Hostile) -> Answer:
    slow = r'sobranie_disconnects_total\{reason="slow consumer"\}'
    before = _count(await metrics_text(http_url(h.server)), slow)
    stalled = await h.probe.stall(h.server, h._clients, "live:1")
    n = h.probe.stall_messages
    per = min(HOSTILE_LIMITS.burst, HOSTILE_LIMITS.user_burst) - 5
    for start in range(0, n, per):  # publishers that each stay under the limits
        pub = await h.client(h.user("pub"))
        for i in range(start, min(n, start + per)):
            try:
                await pub.publish("live:1", {"i": i, "pad": "y" * 16000})
            except ClientError:  # a kept-alive HTTP connection the server closed as it was
                await pub.close()  # reused (Bun's idle timer): once more on a fresh one
                pub = await h.client(h.user("pub"))
                await pub.publish("live:1", {"i": i, "pad": "y" * 16000})
        await pub.close()
    # the cut waits for the kernel's buffers and the outbox to fill: slow on a loaded machine
    await until_metric(http_url(h.server), rf"(?m)^{slow} {before + 1}$", within=3 * UNIT)
    if stalled is not None:
        stalled.close()
    return "closed", "1008 slow consumer"


async def _slowloris(h: Hostile) -> Answer:
    """Half-sent requests: each is closed after the header timeout."""
    host, port = http_url(h.server).removeprefix("http://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(50)]
    for _, writer in conns:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    ends = await asyncio.gather(*(asyncio.wait_for(reader.read(), SLOWLORIS_BOUND)
                                  for reader, _ in conns))
    took = loop.time() - start
    for _, writer in conns:
        writer.close()
    assert all(not e or e.startswith((b"HTTP/1.1 408", b"HTTP/1.1 400")) for e in ends), ends[:2]
    return "closed", f"all 50 within {took:.1f} s"


async def _wt_garbage_datagrams(h: Hostile) -> Answer:
    client = await h.client(h.user())
    codes = set()
    for raw in (b"\xff\xfe garbage", b"", b"[1,2]", b"{" * 300, b'{"op":"echo"}',
                b"\x00" * 1000):
        await client.send_raw(raw, datagram=True)
        codes.add((await next_of(client, "error"))["code"])
    await client.close()
    return ",".join(sorted(codes)), "error on the stream"


async def _wt_stream_flood(h: Hostile) -> Answer:
    """WebTransport streams past the session's one envelope stream (more than the QUIC stream
    limit: the rest wait on the client): ignored, the session still works."""
    client = await h.client(h.user())
    proto = client._proto
    for _ in range(300):
        sid = proto.h3.create_webtransport_stream(proto.session_id)
        proto._quic.send_stream_data(sid, b'{"op":"echo","data":"x"}\n' * 10, end_stream=True)
    proto.transmit()
    await client.echo("after")
    assert (await next_of(client, "echo"))["data"] == "after"
    await client.close()
    return "ignored", "300 streams, session still echoes"


async def _unmasked_frame(h: Hostile) -> Answer:
    """RFC 6455 5.1: a client frame without its mask is a protocol error (close 1002)."""
    writer = None
    host, port = h.server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    headers = "".join(f"{k}: {v}\r\n" for k, v in UPGRADE.items())
    writer.write(f"GET {h.probe.target(None, token(h.user()))} HTTP/1.1\r\nHost: x\r\n"
                 f"{headers}\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    payload = b'{"op":"echo","data":1}'
    writer.write(bytes([0x80 | OP_TEXT, len(payload)]) + payload)
    got = b""
    while b"\x88" not in got:
        chunk = await asyncio.wait_for(reader.read(4096), UNIT)
        if not chunk:
            break
        got += chunk
    writer.close()
    close = got[got.index(b"\x88"):] if b"\x88" in got else b""
    code = int.from_bytes(close[2:4], "big") if len(close) >= 4 else None
    return ("closed" if code == 1002 else f"close {code}"), f"close {code}"


class Attack(NamedTuple):
    name: str
    run: Callable[[Hostile], Any]
    expect: str
    """The answer's code (comma-joined when an attack has several parts)."""
    applies: Callable[[str, Probe], bool] = lambda transport, probe: True


ATTACKS: tuple[Attack, ...] = (
    Attack("bad tokens (none, garbage, signature, expired, alg=none)", _bad_tokens,
           "unauthorized"),
    Attack("wrong ACL (user:bob, publish to user:)", _wrong_acl, "forbidden"),
    Attack("malformed envelopes, lone surrogates", _malformed, "bad_request"),
    Attack("oversized envelope (70 kB)", _oversized, "too_large"),
    Attack("deep nesting (65, 200, 984, 30000 levels)", _deep_nesting, "bad_request"),
    Attack("huge ids, cursors, numbers (2^63, 5000 digits, -1, 1e400)", _huge_ids,
           "bad_request"),
    Attack("hostile channel names", _hostile_channels, "bad_request,unknown_channel"),
    Attack("flood (pipelined past the bucket)", _flood, "rate_limited"),
    Attack("one user, more connections than allowed", _user_connections, "rate_limited"),
    Attack("one user's publishes over 3 connections", _user_publishes, "rate_limited"),
    Attack("one user's echoes over 4 connections", _user_echoes, "rate_limited"),
    Attack("one user, too many new channels (and close, reconnect)", _channel_spray,
           "rate_limited"),
    Attack("history budget (8 x 30 kB, fresh channels)", _history_budget, "history_gap"),
    Attack("slow reader", _slow_reader, "closed",
           lambda transport, probe: bool(probe.stall_messages)),
    Attack("slowloris (50 half-sent requests)", _slowloris, "closed"),
    Attack("unmasked WebSocket frame", _unmasked_frame, "closed",
           lambda transport, probe: isinstance(probe, WsProbe)
           or isinstance(probe, SocketIOProbe) and probe.engineio == "websocket"),
    Attack("garbage datagrams", _wt_garbage_datagrams, "bad_request",
           lambda transport, probe: transport == "webtransport"),
    Attack("a flood of streams", _wt_stream_flood, "ignored",
           lambda transport, probe: transport == "webtransport"),
)


def _server_log(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    """What the server logged: this process's log records (the Python servers run in it) and
    everything written to its stderr (a subprocess server's inherits it)."""
    records = "\n".join(f"{r.name} {r.levelname} {r.getMessage()}\n{r.exc_text or ''}"
                        + ("Traceback (exc_info)" if r.exc_info else "")
                        for r in caplog.records)
    out, err = capfd.readouterr()
    sys.stdout.write(out)
    return records + "\n" + err


@pytest.mark.timeout(600)
async def test_hostile_attacks_get_their_answers_and_hurt_no_one(
        transport, probe, serve, clients, caplog, capfd, tmp_path_factory):
    caplog.set_level(logging.WARNING)
    server = await serve(limits=HOSTILE_LIMITS)
    canary = Canary(clients(transport, server.url, "canary"))
    await canary.start()
    h = Hostile(transport, probe, server, clients)
    rows, wrong = [], []
    for attack in ATTACKS:
        if not attack.applies(transport, probe):
            continue
        canary.window()
        try:
            code, how = await asyncio.wait_for(attack.run(h), ATTACK_SECONDS)
        except Exception as exc:  # noqa: BLE001  (recorded in the table, failed below)
            code, how = f"raised {type(exc).__name__}", str(exc)[:200]
        worst = await canary.still_alive()
        rows.append({"attack": attack.name, "expect": attack.expect, "code": code, "how": how,
                     "canary_worst_ms": worst})
        print(f"  {transport} {attack.name}: {code} ({how[:80]}); canary {worst} ms", flush=True)
        if code != attack.expect:
            wrong.append(rows[-1])
    assert canary.task is not None
    canary.task.cancel()
    await canary.client.close()
    out = tmp_path_factory.getbasetemp() / "hostile"
    out.mkdir(exist_ok=True)
    (out / f"{transport}.json").write_text(json.dumps(rows, indent=1))
    print(f"\nhostile, {transport} (canary echoes: {canary.got})")
    for row in rows:
        print(f"  {row['attack']:<58} {row['code']:<28} {row['how'][:60]:<60} "
              f"{row['canary_worst_ms']} ms")
    assert not wrong, wrong
    await server.stop()  # its shutdown is logged too
    gc.collect()  # a task that died unobserved says so when it is collected
    log = _server_log(caplog, capfd)
    found = [m for m in LOG_MARKERS if m in log]
    assert not found, f"unhandled exceptions in the server's log: {found}\n{log[-4000:]}"


def hostile_table(directory: str) -> str:
    """The markdown table of every ``<transport>.json`` the hostile test wrote in
    ``directory``: one row per attack, one column per transport (code; how; canary's worst)."""
    from pathlib import Path

    runs = {p.stem: json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))}
    attacks = list(dict.fromkeys(row["attack"] for rows in runs.values() for row in rows))
    lines = ["| attack | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for attack in attacks:
        cells = []
        for rows in runs.values():
            row = next((r for r in rows if r["attack"] == attack), None)
            cells.append("n/a" if row is None else
                         f"{row['code']} ({row['how']}); {row['canary_worst_ms']} ms")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
