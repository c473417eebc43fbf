"""``claims.md``: every claim of the design note, as data, with a verdict computed from this run.

``CLAIMS`` is one table: each record quotes the note, says the claim in English and names the
rule (``sobranie_bench.report.rules``) that judges it: the metric(s), the comparator, the
threshold with its reason, and the scenario / network profile it reads, or the tests it rests
on, or the public source it cites. No verdict is written here: ``judge_all`` computes them
from the results and the recorded test run (the newest JUnit XML under ``results/tests``).
``notes`` are context shown beside the evidence; they never decide a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sobranie_bench.clients import TRANSPORTS
from sobranie_bench.report import rules, text
from sobranie_bench.report.data import Results
from sobranie_bench.report.rules import (
    CITED,
    CONFIRMED,
    FAILED,
    NOT_MEASURED,
    NOT_TESTED,
    REFUTED,
    VERDICTS,
    AllOf,
    Browser,
    Cited,
    CodeRatio,
    Context,
    Model,
    NearBest,
    Prefer,
    Ratio,
    Ref,
    Rule,
    SseProbe,
    Stars,
    Tests,
    Threshold,
    model,
)
from sobranie_bench.report.sources import (
    COLUMN_TITLES,
    COLUMNS,
    TECHNOLOGIES,
    TECHNOLOGY_OF,
    Technology,
    technology_of,
)

__all__ = ["CITED", "CLAIMS", "CONFIRMED", "FAILED", "NOT_MEASURED", "NOT_TESTED", "REFUTED",
           "VERDICTS", "Claim", "Verdict", "judge_all", "render", "write"]

TRANSPORTS_TESTS = "tests/servers/test_transports.py"
WEBTRANSPORT_TESTS = "tests/servers/test_webtransport.py"
BROKER_TESTS = "tests/servers/test_brokers.py"
ELYSIA_PLUGIN_TEST = ("tests/servers/test_elysia.py::"
                      "test_elysia_core_serves_websockets_without_the_plugin")
ELYSIA_PLUGIN_CHECKED = (
    "checked against the npm registry and the installed packages: the record "
    "`servers/elysia/plugin-check.json` (comparison.md quotes it) and test "
    f"`{ELYSIA_PLUGIN_TEST}`")


def node(path: str, name: str, param: str | None = None) -> str:
    """A test node id, e.g. ``tests/servers/test_transports.py::test_x[ws]``."""
    return f"{path}::{name}" + (f"[{param}]" if param else "")


def t_transports(name: str, *params: str) -> tuple[str, ...]:
    return tuple(node(TRANSPORTS_TESTS, name, p) for p in params)


@dataclass(frozen=True)
class Claim:
    """One claim of the note and the rule that judges it."""

    id: str
    """Stable id (``ws-latency``)."""
    topic: str
    """WebSockets, Socket.IO, WebTransport, SSE, WebRTC, Code, Stack or Comparison table."""
    kind: str
    """pro, con, table, code or stack."""
    quote: str
    """The note's words (Russian, as written)."""
    claim: str
    """The claim in English, as the rule judges it."""
    rule: Rule
    """What decides the verdict (``rules``)."""
    notes: tuple[str, ...] = ()
    """Context shown with the evidence; never part of the verdict."""


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict on this run."""

    verdict: str
    """One of VERDICTS."""
    basis: str
    """measured, counted, modelled, tested or cited."""
    evidence: tuple[str, ...]
    """The rule, the figures read, test outcomes, sources, then the claim's notes."""


def _echo(t: str, metric: str) -> Ref:
    return Ref(t, "echo", metric)


def _bytes(t: str, metric: str, payload: int) -> Ref:
    return Ref(t, "overhead", metric, (("payload", payload),))


NETWORK = "4g"
"""The emulated network latency claims are judged on where it was run (``run --network 4g``:
70 ms RTT, 0.5% loss); loopback otherwise, labelled."""


def _on_network(a: Ref, b: Ref, op: rules.Op, threshold: float, why: str) -> Prefer:
    """``a / b`` on the emulated 4g link where it ran, else on loopback."""
    net = [Ref(r.transport, r.scenario, r.metric, r.match, NETWORK) for r in (a, b)]
    return Prefer((Ratio(net[0], net[1], op, threshold, why), Ratio(a, b, op, threshold, why)))


def _faster(t: str) -> AllOf:
    why = "10% better than WebSocket, beyond the spread of trials"
    cpu = "server_cpu_us_per_msg"  # the server's own cost: the network does not change it
    return AllOf((*(_on_network(_echo(t, m), _echo("ws", m), "<", 0.9, why)
                    for m in ("rtt_p50_us", "rtt_p99_us")),
                  Ratio(_echo(t, cpu), _echo("ws", cpu), "<", 0.9, why)))


def _cluster(t: str, scenario: str, metric: str) -> Ref:
    return Ref(t, scenario, metric, broker="redis")


