"""What is WebRTC's own (aiortc both sides, real loopback sockets): the unreliable channel,
signalling (Origin, bad offers), the cleanup of failed and abandoned negotiations (no leaked
peer connections), loopback candidates, set-up times, byte counters and the flood cut. The
contract itself (401 before any peer connection included) runs in test_transports.py."""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection

from servers.aiohttp_common import HUB
from servers.run import Options, core
from servers.webrtc import make_app
from sobranie_bench.clients import ClientError
from sobranie_contract.framing import DELIVERIES, RELIABLE
from sobranie_contract.ice import pin_host_candidates
from tests.conftest import SECRET, UNIT, messages, metrics_text, next_of, token, until_metric

T = "webrtc"


async def test_unreliable_publish_rides_the_unordered_channel(start_server, clients):
    server = await start_server(T)
    sub = clients(T, server.url, "bob")
    pub = clients(T, server.url, "alice")
    await sub.connect(["game:1"])
    await pub.connect()
    assert pub._unreliable.ordered is False and pub._unreliable.maxRetransmits == 0
    assert await pub.publish("game:1", {"x": 1}, unreliable=True) == 1  # ack on `sobranie`
    assert (await next_of(sub, "message", "game:1"))["data"] == {"x": 1}


async def test_origin_outside_the_allow_list_is_403(start_server):
    server = await start_server(T, origins=("https://sobranie.example",))
    status, _ = await _post_offer(server.url, "v=0\r\n", Origin="https://evil.example")
    assert status == 403


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
    text = await until_metric(server.url, r"sobranie_peer_connections 0")
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
    text = await until_metric(server.url, r"sobranie_peer_connections 0", 3 * UNIT)
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
    text = await until_metric(server.url, r"sobranie_peer_connections 0")
    assert not re.search(r'sobranie_connections\{transport="webrtc"\}', text)


async def test_answer_offers_loopback_host_candidates_only(start_server):
    server = await start_server(T)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel(RELIABLE)
    pin_host_candidates(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    _, answer = await _post_offer(server.url, pc.localDescription.sdp)
    await pc.close()
    for sdp in (pc.localDescription.sdp, answer["sdp"]):  # the pinned peer, and the server's
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" 127.0.0.1 " in c and "typ host" in c for c in candidates)


async def test_setup_times_and_peer_count(start_server, clients):
    server = await start_server(T)
    client = clients(T, server.url)
    await client.connect(["m:1"])
    assert set(client.setup_times) == {"offer", "signalling", "ice_dtls", "first_message"}
    assert all(ms >= 0 for ms in client.setup_times.values())
    assert await _metric(server.url, "sobranie_peer_connections") == 1


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
    app = make_app(*core(Options(secret=SECRET), "sobranie-webrtc"), ice_address="127.0.0.1")
    hub = app[HUB]
    never = asyncio.Event()

    async def stuck(conn: object, raw: object, **kwargs: object) -> None:
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
        text = await until_metric(url, r"sobranie_peer_connections 0")
        assert re.search(r'sobranie_disconnects_total\{reason="flood"\} 1', text)
    finally:
        await runner.cleanup()


async def _post_offer(url: str, sdp: str, **headers: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/webrtc/offer?token={token('a')}", json={"sdp": sdp, "type": "offer"},
            headers=headers) as resp:
        return resp.status, await resp.json() if resp.status == 200 else {}


async def _metric(url: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", await metrics_text(url), re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def test_pinning_one_peer_leaves_the_others_alone():
    """Candidates are pinned per peer connection, never for the whole process."""
    pinned, free = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    for pc in (pinned, free):
        pc.createDataChannel(RELIABLE)
    pin_host_candidates(pinned, ["127.0.0.1"])
    for pc in (pinned, free):
        await pc.setLocalDescription(await pc.createOffer())
        await pc.close()
    hosts = [{line.split()[4] for line in pc.localDescription.sdp.splitlines()
              if line.startswith("a=candidate:")} for pc in (pinned, free)]
    assert hosts[0] == {"127.0.0.1"}
    assert "127.0.0.1" not in hosts[1]  # aioice's own choice: it never gathers loopback


async def test_unreliable_delivery_rides_the_deliveries_channel(start_server, clients):
    """``delivery="unreliable"``: the client opens ``sobranie-deliveries`` (unordered, no
    retransmits) and the server sends channels' messages there; acks stay on ``sobranie``."""
    server = await start_server(T)
    sub = clients(T, server.url, "bob", delivery="unreliable")
    pub = clients(T, server.url, "alice")
    await sub.connect(["game:1"])
    await pub.connect()
    for i in range(5):
        assert await pub.publish("game:1", {"i": i}) == i + 1
    got = sorted([(await next_of(sub, "message", "game:1"))["data"]["i"] for _ in range(5)])
    assert got == list(range(5))
    assert sub.carriers[DELIVERIES] == 5 and sub.carriers[RELIABLE] >= 2, sub.carriers
    assert pub.carriers == {RELIABLE: pub.carriers[RELIABLE]}  # ordered: nothing else
    (deliveries,) = [c for c in sub._pc.sctp._data_channels.values() if c.label == DELIVERIES]
    assert deliveries.ordered is False and deliveries.maxRetransmits == 0
    assert await _metric(server.url, "sobranie_webrtc_unreliable_deliveries_total") == 5


async def test_a_delivery_the_transport_lacks_is_a_clear_error(clients):
    with pytest.raises(ClientError, match="webrtc cannot deliver 'per-channel'; it offers "
                                          "ordered, unreliable"):
        clients(T, "http://127.0.0.1:1", delivery="per-channel")
    with pytest.raises(ClientError, match="ws cannot deliver 'unreliable'; it offers ordered"):
        clients("ws", "http://127.0.0.1:1", delivery="unreliable")
