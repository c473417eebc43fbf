"""``claims.md``: every claim of the design note, with a verdict and its evidence.

A verdict is one of *confirmed*, *refuted*, *depends* (true under conditions the evidence
names) or *not measured yet* (the claim is about a measurement the results do not hold yet).
Where a claim is about something this suite measures, the verdict is computed from the results
(within one run); otherwise it rests on a test in the suite (named by its node id) or on a
cited public source. Each claim is a small judge function, so a new run can flip a verdict.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sobranie_bench.report import comparison, recommendation, text
from sobranie_bench.report.data import Measured, Results
from sobranie_bench.report.sources import COLUMN_TITLES, COLUMNS, TECHNOLOGIES, TECHNOLOGY_OF, cite

CONFIRMED, REFUTED, DEPENDS, NOT_MEASURED = "confirmed", "refuted", "depends", "not measured yet"
VERDICTS = (CONFIRMED, REFUTED, DEPENDS, NOT_MEASURED)

TRANSPORTS_TESTS = "tests/servers/test_transports.py"
SOCKETIO_TESTS = "tests/servers/test_socketio.py"
WEBTRANSPORT_TESTS = "tests/servers/test_webtransport.py"
BROKER_TESTS = "tests/servers/test_brokers.py"


def test(path: str, name: str, param: str | None = None) -> str:
    """A test node id as evidence, e.g. ``tests/servers/test_transports.py::test_x[ws]``."""
    node = f"{path}::{name}" + (f"[{param}]" if param else "")
    return f"test `{node}`"


@dataclass(frozen=True)
class Verdict:
    verdict: str
    """One of VERDICTS."""
    evidence: tuple[str, ...]
    """Markdown items: figures from our runs, test node ids, cited sources."""


@dataclass(frozen=True)
class Claim:
    id: str
    topic: str
    """WebSockets, Socket.IO, WebTransport, SSE, WebRTC, Comparison table, Code, Stack."""
    kind: str
    """pro, con, table, code or stack."""
    quote: str
    """The note's words (Russian)."""
    claim: str
    """The claim in English."""
    judge: Callable[[Context], Verdict] = field(repr=False)


@dataclass
class Context:
    """What the judges read: the results, and things derived from them once."""

    res: Results

    @functools.cached_property
    def table(self) -> dict[str, comparison.Row]:
        return {row.technology.name: row for row in comparison.rows(self.res)}

    @functools.cached_property
    def choices(self) -> dict[str, recommendation.Choice]:
        return recommendation.choices(self.res)


CLAIMS: list[Claim] = []


def claim(id: str, topic: str, kind: str, quote: str, english: str
          ) -> Callable[[Callable[[Context], Verdict]], Callable[[Context], Verdict]]:
    def register(judge: Callable[[Context], Verdict]) -> Callable[[Context], Verdict]:
        CLAIMS.append(Claim(id, topic, kind, quote, english, judge))
        return judge
    return register


# --- evidence helpers ------------------------------------------------------------------------

def echo_params(res: Results, transport: str) -> str | None:
    return res.reference_params("echo", res.peers(transport, "echo"))


def figure_text(res: Results, transport: str, scenario: str, metric: str, fmt: str,
                label: str, params: str | None = None) -> str | None:
    fig = res.figure(transport, scenario, metric, params)
    if fig is None:
        return None
    return f"figure: {label} of {transport} = {text.measured(fig, fmt)} (run {fig.run_id})"


def ratio_text(res: Results, a: str, b: str, scenario: str, metric: str, label: str,
               params: str | None = None) -> tuple[float | None, str]:
    """``a / b`` with a sentence; the sentence says why when there is no ratio."""
    fa, fb = res.figure(a, scenario, metric, params), res.figure(b, scenario, metric, params)
    if fa is None or fb is None:
        failed = [t for t, f in ((a, fa), (b, fb)) if f is None and res.failed(t, scenario)]
        missing = [t for t, f in ((a, fa), (b, fb)) if f is None and t not in failed]
        why = ([f"{' and '.join(failed)}: run failed"] if failed else []) + (
            [f"{' and '.join(missing)} not measured yet"] if missing else [])
        return None, f"{label}: {'; '.join(why)}"
    if fa.run_id != fb.run_id:
        return None, (f"{label}: {a} and {b} come from different runs ({fa.run_id}, "
                      f"{fb.run_id}); no ratio is taken across runs")
    r = fa.value / fb.value if fb.value else float("inf")

    def show(fig: Measured) -> str:
        if "cpu" in metric:
            return f"{text.measured(fig, 'num')} µs"
        if metric.endswith("_us"):
            return text.measured(fig, "ms")
        return text.measured(fig, "bytes" if "bytes" in metric else "num")

    return r, (f"figure: {label} {a} {show(fa)} vs {b} {show(fb)} = {text.ratio(r)} "
               f"(run {fa.run_id})")


def lines_text(res: Results, transport: str) -> tuple[int | None, str]:
    size = comparison.code_size(res, transport)
    if size is None:
        return None, f"{transport}: no reference adapter and client in the suite yet"
    return size.total, (f"count: {transport} takes {size.total} code lines "
                        f"({size.server_file} {size.server_lines} + {size.client_file} "
                        f"{size.client_lines})")