def _crosses_instances(*transports: str) -> tuple[Threshold, ...]:
    """Fan-out in the cluster run: deliveries reached subscribers of other instances through
    the broker, and none was lost."""
    return tuple(rule for t in transports for rule in (
        Threshold(_cluster(t, "fanout", "latency_remote_count"), ">", 0,
                  "deliveries reached subscribers held by another instance"),
        Threshold(_cluster(t, "fanout", "lost"), "<=", 0, "none lost on the way")))


def elysia_contract(transport: str) -> tuple[str, ...]:
    """The contract tests an Elysia adapter passes (order, ids, acks, resume, auth)."""
    return t_transports("test_publish_delivers_in_order_with_ids_and_acks", transport) \
        + t_transports("test_resume_after_drop_replays_exactly_the_missed", transport) \
        + t_transports("test_unauthorized_without_valid_token", transport)


NOT_WEBKIT = ("Safari (WebKit) is not run here: the engines installed are Chromium and Firefox "
              "(comparison.md cites the breadth across engines and versions)")


LOW_LATENCY_US = 100_000
"""100 ms: below it a reply feels instantaneous (the classic response-time limit)."""
NEAR_BEST_SLACK_US = 20_000
"""A p99 gap below this is one nobody feels in a chat or a feed (a frame at 60 Hz is 17 ms)."""

