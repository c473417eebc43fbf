"""browser: N headless tabs of one engine run the browser client (web/) against the server.

Each tab (a context of its own: its own connections) loads web/check.html from a page server
on another origin that this part starts, and runs the check of the browser tests: connect,
hello, subscribe, publish, first message, drop, resume, nothing lost or duplicated. Recorded
per tab: connect-to-hello and connect-to-first-message times (histograms, microseconds),
whether it worked, and why not; per run: the engine's name and version (``info``).

For SSE (the transports the ``sse_limit`` parameter names; the ci profile: ``sse`` alone, the
limit being the browser's) the part also measures the **per-origin connection limit of
HTTP/1.1**: seven tabs of *one* profile each hold an EventSource to the server; the first six
get their hello, the seventh waits (``blocked``) until one of the six closes; an eighth tab of
the same profile that reaches the same server under another host name (``localhost`` for
``127.0.0.1``: another origin, another connection pool) is not blocked. Our servers speak
HTTP/1.1 (TLS included), so the limit applies to them; the same seven tabs through an HAProxy
of ours that speaks HTTP/2 to the browser (ALPN h2, HTTP/1.1 to the server) share one
multiplexed connection and are not blocked (``http2``, with the protocol the browser reports).

Run it by name (``run --scenarios browser``: ``make bench`` has a line for it; it is not in a
profile's default set). ``--set engine=firefox`` runs one engine only, ``--set tabs=10`` more
tabs, ``--set sse_limit=true`` the limit on every SSE transport. An engine that cannot be
launched here is a result (``not_run`` with the reason), never a crash.
A run launches each engine once, at its first point, and keeps it for its next points (each
tab still gets a context of its own: nothing carried over but the running engine; ``info``
says ``launched`` for the point that launched it); every browser is closed when the run ends,
and every tab bounded in time (:data:`PART_SECONDS` for the part).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sobranie_bench import browser, services
from sobranie_bench.clients import base_transport
from sobranie_bench.harness.recorder import Recorder
from sobranie_bench.harness.results import latency_rows
from sobranie_bench.harness.scenarios import PartContext, Scenario
from sobranie_contract import tls, tokens

PART_SECONDS = 300.0
"""Upper bound of one part (launch, every tab, the SSE limit); past it the run fails."""
SSE_POOL = 6
"""Connections per host a browser keeps over HTTP/1.1 (Chromium's and Firefox's default)."""


@contextlib.asynccontextmanager
async def page_origin() -> AsyncIterator[str]:
    """``http://127.0.0.1:PORT`` serving web/ (the pages' origin: not the server's)."""
    from servers import static

    runner = web.AppRunner(static.page_app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def page_url(ctx: PartContext) -> str:
    """The base URL the page client takes: WebTransport's is the plain-HTTP side of its port
    (where /wt-cert-hash is; the page opens the QUIC session itself)."""
    if base_transport(ctx.transport) == "webtransport":
        return ctx.url.replace("https://", "http://", 1)
    return ctx.url


def _token(ctx: PartContext, user: str) -> str:
    return tokens.make_token(user, ctx.secret, ttl=3600)


def _record_ms(rec: Recorder, ms: float) -> None:
    rec.measured.record_value(max(1, int(ms * 1000)))


async def _tab(b: browser.Browser, origin: str, ctx: PartContext, i: int) -> dict[str, Any]:
    transport = base_transport(ctx.transport)
    try:
        tab = await b.open(origin + browser.CHECK_PAGE, timeout=ctx.timeout * 2)
    except Exception as exc:  # noqa: BLE001 - a page that does not load is a result
        return {"ok": False, "error": f"page did not load: {exc}"[:300]}
    try:
        return await browser.run_check(
            tab, transport=transport, url=page_url(ctx), token=_token(ctx, f"tab-{i}"),
            publisherToken=_token(ctx, f"pub-{i}"), channel=f"chat:browser-{i}",
            timeoutMs=int(ctx.timeout * 1000))
    except Exception as exc:  # noqa: BLE001 - the browser's own failure, with its reason
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        with contextlib.suppress(Exception):
            await tab.close()


async def _held(tab: browser.Tab) -> dict[str, Any]:
    state: dict[str, Any] = await tab.evaluate("() => window.sobranieHeld()")
    return state


async def _wait_hello(tab: browser.Tab, seconds: float) -> dict[str, Any]:
    """The tab's held state once its hello (or an error) came, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    state = await _held(tab)
    while state["helloMs"] is None and state["error"] is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        state = await _held(tab)
    return state


async def _same_profile(b: browser.Browser, origin: str, ctx: PartContext, url: str,
                        profile: str, block_seconds: float, other: str | None = None
                        ) -> dict[str, Any]:
    """Seven EventSource tabs of the profile ``profile`` on ``url`` (and an eighth on
    ``other``), then one of the first six closed: who got a hello and when."""
    tabs: list[browser.Tab] = []

    async def open_holding(target: str, user: str) -> browser.Tab:
        tab = await b.open(origin + browser.CHECK_PAGE, context=profile,
                           timeout=ctx.timeout * 2)
        tabs.append(tab)
        await tab.evaluate("(p) => window.sobranieHold(p)",
                           {"transport": "sse", "url": target, "token": _token(ctx, user)})
        return tab

    out: dict[str, Any] = {"same_profile_tabs": SSE_POOL + 1, "block_seconds": block_seconds}
    try:
        probe = await b.open(origin + browser.CHECK_PAGE, context=profile, timeout=ctx.timeout)
        tabs.append(probe)  # asked before the six hold every connection there is
        out["protocol"] = await probe.evaluate(PROTOCOL_JS, url + "/healthz")
        first = list(await asyncio.gather(*(open_holding(url, f"sse-{i}")
                                             for i in range(SSE_POOL))))
        states = [await _wait_hello(t, ctx.timeout) for t in first]
        out["first_six_hello"] = sum(s["helloMs"] is not None for s in states)
        seventh = await open_holding(url, "sse-7")
        state = await _wait_hello(seventh, block_seconds)
        out["seventh_blocked"] = state["helloMs"] is None and state["error"] is None
        out["seventh_error"] = state["error"]
        if other is not None:
            other_tab = await open_holding(other, "sse-other")
            state = await _wait_hello(other_tab, ctx.timeout)
            out["other_host_blocked"] = state["helloMs"] is None
            out["other_host_hello_ms"] = state["helloMs"]
        released = time.monotonic()
        await first[0].evaluate("() => window.sobranieRelease()")
        state = await _wait_hello(seventh, ctx.timeout)
        out["seventh_hello_after_close_ms"] = (
            (time.monotonic() - released) * 1000 if state["helloMs"] is not None else None)
    except Exception as exc:  # noqa: BLE001 - recorded: the limit could not be measured
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        for tab in tabs:
            with contextlib.suppress(Exception):
                await tab.close()
    return out


PROTOCOL_JS = """async (u) => {
  await (await fetch(u)).text();
  for (let i = 0; i < 50; i++) {  // the entry is added once the body is in
    const seen = performance.getEntriesByType("resource").filter((e) => e.name === u);
    if (seen.length) return seen[seen.length - 1].nextHopProtocol || "not exposed";
    await new Promise((r) => setTimeout(r, 20));
  }
  return null;
}"""
"""The protocol a fetch to the server went over (``http/1.1``, ``h2``), from Resource Timing."""


@contextlib.asynccontextmanager
async def http2_front(backend: str) -> AsyncIterator[str | None]:
    """An HAProxy of our own terminating TLS with ALPN h2 in front of ``backend`` (our HTTP/1.1
    server): its ``https://127.0.0.1:PORT``, or None when HAProxy is not installed."""
    try:
        haproxy = services.executable("haproxy")
    except services.ServiceError:
        yield None
        return
    paths = tls.ensure()
    with tempfile.TemporaryDirectory(prefix="sobranie-h2-") as tmp:
        pem = Path(tmp) / "front.pem"
        pem.write_bytes(paths.cert.read_bytes() + paths.key.read_bytes())
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        back = urlsplit(backend)
        ssl_opt = " ssl verify none alpn http/1.1" if back.scheme == "https" else ""
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(H2_CONFIG.format(port=port, pem=pem, backend=back.netloc, ssl=ssl_opt))
        proc = await asyncio.create_subprocess_exec(
            haproxy, "-f", str(cfg), "-db", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.returncode is None:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.05)
            yield f"https://127.0.0.1:{port}" if proc.returncode is None else None
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


H2_CONFIG = """global
    maxconn 200
defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend h2
    bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1
    http-response set-header Timing-Allow-Origin "*"  # the page may read nextHopProtocol
    default_backend server
backend server
    server s1 {backend}{ssl}
"""


async def sse_limit(b: browser.Browser, origin: str, ctx: PartContext,
                    block_seconds: float) -> dict[str, Any]:
    """The SSE per-origin limit (see the module's docstring): over the server's HTTP/1.1, and
    under ``http2`` over HTTP/2 through an HAProxy of our own when HAProxy is installed."""
    url = page_url(ctx)
    # profiles named after this server: a browser kept from an earlier point has its own
    out = await _same_profile(b, origin, ctx, url, f"sse-limit {url}", block_seconds,
                              other=url.replace("127.0.0.1", "localhost", 1))
    async with http2_front(url) as front:
        out["http2"] = (await _same_profile(b, origin, ctx, front, f"sse-limit-h2 {front}",
                                            block_seconds) if front
                        else {"not_run": "haproxy is not installed (make setup)"})
    return out


def measures_limit(transport: str, params: dict[str, Any]) -> bool:
    """Whether this SSE transport's run measures the per-origin limit: ``sse_limit`` is true
    (every SSE transport), false, or the transports that do (the limit is the browser's, the
    same for any HTTP/1.1 server: the ci profile measures it on ``sse`` alone)."""
    chosen = params.get("sse_limit", True)
    return transport in chosen if isinstance(chosen, list) else bool(chosen)


_KEPT: dict[str, tuple[browser.Browser, contextlib.AsyncExitStack,
                       asyncio.AbstractEventLoop]] = {}
"""Engines this process launched for a point, kept open for its next points (:func:`close`)."""


async def _engine(name: str) -> tuple[browser.Browser, bool]:
    """The engine's browser, and whether this call launched it: a run's first point of an
    engine launches it, its next points reuse it while it runs (each tab still gets a context
    of its own: no cookies, cache or connections carried over), saving a launch per point."""
    kept = _KEPT.pop(name, None)
    if kept is not None:
        if kept[0].alive() and kept[2] is asyncio.get_running_loop():
            _KEPT[name] = kept
            return kept[0], False
        if kept[2] is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await kept[1].aclose()
    stack = contextlib.AsyncExitStack()
    try:
        b = await stack.enter_async_context(browser.launch(name))
    except BaseException:
        await stack.aclose()
        raise
    _KEPT[name] = (b, stack, asyncio.get_running_loop())
    return b, True


async def close() -> None:
    """Close every browser this process kept open (the runner calls it when its plan ends,
    a worker after its part)."""
    while _KEPT:
        _, (_, stack, loop) = _KEPT.popitem()
        if loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await stack.aclose()


async def _run(ctx: PartContext) -> dict[str, Any]:
    p = ctx.params
    engine, count = str(p["engine"]), int(p["tabs"])
    hello, first = Recorder(), Recorder()
    info: dict[str, Any] = {"engine": engine, "engine_version": None, "errors": []}
    counters = {"tabs": count, "tabs_ok": 0, "engine_major": 0}
    start = time.monotonic()
    try:
        async with page_origin() as origin:
            b, info["launched"] = await _engine(engine)
            info["engine_version"] = b.engine.version
            counters["engine_major"] = int(b.engine.version.split(".")[0] or 0)
            results = await asyncio.gather(*(_tab(b, origin, ctx, i) for i in range(count)))
            for res in results:
                if res.get("ok"):
                    counters["tabs_ok"] += 1
                    _record_ms(hello, res["helloMs"])
                    _record_ms(first, res["firstMs"])
                elif res.get("error") and res["error"] not in info["errors"]:
                    info["errors"].append(res["error"])
            if base_transport(ctx.transport) == "sse" and measures_limit(ctx.transport, p):
                info["sse_limit"] = await sse_limit(b, origin, ctx, float(p["block_seconds"]))
    except browser.BrowserUnavailable as exc:
        info["not_run"] = str(exc)
    return {"histograms": {"hello": hello.encoded(), "first": first.encoded()},
            "counters": counters, "info": info,
            "times": {"load_start": start, "measure_start": start, "load_end": time.monotonic()}}


async def part(ctx: PartContext) -> dict[str, Any]:
    return await asyncio.wait_for(_run(ctx), PART_SECONDS)


def metrics(raw: dict[str, Any]) -> dict[str, tuple[float, str]]:
    """browser rows: works (every tab did the whole check), hello and first message times,
    the engine's major version; for SSE the per-origin limit (``info`` of the raw file keeps
    the full version and every failure's reason)."""
    c, h, info = raw["counters"], raw["histograms"], raw.get("info", {})
    if "not_run" in info:
        return {"browser_not_run": (1.0, "flag")}
    m = {**latency_rows("hello", h["hello"]["measured"]),
         **latency_rows("first_message", h["first"]["measured"])}
    m["browser_tabs"] = (c["tabs"], "count")
    m["browser_tabs_ok"] = (c["tabs_ok"], "count")
    m["browser_works"] = (float(c["tabs_ok"] == c["tabs"] > 0), "flag")
    m["engine_major_version"] = (c["engine_major"], "version")
    limit = info.get("sse_limit", {})
    for key in ("seventh_blocked", "other_host_blocked"):
        if key in limit:
            m[f"sse_{key}"] = (float(limit[key]), "flag")
    for key in ("seventh_hello_after_close_ms", "other_host_hello_ms"):
        if limit.get(key) is not None:
            m[f"sse_{key}"] = (float(limit[key]), "ms")
    if "seventh_blocked" in limit.get("http2", {}):
        m["sse_http2_seventh_blocked"] = (float(limit["http2"]["seventh_blocked"]), "flag")
    return m


SCENARIO = Scenario(
    name="browser", doc="N headless browser tabs per engine run the web client: works, "
                        "connect-to-hello and to-first-message; SSE's 6-per-origin limit",
    part=part, metrics=metrics,
    grid={
        "ci": [{"engine": e, "tabs": 2, "block_seconds": 2.0, "sse_limit": ["sse"]}
               for e in browser.ENGINES],
        "standard": [{"engine": e, "tabs": 3, "block_seconds": 2.0} for e in browser.ENGINES],
        "quick": [{"engine": e, "tabs": 6, "block_seconds": 3.0} for e in browser.ENGINES],
        "full": [{"engine": e, "tabs": 10, "block_seconds": 5.0} for e in browser.ENGINES],
    },
    timing={"ci": (0.0, 0.0), "standard": (0.0, 0.0), "quick": (0.0, 0.0), "full": (0.0, 0.0)},
    workers=False, named_only=True, teardown=close,
    # launch and close (a few seconds), the tabs' checks with their drop and resume, and for
    # SSE the limit's 16 tabs and two waits (measured: about 8 s per run on 2 busy cores)
    load_seconds=lambda p: 5.0 + 0.5 * int(p["tabs"]) + float(p["block_seconds"]),
    headline=[("browser_tabs_ok", "tabs ok"), ("hello_p50_us", "hello p50 µs"),
              ("first_message_p50_us", "first message p50 µs"),
              ("sse_seventh_blocked", "7th SSE tab blocked"), ("browser_not_run", "not run")],
)