def fewest_lines(res: Results) -> tuple[str, int]:
    sizes = [s for t in comparison.TRANSPORTS if (s := comparison.code_size(res, t)) is not None]
    smallest = min(sizes, key=lambda s: s.total)
    return smallest.transport, smallest.total


def source(*keys: str) -> str:
    return f"source: {cite(*keys)}"


def per(*keys: str) -> str:
    """Sources cited inside a sentence."""
    return f"({cite(*keys)})"


def _compact(*items: str | None) -> tuple[str, ...]:
    return tuple(i for i in items if i)


# --- WebSockets -------------------------------------------------------------------------------

@claim("ws-duplex", "WebSockets", "pro", "Полнодуплексная связь", "Full-duplex communication.")
def _ws_duplex(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, _compact(
        source("rfc6455"),
        test(TRANSPORTS_TESTS, "test_echo_goes_to_sender_only", "ws"),
        test(TRANSPORTS_TESTS, "test_publish_delivers_in_order_with_ids_and_acks", "ws"),
        "one connection carries publishes, acks, echoes and deliveries both ways (the "
        "contract); SSE and long-polling need separate POSTs upstream"))


@claim("ws-latency", "WebSockets", "pro", "Низкая задержка", "Low latency.")
def _ws_latency(ctx: Context) -> Verdict:
    res = ctx.res
    params = echo_params(res, "ws")
    p50 = res.figure("ws", "echo", "rtt_p50_us", params)
    p99 = res.figure("ws", "echo", "rtt_p99_us", params)
    if p50 is None or p99 is None:
        return Verdict(NOT_MEASURED, ("the echo scenario has no ws results yet",))
    best50 = res.best("ws", "echo", "rtt_p50_us", params) or p50.value
    best99 = res.best("ws", "echo", "rtt_p99_us", params) or p99.value
    evidence = [(f"figure: ws echo round trip p50 {text.measured(p50, 'ms')}, "
                f"p99 {text.measured(p99, 'ms')} (run {p50.run_id}, {params})")]
    for other in res.peers("ws", "echo"):
        if other != "ws":
            evidence.append(ratio_text(res, other, "ws", "echo", "rtt_p50_us",
                                       "echo p50", params)[1])
    low = p50.value <= 1.5 * best50 and p99.value <= 1.5 * best99
    if not low:
        evidence.append("ws is not within 1.5× of the fastest transport of its run")
    return Verdict(CONFIRMED if low else DEPENDS, tuple(evidence))


@claim("ws-browsers", "WebSockets", "pro", "Поддержка во всех современных браузерах",
       "Supported in every modern browser.")
def _ws_browsers(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("caniuse-websockets", "mdn-websocket-ctor"),))


@claim("ws-elysia", "WebSockets", "pro",
       "Отличная поддержка в Elysia через `@elysiajs/websocket`",
       "Excellent Elysia support through `@elysiajs/websocket`.")
def _ws_elysia(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (
        ("the support is first-class, but not through that package: Elysia has WebSocket "
        "built in (`Elysia.ws()`, no plugin); `@elysiajs/websocket` is the 0.x plugin of "
        "early Elysia"),
        source("elysia-ws", "npm-elysia-websocket")))


@claim("ws-simple", "WebSockets", "pro", "Простая реализация", "Simple to implement.")
def _ws_simple(ctx: Context) -> Verdict:
    n, line = lines_text(ctx.res, "ws")
    small_t, small_n = fewest_lines(ctx.res)
    if n is None:
        return Verdict(NOT_MEASURED, (line,))
    simple = n <= 2 * small_n
    return Verdict(CONFIRMED if simple else DEPENDS, (
        line, f"count: the smallest transport here is {small_t} with {small_n} lines",
        ("reconnection, resume and backoff are not in that count: they live in the shared "
        "client base class, because the WebSocket API has none (next claims)")))


@claim("ws-proxies", "WebSockets", "con", "Проблемы с прокси и файрволлами",
       "Trouble with proxies and firewalls.")
def _ws_proxies(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (
        "not measurable here: every load runs on loopback, with no proxy in between",
        ("the handshake is an HTTP/1.1 Upgrade, so intermediaries must pass Upgrade (or speak "
        "RFC 8441/9220 over HTTP/2 and HTTP/3); over wss:// on port 443 most only see TLS"),
        source("rfc6455", "rfc8441", "rfc9220"),
        ("fallback for networks that still block it: SSE or long-polling over plain HTTPS "
        "(recommendation.md)")))


@claim("ws-no-reconnect", "WebSockets", "con", "Нет встроенной поддержки переподключения",
       "No built-in reconnection.")
def _ws_no_reconnect(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (
        source("whatwg-websockets"),
        "the API closes and stays closed; EventSource, by contrast, reconnects by itself "
        + per("whatwg-sse"),
        test(TRANSPORTS_TESTS, "test_resume_after_drop_replays_exactly_the_missed", "ws")
        + ": our client reconnects with backoff and resumes with `since`, which the "
          "application has to write"))


@claim("ws-scaling", "WebSockets", "con",
       "Сложности с масштабированием (нужен sticky sessions или Redis)",
       "Hard to scale (needs sticky sessions or Redis).")