CLAIMS: tuple[Claim, ...] = (
    # --- WebSockets ---------------------------------------------------------------------------
    Claim("ws-duplex", "WebSockets", "pro", "Полнодуплексная связь",
          "Full-duplex communication.",
          Tests(t_transports("test_echo_goes_to_sender_only", "ws")
                + t_transports("test_publish_delivers_in_order_with_ids_and_acks", "ws"),
                shows="one WebSocket carries publishes, acks, echoes and deliveries both ways"),
          ("SSE and long-polling need separate POSTs upstream", f"source: {rules.cite('rfc6455')}")),
    Claim("ws-latency", "WebSockets", "pro", "Низкая задержка", "Low latency.",
          AllOf((Threshold(_echo("ws", "rtt_p99_us"), "<", LOW_LATENCY_US,
                           "under 100 ms a reply feels instantaneous"),
                 NearBest(_echo("ws", "rtt_p99_us"), 1.5,
                          "'low' means among the fastest transports measured; a gap under "
                          "20 ms is not felt in a chat or a feed", slack=NEAR_BEST_SLACK_US)))),
    Claim("ws-browsers", "WebSockets", "pro", "Поддержка во всех современных браузерах",
          "Supported in every modern browser.",
          Browser(("ws", "ws-websockets", "ws@elysia"),
                  "every tab of every engine does the whole check, for each WebSocket server"),
          (NOT_WEBKIT, f"source: {rules.cite('caniuse-websockets')}")),
    Claim("ws-elysia", "WebSockets", "pro",
          "Отличная поддержка в Elysia через `@elysiajs/websocket`",
          "Excellent Elysia support (the note: through `@elysiajs/websocket`).",
          AllOf((Tests(elysia_contract("ws@elysia"),
                       shows="Elysia's own `.ws()` carries the whole contract"),
                 NearBest(_echo("ws@elysia", "rtt_p99_us"), 1.5,
                          "'excellent' means among the fastest servers measured"))),
          ("not through that 0.x plugin: `.ws()` is built in (claim code-elysia-plugin)",
           ELYSIA_PLUGIN_CHECKED)),
    Claim("ws-simple", "WebSockets", "pro", "Простая реализация", "Simple to implement.",
          CodeRatio("ws", "smallest", "<=", 2.0,
                    "within twice the code of the smallest transport in the suite"),
          ("reconnection, resume and backoff are in the shared client base class, not counted",)),
    Claim("ws-proxies", "WebSockets", "con", "Проблемы с прокси и файрволлами",
          "Trouble with proxies and firewalls.",
          Cited(("rfc6455", "rfc8441", "rfc9220"),
                "intermediaries must pass the HTTP/1.1 Upgrade (or speak RFC 8441/9220); over "
                "wss:// on 443 most see only TLS; no proxy sits in this suite's loopback")),
    Claim("ws-no-reconnect", "WebSockets", "con", "Нет встроенной поддержки переподключения",
          "No built-in reconnection.",
          Cited(("whatwg-websockets",), "a closed WebSocket stays closed; EventSource, by "
                "contrast, reconnects by itself", True),
          (("our client reconnects with backoff and resumes with `since`: code the application "
           "has to write"),)),
    Claim("ws-scaling", "WebSockets", "con",
          "Сложности с масштабированием (нужен sticky sessions или Redis)",
          "Scaling out needs a broker such as Redis (or sticky sessions).",
          AllOf((Tests((node(BROKER_TESTS, "test_contract_across_two_servers_over_real_sockets",
                             "redis"),
                        node(BROKER_TESTS, "test_resume_through_another_instance_loses_nothing",
                             "redis")),
                       shows="two instances over Redis keep the contract, and a client "
                             "resumes through another instance: a broker is needed, "
                             "stickiness is not"),
                 *_crosses_instances("ws"))),
          (("the broker is needed for every transport that fans out across instances, SSE "
           "included"),)),
    # --- Socket.IO ----------------------------------------------------------------------------
    Claim("sio-reconnect", "Socket.IO", "pro", "Автоматическое переподключение",
          "Automatic reconnection.",
          Tests(t_transports("test_resume_after_drop_replays_exactly_the_missed", "socketio"),
                shows="the Socket.IO client reconnects and, with the contract's ids, resumes"),
          (f"delivery is at most once by default ({rules.cite('socketio-delivery')})",)),
    Claim("sio-fallback", "Socket.IO", "pro", "Fallback на long-polling",
          "Falls back to long-polling.",
          Tests(t_transports("test_publish_delivers_in_order_with_ids_and_acks",
                             "socketio-polling"),
                shows="the polling transport alone carries the whole contract")),
    Claim("sio-rooms", "Socket.IO", "pro", "Комнаты и пространства имен",
          "Rooms and namespaces.",
          Cited(("socketio-rooms",), "rooms and namespaces are in the protocol", True),
          ("not unique to it: the contract's channels give every transport the same",)),
    Claim("sio-acks", "Socket.IO", "pro", "Подтверждения доставки",
          "Delivery acknowledgements.",
          Tests(t_transports("test_publish_delivers_in_order_with_ids_and_acks", "socketio"),
                shows="every publish is acknowledged"),
          ((f"an ack says the server handled it, not that subscribers got it "
           f"({rules.cite('socketio-delivery')})"),)),
    Claim("sio-binary", "Socket.IO", "pro", "Бинарные данные", "Binary data.",
          Cited(("socketio-binary",), "binary attachments are part of the protocol", True)),
    Claim("sio-community", "Socket.IO", "pro", "Большое сообщество", "Large community.",
          Cited(("socketio-how",), "popularity is outside what this suite measures; it says "
                "nothing about cost or latency")),
    Claim("sio-overhead", "Socket.IO", "con", "Больший overhead (дополнительный протокол)",
          "Bigger overhead (an extra protocol).",
          AllOf(tuple(Ratio(_bytes("socketio", "bytes_per_msg", pl),
                            _bytes("ws", "bytes_per_msg", pl), ">", 1.05,
                            "5% more bytes on the wire, beyond the counters' framing noise")
                      for pl in (64, 4096)))),
    Claim("sio-elysia", "Socket.IO", "con", "Нет нативной поддержки в Elysia (нужен адаптер)",
          "No native Elysia support (needs an adapter).",
          Cited(("socketio-bun", "elysia-ws"), "Socket.IO's Bun engine is a separate adapter",
                True)),
    Claim("sio-resources", "Socket.IO", "con", "Больше потребляет ресурсов",
          "Uses more resources.",
          AllOf((Ratio(_echo("socketio", "server_cpu_us_per_msg"),
                       _echo("ws", "server_cpu_us_per_msg"), ">", 1.1,
                       "10% more CPU per message than WebSocket, beyond trial spread"),
                 Ratio(Ref("socketio", "connections", "server_rss_bytes_per_conn"),
                       Ref("ws", "connections", "server_rss_bytes_per_conn"), ">", 1.1,
                       "10% more memory per connection")))),
    # --- WebTransport -------------------------------------------------------------------------
    Claim("wt-http3", "WebTransport", "pro", "Использует HTTP/3 и QUIC",
          "Uses HTTP/3 and QUIC.",
          Tests(t_transports("test_publish_delivers_in_order_with_ids_and_acks", "webtransport"),
                shows="the contract runs over aioquic's HTTP/3"),
          (f"source: {rules.cite('w3c-webtransport', 'ietf-webtrans-http3', 'rfc9000')}",)),
    Claim("wt-performance", "WebTransport", "pro", "Лучшая производительность",
          "Better performance than WebSocket.", _faster("webtransport"),
          (("loopback has no loss: QUIC's independent streams would help there; its user-space "
           "stack (aioquic) costs CPU"),)),
    Claim("wt-streams", "WebTransport", "pro", "Поддержка множественных потоков",
          "Many streams in one session.",
          Tests((node(WEBTRANSPORT_TESTS, "test_per_channel_delivery_puts_each_channel_on_a_"
                      "stream_of_its_own"),
                 node(WEBTRANSPORT_TESTS, "test_unreliable_delivery_sends_messages_as_datagrams")),
                shows="one session carries a server-opened stream per channel, each in order, "
                      "and datagrams beside them"),
          (f"source: {rules.cite('w3c-webtransport', 'webtransport-explainer')}",
           ("what a stream per flow buys under loss (no head-of-line blocking across flows) is "
            "measured by the hol scenario (network.md)"))),
    Claim("wt-udp", "WebTransport", "pro", "Работает через UDP (меньше задержка)",
          "Runs over UDP (lower latency).",
          _on_network(_echo("webtransport", "rtt_p99_us"), _echo("ws", "rtt_p99_us"), "<", 0.9,
                      "UDP spares the wait for TCP's in-order retransmission when a packet is "
                      "lost: a tail 10% below WebSocket's"),
          ("the median is judged in wt-performance",)),
    Claim("wt-future", "WebTransport", "pro", "Будущее real-time веба",
          "The future of the real-time web.",
          Cited(("wf-webtransport",), "a forecast, not a testable claim; in every engine only "
                "since 2026")),
    Claim("wt-browsers", "WebTransport", "con",
          "Очень ограниченная поддержка браузерами (только Chrome/Edge)",
          "Very limited browser support (Chrome and Edge only).",
          Browser(("webtransport",), "the claim holds only if it fails outside Chromium",
                  works=False, engines=("firefox",)),
          (("Safari (WebKit) is not run here; sources give Chrome 97, Edge 97, Firefox 114, "
            f"Safari 26.4 ({rules.cite('wf-webtransport')})"),)),
    Claim("wt-certificate", "WebTransport", "con", "Требует HTTPS с валидным сертификатом",
          "Needs HTTPS with a CA-signed certificate.",
          Tests((node(WEBTRANSPORT_TESTS,
                      "test_self_signed_certificate_fits_server_certificate_hashes"),
                 node(WEBTRANSPORT_TESTS, "test_cert_hash_is_served_and_pinned")),
                passing=REFUTED,
                shows="a short-lived self-signed certificate pinned by serverCertificateHashes "
                      "works; TLS itself is mandatory")),
    Claim("wt-setup", "WebTransport", "con", "Сложная настройка", "Complex set-up.",
          CodeRatio("webtransport", "ws", ">", 2.0, "more than twice the WebSocket code"),
          ("plus UDP/443 open, certificates, an HTTP/3-capable load balancer",)),
    Claim("wt-libraries", "WebTransport", "con", "Мало библиотек и примеров",
          "Few libraries and examples.",
          Cited(("elysia-ws", "socketio-bun"), "server libraries exist (aioquic, used here), "
                "but none in Elysia or Socket.IO's Bun engine")),
    # --- SSE ----------------------------------------------------------------------------------
    Claim("sse-simple", "SSE", "pro", "Простота реализации", "Simple to implement.",
          CodeRatio("sse", "smallest", "<=", 1.5,
                    "within 1.5× the code of the smallest transport"),
          ("the upstream half (POST /publish, /echo) is shared HTTP code, not counted",)),
    Claim("sse-http", "SSE", "pro", "Работает через обычный HTTP", "Works over plain HTTP.",
          Tests(t_transports("test_unauthorized_without_valid_token", "sse"),
                shows="a plain GET, refused with 401 without a token")),
    Claim("sse-reconnect", "SSE", "pro", "Автоматическое переподключение",
          "Automatic reconnection.",
          AllOf((Tests(t_transports("test_resume_after_drop_replays_exactly_the_missed", "sse"),
                       shows="a dropped stream resumes from Last-Event-ID"),
                 Threshold(Ref("sse", "churn", "lost"), "<=", 0,
                           "nothing lost while clients come and go"))),
          (f"source: {rules.cite('whatwg-sse')}",)),
    Claim("sse-elysia", "SSE", "pro", "Отличная поддержка в Elysia",
          "Excellent Elysia support.",
          Tests(elysia_contract("sse@elysia"),
                shows="an Elysia streamed response carries the whole contract, Last-Event-ID "
                      "resume included"),
          ((f"streamed responses are core Elysia ({rules.cite('elysia-stream')}); the "
            "event-stream framing and the resume are the handler's code"),)),
    Claim("sse-proxies", "SSE", "pro", "Легко проходит через прокси", "Passes proxies easily.",
          SseProbe(("sse", "sse@elysia"), "a reverse proxy in front passes the streams as they "
                   "come", over="proxy"),
          ((f"a buffering proxy holds events back unless buffering is off for the stream "
            f"({rules.cite('nginx-buffering')}); HAProxy does not buffer"),)),
    Claim("sse-one-way", "SSE", "con", "Только односторонняя связь (сервер → клиент)",
          "One-way only: sending upstream costs a separate request.",
          Ratio(_bytes("sse", "bytes_up_per_msg", 64), _bytes("ws", "bytes_up_per_msg", 64),
                ">", 1.5, "an upstream POST with HTTP headers costs well over a frame")),
    Claim("sse-six", "SSE", "con", "Ограничение на количество соединений (6 на домен)",
          "At most 6 connections per domain (a browser's HTTP/1.1 limit per host).",
          SseProbe(("sse", "sse@elysia"), "browsers keep 6 HTTP/1.1 connections per host"),
          ((f"over HTTP/2 the streams share one connection and the limit goes "
            f"({rules.cite('mdn-eventsource')}): measured in claim sse-proxies"),)),
    Claim("sse-text", "SSE", "con", "Только текстовые данные", "Text only.",
          Cited(("whatwg-sse",), "the stream is decoded as UTF-8; binary needs base64", True)),
    # --- WebRTC -------------------------------------------------------------------------------
    Claim("rtc-p2p", "WebRTC", "pro", "P2P соединения (снижает нагрузку на сервер)",
          "Peer-to-peer (lowers server load).",
          Cited(("rfc8656",), "for calls between two, yes; for fan-out a mesh uploads N times "
                "and symmetric NATs relay through TURN, which is server load again")),
    Claim("rtc-calls", "WebRTC", "pro", "Отлично для видео/аудио звонков",
          "Great for audio and video calls.",
          Cited(("rfc8827",), "what it is built for; no media in this suite", True)),
    Claim("rtc-latency", "WebRTC", "pro", "Низкая задержка", "Low latency (vs WebSocket).",
          _faster("webrtc")),
    Claim("rtc-encrypted", "WebRTC", "pro", "Шифрование по умолчанию", "Encrypted by default.",
          Cited(("rfc8827", "rfc8831"), "DTLS is mandatory", True)),
    Claim("rtc-complex", "WebRTC", "con", "Сложная реализация", "Complex to implement.",
          CodeRatio("webrtc", "ws", ">", 1.5, "half again the WebSocket code"),
          (("ICE, DTLS and SCTP take several round trips before the first message "
           "(comparison.md)"),)),
    Claim("rtc-stun-turn", "WebRTC", "con", "Требует STUN/TURN серверы",
          "Needs STUN/TURN servers.",
          Cited(("rfc8445", "rfc8656"), "on the internet ICE needs STUN and TURN; on one host, "
                "host candidates do", True)),
    Claim("rtc-ordinary-data", "WebRTC", "con", "Не подходит для обычных данных",
          "Costly for ordinary client-server data.",
          AllOf((Ratio(Ref("webrtc", "connections", "connect_p50_us"),
                       Ref("ws", "connections", "connect_p50_us"), ">", 2.0,
                       "connecting takes over twice as long as a WebSocket"),
                 Ratio(Ref("webrtc", "connections", "server_rss_bytes_per_conn"),
                       Ref("ws", "connections", "server_rss_bytes_per_conn"), ">", 2.0,
                       "over twice the server memory per connection"))),
          (f"data channels carry any data ({rules.cite('rfc8831')})",)),
    Claim("rtc-nat", "WebRTC", "con", "Проблемы с NAT", "NAT trouble.",
          Cited(("rfc8445", "rfc8656"), "symmetric NATs need a TURN relay; loopback has no NAT",
                True)),
    # --- the note's code ----------------------------------------------------------------------
    Claim("code-ws-header", "Code", "code",
          "new WebSocket(wsUrl, { headers: { 'Authorization': `Bearer ${token}` } })",
          "A browser WebSocket can send an Authorization header.",
          Cited(("mdn-websocket-ctor", "whatwg-websockets"),
                "the constructor takes a URL and subprotocols only", False),
          (("our servers take `?token=`: "
           f"`{t_transports('test_unauthorized_without_valid_token', 'ws')[0]}`"),)),
    Claim("code-sse-header", "Code", "code",
          "new EventSource(url, { headers: { 'Authorization': `Bearer ${token}` } })",
          "A browser EventSource can send an Authorization header.",
          Cited(("mdn-eventsource-ctor", "whatwg-sse"),
                "EventSource's options hold `withCredentials` only", False)),
    Claim("code-db-polling", "Code", "code",
          "setInterval(() => prisma.notifications.findMany({ createdAt: { gt: Date.now() - 5000 } "
          "}), 5000)",
          "Polling the database every 5 s in each SSE stream is a fit way to deliver "
          "notifications.",
          Model("poll-wait-over-push", ">", 10.0,
                "a mean poll wait 10× the pushed fan-out p99 makes the poll the delay",
                holds=REFUTED),
          (("the `createdAt > now - 5000` window drifts with the timer: rows can be missed or "
           "sent twice; per-channel ids and resume avoid both"),)),
    Claim("code-open-subscribe", "Code", "code",
          "case 'subscribe': ws.subscribe(message.channel)  // no check",
          "Letting any user subscribe to any channel is acceptable.",
          Tests(t_transports("test_forbidden_for_another_users_private_channel", "ws", "sse"),
                passing=REFUTED,
                shows="the contract keeps `user:<id>` private; unchecked, anyone reads "
                      "another user's notifications")),
    Claim("code-elysia-plugin", "Code", "code",
          "bun add @elysiajs/websocket; new Elysia().use(websocket()).ws(...)",
          "The WebSocket plugin must be installed and registered.",
          AllOf((Cited(("elysia-ws", "npm-elysia-websocket"),
                       "outdated: `.ws()` is built into Elysia; the plugin belongs to 0.x", False),
                 Tests((ELYSIA_PLUGIN_TEST,), passing=REFUTED,
                       shows="the pinned Elysia, with no plugin installed, serves a WebSocket "
                             "through its own `.ws()`"))),
          (ELYSIA_PLUGIN_CHECKED,)),
    Claim("code-backoff", "Code", "code",
          "setTimeout(connect, this.reconnectTimeout); this.reconnectTimeout = "
          "Math.min(this.reconnectTimeout * 2, 30000)",
          "Doubling the reconnect delay without jitter is enough for a reconnect storm.",
          Model("storm-peak-no-jitter-over-jitter", ">", 1.5,
                "without jitter the handshake peak is 1.5× (or more) the jittered one",
                holds=REFUTED),
          ("and no resume: what was published during the gap is lost without `since`",)),
    Claim("code-global-presence", "Code", "code",
          "open(ws) { ws.publish('presence', { userId, status: 'online' }) }",
          "Broadcasting presence on one global topic is viable.",
          Model("presence-global-over-scoped", ">", 10.0,
                "a global topic costing 10× the friend-scoped deliveries is not viable",
                holds=REFUTED)),
    # --- the note's stack ---------------------------------------------------------------------
    Claim("stack-ws-sse", "Stack", "stack", "Основной стек: WebSockets + SSE",
          "Main stack: WebSockets for two-way features, SSE for one-way updates.",
          Model("note-stack-agreement", ">=", 5,
                "all 5 measurable features get the note's technology in recommendation.md")),
    Claim("stack-redis", "Stack", "stack", "Использовать Redis для PubSub между инстансами",
          "Redis pub/sub between instances.",
          AllOf((Tests((node(BROKER_TESTS, "test_contract_across_two_servers_over_real_sockets",
                             "redis"),
                        node(BROKER_TESTS, "test_resume_through_another_instance_loses_nothing",
                             "redis")),
                       shows="two instances over a real Redis keep the contract"),
                 *_crosses_instances("ws", "sse"))),
          ("pub/sub alone keeps no history: resume needs a stream beside it",)),
    Claim("stack-sticky", "Stack", "stack", "Sticky sessions для WebSocket соединений",
          "WebSocket connections need sticky sessions.",
          AllOf((Tests((node(BROKER_TESTS, "test_resume_through_another_instance_loses_nothing",
                             "redis"),), passing=REFUTED,
                       shows="a client reconnecting to another instance resumes and loses "
                             "nothing"),
                 Threshold(_cluster("ws", "failover", "lost"), "<=", 0,
                           "an instance killed mid-run: its clients reconnect to the others "
                           "and lose nothing", holds=REFUTED),
                 Threshold(_cluster("ws", "failover", "not_recovered"), "<=", 0,
                           "every client cut off got back", holds=REFUTED))),
          ((f"only multi-request transports (long-polling) need affinity "
           f"({rules.cite('socketio-nodes')})"),)),
    Claim("stack-lb", "Stack", "stack", "Horizontal scaling через load balancer",
          "Scale horizontally behind a load balancer.",
          Model("note-stack-instances", ">=", 2,
                "1M online users need more than one process, so a balancer in front")),
)

