"""WebTransport client (aioquic, HTTP/3): one session per QUIC connection.

The client opens a QUIC connection, checks the server's certificate against a pinned SHA-256
(fetched from ``/wt-cert-hash`` over plain HTTP unless given, as a browser's
``serverCertificateHashes`` would), sends the extended CONNECT ``/wt?token=...``, then opens one
bidirectional stream that carries newline-delimited JSON envelopes both ways. An unreliable
publish goes out as one HTTP/3 datagram and is never acknowledged. With ``delivery`` other than
``ordered`` (``/wt?...&delivery=``) channels' messages arrive on the unidirectional streams the
server opens, one per channel (``per-channel``), or in datagrams (``unreliable``).

The framing both sides speak (the stream's lines, the capsule that closes a session) is in
:mod:`sobranie_contract.framing`; here is the registration of a client-opened stream, which
aioquic's :class:`H3Connection` forgets (see :func:`open_bidi_stream`).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import aiohttp
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, H3Stream
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent
from cryptography.hazmat.primitives.serialization import Encoding

from sobranie_bench.clients.base import Client, ClientError
from sobranie_contract import wire
from sobranie_contract.framing import (
    CLOSE_SESSION_CAPSULE,
    DELIVERY_QUERY,
    MAX_DATAGRAM_PAYLOAD,
    CapsuleReader,
    Delivery,
    LineSplitter,
    close_capsule,
    parse_close,
)

# --- aioquic glue ------------------------------------------------------------------------------

DRAFT_HEADERS = [(b"sec-webtransport-http3-draft02", b"1")]
"""Request header Chromium sends; the server answers ``sec-webtransport-http3-draft: draft02``."""


def open_bidi_stream(h3: H3Connection, session_id: int) -> int:
    """Open a bidirectional WebTransport stream of ``session_id`` and register it.

    aioquic's ``create_webtransport_stream`` writes the stream header but keeps no record of the
    stream, so the peer's replies on it are parsed as HTTP/3 frames and silently discarded
    instead of surfacing as ``WebTransportStreamDataReceived``. Registering the stream as a
    WEBTRANSPORT_STREAM of the session makes aioquic hand its data over unparsed.
    """
    stream_id = h3.create_webtransport_stream(session_id)
    stream = H3Stream(stream_id)
    stream.frame_type = FrameType.WEBTRANSPORT_STREAM
    stream.session_id = session_id
    h3._stream[stream_id] = stream
    return stream_id


# --- the client --------------------------------------------------------------------------------


class PinMismatch(ClientError):
    """The server's certificate is not the one pinned."""


@dataclass(slots=True)
class ByteCounter:
    """UDP payload bytes through one client's sockets (QUIC packets: headers, framing, TLS)."""

    sent: int = 0
    """Bytes handed to ``sendto``."""
    received: int = 0
    """Bytes given to ``datagram_received``."""