def _ws_scaling(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (
        "a broker between instances (Redis pub/sub, NATS) is needed, but for every transport "
        "that fans out across instances, SSE included: "
        + test(BROKER_TESTS, "test_contract_across_two_servers_over_real_sockets", "redis"),
        "sticky sessions are not needed: a WebSocket lives on one TCP connection, and a client "
        "that reconnects elsewhere resumes from the shared history: "
        + test(BROKER_TESTS, "test_resume_through_another_instance_loses_nothing", "redis"),
        "stickiness matters for HTTP long-polling only " + per("socketio-nodes")))


# --- Socket.IO --------------------------------------------------------------------------------

def _sio_measured(res: Results) -> bool:
    return res.measured("socketio")


@claim("sio-reconnect", "Socket.IO", "pro", "Автоматическое переподключение",
       "Automatic reconnection.")
def _sio_reconnect(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (
        source("socketio-reconnect"),
        "but delivery is at most once by default: events sent while a client was away are "
        "not replayed " + per("socketio-delivery"),
        test(TRANSPORTS_TESTS, "test_resume_after_drop_replays_exactly_the_missed", "socketio")
        + ": resume works here because the contract adds ids and `since`"))


@claim("sio-fallback", "Socket.IO", "pro", "Fallback на long-polling",
       "Falls back to long-polling.")
def _sio_fallback(ctx: Context) -> Verdict:
    res = ctx.res
    _r, line = ratio_text(res, "socketio-polling", "socketio", "echo", "rtt_p50_us",
                         "echo p50 of the polling fallback against the websocket transport",
                         echo_params(res, "socketio"))
    return Verdict(CONFIRMED, _compact(
        source("socketio-how"),
        test(TRANSPORTS_TESTS, "test_publish_delivers_in_order_with_ids_and_acks",
             "socketio-polling"),
        line))


@claim("sio-rooms", "Socket.IO", "pro", "Комнаты и пространства имен",
       "Rooms and namespaces.")
def _sio_rooms(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (
        source("socketio-rooms"),
        "not unique to it: the contract's channels give every transport here the same "
        "(" + test(TRANSPORTS_TESTS, "test_publish_delivers_in_order_with_ids_and_acks", "sse")
        + ")"))


@claim("sio-acks", "Socket.IO", "pro", "Подтверждения доставки", "Delivery acknowledgements.")
def _sio_acks(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (
        source("socketio-acks"),
        "an ack confirms the server handled the event, not that subscribers got it "
        + per("socketio-delivery"),
        test(TRANSPORTS_TESTS, "test_publish_delivers_in_order_with_ids_and_acks", "socketio")))


@claim("sio-binary", "Socket.IO", "pro", "Бинарные данные", "Binary data.")
def _sio_binary(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("socketio-binary"),
                               "WebSocket and WebTransport carry binary natively too"))


@claim("sio-community", "Socket.IO", "pro", "Большое сообщество", "Large community.")
def _sio_community(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (("popularity is outside what this suite measures; it says "
                             "nothing about cost or latency"),))


@claim("sio-overhead", "Socket.IO", "con", "Больший overhead (дополнительный протокол)",
       "Bigger overhead (an extra protocol).")
def _sio_overhead(ctx: Context) -> Verdict:
    res = ctx.res
    lines: list[str] = []
    verdicts = []
    for payload in (64, 4096):
        point = res.point("overhead", "socketio", payload=payload)
        if point is None or res.point("overhead", "ws", payload=payload) != point:
            lines.append(f"bytes per message at {payload} B: socketio not measured yet")
            continue
        r, line = ratio_text(res, "socketio", "ws", "overhead", "bytes_per_msg",
                             f"bytes on the wire per message at {payload} B", point)
        lines.append(line)
        if r is not None:
            verdicts.append(r > 1.05)
    lines.append(source("socketio-protocol") + " (Engine.IO + Socket.IO packet prefix)")
    if not verdicts:
        return Verdict(NOT_MEASURED, tuple(lines))
    return Verdict(CONFIRMED if all(verdicts) else REFUTED if not any(verdicts) else DEPENDS,
                   tuple(lines))


@claim("sio-elysia", "Socket.IO", "con", "Нет нативной поддержки в Elysia (нужен адаптер)",
       "No native Elysia support (needs an adapter).")
def _sio_elysia(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("socketio-bun", "elysia-ws"),))


@claim("sio-resources", "Socket.IO", "con", "Больше потребляет ресурсов",
       "Uses more resources.")
def _sio_resources(ctx: Context) -> Verdict:
    res = ctx.res
    cpu, cpu_line = ratio_text(res, "socketio", "ws", "echo", "server_cpu_us_per_msg",
                               "server CPU per echoed message", echo_params(res, "ws"))
    mem, mem_line = ratio_text(res, "socketio", "ws", "connections",
                               "server_rss_bytes_per_conn", "server memory per connection")
    known = [r for r in (cpu, mem) if r is not None]
    if not known:
        return Verdict(NOT_MEASURED, (cpu_line, mem_line))
    more = [r > 1.1 for r in known]
    return Verdict(CONFIRMED if all(more) else REFUTED if not any(more) else DEPENDS,
                   (cpu_line, mem_line))


