"""What the report states without measuring it, and where each statement comes from.

Browser support and framework (Elysia) support cannot be measured on a benchmark box; they are
read from public sources and every star given for them cites one. Handshake round trips are
counted from the protocol specifications. The note's own stars are transcribed here too, so the
report can put them beside ours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A public document a statement rests on."""

    title: str
    """Short title as cited."""
    url: str
    """Where to read it."""


SOURCES: dict[str, Source] = {s_key: Source(title, url) for s_key, title, url in [
    ("rfc6455", "RFC 6455, The WebSocket Protocol", "https://www.rfc-editor.org/rfc/rfc6455"),
    ("rfc8441", "RFC 8441, Bootstrapping WebSockets with HTTP/2",
     "https://www.rfc-editor.org/rfc/rfc8441"),
    ("rfc9220", "RFC 9220, Bootstrapping WebSockets with HTTP/3",
     "https://www.rfc-editor.org/rfc/rfc9220"),
    ("rfc8446", "RFC 8446, TLS 1.3 (one round trip full handshake)",
     "https://www.rfc-editor.org/rfc/rfc8446"),
    ("rfc9000", "RFC 9000, QUIC", "https://www.rfc-editor.org/rfc/rfc9000"),
    ("rfc9114", "RFC 9114, HTTP/3", "https://www.rfc-editor.org/rfc/rfc9114"),
    ("whatwg-websockets", "WHATWG WebSockets Standard", "https://websockets.spec.whatwg.org/"),
    ("mdn-websocket-ctor", "MDN, WebSocket() constructor",
     "https://developer.mozilla.org/docs/Web/API/WebSocket/WebSocket"),
    ("caniuse-websockets", "Can I use: Web Sockets", "https://caniuse.com/websockets"),
    ("whatwg-sse", "WHATWG HTML Standard, Server-sent events",
     "https://html.spec.whatwg.org/multipage/server-sent-events.html"),
    ("mdn-eventsource", "MDN, EventSource (connection-limit warning)",
     "https://developer.mozilla.org/docs/Web/API/EventSource"),
    ("mdn-eventsource-ctor", "MDN, EventSource() constructor",
     "https://developer.mozilla.org/docs/Web/API/EventSource/EventSource"),
    ("caniuse-eventsource", "Can I use: Server-sent events", "https://caniuse.com/eventsource"),
    ("wf-sse", "web-features: Server-sent events (Baseline widely available)",
     "https://web-platform-dx.github.io/web-features-explorer/features/server-sent-events"),
    ("wf-webtransport", ("web-features: WebTransport (Baseline newly available since "
                        "2026-03-24: Chrome 97, Edge 97, Firefox 114, Safari 26.4)"),
     "https://web-platform-dx.github.io/web-features-explorer/features/webtransport"),
    ("caniuse-webtransport", "Can I use: WebTransport", "https://caniuse.com/webtransport"),
    ("w3c-webtransport", "W3C WebTransport (streams, datagrams, serverCertificateHashes)",
     "https://www.w3.org/TR/webtransport/"),
    ("webtransport-explainer", "WebTransport explainer",
     "https://github.com/w3c/webtransport/blob/main/explainer.md"),
    ("ietf-webtrans-http3", "IETF draft, WebTransport over HTTP/3",
     "https://datatracker.ietf.org/doc/draft-ietf-webtrans-http3/"),
    ("mdn-rtcdatachannel", "MDN, RTCDataChannel", "https://developer.mozilla.org/docs/Web/API/RTCDataChannel"),
    ("caniuse-webrtc", "Can I use: WebRTC peer-to-peer connections",
     "https://caniuse.com/rtcpeerconnection"),
    ("rfc8827", "RFC 8827, WebRTC Security Architecture (DTLS mandatory)",
     "https://www.rfc-editor.org/rfc/rfc8827"),
    ("rfc8831", "RFC 8831, WebRTC Data Channels (SCTP over DTLS)",
     "https://www.rfc-editor.org/rfc/rfc8831"),
    ("rfc8445", "RFC 8445, ICE (NAT traversal)", "https://www.rfc-editor.org/rfc/rfc8445"),
    ("rfc8656", "RFC 8656, TURN (relaying around NATs)", "https://www.rfc-editor.org/rfc/rfc8656"),
    ("socketio-how", "Socket.IO docs, How it works (Engine.IO transports and upgrade)",
     "https://socket.io/docs/v4/how-it-works/"),
    ("socketio-protocol", "Socket.IO protocol", "https://socket.io/docs/v4/socket-io-protocol/"),
    ("socketio-delivery", "Socket.IO docs, Delivery guarantees (at most once by default)",
     "https://socket.io/docs/v4/delivery-guarantees/"),
    ("socketio-rooms", "Socket.IO docs, Rooms", "https://socket.io/docs/v4/rooms/"),
    ("socketio-acks", "Socket.IO docs, Emitting events: acknowledgements",
     "https://socket.io/docs/v4/emitting-events/#acknowledgements"),
    ("socketio-binary", "Socket.IO docs, Emitting events (binary structures are supported)",
     "https://socket.io/docs/v4/emitting-events/"),
    ("socketio-reconnect", "Socket.IO docs, Client options: reconnection",
     "https://socket.io/docs/v4/client-options/#reconnection"),
    ("socketio-nodes", ("Socket.IO docs, Using multiple nodes (sticky sessions only for "
                       "HTTP long-polling)"), "https://socket.io/docs/v4/using-multiple-nodes/"),
    ("socketio-bun", "Socket.IO blog, Bun engine (@socket.io/bun-engine)",
     "https://socket.io/blog/bun-engine/"),
    ("elysia-ws", "Elysia docs, WebSocket (built in: Elysia.ws())",
     "https://elysiajs.com/patterns/websocket"),
    ("elysia-stream", "Elysia docs, Handler: Stream (generator responses)",
     "https://elysiajs.com/essential/handler#stream"),
    ("npm-elysia-websocket", "npm, @elysiajs/websocket (0.x plugin for early Elysia)",
     "https://www.npmjs.com/package/@elysiajs/websocket"),
    ("mdn-fetch", "MDN, Fetch API", "https://developer.mozilla.org/docs/Web/API/Fetch_API"),
    ("nginx-buffering", ("nginx docs, proxy_buffering (responses are buffered by default; "
                        "X-Accel-Buffering)"),
     "https://nginx.org/en/docs/http/ngx_http_proxy_module.html#proxy_buffering"),
]}


