"""The contract over WebTransport (aioquic, HTTP/3) on real UDP loopback sockets, plus what is
WebTransport's own: datagrams, certificates and pinning, session ends, the idle timeout, and the
client-opened-stream trap in aioquic."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

import aiohttp
import pytest
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamDataReceived
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from servers.hub import Limits
from servers.run import Options, core
from servers.webtransport import (
    CERT_VALIDITY,
    UDP_BUFFER_BYTES,
    WebTransportServer,
    self_signed_certificate,
)
from sobranie_bench.clients import Backoff, ClientError
from sobranie_bench.clients.webtransport import (
    ByteCounter,
    WebTransportClient,
    connect_quic,
    open_bidi_stream,
)
from sobranie_contract import wire
from sobranie_contract.framing import CapsuleReader, LineSplitter, close_capsule, parse_close
from tests.conftest import (
    SECRET,
    UNIT,
    metrics_text,
    next_of,
    subscriber_and_publisher,
    token,
)

WT = "webtransport"


async def http_get(server, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, \
            session.get(server.endpoints["http"] + path) as resp:
        return resp.status, await resp.text()


# --- the handshake and the envelope stream (the rest of the contract: test_transports.py) ---


async def test_bearer_header_is_accepted(start_server):
    server = await start_server(WT)
    port = int(server.url.rsplit(":", 1)[1])
    proto = await connect_quic("127.0.0.1", port, server.endpoints["cert_sha256"],
                               ByteCounter(), UNIT)
    try:
        await proto.open_session(b"127.0.0.1", b"/wt", UNIT,
                                 [(b"authorization", f"Bearer {token('dora')}".encode())])
        hello = wire.decode((await asyncio.wait_for(proto.lines(), UNIT))[0])
        assert (hello["type"], hello["user"]) == ("hello", "dora")
    finally:
        proto.shutdown(graceful=True)


async def test_an_envelope_may_arrive_in_pieces(start_server, clients):
    """Lines are framed by the server, not by the transport: a line split across writes is one
    envelope (the malformed ones: test_transports.py)."""
    server = await start_server(WT)
    client = clients(WT, server.url)
    await client.connect()
    await client.send_raw(b'{"op":"echo",')
    await client.send_raw(b'"data":"joined"}\n')
    assert (await next_of(client, "echo"))["data"] == "joined"


async def test_line_over_hard_limit_closes_the_session(start_server, clients):
    server = await start_server(WT)
    client = clients(WT, server.url, reconnect=False)
    await client.connect()
    await client.send_raw(b'{"op":"echo","data":"' + b"x" * (wire.HARD_FRAME_BYTES + 10))
    await asyncio.wait_for(client._runner, 2 * UNIT)
    assert client.close_code == wire.CLOSE_TOO_BIG
    _, text = await http_get(server, "/metrics")
    assert re.search(r'sobranie_disconnects_total\{reason="envelope of \d+\+ bytes over', text)


async def test_unread_input_over_the_hard_limit_closes_the_session(start_server, clients):
    server = await start_server(WT, limits=Limits(hard_frame=4096))
    hub = server.stop.__self__.hub  # the WebTransportServer behind this Running
    gate = asyncio.Event()
    handle = hub.handle

    async def stalled_handle(conn, raw, **kwargs):  # a hub slower than the network
        await gate.wait()
        return await handle(conn, raw, **kwargs)

    hub.handle = stalled_handle
    client = clients(WT, server.url, reconnect=False)
    await client.connect()
    line = json.dumps({"op": "echo", "data": "x" * 100}).encode() + b"\n"
    await client.send_raw(line * 50)
    await asyncio.wait_for(client._runner, 2 * UNIT)
    assert client.close_code == wire.CLOSE_POLICY
    _, text = await http_get(server, "/metrics")
    assert 'sobranie_disconnects_total{reason="flood"} 1' in text
    gate.set()


# --- datagrams -------------------------------------------------------------------------------


async def test_unreliable_publishes_arrive_or_are_counted_lost(start_server, clients):
    server = await start_server(WT)
    sub, pub = await subscriber_and_publisher(clients, WT, server.url, "cursor:1")
    n = 50
    for i in range(n):
        assert await pub.publish("cursor:1", {"i": i}, unreliable=True) == 0  # no ack, no id
    marker = await pub.publish("cursor:1", "marker")  # reliable, after every datagram was sent
    got = []
    while (env := await next_of(sub, "message", "cursor:1"))["data"] != "marker":
        got.append(env)
    assert env["id"] == marker <= n + 1  # datagrams lost on the way up got no id
    ids = [m["id"] for m in got]
    assert ids == sorted(set(ids)) and set(ids) <= set(range(1, marker))
    assert [m["data"]["i"] for m in got] == sorted({m["data"]["i"] for m in got})
    assert all(m["from"] == "alice" for m in got)  # arrived intact, or counted lost: n - len
    while not pub._inbox.empty():
        assert pub._inbox.get_nowait()["type"] != "ack", "unreliable publishes are not acked"


async def test_garbage_datagrams_get_errors_and_crash_nothing(start_server, clients):
    server = await start_server(WT)
    client = clients(WT, server.url)
    await client.connect(["chat:1"])
    for raw, code in [(b"\xff\xfe garbage", "bad_request"), (b"", "bad_request"),
                      (b'{"op":"publish","channel":"user:alice","data":1,"unreliable":true}',
                       "forbidden")]:
        await client.send_raw(raw, datagram=True)
        assert (await next_of(client, "error"))["code"] == code
    proto = client._proto
    proto.h3.send_datagram(proto.session_id + 4, b'{"op":"echo","data":1}')  # no such session
    proto.transmit()
    await client.send_raw(b'{"op":"echo","data":"via datagram"}', datagram=True)
    assert (await next_of(client, "echo"))["data"] == "via datagram"
    with pytest.raises(ClientError, match="does not fit one datagram"):
        await client.publish("chat:1", "x" * 2000, unreliable=True)
    assert await client.publish("chat:1", "still usable") >= 1


# --- session ends ----------------------------------------------------------------------------


async def test_stream_end_closes_the_session(start_server, clients):
    server = await start_server(WT)
    watcher = clients(WT, server.url, "watcher")
    await watcher.connect(["presence"])
    erin = clients(WT, server.url, "erin", reconnect=False)
    await erin.connect()
    assert (await next_of(watcher, "presence"))["status"] == "online"
    proto = erin._proto
    proto._quic.send_stream_data(proto.stream_id, b"", end_stream=True)
    proto.transmit()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("erin", "offline")
    await asyncio.wait_for(erin._runner, UNIT)  # the server ended its side too


async def test_vanished_client_is_reaped_by_the_idle_timeout(start_server, clients):
    server = await start_server(WT, extra={"idle_timeout": str(UNIT / 5)})
    ghost = clients(WT, server.url, "ghost", reconnect=False)
    await ghost.connect()
    _, text = await http_get(server, "/metrics")
    assert re.search(r'sobranie_connections\{transport="webtransport"\} 1', text)
    await ghost.drop()  # no CLOSE capsule, no CONNECTION_CLOSE: the socket just goes away
    for _ in range(int(20 * UNIT)):
        _, text = await http_get(server, "/metrics")
        if not re.search(r'sobranie_connections\{transport="webtransport"\} [1-9]', text):
            break
        await asyncio.sleep(0.1)
    assert not re.search(r'sobranie_connections\{transport="webtransport"\} [1-9]', text)
    assert re.search(r'sobranie_connections_total\{transport="webtransport"\} 1', text)


# --- under uvloop, the harness's event loop ----------------------------------------------------


def test_concurrent_connects_all_succeed_under_uvloop():
    """100 clients connecting at once under uvloop to a server process (as in the harness) all
    get their hello.

    uvloop hands a datagram to its protocol before callbacks already queued with ``call_soon``,
    so the server's handshake reply could overtake the start of the task that was to wait for
    it; aioquic's ``wait_connected()`` then missed the handshake, and connects timed out.
    """
    uvloop = pytest.importorskip("uvloop")

    async def connect_all(url: str) -> list[object]:
        made = [WebTransportClient(url, token(f"user{i}"), reconnect=False, timeout=3 * UNIT)
                for i in range(100)]
        try:
            return await asyncio.gather(*(c.connect(["chat:1"]) for c in made),
                                        return_exceptions=True)
        finally:
            await asyncio.gather(*(c.close() for c in made), return_exceptions=True)

    with serve_process() as info:
        results = uvloop.run(connect_all(info["url"]))
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} of 100 connects failed, first: {failed[0]}"
    assert {r["type"] for r in results} == {"hello"}  # type: ignore[index]



async def test_the_shared_udp_socket_gets_large_buffers():
    """Bursts of handshakes queue on the one UDP socket; the default buffer drops them."""
    limits = {}
    for option, name in ((socket.SO_RCVBUF, "rmem_max"), (socket.SO_SNDBUF, "wmem_max")):
        try:
            limits[option] = int(Path(f"/proc/sys/net/core/{name}").read_text())
        except OSError:
            pytest.skip("no /proc/sys/net/core here (not Linux)")
    server = WebTransportServer(*core(Options(secret=SECRET), "sobranie-webtransport"))
    await server.start("127.0.0.1", 0)
    try:
        assert server._quic is not None and server._quic._transport is not None
        sock = server._quic._transport.get_extra_info("socket")
        for option, cap in limits.items():  # Linux reports twice what was granted
            assert sock.getsockopt(socket.SOL_SOCKET, option) >= min(UDP_BUFFER_BYTES, cap)
    finally:
        await server.stop()

# --- the aioquic trap ------------------------------------------------------------------------


def _client_h3() -> H3Connection:
    quic = QuicConnection(configuration=QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536))
    return H3Connection(quic, enable_webtransport=True)


def test_replies_on_a_client_opened_stream_surface_only_when_it_is_registered():
    reply = StreamDataReceived(stream_id=0, data=b'{"type":"hello"}\n', end_stream=False)
    h3 = _client_h3()
    sid = h3.create_webtransport_stream(session_id=0)
    assert h3.handle_event(reply) == [], "the trap: aioquic parses the reply as HTTP/3 frames"
    h3 = _client_h3()
    sid = open_bidi_stream(h3, session_id=0)
    assert sid == reply.stream_id
    assert h3.handle_event(reply) == [WebTransportStreamDataReceived(
        data=reply.data, stream_id=sid, stream_ended=False, session_id=0)]


# --- framing helpers ---------------------------------------------------------------------


def test_capsules_and_lines_survive_any_split():
    data = close_capsule(wire.CLOSE_TOO_BIG, "too big") + close_capsule(0, "")
    reader, got = CapsuleReader(), []
    for i in range(len(data)):
        got += reader.feed(data[i:i + 1])
    assert [parse_close(value) for _, value in got] == [(1009, "too big"), (0, "")]
    splitter, lines = LineSplitter(), []
    for piece in (b'{"a":', b'1}\n\n{"b"', b":2}\n{", b"}"):
        lines += splitter.feed(piece)
    assert lines == [b'{"a":1}', b'{"b":2}'] and splitter.partial == b"{}"


# --- certificates --------------------------------------------------------------------------


def test_self_signed_certificate_fits_server_certificate_hashes():
    now = datetime.now(UTC)
    cert, key = self_signed_certificate(now)
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= timedelta(days=14)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == CERT_VALIDITY
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {ip_address("127.0.0.1"),
                                                            ip_address("::1")}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


async def test_cert_hash_is_served_and_pinned(start_server, clients):
    server = await start_server(WT)
    status, text = await http_get(server, "/wt-cert-hash")
    body = json.loads(text)
    assert status == 200 and body["algorithm"] == "sha-256"
    assert body["value"] == server.endpoints["cert_sha256"]
    wrong = clients(WT, server.url, cert_hash="00" * 32, reconnect=False)
    with pytest.raises(ClientError, match="is not the pinned"):
        await wrong.connect()
    insecure = clients(WT, server.url, insecure=True)
    assert (await insecure.connect())["type"] == "hello"
    fetched = clients(WT, server.url)
    await fetched.connect()
    assert fetched.cert_hash == body["value"]
    assert fetched.bytes_sent > 1200 and fetched.bytes_received > 0  # the Initial is padded


async def test_reconnect_to_a_restarted_server_fetches_its_new_pin(start_server, clients):
    first = await start_server(WT)
    port = int(first.url.rsplit(":", 1)[1])
    client = clients(WT, first.url, backoff=Backoff(base=0.5))
    await client.connect()
    first_hello = await next_of(client, "hello")
    old_pin = client.cert_hash
    await first.stop()
    second = await start_server(WT, port=port)  # same port, new self-signed certificate
    second_hello = await next_of(client, "hello")
    assert second_hello["conn"].split("-")[0] != first_hello["conn"].split("-")[0]  # hub-n
    assert client.cert_hash == second.endpoints["cert_sha256"] != old_pin


async def test_given_certificate_and_qlog(start_server, clients, tmp_path):
    cert, key = self_signed_certificate()
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "qlog").mkdir()
    server = await start_server(WT, extra={"cert": str(tmp_path / "cert.pem"),
                                           "key": str(tmp_path / "key.pem"),
                                           "quic_log": str(tmp_path / "qlog")})
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert server.endpoints["cert_sha256"] == digest
    client = clients(WT, server.url)
    await client.connect()
    await client.close()  # the server writes the trace once the connection has closed
    for _ in range(int(20 * UNIT)):
        if list((tmp_path / "qlog").glob("*.qlog")):
            break
        await asyncio.sleep(0.1)
    assert list((tmp_path / "qlog").glob("*.qlog"))


@contextlib.contextmanager
def serve_process() -> Iterator[dict]:
    """``sobranie-bench serve webtransport`` in its own process (uvloop, as the harness runs it):
    the endpoints it prints."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sobranie_bench.cli", "serve", WT, "--port", "0", "--json",
         "--jwt-secret", SECRET], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(5 * UNIT)