# --- WebTransport -----------------------------------------------------------------------------

@claim("wt-http3", "WebTransport", "pro", "Использует HTTP/3 и QUIC", "Uses HTTP/3 and QUIC.")
def _wt_http3(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (
        source("w3c-webtransport", "ietf-webtrans-http3", "rfc9000"),
        test(TRANSPORTS_TESTS, "test_publish_delivers_in_order_with_ids_and_acks", "webtransport")
        + " (our adapter runs on aioquic's HTTP/3)"))


def _faster(ctx: Context, transport: str, label: str) -> Verdict:
    res = ctx.res
    params = echo_params(res, transport)
    ratios, lines = [], []
    for metric, name in (("rtt_p50_us", "echo p50"), ("rtt_p99_us", "echo p99"),
                         ("server_cpu_us_per_msg", "server CPU per message")):
        r, line = ratio_text(res, transport, "ws", "echo", metric, name, params)
        lines.append(line)
        if r is not None:
            ratios.append(r)
    lines.append(f"loopback has no loss or reordering, where {label}")
    if not ratios:
        return Verdict(NOT_MEASURED, tuple(lines))
    if all(r < 0.9 for r in ratios):
        return Verdict(CONFIRMED, tuple(lines))
    if all(r > 1.1 for r in ratios):
        return Verdict(REFUTED, tuple(lines))
    return Verdict(DEPENDS, tuple(lines))


@claim("wt-performance", "WebTransport", "pro", "Лучшая производительность",
       "Better performance.")
def _wt_performance(ctx: Context) -> Verdict:
    return _faster(ctx, "webtransport", "QUIC's independent streams would help; its user-space "
                                        "stack (aioquic here) costs CPU")


@claim("wt-streams", "WebTransport", "pro", "Поддержка множественных потоков",
       "Many streams in one session.")
def _wt_streams(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("w3c-webtransport", "webtransport-explainer"),
                               "the contract uses one bidirectional stream plus datagrams"))


@claim("wt-udp", "WebTransport", "pro", "Работает через UDP (меньше задержка)",
       "Runs over UDP (lower latency).")
def _wt_udp(ctx: Context) -> Verdict:
    res = ctx.res
    r, line = ratio_text(res, "webtransport", "ws", "echo", "rtt_p50_us", "echo p50",
                         echo_params(res, "webtransport"))
    evidence = (source("rfc9000"), line,
                ("QUIC saves round trips at connection set-up (TLS inside its one-round-trip "
                "handshake, comparison.md) and avoids head-of-line blocking across streams "
                "under loss; neither shows on loopback"))
    if r is None:
        return Verdict(NOT_MEASURED, evidence)
    return Verdict(CONFIRMED if r < 0.9 else REFUTED if r > 1.5 else DEPENDS, evidence)


@claim("wt-future", "WebTransport", "pro", "Будущее real-time веба",
       "The future of the real-time web.")
def _wt_future(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, ("a forecast, not a testable claim",
                             source("wf-webtransport") + " (in every engine only since 2026)"))


@claim("wt-browsers", "WebTransport", "con",
       "Очень ограниченная поддержка браузерами (только Chrome/Edge)",
       "Very limited browser support (Chrome and Edge only).")
def _wt_browsers(ctx: Context) -> Verdict:
    return Verdict(REFUTED, (
        ("Chrome 97, Edge 97, Firefox 114 and Safari 26.4 support it: Baseline since "
        "2026-03-24; older Safari and iOS versions in the field still lack it"),
        source("wf-webtransport", "caniuse-webtransport")))


@claim("wt-certificate", "WebTransport", "con", "Требует HTTPS с валидным сертификатом",
       "Needs HTTPS with a valid certificate.")
def _wt_certificate(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (
        "TLS is mandatory (QUIC), but a CA-signed certificate is not: `serverCertificateHashes` "
        "pins a short-lived self-signed one " + per("w3c-webtransport"),
        test(WEBTRANSPORT_TESTS, "test_self_signed_certificate_fits_server_certificate_hashes"),
        test(WEBTRANSPORT_TESTS, "test_cert_hash_is_served_and_pinned")))


@claim("wt-setup", "WebTransport", "con", "Сложная настройка", "Complex set-up.")
def _wt_setup(ctx: Context) -> Verdict:
    n, line = lines_text(ctx.res, "webtransport")
    ws_n, ws_line = lines_text(ctx.res, "ws")
    if n is None or ws_n is None:
        return Verdict(NOT_MEASURED, _compact(line, ws_line))
    return Verdict(CONFIRMED if n > 2 * ws_n else DEPENDS, (
        line, ws_line, (f"count: {n / ws_n:.1f}× the WebSocket code, plus UDP/443 open, "
                       "certificates, and an HTTP/3-capable load balancer")))


@claim("wt-libraries", "WebTransport", "con", "Мало библиотек и примеров",
       "Few libraries and examples.")
def _wt_libraries(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (
        "server libraries exist (aioquic, used here), but none in Elysia or Socket.IO's Bun "
        "engine " + per("elysia-ws", "socketio-bun"),))


# --- SSE --------------------------------------------------------------------------------------

