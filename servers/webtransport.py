"""WebTransport adapter (aioquic, HTTP/3): a session's stream lines and datagrams -> hub;
outbox -> stream lines.

One UDP port speaks QUIC; each QUIC connection (:class:`_Protocol`) may carry several sessions.
A session starts with an extended CONNECT to ``/wt?token=...`` (401 before any hub connection
when the token is not good), is one hub connection, and carries envelopes on the one
bidirectional stream its client opens (newline-delimited JSON) and in datagrams (one envelope
each; a publish there is best effort: delivered on subscribers' streams, never acknowledged).
Channels' messages go where the CONNECT's ``delivery`` asks (:class:`Delivery`): on that stream
(``ordered``, the default), each channel's on a unidirectional stream the server opens for it
(``per-channel``: a lost packet holds up only its channel), or one datagram each (``unreliable``;
a message too big for one datagram, or past :data:`DATAGRAM_QUEUE`, goes on the stream).
It ends with a CLOSE_WEBTRANSPORT_SESSION capsule or the end of a stream from either side, or
with the QUIC connection (closed, or silent past the idle timeout).

The same port number over TCP serves plain HTTP: ``/wt-cert-hash`` (the SHA-256 a browser pins
with ``serverCertificateHashes``), ``/healthz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, H3Connection, ProtocolError
from aioquic.h3.events import (
    DatagramReceived,
    DataReceived,
    H3Event,
    HeadersReceived,
    WebTransportStreamDataReceived,
)
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, stream_is_unidirectional
from aioquic.quic.events import (
    ConnectionTerminated,
    ProtocolNegotiated,
    QuicEvent,
    StopSendingReceived,
    StreamReset,
)
from aioquic.quic.logger import QuicFileLogger
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict

from servers import auth, cors
from servers.aiohttp_common import EXTRA_METRICS, HUB, healthz, metrics
from servers.hub import FLOOD_REASON, Connection, Hub, Inbox, Outgoing
from servers.run import Options, Running, core
from sobranie_contract import wire
from sobranie_contract.framing import (
    CLOSE_SESSION_CAPSULE,
    DELIVERY_QUERY,
    MAX_DATAGRAM_PAYLOAD,
    CapsuleReader,
    Delivery,
    LineSplitter,
    close_capsule,
)
from sobranie_contract.wire import ErrorCode, WireError

log = logging.getLogger("sobranie.webtransport")

TRANSPORT = "webtransport"
DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds of silence after which QUIC drops a connection (its sessions end with it)."""
CERT_VALIDITY = timedelta(days=13)
"""Browsers accept serverCertificateHashes only for certificates valid 14 days or less."""
SEND_HIGH_WATER = 256 * 1024
"""Unacknowledged bytes on a session's stream before its outbox stops draining (then the hub
cuts a reader that stays behind off as a slow consumer)."""
CLOSE_GRACE_SECONDS = 1.0
"""After its last session ends, a QUIC connection gets this long to close itself."""
STOP_GRACE_SECONDS = 1.0
"""At shutdown, connections get this long to finish closing (and write their qlog)."""
BIND_ATTEMPTS = 20
"""Tries to find a port number free over both UDP and TCP when binding port 0."""
UDP_BUFFER_BYTES = 4 * 1024 * 1024
"""Receive and send buffer asked for the one UDP socket every connection shares (the kernel caps
it at ``net.core.rmem_max`` / ``wmem_max``). The default (about 200 KB, some 90 full-size QUIC
packets) overflows when a few hundred clients connect at once; every Initial dropped there costs
its client a retransmission timeout, a second or more."""
DATAGRAM_QUEUE = 256
"""Datagrams of a connection waiting for its congestion window past which an ``unreliable``
delivery goes on the stream instead (aioquic queues datagrams without a bound)."""