def test_serve_command_prints_the_endpoints():
    with serve_process() as info:

        async def hello() -> dict:
            client = WebTransportClient(info["url"], token("cli"), timeout=UNIT)
            try:
                return await client.connect()
            finally:
                await client.close()

        assert info["url"].startswith("https://127.0.0.1:")
        assert info["webtransport"] == info["url"] + "/wt"
        assert asyncio.run(hello())["user"] == "cli"


# --- delivery: where a session's messages travel (docs/protocol.md, "Delivery") -------------


async def test_per_channel_delivery_puts_each_channel_on_a_stream_of_its_own(start_server,
                                                                           clients):
    server = await start_server(WT)
    sub = clients(WT, server.url, "bob", delivery="per-channel")
    pub = clients(WT, server.url, "alice")
    channels = ["room:a", "room:b", "room:c"]
    await sub.connect(channels)
    await pub.connect()
    for i in range(3):
        for channel in channels:
            await pub.publish(channel, {"i": i})
    got: dict[str, list[int]] = {}
    while sum(map(len, got.values())) < 9:
        env = await next_of(sub, "message")
        got.setdefault(env["channel"], []).append(env["data"]["i"])
    assert got == {channel: [0, 1, 2] for channel in channels}  # in order within a channel
    streams = {k: n for k, n in sub.carriers.items() if k != "stream"}
    assert sorted(streams.values()) == [3, 3, 3], sub.carriers  # three streams, 3 messages each
    assert all(int(k.split()[1]) % 4 == 3 for k in streams)  # server-opened unidirectional
    assert "sobranie_webtransport_channel_streams_total 3" in await metrics_text(
        server.endpoints["http"])