@claim("sse-simple", "SSE", "pro", "Простота реализации", "Simple to implement.")
def _sse_simple(ctx: Context) -> Verdict:
    n, line = lines_text(ctx.res, "sse")
    small_t, small_n = fewest_lines(ctx.res)
    if n is None:
        return Verdict(NOT_MEASURED, (line,))
    return Verdict(CONFIRMED if n <= 1.5 * small_n else DEPENDS, (
        line, f"count: the smallest transport here is {small_t} with {small_n} lines",
        "the upstream half (POST /publish, /echo) is shared HTTP code, not counted"))


@claim("sse-http", "SSE", "pro", "Работает через обычный HTTP", "Works over plain HTTP.")
def _sse_http(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("whatwg-sse"),
                               test(TRANSPORTS_TESTS, "test_unauthorized_without_valid_token",
                                    "sse") + " (a plain GET, refused with 401)"))


@claim("sse-reconnect", "SSE", "pro", "Автоматическое переподключение",
       "Automatic reconnection.")
def _sse_reconnect(ctx: Context) -> Verdict:
    res = ctx.res
    lost = figure_text(res, "sse", "churn", "lost", "num", "messages lost under churn")
    return Verdict(CONFIRMED, _compact(
        source("whatwg-sse") + " (EventSource reconnects and sends Last-Event-ID)",
        test(TRANSPORTS_TESTS, "test_resume_after_drop_replays_exactly_the_missed", "sse"),
        lost))


@claim("sse-elysia", "SSE", "pro", "Отличная поддержка в Elysia", "Excellent Elysia support.")
def _sse_elysia(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (("streamed responses are core Elysia; the event-stream framing "
                               "and Last-Event-ID resume are the handler's"),
                               source("elysia-stream")))


@claim("sse-proxies", "SSE", "pro", "Легко проходит через прокси", "Passes proxies easily.")
def _sse_proxies(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (
        "plain HTTP passes, but buffering proxies hold events back until a buffer fills unless "
        "buffering is off for the stream " + per("nginx-buffering"),
        "not measurable here: loopback only, no proxy in between"))


@claim("sse-one-way", "SSE", "con", "Только односторонняя связь (сервер → клиент)",
       "One-way only (server to client).")
def _sse_one_way(ctx: Context) -> Verdict:
    res = ctx.res
    point = res.point("overhead", "sse", payload=64)
    _, up = ratio_text(res, "sse", "ws", "overhead", "bytes_up_per_msg",
                       "bytes up per published message (the POST vs a frame)", point)
    _, rtt = ratio_text(res, "sse", "ws", "echo", "rtt_p50_us",
                        "echo p50 through POST /echo and the stream", echo_params(res, "sse"))
    return Verdict(CONFIRMED, (source("whatwg-sse"), up, rtt))


@claim("sse-six", "SSE", "con", "Ограничение на количество соединений (6 на домен)",
       "At most 6 connections per domain.")
def _sse_six(ctx: Context) -> Verdict:
    return Verdict(DEPENDS, (("true over HTTP/1.1 (per browser and domain, across tabs); over "
                             "HTTP/2 the streams per connection are negotiated (100 by "
                             "default)"), source("mdn-eventsource")))


@claim("sse-text", "SSE", "con", "Только текстовые данные", "Text only.")
def _sse_text(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("whatwg-sse") + " (the stream is decoded as UTF-8)",
                               "binary needs base64: 4 bytes on the wire per 3 of payload"))


# --- WebRTC -----------------------------------------------------------------------------------

@claim("rtc-p2p", "WebRTC", "pro", "P2P соединения (снижает нагрузку на сервер)",
       "Peer-to-peer (lowers server load).")
def _rtc_p2p(ctx: Context) -> Verdict:
    cpu = figure_text(ctx.res, "webrtc", "echo", "server_cpu_us_per_msg", "num",
                      "server CPU per message (the server is one peer here)")
    return Verdict(DEPENDS, _compact(
        "for calls between two people, yes; for fan-out (a chat of N, a feed) a mesh makes "
        "every sender upload N times, and peers behind symmetric NATs go through a TURN relay, "
        "which is server load again " + per("rfc8656"),
        cpu))


@claim("rtc-calls", "WebRTC", "pro", "Отлично для видео/аудио звонков",
       "Great for audio and video calls.")
def _rtc_calls(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (("what it is built for; not measured here (no media in this "
                               "suite)"), source("rfc8827")))


@claim("rtc-latency", "WebRTC", "pro", "Низкая задержка", "Low latency.")
def _rtc_latency(ctx: Context) -> Verdict:
    return _faster(ctx, "webrtc", "unordered, unreliable data channels would help")


@claim("rtc-encrypted", "WebRTC", "pro", "Шифрование по умолчанию", "Encrypted by default.")
def _rtc_encrypted(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("rfc8827", "rfc8831") + " (DTLS is mandatory)",))


@claim("rtc-complex", "WebRTC", "con", "Сложная реализация", "Complex to implement.")
def _rtc_complex(ctx: Context) -> Verdict:
    _n, line = lines_text(ctx.res, "webrtc")
    hs = comparison.HANDSHAKES["webrtc"]
    return Verdict(CONFIRMED, _compact(
        f"count: {hs.round_trips} round trips before the first message ({hs.how}) against 3 "
        "for WebSocket " + per(*hs.sources), line))


