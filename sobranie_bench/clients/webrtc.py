"""WebRTC data-channel client (aiortc): one peer connection, envelopes on a data channel.

The client creates both channels, ``sobranie`` (reliable, ordered: every envelope both ways, one
per message) and ``sobranie-unreliable`` (unordered, no retransmits: unreliable publishes),
POSTs its offer to ``/webrtc/offer`` and waits for ``sobranie`` to open. With
``delivery="unreliable"`` it opens ``sobranie-deliveries`` too (unordered, ``retransmits``
retransmissions at most) and the server sends channels' messages there. ``setup_times`` splits
the set-up cost the ``connections`` scenario measures; a reconnect is a new peer connection.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from sobranie_bench.clients.base import ClientError
from sobranie_bench.clients.http import AiohttpClient, refused
from sobranie_contract import wire
from sobranie_contract.framing import DELIVERIES, RELIABLE, UNRELIABLE, Delivery
from sobranie_contract.ice import loopback_address, pin_host_candidates


def dtls_bytes(pc: RTCPeerConnection) -> tuple[int, int]:
    """UDP payload bytes ``pc`` sent and received: DTLS records (the handshake, then SCTP
    packets carrying the channels). aiortc counts them on its DTLS transport but shows them only
    in RTP statistics, so this reads that transport's ``_get_stats()``. STUN (ICE checks, consent
    refreshes every few seconds) is not included, nor are UDP/IP headers."""
    if pc.sctp is None:
        return 0, 0
    for stats in pc.sctp.transport._get_stats().values():
        return int(stats.bytesSent), int(stats.bytesReceived)
    return 0, 0


class WebRTCClient(AiohttpClient):
    """``bytes_sent`` / ``bytes_received`` count UDP payload bytes (:func:`dtls_bytes`) over
    every peer connection so far; the signalling POSTs are not in them."""

    transport = "webrtc"
    path = "/webrtc/offer"
    deliveries = frozenset({Delivery.ORDERED, Delivery.UNRELIABLE})

    def __init__(self, url: str, token: str, *, retransmits: int = 0, **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        self.retransmits = retransmits
        """``maxRetransmits`` of the deliveries channel (``delivery="unreliable"``)."""
        self.carriers: dict[str, int] = {}
        """Envelopes the current peer connection received per channel label."""
        self.setup_times: dict[str, float] = {}
        """Milliseconds spent setting up the last connection: ``offer`` (create the offer,
        gather host candidates), ``signalling`` (the POST /webrtc/offer round trip, the server's
        answer included), ``ice_dtls`` (answer applied until ``sobranie`` opens: ICE checks,
        DTLS handshake, SCTP association, channel open), ``first_message`` (from the start until
        the ``hello`` arrived)."""
        self._pc: RTCPeerConnection | None = None
        self._reliable: RTCDataChannel | None = None
        self._unreliable: RTCDataChannel | None = None
        self._ended = asyncio.Event()
        self._started = 0.0
        self._retired = (0, 0)
        """Bytes sent and received by the peer connections before the current one."""

    @property
    def bytes_sent(self) -> int:
        return self._retired[0] + (dtls_bytes(self._pc)[0] if self._pc is not None else 0)

    @property
    def bytes_received(self) -> int:
        return self._retired[1] + (dtls_bytes(self._pc)[1] if self._pc is not None else 0)

    def _retire(self, pc: RTCPeerConnection) -> None:
        sent, received = dtls_bytes(pc)
        self._retired = (self._retired[0] + sent, self._retired[1] + received)

    async def _open(self, resume: bool) -> None:
        loopback = loopback_address(urlsplit(self.url).hostname)
        self.setup_times = {}
        self._started = time.perf_counter()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        ended = asyncio.Event()
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.carriers = {}
        try:
            reliable = pc.createDataChannel(RELIABLE)
            unreliable = pc.createDataChannel(UNRELIABLE, ordered=False, maxRetransmits=0)
            waiting = [reliable]
            if self.delivery is Delivery.UNRELIABLE:
                waiting.append(pc.createDataChannel(DELIVERIES, ordered=False,
                                                    maxRetransmits=self.retransmits))
            if loopback is not None:
                pin_host_candidates(pc, [loopback])
            reliable.on("close", ended.set)
            for carrier in waiting:
                carrier.on("message", self._on_message_of(carrier.label))

                @carrier.on("open")
                def on_open() -> None:
                    if not opened.done() and all(c.readyState == "open" for c in waiting):
                        opened.set_result(None)

            @pc.on("connectionstatechange")
            def on_state() -> None:
                if pc.connectionState in ("failed", "closed"):
                    ended.set()
                    if not opened.done():
                        opened.set_exception(ClientError(f"WebRTC connection {pc.connectionState}"
                                                         " before the data channel opened"))

            await pc.setLocalDescription(await pc.createOffer())
            offered = time.perf_counter()
            answer = await self._signal(pc.localDescription)
            answered = time.perf_counter()
            await pc.setRemoteDescription(answer)
            try:
                await asyncio.wait_for(opened, self.timeout)
            except TimeoutError:
                raise ClientError(f"WebRTC data channel not open after {self.timeout:g}s "
                                  "(ICE or DTLS did not complete)") from None
        except BaseException:
            opened.cancel()
            await pc.close()
            self._retire(pc)
            raise
        self.setup_times.update(offer=_ms(self._started, offered), signalling=_ms(offered, answered),
                                ice_dtls=_ms(answered, time.perf_counter()))
        if self._pc is not None:
            self._retire(self._pc)
        self._pc, self._reliable, self._unreliable, self._ended = pc, reliable, unreliable, ended
        for channel in self.channels:
            await self._send(self._subscription(channel, self.cursor.get(channel)))

    async def _signal(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        url = f"{self.url}{self.path}?{self.token_query}"
        try:
            async with self.session.post(url, json={"sdp": offer.sdp, "type": offer.type}) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise refused(resp, text)
                body = await resp.json()
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(f"cannot reach {self.url}{self.path}: {exc}") from None
        return RTCSessionDescription(sdp=body["sdp"], type=body["type"])

    def _on_message_of(self, label: str) -> Any:
        def on_message(raw: str | bytes) -> None:
            if "first_message" not in self.setup_times:
                self.setup_times["first_message"] = _ms(self._started, time.perf_counter())
            self.carriers[label] = self.carriers.get(label, 0) + 1
            self._dispatch(wire.decode(raw))
        return on_message

    async def _read(self) -> None:
        await self._ended.wait()
        if self._pc is not None:
            await self._pc.close()

    async def _send(self, req: wire.Request) -> None:
        unreliable = isinstance(req, wire.Publish) and req.unreliable
        await self.send_raw(wire.encode(wire.request_to_dict(req)), unreliable=unreliable)

    async def send_raw(self, data: str | bytes, *, unreliable: bool = False) -> None:
        """Send one data-channel message as it is (tests of malformed and oversize envelopes)."""
        channel = self._unreliable if unreliable else self._reliable
        if channel is None or channel.readyState != "open":
            raise ClientError("not connected")
        channel.send(data)

    async def _abort(self, graceful: bool = False) -> None:
        """Close the peer connection (aiortc sends an SCTP ABORT and a DTLS close_notify either
        way; a peer that vanishes without them is noticed by ICE consent checks, ~30 s)."""
        if self._pc is not None:
            await self._pc.close()


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1e3, 3)