def cite(*keys: str) -> str:
    """Markdown links to the given sources."""
    return "; ".join(f"[{SOURCES[k].title}]({SOURCES[k].url})" for k in keys)


@dataclass(frozen=True)
class Technology:
    """A row of the note's comparison table, and the transports that implement it here."""

    name: str
    """Name as in the note's table."""
    transports: tuple[str, ...]
    """Transports of this suite that carry it (the first measured one represents it)."""
    note_stars: dict[str, int] | None
    """The note's stars per column (None: the note has no row for it)."""


COLUMNS = ("browser", "complexity", "performance", "scalability", "framework")
COLUMN_TITLES = {"browser": "Browser support", "complexity": "Complexity",
                 "performance": "Performance", "scalability": "Scalability",
                 "framework": "Elysia support"}


def _stars(browser: int, complexity: int, performance: int, scalability: int,
           framework: int) -> dict[str, int]:
    return dict(zip(COLUMNS, (browser, complexity, performance, scalability, framework)))


TECHNOLOGIES: tuple[Technology, ...] = (
    Technology("WebSockets", ("ws", "ws-websockets"), _stars(5, 3, 4, 3, 5)),
    Technology("Socket.IO", ("socketio", "socketio-polling"), _stars(5, 2, 3, 4, 2)),
    Technology("WebTransport", ("webtransport",), _stars(2, 5, 5, 5, 1)),
    Technology("SSE", ("sse",), _stars(5, 1, 3, 5, 4)),
    Technology("WebRTC", ("webrtc",), _stars(4, 5, 5, 2, 1)),
    Technology("Long-polling", ("longpoll",), None),
)
"""The note's table, transcribed (its complexity column gives more stars to the more complex
technology), plus long-polling, which the note does not rate."""

TECHNOLOGY_OF: dict[str, str] = {t: tech.name for tech in TECHNOLOGIES for t in tech.transports}


def technology_of(transport: str) -> str | None:
    """The note's technology a transport carries: ``ws@elysia`` (our Elysia server) is
    WebSockets like ``ws``."""
    return TECHNOLOGY_OF.get(transport) or TECHNOLOGY_OF.get(transport.partition("@")[0])


@dataclass(frozen=True)
class Cited:
    """Stars that are not measured here, with the reason and its sources."""

    stars: int
    reason: str
    sources: tuple[str, ...]


BROWSER_RULE = ("5 = in every current engine for years (Baseline widely available); "
                "4 = in every current engine, recently (Baseline newly available); "
                "3 = missing in one major engine; 2 = one engine family only; 1 = behind flags")
BROWSER: dict[str, Cited] = {
    "WebSockets": Cited(5, "every current engine since 2015", ("caniuse-websockets",
                                                              "mdn-websocket-ctor")),
    "Socket.IO": Cited(5, "a library over WebSocket with HTTP long-polling as fallback: runs "
                          "wherever either does", ("socketio-how",)),
    "WebTransport": Cited(4, "Chrome 97, Edge 97, Firefox 114, Safari 26.4: in every engine "
                             "only since 2026-03", ("wf-webtransport", "caniuse-webtransport")),
    "SSE": Cited(5, "Chrome 6, Firefox 6, Safari 5, Edge 79", ("wf-sse", "caniuse-eventsource")),
    "WebRTC": Cited(5, "RTCDataChannel in every current engine", ("mdn-rtcdatachannel",
                                                                  "caniuse-webrtc")),
    "Long-polling": Cited(5, "plain HTTP requests (fetch): no special API", ("mdn-fetch",)),
}

