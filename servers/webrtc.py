"""WebRTC data-channel adapter (aiortc): the server is one peer per client.

``POST /webrtc/offer`` is the signalling: the JWT first (HTTP 401 before any peer connection
exists), then ``{"sdp", "type": "offer"}`` in, ``{"sdp", "type": "answer"}`` out. Candidates are
gathered before answering (no trickle), with no STUN or TURN server: host candidates only, pinned
to the address the server binds when that is a loopback address.

On the data channel ``sobranie`` (reliable, ordered) every envelope travels as one message, both
ways, exactly as on a WebSocket: messages in -> hub, outbox -> messages out (replies inline, see
:class:`~servers.hub.Sender`), paced by the channel's ``bufferedAmount``. ``sobranie-unreliable``
(unordered, no retransmits) carries unreliable publishes in; their acks come back on
``sobranie``. A client that opens ``sobranie-deliveries`` too (unordered, with the
``maxRetransmits`` it chose: ``delivery=unreliable``) gets channels' messages on it once it is
open; everything else stays on ``sobranie``.

A peer whose ``sobranie`` channel has not opened within the negotiation timeout, or whose
connection fails or closes, is closed and forgotten; ``sobranie_peer_connections`` in /metrics
counts the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError

from servers import auth
from servers.aiohttp_common import (
    AUTH,
    HUB,
    admit,
    authenticate,
    error_response,
    hub_app,
    read_body,
)
from servers.hub import FLOOD_REASON, Connection, Hub, Inbox
from servers.run import Options, Running, core, serve_app
from servers.sender import Sender
from sobranie_contract import wire
from sobranie_contract.framing import DELIVERIES, RELIABLE, UNRELIABLE
from sobranie_contract.ice import loopback_address, pin_host_candidates
from sobranie_contract.wire import ErrorCode, WireError

NEGOTIATION_SECONDS = 10.0
"""Default time from the offer to an open ``sobranie`` channel before the peer is dropped."""
HIGH_WATER = 1 << 20
"""Bytes buffered on the channel past which sending waits (the outbox fills up meanwhile)."""
LOW_WATER = 1 << 18
"""Bytes buffered at which sending resumes."""

log = logging.getLogger("sobranie.webrtc")


class Peers:
    """The server's peer connections: what /metrics counts and what shutdown closes."""

    def __init__(self, hub: Hub, negotiation_timeout: float,
                 ice_address: str | None = None) -> None:
        self.hub = hub
        self.negotiation_timeout = negotiation_timeout
        self.ice_address = ice_address
        """The one address every peer gathers host candidates on (None: aioice's choice)."""
        self.active: set[Peer] = set()
        self.expired = 0
        """Negotiations dropped because no channel opened in time."""
        self.unreliable_deliveries = 0
        """Messages sent on ``sobranie-deliveries`` channels."""

    async def answer(self, user: str, offer: RTCSessionDescription) -> RTCSessionDescription:
        peer = Peer(self, user)
        self.active.add(peer)
        try:
            return await peer.answer(offer)
        except BaseException:
            await peer.close()
            raise

    async def close(self) -> None:
        await asyncio.gather(*(peer.close() for peer in list(self.active)))

    def render(self) -> str:
        return ("# HELP sobranie_peer_connections Open WebRTC peer connections.\n"
                "# TYPE sobranie_peer_connections gauge\n"
                f"sobranie_peer_connections {len(self.active)}\n"
                "# HELP sobranie_peer_negotiations_expired_total Peers dropped because no data "
                "channel opened in time.\n"
                "# TYPE sobranie_peer_negotiations_expired_total counter\n"
                f"sobranie_peer_negotiations_expired_total {self.expired}\n"
                "# HELP sobranie_webrtc_unreliable_deliveries_total Messages sent on "
                "sobranie-deliveries channels (unordered, the client's maxRetransmits).\n"
                "# TYPE sobranie_webrtc_unreliable_deliveries_total counter\n"
                f"sobranie_webrtc_unreliable_deliveries_total {self.unreliable_deliveries}\n")


PEERS: web.AppKey[Peers] = web.AppKey("peers", Peers)