@claim("rtc-stun-turn", "WebRTC", "con", "Требует STUN/TURN серверы",
       "Needs STUN/TURN servers.")
def _rtc_stun(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (("on the internet, yes (ICE gathers server-reflexive candidates "
                               "by STUN and relays by TURN); on one host, host candidates do"),
                               source("rfc8445", "rfc8656")))


@claim("rtc-ordinary-data", "WebRTC", "con", "Не подходит для обычных данных",
       "Unsuited to ordinary data.")
def _rtc_data(ctx: Context) -> Verdict:
    res = ctx.res
    _, connect = ratio_text(res, "webrtc", "ws", "connections", "connect_p50_us",
                            "connect time p50")
    _, memory = ratio_text(res, "webrtc", "ws", "connections", "server_rss_bytes_per_conn",
                           "server memory per connection")
    return Verdict(DEPENDS, (
        "data channels carry any data, reliable or not " + per("rfc8831"),
        "but client-to-server messaging pays ICE, DTLS and SCTP per connection", connect,
        memory))


@claim("rtc-nat", "WebRTC", "con", "Проблемы с NAT", "NAT trouble.")
def _rtc_nat(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (source("rfc8445", "rfc8656"),
                               "not measurable here: loopback has no NAT"))


# --- the note's code --------------------------------------------------------------------------

@claim("code-ws-header", "Code", "code",
       "new WebSocket(wsUrl, { headers: { 'Authorization': `Bearer ${token}` } })",
       "The browser client opens a WebSocket with an Authorization header.")
def _code_ws_header(ctx: Context) -> Verdict:
    return Verdict(REFUTED, (
        "the browser constructor takes a URL and subprotocols only: no headers "
        + per("mdn-websocket-ctor", "whatwg-websockets"),
        "our servers take the token as `?token=` (Authorization: Bearer only for non-browser "
        "clients): " + test(TRANSPORTS_TESTS, "test_unauthorized_without_valid_token", "ws")))


@claim("code-sse-header", "Code", "code",
       "new EventSource(url, { headers: { 'Authorization': `Bearer ${token}` } })",
       "The browser client opens an EventSource with an Authorization header.")
def _code_sse_header(ctx: Context) -> Verdict:
    return Verdict(REFUTED, (
        "EventSource's options hold `withCredentials` only "
        + per("mdn-eventsource-ctor", "whatwg-sse"),
        test(TRANSPORTS_TESTS, "test_unauthorized_without_valid_token", "sse")
        + " (token as a query parameter)"))


POLL_INTERVAL_S = 5.0


@claim("code-db-polling", "Code", "code",
       "setInterval(() => prisma.notifications.findMany({ createdAt: { gt: Date.now() - 5000 } "
       "}), 5000)",
       "Notifications are found by polling the database every 5 s inside each SSE stream.")
def _code_db_polling(ctx: Context) -> Verdict:
    res = ctx.res
    evidence = [(f"arithmetic: a notification waits {POLL_INTERVAL_S / 2:g} s on average and "
                f"up to {POLL_INTERVAL_S:g} s (plus the query) before the poll finds it")]
    for t in ("sse", "ws"):
        p99 = res.figure(t, "fanout", "latency_p99_us")
        if p99 is not None:
            evidence.append(f"figure: pushed through the hub instead, {t} fan-out p99 is "
                            f"{text.measured(p99, 'ms')} (run {p99.run_id}), "
                            f"{POLL_INTERVAL_S * 1e6 / 2 / p99.value:,.0f}× below the mean "
                            "poll wait")
            break
    else:
        evidence.append("push latency: fan-out not measured yet")
    try:
        from sobranie_bench.capacity import Workload
        online = Workload().online_users
        evidence.append(f"arithmetic: {online:,} open streams each querying every "
                        f"{POLL_INTERVAL_S:g} s is {online / POLL_INTERVAL_S:,.0f} database "
                        "queries per second, nearly all finding nothing")
    except ImportError:
        pass
    evidence.append("the `createdAt > now - 5000` window drifts with the timer: rows can be "
                    "missed or sent twice at the boundary; per-channel ids and resume "
                    "(the contract) avoid both")
    return Verdict(REFUTED, tuple(evidence))


@claim("code-open-subscribe", "Code", "code",
       "case 'subscribe': ws.subscribe(message.channel)  // no check",
       "Any user may subscribe to any channel.")
def _code_open_subscribe(ctx: Context) -> Verdict:
    return Verdict(REFUTED, (
        ("unsafe: anyone could read another user's notifications; the contract makes "
        "`user:<id>` private"),
        test(TRANSPORTS_TESTS, "test_forbidden_for_another_users_private_channel", "ws"),
        test(TRANSPORTS_TESTS, "test_forbidden_for_another_users_private_channel", "sse")))


@claim("code-elysia-plugin", "Code", "code",
       "bun add @elysiajs/websocket; new Elysia().use(websocket()).ws(...)",
       "Install the WebSocket plugin and register it.")
def _code_plugin(ctx: Context) -> Verdict:
    return Verdict(REFUTED, (("outdated: `.ws()` is built into Elysia; the plugin belongs to "
                             "Elysia 0.x"), source("elysia-ws", "npm-elysia-websocket")))