def _cell_rule(tech: Technology, column: str, note: int) -> Rule:
    """A cell of the note's table: our stars against the note's, except where something is
    measured or tested that decides the cell directly: the browser column from the engines
    run here (3-5 stars: works in every one; 2 or fewer: fails outside Chromium), and the
    Elysia column of a technology with an Elysia adapter (3+ stars: its contract tests pass)."""
    if column == "browser":
        if note >= 3:
            return Browser(tech.transports, f"the note's {note} stars: it works in every engine")
        return Browser(tech.transports, f"the note's {note} stars: limited to Chromium",
                       works=False, engines=("firefox",))
    elysia = [f"{t}@elysia" for t in tech.transports if f"{t}@elysia" in TRANSPORTS]
    if column == "framework" and elysia:
        return Tests(elysia_contract(elysia[0]), CONFIRMED if note >= 3 else REFUTED,
                     f"{elysia[0]}, our Elysia server, carries the whole contract")
    return Stars(tech.name, column)


TABLE_CLAIMS: tuple[Claim, ...] = tuple(
    Claim(f"table-{tech.name.lower().replace('.', '')}-{col}", "Comparison table", "table",
          f"{tech.name}: {COLUMN_TITLES[col]} {'⭐' * tech.note_stars[col]}",
          f"{tech.name} deserves {tech.note_stars[col]} stars for {COLUMN_TITLES[col].lower()}.",
          _cell_rule(tech, col, tech.note_stars[col]))
    for tech in TECHNOLOGIES if tech.note_stars is not None for col in COLUMNS)