class Peer:
    """One client's peer connection and, once ``sobranie`` opens, its hub Connection."""

    def __init__(self, peers: Peers, user: str) -> None:
        self.peers = peers
        self.user = user
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("connectionstatechange", self._on_state)
        self.inbox = Inbox(peers.hub.limits)
        """Messages of both channels, waiting for the hub (aiortc reads without backpressure)."""
        self.conn: Connection | None = None
        self.deliveries: _ChannelSend | None = None
        """The client's ``sobranie-deliveries`` channel, once open."""
        self.session: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None
        self.deadline = asyncio.get_running_loop().call_later(peers.negotiation_timeout,
                                                              self._expire)

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(offer)
        if self.pc.sctp is None:
            raise WireError(ErrorCode.BAD_REQUEST, "the offer has no data channel "
                            "(no m=application section)")
        if self.peers.ice_address is not None:
            pin_host_candidates(self.pc, [self.peers.ice_address])
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    def _on_channel(self, channel: RTCDataChannel) -> None:
        if channel.label == RELIABLE and self.session is None:
            self.deadline.cancel()
            channel.on("message", self._received)
            channel.on("close", self.close_soon)
            self.session = asyncio.get_running_loop().create_task(self._serve(channel))
        elif channel.label == UNRELIABLE:
            channel.on("message", self._received)
        elif channel.label == DELIVERIES and self.deliveries is None:
            self.deliveries = _ChannelSend(channel)
        else:
            channel.close()

    def _received(self, data: str | bytes) -> None:
        """A message on either channel; both are answered on ``sobranie`` (hub rule 2)."""
        if self.inbox.put(data):
            return
        if self.conn is not None:
            self.conn.close(wire.CLOSE_POLICY, FLOOD_REASON)
        else:
            self.close_soon()

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.close_soon()

    def _expire(self) -> None:
        self.peers.expired += 1
        log.info("peer of %s: no data channel after %.1fs, closing", self.user,
                 self.peers.negotiation_timeout)
        self.close_soon()

    async def _serve(self, channel: RTCDataChannel) -> None:
        hub = self.peers.hub
        self.conn = conn = await hub.connect(self.user, "webrtc")
        ordered = _ChannelSend(channel)

        async def send_message(text: str) -> None:
            if self.deliveries is None or self.deliveries.channel.readyState != "open":
                return await ordered(text)
            self.peers.unreliable_deliveries += 1
            await self.deliveries(text)

        sender = Sender(conn, ordered, gone=(InvalidStateError, ConnectionError),
                        send_message=send_message)
        conn.on_close = lambda code, reason: self._last_words(channel, conn)
        try:
            await sender.flush()  # hello
            while (item := await self.inbox.get()) is not None:
                raw, reliable = item
                await sender.handle(raw, reliable=reliable)
        finally:
            sender.stop()
            await hub.disconnect(conn)

    def _last_words(self, channel: RTCDataChannel, conn: Connection) -> None:
        """The hub closed the connection: the errors it queued last (the flood's) go out on
        the channel before the peer closes."""
        with contextlib.suppress(InvalidStateError, ConnectionError):
            for item in conn.last_words():
                channel.send(item.text)
        self.close_soon()

    def close_soon(self) -> None:
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self.close())

    async def close(self) -> None:
        self.deadline.cancel()
        if self.session is not None and not self.session.done():
            self.session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.session
        await self.pc.close()
        self.peers.active.discard(self)


class _ChannelSend:
    """Sends one envelope on the channel; waits while too much is buffered (backpressure)."""

    __slots__ = ("channel", "drained")

    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.drained: asyncio.Future[None] | None = None
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("bufferedamountlow", self._low)

    async def __call__(self, text: str) -> None:
        self.channel.send(text)
        if self.channel.bufferedAmount > HIGH_WATER:
            self.drained = asyncio.get_running_loop().create_future()
            await self.drained

    def _low(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)


async def offer(request: web.Request) -> web.Response:
    user = str(authenticate(request)["sub"])
    if not request.app[AUTH].origin_allowed(request.headers.get("Origin")):
        raise web.HTTPForbidden(text="origin not allowed")
    admit(request, user)
    hub = request.app[HUB]
    try:
        body = await read_body(request, "sdp", "type")
        if body["type"] != "offer" or not isinstance(body["sdp"], str):
            raise WireError(ErrorCode.BAD_REQUEST, "expected {'sdp': <offer>, 'type': 'offer'}")
        try:
            answer = await request.app[PEERS].answer(user, RTCSessionDescription(
                sdp=body["sdp"], type="offer"))
        except WireError:
            raise
        except Exception as exc:  # noqa: BLE001 - aiortc rejects a bad SDP with assorted errors
            raise WireError(ErrorCode.BAD_REQUEST, f"unusable offer: {exc!r}"[:200]) from None
    except WireError as exc:
        return error_response(hub, exc)
    return web.json_response({"sdp": answer.sdp, "type": answer.type})


def make_app(hub: Hub, authenticator: auth.Authenticator, *,
             negotiation_timeout: float = NEGOTIATION_SECONDS,
             ice_address: str | None = None) -> web.Application:
    peers = Peers(hub, negotiation_timeout, ice_address)
    app = hub_app(hub, authenticator, closing=[peers.close], extra_metrics=lambda app: app[PEERS].render())
    app[PEERS] = peers
    app.router.add_post("/webrtc/offer", offer)
    return app


def candidate_address(host: str) -> str | None:
    """The one address to gather ICE host candidates on: the address the server binds, unless
    that is a host name or the unspecified address (then aioice's own choice: every interface)."""
    loopback = loopback_address(host)
    if loopback is not None:
        return loopback
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


async def start(opts: Options) -> Running:
    """``sobranie-bench serve webrtc``: signalling on HTTP, data channels on UDP, ICE host
    candidates on the bound address; ``opts.extra['negotiation_timeout']`` (seconds) bounds an
    offer's wait for its data channel."""
    app = make_app(*core(opts, "sobranie-webrtc"),
                   negotiation_timeout=float(opts.extra.get("negotiation_timeout",
                                                            NEGOTIATION_SECONDS)),
                   ice_address=candidate_address(opts.host))
    return await serve_app(app, opts, lambda url: {"webrtc": f"{url}/webrtc/offer"})