def self_signed_certificate(now: datetime | None = None
                            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An ECDSA P-256 certificate for localhost, 127.0.0.1 and ::1, valid under 14 days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sobranie-bench webtransport")])
    start = (now or datetime.now(UTC)) - timedelta(minutes=1)
    san = x509.SubjectAlternativeName([
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + CERT_VALIDITY)
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


class WebTransportServer:
    """One hub behind a QUIC/HTTP/3 port, plus the plain-HTTP side on the same port number."""

    def __init__(self, hub: Hub, authenticator: auth.Authenticator, *,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, cert: str | None = None,
                 key: str | None = None, quic_log: str | None = None) -> None:
        self.hub = hub
        self.auth = authenticator
        self.config = QuicConfiguration(
            alpn_protocols=H3_ALPN, is_client=False, max_datagram_frame_size=65536,
            idle_timeout=idle_timeout, quic_logger=QuicFileLogger(quic_log) if quic_log else None)
        if cert:
            self.config.load_cert_chain(cert, key)
        else:
            self.config.certificate, self.config.private_key = self_signed_certificate()
        certificate: x509.Certificate = self.config.certificate
        self.cert_sha256 = certificate.fingerprint(hashes.SHA256()).hex()
        self.cert_expires = certificate.not_valid_after_utc
        self.protocols: set[_Protocol] = set()
        self.sessions: set[asyncio.Task[None]] = set()
        self.carried: dict[str, int] = {"channel_streams": 0, "datagrams": 0}
        """Channel streams opened and messages sent as datagrams (``per-channel`` and
        ``unreliable`` delivery), for /metrics."""
        self._quic: QuicServer | None = None
        self._http: web.AppRunner | None = None
        self.stopping = False
        """Set by :meth:`stop`: new sessions are refused from then on."""

    async def start(self, host: str, port: int) -> int:
        """Bind UDP and TCP on one port number (``port`` 0: one the OS finds free for both)."""
        await self.hub.start()
        app = web.Application()
        app[HUB] = self.hub
        app[EXTRA_METRICS] = lambda app: self.render()
        cors.install(app, self.auth)
        app.router.add_get("/wt-cert-hash", self._cert_hash)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/metrics", metrics)
        self._http = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                                   keepalive_timeout=self.hub.limits.header_timeout)
        await self._http.setup()
        loop = asyncio.get_running_loop()
        attempts = 1 if port else BIND_ATTEMPTS
        while True:
            udp, self._quic = await loop.create_datagram_endpoint(
                lambda: QuicServer(configuration=self.config,
                                   create_protocol=functools.partial(_Protocol, server=self)),
                local_addr=(host, port))
            _grow_buffers(udp.get_extra_info("socket"))
            bound = int(udp.get_extra_info("sockname")[1])
            try:
                await web.TCPSite(self._http, host, bound).start()
                return bound
            except OSError:
                self._quic.close()
                attempts -= 1
                if not attempts:
                    raise

    async def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        await self.hub.close()
        if self.sessions:
            await asyncio.wait(self.sessions, timeout=STOP_GRACE_SECONDS)
        protocols = list(self.protocols)
        for proto in protocols:
            proto.close()
        if protocols:
            await asyncio.wait([asyncio.ensure_future(p.wait_closed()) for p in protocols],
                               timeout=STOP_GRACE_SECONDS)
        for proto in protocols:
            proto.halt()
        if self._quic is not None:
            self._quic.close()
        if self._http is not None:
            await self._http.cleanup()

    def render(self) -> str:
        return ("# HELP sobranie_webtransport_channel_streams_total Streams opened for one "
                "channel's messages (delivery=per-channel).\n"
                "# TYPE sobranie_webtransport_channel_streams_total counter\n"
                f"sobranie_webtransport_channel_streams_total {self.carried['channel_streams']}\n"
                "# HELP sobranie_webtransport_message_datagrams_total Messages sent as datagrams "
                "(delivery=unreliable).\n"
                "# TYPE sobranie_webtransport_message_datagrams_total counter\n"
                f"sobranie_webtransport_message_datagrams_total {self.carried['datagrams']}\n")

    async def _cert_hash(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"algorithm": "sha-256", "value": self.cert_sha256,
             "expires": self.cert_expires.isoformat()},
            headers={"Cache-Control": "no-store"})


