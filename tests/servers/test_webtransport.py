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

from servers.auth import make_token
from servers.hub import Limits
from servers.webtransport import (
    CERT_VALIDITY,
    UDP_BUFFER_BYTES,
    WebTransportServer,
    self_signed_certificate,
)
from sobranie_bench import wire
from sobranie_bench.clients import Backoff, ClientError
from sobranie_bench.clients.webtransport import (
    ByteCounter,
    CapsuleReader,
    LineSplitter,
    WebTransportClient,
    close_capsule,
    connect_quic,
    open_bidi_stream,
    parse_close,
)
from sobranie_bench.wire import ErrorCode, WireError
from tests.conftest import SECRET, UNIT, messages, next_of, token

WT = "webtransport"


async def http_get(server, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, \
            session.get(server.endpoints["http"] + path) as resp:
        return resp.status, await resp.text()


async def connect_status(server, path: bytes, headers=()) -> str:
    """The ClientError of a CONNECT to ``path`` (the test expects a refusal)."""
    proto = await connect_quic("127.0.0.1", int(server.url.rsplit(":", 1)[1]),
                               server.endpoints["cert_sha256"], ByteCounter(), UNIT)
    try:
        with pytest.raises(ClientError) as err:
            await proto.open_session(b"127.0.0.1", path, UNIT, headers)
        return str(err.value)
    finally:
        proto.shutdown(graceful=True)


# --- the contract --------------------------------------------------------------------------


async def test_publish_delivers_in_order_with_ids_and_acks(start_server, clients):
    server = await start_server(WT)
    sub = clients(WT, server.url, "bob")
    pub = clients(WT, server.url, "alice")
    await sub.connect(["chat:1"])
    await pub.connect()
    ids = [await pub.publish("chat:1", {"n": i}) for i in range(20)]
    assert ids == list(range(1, 21))
    got = await messages(sub, 20, "chat:1")
    assert [m["id"] for m in got] == ids
    assert [m["data"]["n"] for m in got] == list(range(20))
    assert {m["from"] for m in got} == {"alice"}


async def test_echo_goes_to_sender_only(start_server, clients):
    server = await start_server(WT)
    a = clients(WT, server.url, "alice")
    b = clients(WT, server.url, "bob")
    await a.connect(["room:x"])
    await b.connect(["room:x"])
    await a.echo({"seq": 7})
    assert (await next_of(a, "echo"))["data"] == {"seq": 7}
    await a.publish("room:x", "marker")
    assert (await next_of(b, "message", "room:x"))["data"] == "marker"
    assert b._inbox.empty()


async def test_presence_on_connect_and_close(start_server, clients):
    server = await start_server(WT)
    watcher = clients(WT, server.url, "watcher")
    await watcher.connect(["presence"])
    carol = clients(WT, server.url, "carol")
    await carol.connect()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "online")
    await carol.close()  # CLOSE_WEBTRANSPORT_SESSION, then CONNECTION_CLOSE
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "offline")


async def test_resume_after_drop_replays_exactly_the_missed(start_server, clients):
    server = await start_server(WT)
    sub = clients(WT, server.url, "bob")
    pub = clients(WT, server.url, "alice")
    await sub.connect(["feed:global"])
    await pub.connect()
    for i in range(5):
        await pub.publish("feed:global", i)
    first = await messages(sub, 5, "feed:global")
    await sub.drop()  # the socket goes silent: a new QUIC connection resumes from the cursor
    for i in range(5, 15):
        await pub.publish("feed:global", i)
    rest = await messages(sub, 10, "feed:global")
    assert [m["id"] for m in first + rest] == list(range(1, 16))
    await pub.publish("feed:global", "after")
    assert (await next_of(sub, "message"))["id"] == 16
    assert sub.reconnects == 1


async def test_history_gap_when_too_old(start_server, clients):
    server = await start_server(WT, history_size=5)
    pub = clients(WT, server.url, "alice")
    await pub.connect()
    for i in range(12):
        await pub.publish("chat:old", i)
    late = clients(WT, server.url, "bob")
    await late.connect()
    with pytest.raises(WireError) as err:
        await late.subscribe("chat:old", since=2)
    assert err.value.code == ErrorCode.HISTORY_GAP
    assert [m["id"] for m in await messages(late, 5, "chat:old")] == [8, 9, 10, 11, 12]