# --- models the rules name -------------------------------------------------------------------

POLL_INTERVAL_S = 5.0


@model("poll-wait-over-push")
def _poll_wait(ctx: Context) -> tuple[float | None, tuple[str, ...]]:
    from sobranie_bench.capacity import Workload

    for t in ("sse", "ws"):
        p99 = rules.figure(ctx.res, Ref(t, "fanout", "latency_p99_us"))
        if p99 is not None:
            online = Workload().online_users
            return POLL_INTERVAL_S * 1e6 / 2 / p99.value, (
                (f"arithmetic: the mean poll wait is {POLL_INTERVAL_S / 2:g} s; pushed through "
                f"the hub, {t} fan-out p99 is {text.measured(p99, 'ms')} (run {p99.run_id})"),
                (f"arithmetic: {online:,} streams polling every {POLL_INTERVAL_S:g} s make "
                f"{online / POLL_INTERVAL_S:,.0f} queries/s, nearly all finding nothing"))
    return None, ("fan-out not measured",)


def connect_rate(res: Results, transport: str = "ws") -> tuple[float | None, str]:
    """Handshakes per second one core completes, from the measured server CPU per
    connection (the connections scenario): 1e6 / µs per connection."""
    fig = rules.figure(res, Ref(transport, "connections", "server_cpu_us_per_conn"))
    if fig is None or fig.value <= 0:
        return None, f"{transport} server CPU per connection not measured"
    return 1e6 / fig.value, (f"figure: {transport} server CPU per connection "
                             f"{text.measured(fig, 'num')} µs → {1e6 / fig.value:,.0f} "
                             f"handshakes/s per core (run {fig.run_id})")