@claim("code-backoff", "Code", "code",
       "setTimeout(connect, this.reconnectTimeout); this.reconnectTimeout = "
       "Math.min(this.reconnectTimeout * 2, 30000)",
       "Reconnect with doubling delay (no jitter), and no resume of what was missed.")
def _code_backoff(ctx: Context) -> Verdict:
    evidence = [test(TRANSPORTS_TESTS, "test_resume_after_drop_replays_exactly_the_missed",
                     "ws") + ": without `since`, what was published during the gap is lost"]
    try:
        from sobranie_bench.capacity import storm
        clients = 100_000
        none, jitter = (storm(clients, instances=10, strategy=s)
                        for s in ("none", "full_jitter"))
        evidence.append(
            f"model: {clients:,} clients losing their instance together and reconnecting "
            f"without jitter peak at {none.peak_over_capacity:.1f}× an instance's handshake "
            f"capacity; with full jitter at {jitter.peak_over_capacity:.2f}× "
            "(`sobranie_bench.capacity.storm`)")
        verdict = REFUTED if none.peak_over_capacity > jitter.peak_over_capacity else DEPENDS
    except Exception as exc:  # noqa: BLE001 - the model is optional evidence
        evidence.append(f"storm model unavailable ({type(exc).__name__})")
        verdict = DEPENDS
    return Verdict(verdict, tuple(evidence))


@claim("code-global-presence", "Code", "code",
       "open(ws) { ws.publish('presence', { userId, status: 'online' }) }",
       "Presence is broadcast on one global topic to everyone subscribed.")
def _code_presence(ctx: Context) -> Verdict:
    evidence = [test(TRANSPORTS_TESTS, "test_presence_on_connect_and_disconnect", "ws")]
    try:
        from sobranie_bench.capacity import Workload, aggregate_rates
        w = Workload()
        scoped = next(x for x in aggregate_rates(w) if x.feature == "presence")
        everyone = (w.online_users * w.presence_rate_per_user_s * w.online_users)
        evidence.append(
            f"model: at {w.online_users:,} online, scoped to friends ({w.friends_per_user} "
            f"each) presence is {scoped.deliveries_per_s:,.0f} deliveries/s; one global topic "
            f"makes it {everyone:,.0f}/s, {everyone / scoped.deliveries_per_s:,.0f}× more "
            "(`sobranie_bench.capacity.aggregate_rates`)")
        verdict = REFUTED
    except Exception as exc:  # noqa: BLE001 - the model is optional evidence
        evidence.append(f"workload model unavailable ({type(exc).__name__})")
        verdict = DEPENDS
    return Verdict(verdict, tuple(evidence))


# --- the note's stack -------------------------------------------------------------------------

@claim("stack-ws-sse", "Stack", "stack", "Основной стек: WebSockets + SSE",
       "Main stack: WebSockets for two-way features, SSE for one-way updates.")
def _stack(ctx: Context) -> Verdict:
    chosen = {k: c.winner for k, c in ctx.choices.items() if c.feature.direction != "media"}
    if not any(chosen.values()):
        return Verdict(NOT_MEASURED, ("nothing measured can be ranked yet",))
    note = {"chat": "ws", "collab": "ws", "presence": "ws", "notifications": "sse",
            "feed": "sse"}
    agree = [k for k, t in note.items() if chosen.get(k) and
             TECHNOLOGY_OF.get(chosen[k] or "") ==
             TECHNOLOGY_OF.get(t)]
    evidence = [f"ours: {k} → {t or 'not ranked'}" for k, t in chosen.items()]
    evidence.append(f"{len(agree)} of {len(note)} features get the note's technology "
                    "(recommendation.md, with the weights shown there)")
    verdict = (CONFIRMED if len(agree) == len(note) else
               REFUTED if not agree else DEPENDS)
    return Verdict(verdict, tuple(evidence))


@claim("stack-redis", "Stack", "stack", "Использовать Redis для PubSub между инстансами",
       "Redis pub/sub between instances.")
def _stack_redis(ctx: Context) -> Verdict:
    return Verdict(CONFIRMED, (
        test(BROKER_TESTS, "test_contract_across_two_servers_over_real_sockets", "redis"),
        test(BROKER_TESTS, "test_resume_through_another_instance_loses_nothing", "redis"),
        ("pub/sub alone keeps no history: resume needs a stream or list beside it (our broker "
        "keeps per-channel history in Redis); the Redis load at scale is in recommendation.md")))


@claim("stack-sticky", "Stack", "stack", "Sticky sessions для WebSocket соединений",
       "Sticky sessions for WebSocket connections.")
def _stack_sticky(ctx: Context) -> Verdict:
    return Verdict(REFUTED, (
        "unneeded for WebSocket: a connection stays on the instance it opened on; only "
        "multi-request transports (long-polling) need affinity " + per("socketio-nodes"),
        test(BROKER_TESTS, "test_resume_through_another_instance_loses_nothing", "redis")))


@claim("stack-lb", "Stack", "stack", "Horizontal scaling через load balancer",
       "Scale horizontally behind a load balancer.")
