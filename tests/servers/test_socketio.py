"""What is Socket.IO's own (python-socketio on aiohttp), for its websocket and its long-polling
transport, over real sockets: the token in the ``auth`` dict, replies tied to their calls by
Socket.IO ack ids, the hard frame limit, engine.io framing. The contract itself runs for both in
test_transports.py."""

from __future__ import annotations

import asyncio
import re

import pytest
import socketio

from servers.socketio_app import event_packet
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError
from tests.conftest import UNIT, metrics_text, next_of, token

TRANSPORTS = ["socketio", "socketio-polling"]
ENGINEIO = {"socketio": "websocket", "socketio-polling": "polling"}


@pytest.mark.parametrize("transport", TRANSPORTS)
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


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_error_without_ref_still_fails_its_call(transport, start_server, clients):
    """The ack id ties a reply to its emit: an envelope too large to read for its ``ref`` still
    fails the publish that sent it."""
    server = await start_server("socketio")
    client = clients(transport, server.url)
    await client.connect(["chat:1"])
    with pytest.raises(WireError) as err:
        await client.publish("chat:1", "x" * 70_000)
    assert err.value.code == ErrorCode.TOO_LARGE
    assert await client.publish("chat:1", "still usable") >= 1
    assert (await next_of(client, "message", "chat:1"))["data"] == "still usable"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_frame_over_hard_limit_closes(transport, start_server, clients):
    server = await start_server("socketio")
    client = clients(transport, server.url, reconnect=False)
    await client.connect()
    big = "x" * (wire.HARD_FRAME_BYTES + 10)
    await client._sio.emit("echo", {"data": big})
    await asyncio.wait_for(client._runner, UNIT)  # the transport ended
    text = await metrics_text(server.url)
    assert re.search(r'sobranie_connections\{transport="socketio"\}', text) is None


def test_event_packet_is_what_python_socketio_encodes():
    envelope = wire.message("chat:1", 3, {"t": 1, "pad": "é"}, "alice")
    mine = socketio.packet.Packet(encoded_packet=event_packet("message", wire.encode(envelope)))
    assert (mine.packet_type, mine.namespace, mine.id) == (socketio.packet.EVENT, None, None)
    assert mine.data == ["message", envelope]