@model("storm-peak-no-jitter-over-jitter")
def _storm(ctx: Context) -> tuple[float | None, tuple[str, ...]]:
    from sobranie_bench.capacity import storm

    rate, line = connect_rate(ctx.res)
    if rate is None:
        return None, (line,)
    clients = 100_000
    none, jitter = (storm(clients, instances=10, strategy=s, connect_capacity_per_s=rate)
                    for s in ("none", "full_jitter"))
    ratio = none.peak_attempts_per_s / max(jitter.peak_attempts_per_s, 1e-9)
    return ratio, (line, (
        f"model: {clients:,} clients losing their instance together (10 instances): peak "
        f"attempts {none.peak_attempts_per_s:,.0f}/s without jitter "
        f"({none.peak_over_capacity:.1f}× capacity handled), {jitter.peak_attempts_per_s:,.0f}/s "
        f"with full jitter; recovered in {none.time_to_recover_s or float('nan'):g} s vs "
        f"{jitter.time_to_recover_s or float('nan'):g} s (`sobranie_bench.capacity.storm`)"))


@model("presence-global-over-scoped")
def _presence(ctx: Context) -> tuple[float | None, tuple[str, ...]]:
    from sobranie_bench.capacity import Workload, aggregate_rates

    w = Workload()
    scoped = next(x for x in aggregate_rates(w) if x.feature == "presence")
    everyone = w.online_users * w.presence_rate_per_user_s * w.online_users
    return everyone / scoped.deliveries_per_s, (
        (f"model: at {w.online_users:,} online, friend-scoped presence ({w.friends_per_user} "
        f"friends) is {scoped.deliveries_per_s:,.0f} deliveries/s; one global topic "
        f"{everyone:,.0f}/s (`sobranie_bench.capacity.aggregate_rates`)"),)