def _stack_lb(ctx: Context) -> Verdict:
    plan = recommendation.capacity(ctx.res, ctx.choices).note
    if plan is None:
        return Verdict(DEPENDS, ("capacity model gave no plan for these results",))
    if not plan.fleets:  # every fleet infeasible at the measured load: no evidence either way
        return Verdict(DEPENDS, tuple(f"model: {r.transport}: {r.reason}"
                                      for r in plan.infeasible))
    return Verdict(CONFIRMED, tuple(
        f"model: {f.transport} fleet for {', '.join(f.features)}: {f.instances} instances, "
        f"bound by {f.binding} (`sobranie_bench.capacity.plan`, calibrated from run "
        f"{ctx.res.main_run})" for f in plan.fleets))


# --- the comparison table ---------------------------------------------------------------------

def table_claims(ctx: Context) -> list[tuple[Claim, Verdict]]:
    """One claim per cell of the note's table, judged against our stars."""
    out = []
    for tech in TECHNOLOGIES:
        if tech.note_stars is None:
            continue
        row = ctx.table[tech.name]
        for col in COLUMNS:
            note, ours = tech.note_stars[col], row.ours[col]
            c = Claim(f"table-{tech.name.lower().replace('.', '')}-{col}", "Comparison table",
                      "table", f"{tech.name}: {COLUMN_TITLES[col]} {'⭐' * note}",
                      f"{tech.name} deserves {note} stars for {COLUMN_TITLES[col].lower()}.",
                      lambda ctx: Verdict(NOT_MEASURED, ()))
            if ours.stars is None:
                v = Verdict(NOT_MEASURED, (ours.basis,))
            else:
                how = "cited: " + cite(*ours.sources) if ours.sources else (
                    "measured" if col in ("performance", "scalability") else "counted")
                verdict = CONFIRMED if abs(ours.stars - note) <= 1 else REFUTED
                v = Verdict(verdict, ((f"ours: {text.stars(ours.stars)} from {ours.basis} "
                                      f"({how}; rules in comparison.md)"),))
            out.append((c, v))
    return out


# --- judging and rendering --------------------------------------------------------------------

def judge_all(res: Results) -> list[tuple[Claim, Verdict]]:
    ctx = Context(res)
    judged = [(c, c.judge(ctx)) for c in CLAIMS]
    return judged + table_claims(ctx)


def counts(judged: list[tuple[Claim, Verdict]]) -> dict[str, int]:
    out = dict.fromkeys(VERDICTS, 0)
    for _, v in judged:
        out[v.verdict] += 1
    return out


def cited_tests() -> set[str]:
    """Every test node id any claim cites (for checking they exist)."""
    import re

    found: set[str] = set()
    for _, v in judge_all(Results(Path("."), (), _empty_rows())):
        for item in v.evidence:
            found.update(re.findall(r"`(tests/[^`]+::[^`]+)`", item))
    return found


def _empty_rows() -> Any:
    import pandas as pd

    from sobranie_bench.harness.results import SUMMARY_COLUMNS
    return pd.DataFrame(columns=SUMMARY_COLUMNS)


TOPICS = ("WebSockets", "Socket.IO", "WebTransport", "SSE", "WebRTC", "Code", "Stack",
          "Comparison table")


def render(res: Results) -> str:
    judged = judge_all(res)
    n = counts(judged)
    parts = [
        "# The note's claims, checked",
        "",
        (f"Generated by `sobranie-bench report` from run {res.main_run or '(none)'}. Each claim "
        "of the design note (its pros and cons, its comparison table, its code and its stack) "
        "gets a verdict: **confirmed**, **refuted**, **depends** (true under the conditions "
        "named) or **not measured yet**. Verdicts about measurable things are computed from "
        "the results, comparing transports only within one run; the others rest on a test "
        "of this suite (pytest node id) or a cited public source."),
        "",
        "Totals: " + ", ".join(f"{v} {k}" for k, v in n.items()) + f" ({len(judged)} claims).",
        "",
    ]
    for topic in TOPICS:
        items = [(c, v) for c, v in judged if c.topic == topic]
        if not items:
            continue
        parts += [f"## {topic}", ""]
        if topic == "Comparison table":
            parts += [text.table(["Cell (the note)", "Verdict", "Evidence"],
                                 [[c.quote, v.verdict, "; ".join(v.evidence)]
                                  for c, v in items]), ""]
            continue
        rows = [[c.kind, f"{c.claim} «{c.quote}»", f"**{v.verdict}**",
                 "<br>".join(v.evidence)] for c, v in items]
        parts += [text.table(["Kind", "Claim (the note's words)", "Verdict", "Evidence"], rows),
                  ""]
    return "\n".join(parts)


def frame(res: Results) -> Any:
    """Every judged claim as a DataFrame: topic, kind, claim, verdict, evidence count."""
    import pandas as pd

    return pd.DataFrame.from_records(
        [{"id": c.id, "topic": c.topic, "kind": c.kind, "claim": c.claim, "verdict": v.verdict,
          "evidence": len(v.evidence)} for c, v in judge_all(res)]).set_index("id")


def write(res: Results, out_dir: Path) -> Path:
    path = Path(out_dir) / "claims.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(res))
    return path