class _Protocol(QuicConnectionProtocol):
    """One QUIC connection: HTTP/3 requests in, WebTransport sessions out."""

    def __init__(self, quic: QuicConnection, *, server: WebTransportServer,
                 **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.server = server
        self.h3: H3Connection | None = None
        self.alive = True
        self.sessions: dict[int, Session] = {}
        """Open sessions by the id of their CONNECT stream."""
        self.streams: dict[int, Session] = {}
        """Sessions by the id of their envelope stream."""
        self._acked = asyncio.Event()
        """Set whenever the peer sent something (acks free send buffers)."""
        self._idle: asyncio.TimerHandle | None = None
        server.protocols.add(self)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        super().datagram_received(data, addr)
        self._acked.set()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated):
            self.h3 = H3Connection(self._quic, enable_webtransport=True)
        elif isinstance(event, ConnectionTerminated):
            self._terminated()
            return
        elif isinstance(event, (StreamReset, StopSendingReceived)):
            session = self.streams.get(event.stream_id) or self.sessions.get(event.stream_id)
            if session is not None:
                session.close()
        if self.h3 is not None:
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self._request(event)
        elif isinstance(event, WebTransportStreamDataReceived):
            session = self.sessions.get(event.session_id)
            if session is not None:
                session.stream_data(event.stream_id, event.data, event.stream_ended)
        elif isinstance(event, DatagramReceived):
            session = self.sessions.get(event.stream_id)
            if session is not None:
                session.datagram(event.data)
        elif isinstance(event, DataReceived):
            session = self.sessions.get(event.stream_id)
            if session is not None:
                session.capsule_data(event.data, event.stream_ended)

    def _request(self, event: HeadersReceived) -> None:
        """An extended CONNECT to /wt with a good token opens a session; anything else is
        answered and ended at once."""
        sid = event.stream_id
        if sid in self.sessions:
            return  # trailers on a session's CONNECT stream mean nothing here
        pseudo = {k: v for k, v in event.headers if k.startswith(b":")}
        headers = CIMultiDict((k.decode(), v.decode(errors="replace"))
                              for k, v in event.headers if not k.startswith(b":"))
        path, _, query = pseudo.get(b":path", b"").decode(errors="replace").partition("?")
        if self.server.stopping:
            return self.refuse(sid, 503, "server shutting down")
        if pseudo.get(b":method") != b"CONNECT" or pseudo.get(b":protocol") != b"webtransport":
            return self.refuse(sid, 405, "only WebTransport sessions (extended CONNECT) here")
        if path != "/wt":
            return self.refuse(sid, 404, f"no WebTransport endpoint at {path[:100]}")
        params = dict(parse_qsl(query))
        try:
            user = self.server.auth.user(params, headers)
        except auth.Unauthorized as exc:
            return self.refuse(sid, 401, wire.encode(self.server.hub.refused(
                WireError(ErrorCode.UNAUTHORIZED, str(exc)))))
        try:
            delivery = Delivery(params.get(DELIVERY_QUERY, Delivery.ORDERED))
        except ValueError:
            return self.refuse(sid, 400, wire.encode(self.server.hub.refused(WireError(
                ErrorCode.BAD_REQUEST, f"{DELIVERY_QUERY}={params[DELIVERY_QUERY][:40]!r} is "
                f"none of {', '.join(Delivery)}"))))
        if not self.server.auth.origin_allowed(headers.get("origin")):
            return self.refuse(sid, 403, "origin not allowed")
        try:
            self.server.hub.admit(user)
        except WireError as exc:
            return self.refuse(sid, 429, wire.encode(self.server.hub.refused(exc)))
        session = self.sessions[sid] = Session(self, sid, user, delivery)
        task = asyncio.get_running_loop().create_task(session.run())
        self.server.sessions.add(task)
        task.add_done_callback(self.server.sessions.discard)

    def refuse(self, stream_id: int, status: int, body: str) -> None:
        assert self.h3 is not None
        self.h3.send_headers(stream_id, [(b":status", str(status).encode()),
                                         (b"content-type", b"application/json"
                                          if status in (400, 401) else b"text/plain"),
                                         *([(b"www-authenticate", b"Bearer")]
                                           if status == 401 else [])])
        self.h3.send_data(stream_id, body.encode(), end_stream=True)
        self.transmit()

    def accept(self, session: Session) -> None:
        assert self.h3 is not None
        self.h3.send_headers(session.id, [(b":status", b"200"),
                                          (b"sec-webtransport-http3-draft", b"draft02")])
        self.transmit()

    def open_channel_stream(self, session: Session) -> int:
        """A unidirectional stream of ``session`` for one channel's messages."""
        assert self.h3 is not None
        self.server.carried["channel_streams"] += 1
        return self.h3.create_webtransport_stream(session.id, is_unidirectional=True)

    def send_datagram(self, session: Session, data: bytes) -> bool:
        """One datagram of ``session``; False when the connection's queue of them is full."""
        assert self.h3 is not None
        if len(self._quic._datagrams_pending) >= DATAGRAM_QUEUE:
            return False
        self.h3.send_datagram(session.id, data)
        self.server.carried["datagrams"] += 1
        self.transmit()
        return True

    def send(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        """Queue bytes on a WebTransport stream; False when the peer has reset it."""
        try:
            self._quic.send_stream_data(stream_id, data, end_stream)
        except (ValueError, RuntimeError):  # reset or stopped by the peer, or already ended
            return False
        self.transmit()
        return True

    async def drained(self, stream_id: int) -> None:
        """Return once the stream's unacknowledged bytes are under the high-water mark."""
        while self.alive and _unacked(self._quic, stream_id) > SEND_HIGH_WATER:
            self._acked.clear()
            await self._acked.wait()

    def end(self, session: Session, code: int | None, reason: str) -> None:
        """Our side of a session's end: the capsule when we close it, FIN on its streams."""
        if not self.alive or not session.accepted or self.h3 is None:
            return
        capsule = close_capsule(code, reason) if code is not None else b""
        with contextlib.suppress(ProtocolError, ValueError, RuntimeError):  # ended or reset
            self.h3.send_data(session.id, capsule, end_stream=True)
        for stream_id in (session.stream_id, *session.channel_streams.values()):
            if stream_id is not None:
                self.send(stream_id, b"", end_stream=True)
        self.transmit()

    def forget(self, session: Session) -> None:
        """A session is over; a connection left with none closes after a grace period."""
        self.sessions.pop(session.id, None)
        if session.stream_id is not None:
            self.streams.pop(session.stream_id, None)
        if self.alive and not self.sessions and self._idle is None:
            self._idle = self._loop.call_later(CLOSE_GRACE_SECONDS, self._close_if_unused)

    def _close_if_unused(self) -> None:
        self._idle = None
        if self.alive and not self.sessions:
            self.close()

    def halt(self) -> None:
        """Stop this connection's timers (server shutdown)."""
        for handle in (self._timer, self._idle):
            if handle is not None:
                handle.cancel()
        self._timer = self._idle = None

    def _terminated(self) -> None:
        self.alive = False
        self.halt()
        self._acked.set()
        for session in list(self.sessions.values()):
            session.close()
        self.server.protocols.discard(self)


class Session:
    """One WebTransport session = one hub connection."""

    def __init__(self, proto: _Protocol, session_id: int, user: str,
                 delivery: Delivery = Delivery.ORDERED) -> None:
        self.proto = proto
        self.hub = proto.server.hub
        self.id = session_id
        self.user = user
        self.delivery = delivery
        """Where channels' messages go (the CONNECT's ``delivery``)."""
        self.channel_streams: dict[str, int] = {}
        """The stream of each channel whose messages went out ``per-channel``."""
        self.conn: Connection | None = None
        """The hub connection, once the hub has it."""
        self.stream_id: int | None = None
        """The client's bidirectional stream that carries envelopes (the first one it opens)."""
        self.accepted = False
        self.closed = False
        self._lines = LineSplitter()
        self._capsules = CapsuleReader()
        self._inbox = Inbox(self.hub.limits)
        """Stream lines and datagrams, waiting for the hub (aioquic reads without
        backpressure)."""
        self._stream_open = asyncio.Event()

    async def run(self) -> None:
        conn = self.conn = await self.hub.connect(self.user, TRANSPORT)
        conn.on_close = self._cut
        writer = asyncio.create_task(self._pump(conn))
        try:
            if not self.closed:
                self.proto.accept(self)
                self.accepted = True
            while (item := await self._inbox.get()) is not None and not conn.closed:
                raw, reliable = item
                await self.hub.handle(conn, raw, reliable=reliable)  # a datagram: hub rule 2
        finally:
            writer.cancel()
            self.close()
            await self.hub.disconnect(conn)
            self.proto.forget(self)

    async def _pump(self, conn: Connection) -> None:
        await self._stream_open.wait()
        assert self.stream_id is not None
        while not conn.closed:
            lines = self._carry(await conn.outgoing())
            if not all(self.proto.send(sid, "".join(texts).encode())
                       for sid, texts in lines.items()):
                self.close()
                return
            for sid in lines:
                await self.proto.drained(sid)

    def _carry(self, items: list[Outgoing]) -> dict[int, list[str]]:
        """Send the datagrams among ``items``; the lines for each stream, in order."""
        assert self.stream_id is not None
        lines: dict[int, list[str]] = {}
        for item in items:
            stream = self.stream_id
            if item.type == "message" and self.delivery is not Delivery.ORDERED:
                if self.delivery is Delivery.PER_CHANNEL:
                    assert item.channel is not None
                    if (found := self.channel_streams.get(item.channel)) is None:
                        found = self.proto.open_channel_stream(self)
                        self.channel_streams[item.channel] = found
                    stream = found
                else:
                    data = item.text.encode()
                    if len(data) <= MAX_DATAGRAM_PAYLOAD and self.proto.send_datagram(self, data):
                        continue
            lines.setdefault(stream, []).append(f"{item.text}\n")
        return lines

    # --- from the protocol (synchronous, in QUIC event order) ------------------------------

    def stream_data(self, stream_id: int, data: bytes, ended: bool) -> None:
        if self.stream_id is None and not stream_is_unidirectional(stream_id):
            self.stream_id = stream_id
            self.proto.streams[stream_id] = self
            self._stream_open.set()
        if stream_id != self.stream_id or self.closed:
            return  # one envelope stream per session: other streams are ignored
        hard = self.hub.limits.hard_frame
        for line in self._lines.feed(data):
            if len(line) > hard:
                return self._refuse_input(wire.CLOSE_TOO_BIG,
                                          f"envelope of {len(line)} bytes over the hard limit")
            self._enqueue(True, line)
        if len(self._lines.partial) > hard:
            return self._refuse_input(wire.CLOSE_TOO_BIG, f"envelope of "
                                      f"{len(self._lines.partial)}+ bytes over the hard limit")
        if ended:
            self.close()

    def datagram(self, data: bytes) -> None:
        if not self.closed:
            self._enqueue(False, data)

    def _enqueue(self, reliable: bool, raw: bytes) -> None:
        if not self._inbox.put(raw, reliable):
            self._refuse_input(wire.CLOSE_POLICY, FLOOD_REASON)

    def capsule_data(self, data: bytes, ended: bool) -> None:
        try:
            capsules = self._capsules.feed(data)
        except ValueError:
            return self.close(wire.CLOSE_POLICY, "malformed capsule")
        if ended or any(kind == CLOSE_SESSION_CAPSULE for kind, _ in capsules):
            self.close()

    def _refuse_input(self, code: int, reason: str) -> None:
        if self.conn is not None:
            self.conn.close(code, reason)  # counted in the metrics, then _cut closes the session
        else:
            self.close(code, reason)

    def _cut(self, code: int, reason: str) -> None:
        """The hub gave up on this connection (slow consumer, flood, shutdown): what it queued
        last (the flood's error) goes out before the close."""
        assert self.conn is not None
        last = self.conn.last_words()
        if self.stream_id is not None and last:
            self.proto.send(self.stream_id, "".join(f"{i.text}\n" for i in last).encode())
        self.close(code, reason)

    def close(self, code: int | None = None, reason: str = "") -> None:
        """End the session once: with a capsule carrying ``code`` when we close it, with FINs
        only when the client did."""
        if self.closed:
            return
        self.closed = True
        self._inbox.end()
        self.proto.end(self, code, reason)


def _grow_buffers(sock: Any) -> None:
    """Ask for :data:`UDP_BUFFER_BYTES` both ways (a smaller grant is still better than none)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)


def _unacked(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to a stream and not yet acknowledged (aioquic has no public accessor)."""
    stream = quic._streams.get(stream_id)
    return len(stream.sender._buffer) if stream is not None else 0


async def start(opts: Options) -> Running:
    """The ``webtransport`` kind of ``sobranie-bench serve``."""
    extra = opts.extra
    server = WebTransportServer(
        *core(opts, "sobranie-webtransport"),
        idle_timeout=float(extra.get("idle_timeout", DEFAULT_IDLE_TIMEOUT)),
        cert=extra.get("cert"), key=extra.get("key"), quic_log=extra.get("quic_log"))
    port = await server.start(opts.host, opts.port)
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    if not extra.get("cert"):
        log.warning("self-signed certificate for localhost/127.0.0.1/::1 valid until %s, "
                    "SHA-256 %s", server.cert_expires.isoformat(), server.cert_sha256)
    return Running(f"https://{host}:{port}", server.stop, {
        "webtransport": f"https://{host}:{port}/wt",
        "cert_hash": f"http://{host}:{port}/wt-cert-hash",
        "cert_sha256": server.cert_sha256,
        "http": f"http://{host}:{port}"})
