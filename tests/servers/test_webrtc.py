"""The contract over WebRTC data channels (aiortc both sides) on real loopback sockets: the same
cases as test_transports.py, plus signalling (401 before any peer connection, bad offers) and
the cleanup of failed and abandoned negotiations (no leaked peer connections)."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection

from servers.http_app import HUB
from servers.webrtc import make_app
from sobranie_bench.clients import ClientError
from sobranie_bench.clients.webrtc import RELIABLE
from sobranie_bench.wire import ErrorCode, WireError
from tests.conftest import SECRET, UNIT, messages, next_of, token

T = "webrtc"


async def test_publish_delivers_in_order_with_ids_and_acks(start_server, clients):
    server = await start_server(T)
    sub = clients(T, server.url, "bob")
    pub = clients(T, server.url, "alice")
    await sub.connect(["chat:1"])
    await pub.connect()
    ids = [await pub.publish("chat:1", {"n": i}) for i in range(20)]
    assert ids == list(range(1, 21))
    got = await messages(sub, 20, "chat:1")
    assert [m["id"] for m in got] == ids
    assert [m["data"]["n"] for m in got] == list(range(20))
    assert {m["from"] for m in got} == {"alice"}


async def test_unreliable_publish_rides_the_unordered_channel(start_server, clients):
    server = await start_server(T)
    sub = clients(T, server.url, "bob")
    pub = clients(T, server.url, "alice")
    await sub.connect(["game:1"])
    await pub.connect()
    assert pub._unreliable.ordered is False and pub._unreliable.maxRetransmits == 0
    assert await pub.publish("game:1", {"x": 1}, unreliable=True) == 1  # ack on `sobranie`
    assert (await next_of(sub, "message", "game:1"))["data"] == {"x": 1}


async def test_echo_goes_to_sender_only(start_server, clients):
    server = await start_server(T)
    a = clients(T, server.url, "alice")
    b = clients(T, server.url, "bob")
    await a.connect(["room:x"])
    await b.connect(["room:x"])
    await a.echo({"seq": 7})
    env = await next_of(a, "echo")
    assert env["data"] == {"seq": 7}
    await a.publish("room:x", "marker")
    env = await next_of(b, "message", "room:x")
    assert env["data"] == "marker"  # b saw the marker and no echo before it
    assert b._inbox.empty()


async def test_presence_on_connect_and_disconnect(start_server, clients):
    server = await start_server(T)
    watcher = clients(T, server.url, "watcher")
    await watcher.connect(["presence"])
    carol = clients(T, server.url, "carol")
    await carol.connect()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "online")
    await carol.close()
    env = await next_of(watcher, "presence")
    assert (env["user"], env["status"]) == ("carol", "offline")


async def test_resume_after_drop_replays_exactly_the_missed(start_server, clients):
    server = await start_server(T)
    sub = clients(T, server.url, "bob")
    pub = clients(T, server.url, "alice")
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


async def test_history_gap_when_too_old(start_server, clients):
    server = await start_server(T, history_size=5)
    pub = clients(T, server.url, "alice")
    await pub.connect()
    for i in range(12):
        await pub.publish("chat:old", i)
    late = clients(T, server.url, "bob")
    await late.connect()
    with pytest.raises(WireError) as err:
        await late.subscribe("chat:old", since=2)
    assert err.value.code == ErrorCode.HISTORY_GAP
    got = await messages(late, 5, "chat:old")  # what is retained still arrives
    assert [m["id"] for m in got] == [8, 9, 10, 11, 12]


async def test_unauthorized_offer_is_401_before_any_peer(start_server):
    server = await start_server(T)
    from servers.auth import make_token
    bad_sig = make_token("alice", "not-the-secret")
    offer = {"sdp": "v=0\r\n", "type": "offer"}
    async with aiohttp.ClientSession() as session:
        for tok in ("", token("alice", ttl=-10), json.dumps({"alg": "none"}), bad_sig):
            async with session.post(f"{server.url}/webrtc/offer?token={tok}", json=offer) as resp:
                assert resp.status == 401, tok
                assert (await resp.json())["code"] == "unauthorized"
        async with session.post(f"{server.url}/webrtc/offer", json=offer,
                                headers={"Authorization": f"Bearer {bad_sig}"}) as resp:
            assert resp.status == 401
    assert await _metric(server.url, "sobranie_peer_connections") == 0


async def test_client_reports_refusal_clearly(start_server):
    server = await start_server(T)
    from sobranie_bench.clients import TRANSPORTS
    client = TRANSPORTS[T].client_class()(server.url, "garbage", reconnect=False, timeout=UNIT)
    with pytest.raises(ClientError, match="401"):
        await client.connect()
    await client.close()


async def test_origin_outside_the_allow_list_is_403(start_server):
    server = await start_server(T, origins=("https://sobranie.example",))
    status, _ = await _post_offer(server.url, "v=0\r\n", Origin="https://evil.example")
    assert status == 403


async def test_forbidden_for_another_users_private_channel(start_server, clients):
    server = await start_server(T)
    alice = clients(T, server.url, "alice")
    await alice.connect()
    with pytest.raises(WireError) as err:
        await alice.subscribe("user:bob")
    assert err.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(WireError) as err:
        await alice.publish("user:alice", "clients may not publish here")
    assert err.value.code == ErrorCode.FORBIDDEN
    await alice.subscribe("user:alice")  # own private channel is fine


async def test_bad_envelopes_get_errors_and_channel_stays(start_server, clients):
    server = await start_server(T)
    client = clients(T, server.url)
    await client.connect(["chat:1"])
    for raw, code in [("not json", "bad_request"), ('{"op":"dance"}', "bad_request"),
                      ('{"op":"publish","channel":"chat:1"}', "bad_request"),
                      ("[1,2]", "bad_request"),
                      ('{"op":"subscribe","channel":"NO!"}', "unknown_channel"),
                      (json.dumps({"op": "echo", "data": "x" * 70_000}), "too_large")]:
        await client.send_raw(raw)
        assert (await next_of(client, "error"))["code"] == code
    assert await client.publish("chat:1", "still usable") >= 1
    assert (await next_of(client, "message", "chat:1"))["data"] == "still usable"


async def test_bad_offers_are_400_and_leave_no_peer(start_server):
    server = await start_server(T)
    url = f"{server.url}/webrtc/offer?token={token('a')}"
    async with aiohttp.ClientSession() as session:
        for body in (b"not json", b"[1]", b'{"sdp": "v=0"}',
                     json.dumps({"sdp": "v=0\r\n", "type": "answer"}).encode(),
                     json.dumps({"sdp": "v=0\r\nnonsense", "type": "offer"}).encode(),
                     json.dumps({"sdp": "x" * 70_000, "type": "offer"}).encode()):
            async with session.post(url, data=body) as resp:
                assert resp.status in (400, 413), body[:40]
    text = await _until_metric(server.url, r"sobranie_peer_connections 0")
    assert re.search(r'sobranie_errors_total\{code="bad_request"\} 5', text)


async def test_abandoned_negotiation_is_closed_after_the_timeout(start_server):
    """An offer whose answer is never applied: no channel opens, the server drops the peer."""
    server = await start_server(T, extra={"negotiation_timeout": str(0.4 * UNIT)})
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel(RELIABLE)
    await pc.setLocalDescription(await pc.createOffer())
    status, _ = await _post_offer(server.url, pc.localDescription.sdp)
    assert status == 200
    assert await _metric(server.url, "sobranie_peer_connections") == 1
    text = await _until_metric(server.url, r"sobranie_peer_connections 0", 3 * UNIT)
    assert re.search(r"sobranie_peer_negotiations_expired_total 1", text)
    assert not re.search(r'sobranie_connections\{transport="webrtc"\}', text)
    await pc.close()


async def test_closed_and_dropped_clients_leave_no_peer_behind(start_server, clients):
    server = await start_server(T)
    made = [clients(T, server.url, f"u{i}", reconnect=False) for i in range(4)]
    for client in made:
        await client.connect(["chat:1"])
    assert await _metric(server.url, "sobranie_peer_connections") == 4
    await made[0].drop()
    for client in made[1:]:
        await client.close()
    text = await _until_metric(server.url, r"sobranie_peer_connections 0")
    assert not re.search(r'sobranie_connections\{transport="webrtc"\}', text)


async def test_answer_offers_loopback_host_candidates_only(start_server):
    server = await start_server(T)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel(RELIABLE)
    await pc.setLocalDescription(await pc.createOffer())
    _, answer = await _post_offer(server.url, pc.localDescription.sdp)
    await pc.close()
    for sdp in (pc.localDescription.sdp, answer["sdp"]):
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" 127.0.0.1 " in c and "typ host" in c for c in candidates)


async def test_setup_times_and_metrics(start_server, clients):
    server = await start_server(T)
    client = clients(T, server.url)
    await client.connect(["m:1"])
    assert set(client.setup_times) == {"offer", "signalling", "ice_dtls", "first_message"}
    assert all(ms >= 0 for ms in client.setup_times.values())
    await client.publish("m:1", 1)
    with pytest.raises(WireError):
        await client.subscribe("user:someone-else")
    async with aiohttp.ClientSession() as session:
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
        async with session.get(server.url + "/healthz") as resp:
            assert (await resp.json())["status"] == "ok"
    assert re.search(r'sobranie_connections\{transport="webrtc"\} 1', text)
    assert re.search(r"sobranie_peer_connections 1", text)
    assert re.search(r'sobranie_errors_total\{code="forbidden"\} 1', text)
    assert re.search(r"sobranie_published_total 1", text)


async def test_udp_bytes_are_counted_across_reconnects(start_server, clients):
    """``bytes_sent``/``bytes_received`` (the overhead scenario reads them) grow with traffic and
    keep what earlier peer connections carried."""
    server = await start_server(T)
    client = clients(T, server.url)
    await client.connect(["b:1"])
    handshake = (client.bytes_sent, client.bytes_received)
    assert min(handshake) > 0  # DTLS handshake, SCTP association, channel open, hello
    for _ in range(20):
        await client.publish("b:1", "x" * 64)
    await messages(client, 20, "b:1")
    sent, received = client.bytes_sent, client.bytes_received
    assert sent - handshake[0] > 20 * 64 and received - handshake[1] > 20 * 64
    await client.drop()
    await next_of(client, "hello")  # a new peer connection
    await client.publish("b:1", "after")
    assert client.reconnects == 1
    assert client.bytes_sent > sent and client.bytes_received > received


async def test_input_faster_than_the_hub_handles_is_cut_off(clients):
    """aiortc reads without backpressure: past the hard frame limit of unhandled input the peer
    is cut off (here the hub never finishes handling the first message)."""
    app = make_app(secret=SECRET)
    hub = app[HUB]
    never = asyncio.Event()

    async def stuck(conn: object, raw: object) -> None:
        await never.wait()

    hub.handle = stuck  # type: ignore[method-assign]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        client = clients(T, url, reconnect=False)
        await client.connect()
        chunk = "x" * 60_000
        for _ in range(hub.limits.hard_frame // len(chunk) + 2):
            await client.send_raw(chunk)
        await asyncio.wait_for(client._runner, UNIT)  # the server closed the peer connection
        text = await _until_metric(url, r"sobranie_peer_connections 0")
        assert re.search(r'sobranie_disconnects_total\{reason="flood"\} 1', text)
    finally:
        await runner.cleanup()


async def _post_offer(url: str, sdp: str, **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/webrtc/offer?token={token('a')}", json={"sdp": sdp, "type": "offer"},
            headers=headers) as resp:
        return resp.status, await resp.json() if resp.status == 200 else {}


async def _metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def _until_metric(url: str, pattern: str, within: float = UNIT) -> str:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(within / 0.05)):
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            if re.search(pattern, text):
                return text
            await asyncio.sleep(0.05)
    raise AssertionError(f"/metrics never showed {pattern}:\n{text}")