async def test_unreliable_delivery_sends_messages_as_datagrams(start_server, clients):
    server = await start_server(WT)
    sub = clients(WT, server.url, "bob", delivery="unreliable")
    pub = clients(WT, server.url, "alice")
    await sub.connect(["game:1"])
    await pub.connect()
    for i in range(5):
        await pub.publish("game:1", {"i": i})
    await pub.publish("game:1", {"big": "x" * 2000})  # over one datagram: on the stream
    got = [(await next_of(sub, "message", "game:1"))["data"] for _ in range(6)]
    assert sorted(d["i"] for d in got if "i" in d) == list(range(5))
    assert {"big": "x" * 2000} in got
    assert sub.carriers["datagram"] == 5, sub.carriers
    assert sub.cursor["game:1"] == 6
    assert "sobranie_webtransport_message_datagrams_total 5" in await metrics_text(
        server.endpoints["http"])


async def test_an_unknown_delivery_is_refused_before_the_session(start_server):
    server = await start_server(WT)
    port = int(server.url.rsplit(":", 1)[1])
    proto = await connect_quic("127.0.0.1", port, server.endpoints["cert_sha256"],
                               ByteCounter(), UNIT)
    try:
        with pytest.raises(ClientError, match="HTTP 400.*delivery='sideways' is none of"):
            await proto.open_session(b"127.0.0.1", f"/wt?token={token('a')}&delivery=sideways"
                                     .encode(), UNIT)
    finally:
        proto.shutdown(graceful=True)


async def test_a_migrated_connection_keeps_its_session(start_server, clients):
    """QUIC connection migration: a new UDP socket (new local port) and connection ID, the
    same session: no reconnect, no new hello, messages keep coming."""
    server = await start_server(WT)
    sub, pub = await subscriber_and_publisher(clients, WT, server.url, "news:1")
    await pub.publish("news:1", {"n": 1})
    assert (await next_of(sub, "message", "news:1"))["data"] == {"n": 1}
    conn, port = sub.conn, sub._proto._transport.get_extra_info("sockname")[1]
    await sub.migrate()
    assert sub._proto._transport.get_extra_info("sockname")[1] != port
    await pub.publish("news:1", {"n": 2})
    assert (await next_of(sub, "message", "news:1"))["data"] == {"n": 2}
    assert (sub.migrations, sub.reconnects, sub.conn) == (1, 0, conn)
    await sub.subscribe("news:2")  # the path works both ways
    await pub.publish("news:2", {"n": 3})
    assert (await next_of(sub, "message", "news:2"))["data"] == {"n": 3}