class WebTransportClient(Client):
    """The one client interface over a WebTransport session.

    ``cert_hash`` pins the server certificate's SHA-256 (hex); without it the hash is fetched
    from ``http://host:port/wt-cert-hash`` once. ``insecure=True`` skips verification instead.
    ``keepalive`` seconds between QUIC PINGs keep an idle session inside the idle timeout.
    ``bytes_sent`` / ``bytes_received`` count UDP payload bytes over every connection so far.
    """

    transport: ClassVar[str] = "webtransport"
    path: ClassVar[str] = "/wt"
    deliveries: ClassVar[frozenset[Delivery]] = frozenset(Delivery)

    def __init__(self, url: str, token: str, *, cert_hash: str | None = None,
                 insecure: bool = False, keepalive: float = 15.0, **kwargs: Any) -> None:
        super().__init__(url, token, **kwargs)
        parts = urlsplit(self.url)
        if parts.scheme != "https" or parts.hostname is None:
            raise ClientError(f"a WebTransport URL looks like https://host:port, not {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.cert_hash = cert_hash.replace(":", "").lower() if cert_hash else None
        self._fetch_pin = cert_hash is None and not insecure
        self.insecure = insecure
        self.keepalive = keepalive
        self.counter = ByteCounter()
        self._proto: _SessionProtocol | None = None

    @property
    def carriers(self) -> dict[str, int]:
        """Envelopes the current connection received per carrier: ``stream`` (the envelope
        stream), ``stream <id>`` (a channel's, ``per-channel``), ``datagram``."""
        return dict(self._proto.carriers) if self._proto is not None else {}

    @property
    def bytes_sent(self) -> int:
        return self.counter.sent

    @property
    def bytes_received(self) -> int:
        return self.counter.received

    async def publish(self, channel: str, data: Any, *, unreliable: bool = False) -> int:
        """Publish and wait for the ``ack``; an unreliable publish is one datagram, never
        acknowledged, so it returns 0 (no id is known to the sender)."""
        if not unreliable:
            return await super().publish(channel, data)
        await self._send(wire.Publish(channel, data, self._ref(), unreliable=True))
        return 0

    async def migrate(self) -> None:
        """QUIC connection migration (RFC 9000 section 9): the same connection from a new UDP
        socket, on a new connection ID; the server validates the new path and moves to it. The
        session, its streams and the cursor carry on: nothing reconnects."""
        if self._proto is None or not self._proto.open:
            return await super().migrate()
        await self._proto.rebind()
        self.migrations += 1

    async def send_raw(self, data: bytes, *, datagram: bool = False) -> None:
        """Send bytes as they are, on the stream or as one datagram (tests of bad input)."""
        self._session().send(data, datagram=datagram)

    # --- transport ------------------------------------------------------------------------

    async def _open(self, resume: bool) -> None:
        pin = None if self.insecure else self.cert_hash or await self._fetch_cert_hash()
        try:
            proto = await connect_quic(self.host, self.port, pin, self.counter, self.timeout)
        except PinMismatch:
            if self._fetch_pin:  # a restarted server has a new certificate: fetch it again
                self.cert_hash = None
            raise
        try:
            await proto.open_session(f"{self.host}:{self.port}".encode(),
                                     f"{self.path}?{self.token_query}&{DELIVERY_QUERY}="
                                     f"{self.delivery}".encode(), self.timeout)
        except BaseException:
            proto.shutdown(graceful=True)
            raise
        proto.start_keepalive(self.keepalive)
        self._proto = proto
        for channel in self.channels:
            await self._send(self._subscription(channel, self.cursor.get(channel)))

    async def _read(self) -> None:
        proto = self._proto
        assert proto is not None
        try:
            while lines := await proto.lines():
                for line in lines:
                    self._dispatch(wire.decode(line))
        finally:
            self.close_code = proto.close_code
            proto.shutdown(graceful=True)

    async def _send(self, req: wire.Request) -> None:
        payload = wire.encode(wire.request_to_dict(req)).encode()
        unreliable = isinstance(req, wire.Publish) and req.unreliable
        self._session().send(payload if unreliable else payload + b"\n", datagram=unreliable)

    async def _abort(self, graceful: bool = False) -> None:
        """Graceful: close the session and the connection. Otherwise vanish: drop the socket
        without a word, as a crashed process or a lost network would (the server finds out
        through its idle timeout)."""
        if self._proto is not None:
            self._proto.shutdown(graceful)

    def _session(self) -> _SessionProtocol:
        if self._proto is None or not self._proto.open:
            raise ClientError("not connected")
        return self._proto

    async def _fetch_cert_hash(self) -> str:
        url = f"http://{_host(self.host)}:{self.port}/wt-cert-hash"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                    total=self.timeout)) as session, session.get(url) as resp:
                if resp.status != 200:
                    raise ClientError(f"GET {url}: HTTP {resp.status}")
                body = await resp.json()
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise ClientError(f"cannot fetch the certificate hash from {url}: {exc}") from None
        self.cert_hash = str(body["value"]).lower()
        return self.cert_hash


class _CountingTransport(asyncio.DatagramTransport):
    """The UDP transport, counting what goes out."""

    def __init__(self, inner: asyncio.DatagramTransport, counter: ByteCounter) -> None:
        super().__init__()
        self._inner = inner
        self._counter = counter

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        self._counter.sent += len(data)
        self._inner.sendto(data, addr)

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)


class _Forward(asyncio.DatagramProtocol):
    """A rebound socket's protocol: what arrives goes to the connection it now carries."""

    def __init__(self, proto: _SessionProtocol) -> None:
        self.proto = proto

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.proto.datagram_received(data, addr)