@model("note-stack-agreement")
def _stack(ctx: Context) -> tuple[float | None, tuple[str, ...]]:
    from sobranie_bench.report import recommendation

    note_stack = recommendation.NOTE_CHOICE
    chosen = recommendation.choices(ctx.res)
    picked = {k: chosen[k].winner for k in note_stack if k in chosen}
    if not any(picked.values()):
        return None, ("nothing measured can be ranked yet",)
    agree = [k for k, t in note_stack.items()
             if picked.get(k) and technology_of(picked[k] or "") == TECHNOLOGY_OF.get(t)]
    return float(len(agree)), tuple(
        f"ours: {k} → {picked.get(k) or 'none meets the SLA'} (the note: {TECHNOLOGY_OF[t]})"
        for k, t in note_stack.items())


@model("note-stack-instances")
def _lb(ctx: Context) -> tuple[float | None, tuple[str, ...]]:
    from sobranie_bench.report import recommendation

    if ctx.res.empty:
        return None, ("no results to calibrate the capacity model",)
    cap = recommendation.capacity(ctx.res, recommendation.choices(ctx.res))
    if cap.note is None:
        return None, tuple(cap.notes) or ("no plan for the note's stack",)
    if cap.note.infeasible:  # a fleet no number of instances serves: no total to judge
        return None, tuple(f"model: {r.transport}: {r.reason}" for r in cap.note.infeasible)
    total = sum(f.instances for f in cap.note.fleets)
    return float(total), tuple(
        f"model: {f.transport} fleet for {', '.join(f.features)}: {f.instances} instances, "
        f"bound by {f.binding} (calibrated from run {ctx.res.main_run})"
        for f in cap.note.fleets)


# --- judging and rendering --------------------------------------------------------------------

def context(res: Results, test_run: rules.TestRun | None = None) -> Context:
    return Context(res, test_run if test_run is not None else rules.latest_test_run(res.root))


def judge_one(c: Claim, ctx: Context) -> Verdict:
    """The claim's verdict; a rule that raises is a *failed* verdict with its exception (the
    report still renders every other claim)."""
    try:
        out = rules.judge(c.rule, ctx)
    except Exception as exc:  # noqa: BLE001 - a failing rule is shown, never a quiet verdict
        return Verdict(FAILED, "measured", (f"the rule raised {type(exc).__name__}: {exc}",
                                            *c.notes))
    return Verdict(out.verdict, out.basis, (*out.evidence, *c.notes))


_JUDGED: dict[int, tuple[Results, list[tuple[Claim, Verdict]]]] = {}