FRAMEWORK_RULE = ("5 = first-class API in Elysia's core; 4 = built from core primitives inside "
                  "a handler; 2 = through an adapter outside Elysia; 1 = not documented")
FRAMEWORK: dict[str, Cited] = {
    "WebSockets": Cited(5, "built in: Elysia.ws() on Bun's uWebSockets; no plugin needed",
                        ("elysia-ws",)),
    "Socket.IO": Cited(2, "not in Elysia; the official @socket.io/bun-engine binds to Bun's "
                          "server beside it", ("socketio-bun",)),
    "WebTransport": Cited(1, "no WebTransport in Elysia's docs", ("elysia-ws",)),
    "SSE": Cited(4, "streamed generator responses; the event-stream framing is the handler's",
                 ("elysia-stream",)),
    "WebRTC": Cited(1, "no WebRTC in Elysia's docs (signalling is a plain route, the peer is "
                       "another server)", ("elysia-ws",)),
    "Long-polling": Cited(4, "an ordinary route that awaits the next message",
                          ("elysia-stream",)),
}


@dataclass(frozen=True)
class Handshake:
    """Round trips from the first packet to the first server message, as deployed."""

    round_trips: int
    how: str
    sources: tuple[str, ...]


HANDSHAKES: dict[str, Handshake] = {
    "ws": Handshake(3, "TCP + TLS 1.3 + HTTP Upgrade (101, then hello)", ("rfc6455", "rfc8446")),
    "ws-websockets": Handshake(3, "TCP + TLS 1.3 + HTTP Upgrade", ("rfc6455", "rfc8446")),
    "sse": Handshake(3, "TCP + TLS 1.3 + GET (200, then the hello event)",
                     ("whatwg-sse", "rfc8446")),
    "longpoll": Handshake(3, "TCP + TLS 1.3 + first GET /poll (answers hello); every later "
                             "delivery waits for the next poll", ("rfc8446",)),
    "socketio": Handshake(4, "TCP + TLS 1.3 + WebSocket upgrade (Engine.IO open) + Socket.IO "
                             "CONNECT; the default client polls first and upgrades later (+2)",
                          ("socketio-protocol", "socketio-how")),
    "socketio-polling": Handshake(4, "TCP + TLS 1.3 + GET (Engine.IO open) + POST CONNECT / "
                                     "GET its ack", ("socketio-protocol",)),
    "webtransport": Handshake(3, "QUIC with TLS 1.3 inside + extended CONNECT + the client's "
                                 "stream answered with hello", ("rfc9000",
                                                                "ietf-webtrans-http3")),
    "webrtc": Handshake(8, "HTTPS signalling (3) + ICE check (1) + DTLS (2) + SCTP (2), "
                           "before the data channel opens", ("rfc8445", "rfc8831")),
}

BIDIRECTIONAL: dict[str, float] = {
    "ws": 1.0, "ws-websockets": 1.0, "socketio": 1.0, "webtransport": 1.0, "webrtc": 1.0,
    "sse": 0.5, "longpoll": 0.5, "socketio-polling": 0.5,
}
"""1 = one full-duplex connection; 0.5 = a server-to-client stream or poll plus separate
HTTP requests upstream (the contract's POST /publish and /echo)."""


@dataclass(frozen=True)
class Framing:
    """The least a protocol adds around one server-to-client message, from its spec."""

    bytes: int
    how: str
    sources: tuple[str, ...]


SPEC_FRAMING: dict[str, Framing] = {
    "ws": Framing(2, "server frame header, unmasked, payload under 126 B (4 B up to 64 KiB)",
                  ("rfc6455",)),
    "ws-websockets": Framing(2, "as ws", ("rfc6455",)),
    "sse": Framing(8, "'data: ' and the blank line ending the event (the contract adds 'id:' "
                      "and 'event:' lines)", ("whatwg-sse",)),
    "longpoll": Framing(0, "an HTTP response per poll: status line, headers and the JSON "
                           "wrapper, shared by the messages of that poll", ("mdn-fetch",)),
    "socketio": Framing(4, "WebSocket header plus the Engine.IO '4' and Socket.IO '2' packet "
                           "types and the event name", ("socketio-protocol", "rfc6455")),
    "socketio-polling": Framing(0, "an HTTP response per poll, Engine.IO packets inside",
                                ("socketio-protocol",)),
    "webtransport": Framing(1, "the newline ending the envelope on the stream (QUIC adds a "
                               "short header, a STREAM frame and a 16 B AEAD tag per packet)",
                            ("ietf-webtrans-http3", "rfc9000")),
    "webrtc": Framing(28, "SCTP common header and DATA chunk (DTLS adds its record header)",
                      ("rfc8831",)),
}
"""Minimum framing per delivered message, to compare with what the overhead scenario counts
(which also holds the contract's JSON envelope and amortised handshakes)."""