async def test_unauthorized_before_any_hub_connection(start_server):
    server = await start_server(WT)
    expired = token("alice", ttl=-10)
    forged = json.dumps({"alg": "none"})
    bad_sig = make_token("alice", "not-the-secret")
    for tok in ("", expired, forged, bad_sig):
        assert "HTTP 401" in await connect_status(server, f"/wt?token={tok}".encode()), tok
    bearer = [(b"authorization", f"Bearer {bad_sig}".encode())]
    assert "HTTP 401" in await connect_status(server, b"/wt", bearer)
    assert "HTTP 404" in await connect_status(server, f"/nope?token={token('a')}".encode())
    _, text = await http_get(server, "/metrics")
    assert "webtransport" not in text  # no hub connection was ever opened


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


async def test_client_reports_refusal_clearly(start_server):
    server = await start_server(WT)
    client = WebTransportClient(server.url, "garbage", reconnect=False, timeout=UNIT)
    with pytest.raises(ClientError, match="401"):
        await client.connect()
    await client.close()


async def test_forbidden_for_another_users_private_channel(start_server, clients):
    server = await start_server(WT)
    alice = clients(WT, server.url, "alice")
    await alice.connect()
    with pytest.raises(WireError) as err:
        await alice.subscribe("user:bob")
    assert err.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(WireError) as err:
        await alice.publish("user:alice", "clients may not publish here")
    assert err.value.code == ErrorCode.FORBIDDEN
    await alice.subscribe("user:alice")


async def test_bad_lines_get_errors_and_session_stays(start_server, clients):
    server = await start_server(WT)
    client = clients(WT, server.url)
    await client.connect(["chat:1"])
    for raw, code in [("not json", "bad_request"), ('{"op":"dance"}', "bad_request"),
                      ('{"op":"publish","channel":"chat:1"}', "bad_request"),
                      ("[1,2]", "bad_request"),
                      ('{"op":"subscribe","channel":"NO!"}', "unknown_channel"),
                      (json.dumps({"op": "echo", "data": "x" * 70_000}), "too_large")]:
        await client.send_raw(raw.encode() + b"\n")
        assert (await next_of(client, "error"))["code"] == code
    await client.send_raw(b'{"op":"echo",')  # one envelope may arrive in pieces
    await client.send_raw(b'"data":"joined"}\n')
    assert (await next_of(client, "echo"))["data"] == "joined"
    assert await client.publish("chat:1", "still usable") >= 1
    assert (await next_of(client, "message", "chat:1"))["data"] == "still usable"


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

    async def stalled_handle(conn, raw):  # a hub slower than the network (a remote broker)
        await gate.wait()
        await handle(conn, raw)

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


async def test_stalled_reader_is_cut_off_and_others_keep_receiving(start_server, clients):
    server = await start_server(WT, limits=Limits(send_queue=64))
    good = clients(WT, server.url, "good")
    await good.connect(["live:1"])
    stalled = clients(WT, server.url, "stalled", reconnect=False)
    await stalled.connect(["live:1"])
    await next_of(stalled, "ack")
    stalled._proto.datagram_received = lambda data, addr: None  # reads nothing, acks nothing
    pub = clients(WT, server.url, "pub")
    await pub.connect()
    n = 300
    for i in range(n):
        await pub.publish("live:1", {"i": i, "pad": "y" * 16000})
    got = await messages(good, n, "live:1")
    assert [m["data"]["i"] for m in got] == list(range(n))
    for _ in range(int(10 * UNIT)):
        _, text = await http_get(server, "/metrics")
        if 'reason="slow consumer"' in text:
            break
        await asyncio.sleep(0.1)
    assert re.search(r'sobranie_disconnects_total\{reason="slow consumer"\} 1', text)


async def test_metrics_count_what_happened(start_server, clients):
    server = await start_server(WT)
    client = clients(WT, server.url)
    await client.connect(["m:1"])
    await client.publish("m:1", 1)
    with pytest.raises(WireError):
        await client.subscribe("user:someone-else")
    status, text = await http_get(server, "/metrics")
    assert status == 200
    assert re.search(r'sobranie_connections\{transport="webtransport"\} 1', text)
    assert re.search(r'sobranie_errors_total\{code="forbidden"\} 1', text)
    assert re.search(r"sobranie_published_total 1", text)
    assert (await http_get(server, "/healthz"))[0] == 200


# --- datagrams -------------------------------------------------------------------------------


async def test_unreliable_publishes_arrive_or_are_counted_lost(start_server, clients):
    server = await start_server(WT)
    sub = clients(WT, server.url, "bob")
    pub = clients(WT, server.url, "alice")
    await sub.connect(["cursor:1"])
    await pub.connect()
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
    server = WebTransportServer(secret=SECRET)
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
