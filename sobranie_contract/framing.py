"""Framing both sides speak: envelopes on a WebTransport stream, its session capsules, the
WebRTC data channels' labels, and where a connection's messages travel (:class:`Delivery`).

WebTransport carries envelopes on one bidirectional stream as newline-delimited JSON
(:class:`LineSplitter`), and single envelopes in datagrams; a session ends with a
CLOSE_WEBTRANSPORT_SESSION capsule (RFC 9297 framing) on its CONNECT stream.
"""

from __future__ import annotations

from enum import StrEnum

from aioquic.buffer import Buffer, BufferReadError

CLOSE_SESSION_CAPSULE = 0x2843
"""CLOSE_WEBTRANSPORT_SESSION: a 32-bit application code, then a UTF-8 reason."""
MAX_CLOSE_REASON_BYTES = 1024
"""Longest reason a CLOSE_WEBTRANSPORT_SESSION capsule may carry."""
MAX_CAPSULE_BYTES = 64 * 1024
"""A capsule still incomplete past this many buffered bytes is a protocol error."""
MAX_DATAGRAM_PAYLOAD = 1100
"""Largest envelope sent as one datagram: a DATAGRAM frame must fit one QUIC packet of 1200
bytes with its header, the AEAD tag and the quarter stream id (aioquic's default packet size)."""

RELIABLE = "sobranie"
"""Label of the reliable, ordered WebRTC data channel: every envelope, both ways."""
UNRELIABLE = "sobranie-unreliable"
"""Label of the unordered WebRTC data channel without retransmits: unreliable publishes."""
DELIVERIES = "sobranie-deliveries"
"""Label of the WebRTC data channel a client opens to ask for unreliable delivery (unordered,
with the ``maxRetransmits`` it chose): the server sends channels' messages on it."""
DELIVERY_QUERY = "delivery"
"""Query parameter of the WebTransport CONNECT naming the session's :class:`Delivery`."""


class Delivery(StrEnum):
    """Where a connection's ``message`` envelopes travel, chosen by the client when it connects
    (docs/protocol.md, "Delivery"); everything else (hello, acks, errors, presence) stays on the
    connection's ordered stream. The hub does not know: the adapter picks the carrier."""

    ORDERED = "ordered"
    """On the one ordered stream with everything else (every transport; the default)."""
    PER_CHANNEL = "per-channel"
    """Each channel's messages on a stream of its own, in order within the channel: a loss
    delays only its channel (WebTransport: one unidirectional stream per channel)."""
    UNRELIABLE = "unreliable"
    """Best effort, in any order, never resent by the suite: what is lost stays lost, and a
    resuming client's cursor is the highest id seen (WebTransport datagrams, a message too big
    for one going on the stream; WebRTC's ``sobranie-deliveries`` channel)."""


def close_capsule(code: int, reason: str) -> bytes:
    """A CLOSE_WEBTRANSPORT_SESSION capsule (RFC 9297 framing)."""
    value = code.to_bytes(4, "big") + reason.encode()[:MAX_CLOSE_REASON_BYTES]
    buf = Buffer(capacity=16 + len(value))
    buf.push_uint_var(CLOSE_SESSION_CAPSULE)
    buf.push_uint_var(len(value))
    buf.push_bytes(value)
    return buf.data


def parse_close(value: bytes) -> tuple[int, str]:
    """The code and reason of a CLOSE_WEBTRANSPORT_SESSION capsule's value."""
    if len(value) < 4:
        raise ValueError("CLOSE_WEBTRANSPORT_SESSION shorter than its 4-byte code")
    return int.from_bytes(value[:4], "big"), value[4:].decode(errors="replace")


class CapsuleReader:
    """Capsules (type, value) from a CONNECT stream's data, fed in pieces as they arrive."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while self._buf:
            buf = Buffer(data=self._buf)
            try:
                kind = buf.pull_uint_var()
                value = buf.pull_bytes(buf.pull_uint_var())
            except BufferReadError:
                break
            out.append((kind, value))
            self._buf = self._buf[buf.tell():]
        if len(self._buf) > MAX_CAPSULE_BYTES:
            raise ValueError(f"capsule over {MAX_CAPSULE_BYTES} bytes")
        return out


class LineSplitter:
    """Newline-delimited envelopes from stream data fed in pieces (empty lines skipped)."""

    def __init__(self) -> None:
        self.partial = bytearray()
        """Bytes of the line not finished yet."""
        self._scanned = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.partial += data
        lines = []
        start = 0
        while (end := self.partial.find(b"\n", self._scanned)) >= 0:
            if end > start:
                lines.append(bytes(self.partial[start:end]))
            start = self._scanned = end + 1
        if start:
            del self.partial[:start]
        self._scanned = len(self.partial)
        return lines