class _SessionProtocol(QuicConnectionProtocol):
    """One QUIC connection carrying one WebTransport session."""

    def __init__(self, quic: QuicConnection, *, pin: str | None, counter: ByteCounter,
                 **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.h3: H3Connection | None = None
        self.refused: str | None = None
        """Why the handshake was refused on our side (certificate pin mismatch)."""
        self.session_id: int | None = None
        self.stream_id: int | None = None
        self.open = False
        """True from the 200 answer until the session ends."""
        self.close_code: int | None = None
        """Code of the server's CLOSE_WEBTRANSPORT_SESSION capsule, if one came."""
        self.close_reason = ""
        self._pin = pin
        self._counter = counter
        self.handshake: asyncio.Future[None] = self._loop.create_future()
        """Done once the QUIC handshake completed (ConnectionError if the connection ended
        first). Ours, not aioquic's ``wait_connected``: see :func:`connect_quic`."""
        self._response: asyncio.Future[tuple[int, bytes]] = self._loop.create_future()
        self._status = 0
        self._body = b""
        self._capsules = CapsuleReader()
        self._splitter = LineSplitter()
        self._channel_streams: dict[int, LineSplitter] = {}
        """The server's unidirectional streams of this session (a channel's messages each)."""
        self.carriers: dict[str, int] = {}
        """Envelopes received per carrier (see :attr:`WebTransportClient.carriers`)."""
        self._lines: deque[bytes] = deque()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._keepalive: asyncio.TimerHandle | None = None

    # --- asyncio ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        udp = cast(asyncio.DatagramTransport, transport)  # asyncio's is not a subclass of it
        super().connection_made(_CountingTransport(udp, self._counter))

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        self._counter.received += len(data)
        super().datagram_received(data, addr)

    # --- QUIC and HTTP/3 events -----------------------------------------------------------

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.refused = self._check_pin()
            if not self.handshake.done():
                self.handshake.set_result(None)
            if self.refused:
                self.close(reason_phrase=self.refused)
                return
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        elif isinstance(event, ConnectionTerminated):
            if not self.handshake.done():
                self.handshake.set_exception(ConnectionError(
                    f"connection closed during the handshake: {event.reason_phrase}"))
            if not self._response.done():
                self._response.set_exception(ClientError(
                    f"connection closed during the CONNECT: {event.reason_phrase}"))
            self._end()
            self._halt()
        if self.h3 is not None:
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, WebTransportStreamDataReceived):
            if event.stream_id == self.stream_id:
                self._take("stream", self._splitter.feed(event.data))
                if event.stream_ended:
                    self._end()
            elif event.session_id == self.session_id and event.stream_id % 4 == 3:
                splitter = self._channel_streams.setdefault(event.stream_id, LineSplitter())
                self._take(f"stream {event.stream_id}", splitter.feed(event.data))
        elif isinstance(event, DatagramReceived) and event.stream_id == self.session_id:
            self._take("datagram", [event.data])
        elif isinstance(event, HeadersReceived) and not self._response.done():
            self._status = int(dict(event.headers).get(b":status", b"0"))
            if self._status == 200 or event.stream_ended:
                self._response.set_result((self._status, b""))
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            if not self._response.done():  # the body of a refusal
                self._body += event.data
                if event.stream_ended:
                    self._response.set_result((self._status, self._body))
                return
            try:
                capsules = self._capsules.feed(event.data)
            except ValueError:
                capsules = []
                self._end()
            for kind, value in capsules:
                if kind == CLOSE_SESSION_CAPSULE:
                    self.close_code, self.close_reason = parse_close(value)
                    self._end()
            if event.stream_ended:
                self._end()

    def _take(self, carrier: str, lines: list[bytes]) -> None:
        if lines:
            self.carriers[carrier] = self.carriers.get(carrier, 0) + len(lines)
            self._lines.extend(lines)
        self._wake()

    def _check_pin(self) -> str | None:
        if self._pin is None:
            return None
        presented = self._quic.tls._peer_certificate
        if presented is None:
            return "the server presented no certificate"
        digest = hashlib.sha256(presented.public_bytes(Encoding.DER)).hexdigest()
        if digest != self._pin:
            return f"certificate SHA-256 {digest} is not the pinned {self._pin}"
        return None

    # --- the session -----------------------------------------------------------------------

    async def open_session(self, authority: bytes, path: bytes, timeout: float,
                           headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """Send the extended CONNECT; on 200 open the envelope stream, else ClientError."""
        assert self.h3 is not None
        sid = self._quic.get_next_available_stream_id()
        self.session_id = sid
        self.h3.send_headers(sid, [(b":method", b"CONNECT"), (b":scheme", b"https"),
                                   (b":authority", authority), (b":path", path),
                                   (b":protocol", b"webtransport"), *DRAFT_HEADERS, *headers])
        self.transmit()
        status, body = await asyncio.wait_for(self._response, timeout)
        if status != 200:
            raise ClientError(f"WebTransport CONNECT refused: HTTP {status}: "
                              f"{body[:200].decode(errors='replace')}")
        self.stream_id = open_bidi_stream(self.h3, sid)
        # The server learns of a stream from its first byte after the header: an empty line
        # (skipped by the reader) lets it start with the hello before we have anything to say.
        self._quic.send_stream_data(self.stream_id, b"\n")
        self.open = True
        self.transmit()

    def send(self, data: bytes, *, datagram: bool = False) -> None:
        assert self.h3 is not None and self.session_id is not None
        if datagram:
            if len(data) > MAX_DATAGRAM_PAYLOAD:
                raise ClientError(f"envelope of {len(data)} bytes does not fit one datagram "
                                  f"(at most {MAX_DATAGRAM_PAYLOAD})")
            self.h3.send_datagram(self.session_id, data)
        else:
            assert self.stream_id is not None
            self._quic.send_stream_data(self.stream_id, data)
        self.transmit()

    async def lines(self) -> deque[bytes]:
        """Wait for envelopes from the server and take them all; empty once the session ended."""
        while not self._lines and not self._ended:  # woken by a partial line: wait on
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        lines, self._lines = self._lines, deque()
        return lines

    async def rebind(self) -> None:
        """Move to a new UDP socket (a new local port, as after a change of network or a NAT
        rebinding) and switch to a fresh connection ID; the PING that goes out at once is
        the server's cue to validate the new path (PATH_CHALLENGE) and send there."""
        old = self._transport
        assert old is not None
        family = old.get_extra_info("socket").family
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
        udp, _ = await self._loop.create_datagram_endpoint(lambda: _Forward(self),
                                                           local_addr=local, family=family)
        self._transport = _CountingTransport(udp, self._counter)
        old.close()
        self._quic.change_connection_id()
        self._quic.send_ping(0)
        self.transmit()

    def start_keepalive(self, interval: float) -> None:
        """PING every ``interval`` seconds, and at least twice per negotiated idle timeout."""
        idle = self._quic.configuration.idle_timeout
        if self._quic._remote_max_idle_timeout:
            idle = min(idle, self._quic._remote_max_idle_timeout)
        interval = min(interval, idle / 2)

        def ping() -> None:
            self._quic.send_ping(0)
            self.transmit()
            self._keepalive = self._loop.call_later(interval, ping)

        if interval > 0:
            self._keepalive = self._loop.call_later(interval, ping)

    def shutdown(self, graceful: bool) -> None:
        """Graceful: CLOSE_WEBTRANSPORT_SESSION, FIN, CONNECTION_CLOSE. Otherwise go silent."""
        if self._transport is None or self._transport.is_closing():
            return
        if graceful:
            if self.open and self.h3 is not None and self.session_id is not None:
                self.h3.send_data(self.session_id, close_capsule(0, ""), end_stream=True)
            self.close()
        self._end()
        self._halt()

    def _halt(self) -> None:
        """Stop every timer and drop the socket (what was sent is on its way)."""
        for handle in (self._timer, self._keepalive):
            if handle is not None:
                handle.cancel()
        self._timer = self._keepalive = None
        if self._transport is not None:
            self._transport.close()

    def _end(self) -> None:
        self.open = False
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def connect_quic(host: str, port: int, pin: str | None, counter: ByteCounter,
                   timeout: float) -> _SessionProtocol:
    """A QUIC connection whose handshake completed (and whose certificate matched the pin)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, *_, addr = infos[0]
    config = QuicConfiguration(alpn_protocols=H3_ALPN, is_client=True,
                               max_datagram_frame_size=65536, server_name=host,
                               verify_mode=ssl.CERT_NONE)
    quic = QuicConnection(configuration=config)
    local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)

    def factory() -> _SessionProtocol:
        return _SessionProtocol(quic, pin=pin, counter=counter)

    _, proto = await loop.create_datagram_endpoint(factory, local_addr=local, family=family)
    try:
        proto.connect(addr)
        # Not ``wait_for(proto.wait_connected())``: aioquic records a completed handshake only
        # if a waiter exists by then, and wait_for starts that coroutine as a task, one loop
        # iteration later. uvloop delivers datagrams before callbacks already queued with
        # call_soon, so under load the server's reply came first and the waiter never woke.
        await asyncio.wait_for(proto.handshake, timeout)
    except BaseException:
        proto.shutdown(graceful=False)
        raise
    if proto.refused:
        proto.shutdown(graceful=False)
        raise PinMismatch(f"refusing https://{_host(host)}:{port}: {proto.refused}")
    return proto


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


__all__ = ["ByteCounter", "PinMismatch", "WebTransportClient", "connect_quic", "open_bidi_stream"]