def judge_all(res: Results, test_run: rules.TestRun | None = None
              ) -> list[tuple[Claim, Verdict]]:
    """Every claim judged; with the newest recorded test run, once per Results object (the
    claims page and both summaries ask)."""
    hit = _JUDGED.get(id(res)) if test_run is None else None
    if hit is not None and hit[0] is res:
        return list(hit[1])
    ctx = context(res, test_run)
    judged = [(c, judge_one(c, ctx)) for c in (*CLAIMS, *TABLE_CLAIMS)]
    if test_run is None:
        if len(_JUDGED) >= 4:
            _JUDGED.pop(next(iter(_JUDGED)))
        _JUDGED[id(res)] = (res, judged)
    return list(judged)


def counts(judged: list[tuple[Claim, Verdict]]) -> dict[str, int]:
    out = dict.fromkeys(VERDICTS, 0)
    for _, v in judged:
        out[v.verdict] += 1
    return out


KINDS = ("measured", "tested", "cited", "not measured", "not tested", "failed")


def kind(v: Verdict) -> str:
    """What a verdict rests on: ``measured`` (a confirmed/refuted from figures, code counts or
    a calibrated model), ``tested``, ``cited``, or what is missing."""
    if v.verdict in (CONFIRMED, REFUTED):
        return "tested" if v.basis == "tested" else "measured"
    return v.verdict


def kinds(judged: list[tuple[Claim, Verdict]]) -> dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for _, v in judged:
        out[kind(v)] += 1
    return out


def cited_tests() -> set[str]:
    """Every test node id any claim rests on or mentions (for checking they exist)."""
    import re

    found = {n for c in CLAIMS for n in rules.test_nodes(c.rule)}
    for c in CLAIMS:
        for item in c.notes:
            found.update(re.findall(r"`(tests/[^`]+::[^`]+)`", item))
    return found


TOPICS = ("WebSockets", "Socket.IO", "WebTransport", "SSE", "WebRTC", "Code", "Stack",
          "Comparison table")


def render(res: Results, test_run: rules.TestRun | None = None) -> str:
    ctx = context(res, test_run)
    judged = judge_all(res, test_run)
    n, k = counts(judged), kinds(judged)
    tests = (f"recorded test run {ctx.tests.timestamp} ({len(ctx.tests.outcomes)} tests, "
             f"`results/{rules.JUNIT_DIR}/{ctx.tests.path.name}`)" if ctx.tests.path
             else f"no recorded test run (no JUnit XML under results/{rules.JUNIT_DIR}/): "
                  "claims resting on tests are *not tested*")
    parts = [
        "# The note's claims, checked",
        "",
        (f"Generated by `sobranie-bench report` from run {res.main_run or '(none)'} and the "
         f"{tests}. Each claim names its rule (`sobranie_bench/report/claims.py`, vocabulary "
         "in `rules.py`): a metric, a comparator and a threshold with its reason, the "
         "scenario and network profile it reads; or the tests it rests on; or the source it "
         "cites. **confirmed** / **refuted** come from this run's figures, code counts, a "
         "model calibrated on this run, or tests that passed in the recorded test run; "
         "**cited** claims rest on the named source (never *confirmed*); **not measured** "
         "/ **not tested** mean the data or the test run is absent; **failed** means a test "
         "failed or a model raised."),
        "",
        ("By kind: " + ", ".join(f"**{v}** {name}" for name, v in k.items())
         + f" ({len(judged)} claims)."),
        "",
        "Totals: " + ", ".join(f"{v} {name}" for name, v in n.items())
        + f" ({len(judged)} claims).",
        "",
    ]
    for topic in TOPICS:
        items = [(c, v) for c, v in judged if c.topic == topic]
        if not items:
            continue
        parts += [f"## {topic}", ""]
        if topic == "Comparison table":
            parts += [text.table(["Cell (the note)", "Verdict", "Evidence"],
                                 [[c.quote, f"**{v.verdict}** ({v.basis})",
                                   "; ".join(v.evidence)] for c, v in items]), ""]
            continue
        rows = [[c.kind, f"{c.claim} «{c.quote}»", f"**{v.verdict}** ({v.basis})",
                 rules.judged_on(c.rule), "<br>".join(v.evidence)] for c, v in items]
        parts += [text.table(["Kind", "Claim (the note's words)", "Verdict", "Judged on",
                              "Evidence"], rows), ""]
    return "\n".join(parts)


def frame(res: Results) -> Any:
    """Every judged claim as a DataFrame: topic, kind, claim, verdict, basis, judged on."""
    import pandas as pd

    return pd.DataFrame.from_records(
        [{"id": c.id, "topic": c.topic, "kind": c.kind, "claim": c.claim, "verdict": v.verdict,
          "basis": v.basis, "rests on": kind(v), "judged on": rules.judged_on(c.rule)}
         for c, v in judge_all(res)]).set_index("id")


def write(res: Results, out_dir: Path) -> Path:
    path = Path(out_dir) / "claims.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(res))
    return path
