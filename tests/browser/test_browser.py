"""Real browsers drive the browser client (web/) over every transport: Chromium, then Firefox
ESR (reported NOT RUN, a skip with the reason, only when it cannot be installed here).

For each engine and transport, pages run web/check.js in parallel: from the server's own origin
(the aiohttp-based servers serve web/ with ``static``), from another origin on the allow-list, and
from an origin that is not on it. The first two must do token, hello, subscribe, publish,
receive, drop, resume with nothing lost or duplicated; the third must be refused. One browser
per engine, one page per origin (each in its own context). The demo page is clicked through in
Chromium (Playwright's input events).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from servers import run, static
from sobranie_bench import browser
from tests.conftest import SECRET, UNIT, token

pytestmark = pytest.mark.asyncio(loop_scope="module")

KINDS = {"ws": "http", "sse": "http", "longpoll": "http", "ws-websockets": "ws-websockets",
         "webtransport": "webtransport", "socketio": "socketio", "socketio-polling": "socketio",
         "webrtc": "webrtc"}
"""Transport -> the ``serve`` kind that carries it."""
SERVES_PAGES = {"http", "socketio", "webrtc"}
"""Kinds built on aiohttp's app factory, which serve web/ themselves (the own-origin case);
ws-websockets and WebTransport have no page server of their own."""
TIMEOUT_MS = int(UNIT * 2000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """Every server kind, an allowed and a refused page origin, and one Chromium."""

    def __init__(self) -> None:
        self.servers: dict[str, run.Running] = {}
        self.page_runners: list[web.AppRunner] = []
        self.browser: Any = None
        self._pages: dict[str, browser.Tab] = {}

    async def page(self, origin: str) -> browser.Tab:
        """The check page on ``origin`` (one per origin, reused: opening one is the slow part)."""
        if origin not in self._pages:
            self._pages[origin] = await browser.open_check_page(self.browser, origin)
        return self._pages[origin]

    async def page_origin(self) -> str:
        runner = web.AppRunner(static.page_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.page_runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def start(self) -> None:
        self.allowed = await self.page_origin()
        self.refused = await self.page_origin()
        for kind in dict.fromkeys(KINDS.values()):
            port = free_port() if kind in SERVES_PAGES else 0
            own = (f"http://127.0.0.1:{port}",) if port else ()
            opts = run.Options(secret=SECRET, port=port, origins=(*own, self.allowed),
                               extra={"static": str(static.WEB_DIR)} if port else {})
            self.servers[kind] = await run.starter(kind)(opts)

    def url(self, transport: str) -> str:
        server = self.servers[KINDS[transport]]
        return server.endpoints.get("http", server.url)

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        for runner in self.page_runners:
            await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers() -> AsyncIterator[Stack]:
    stack = Stack()
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=browser.ENGINES)
async def stack(request: pytest.FixtureRequest, servers: Stack) -> AsyncIterator[Stack]:
    """The servers with one engine's browser (fresh pages per engine)."""
    engine = request.param
    if engine == "firefox":
        try:
            browser.firefox_path()
        except browser.BrowserUnavailable as exc:
            pytest.skip(f"Firefox ESR: NOT RUN ({exc})")
    async with browser.launch(engine) as launched:
        servers.browser, servers._pages = launched, {}
        yield servers


async def _check(stack: Stack, origin: str, transport: str, channel: str) -> dict[str, Any]:
    return await browser.run_check(
        await stack.page(origin), transport=transport, url=stack.url(transport),
        token=token("bob"), publisherToken=token("alice"), channel=channel, timeoutMs=TIMEOUT_MS)


async def _refused(stack: Stack, transport: str) -> dict[str, Any]:
    return await browser.connect_only(await stack.page(stack.refused), transport=transport,
                                      url=stack.url(transport), token=token("bob"),
                                      timeoutMs=TIMEOUT_MS)


@pytest.mark.parametrize("transport", list(KINDS))
async def test_every_transport_works_from_allowed_pages_and_is_refused_elsewhere(
        stack: Stack, transport: str) -> None:
    slug = transport.replace("-", "_")
    origins = {"allowed": stack.allowed}
    if KINDS[transport] in SERVES_PAGES:
        origins["own"] = stack.servers[KINDS[transport]].url
    results = await asyncio.gather(
        *(_check(stack, origin, transport, f"chat:{slug}-{case}")
          for case, origin in origins.items()),
        _refused(stack, transport))
    *worked, refused = results
    for case, result in zip(origins, worked, strict=True):
        assert result["ok"], f"{transport} from the {case} origin: {result['error']}"
        assert result["received"] == [1, 2, 3, 4, 5]  # 2..4 published while it was dropped
        assert result["reconnects"] == 1
        assert result["helloMs"] is not None and result["firstMs"] is not None
    assert not refused["ok"], f"{transport} accepted a page from an origin not allowed"


async def test_a_foreign_page_cannot_read_an_http_answer(stack: Stack) -> None:
    """CORS, seen from the page: fetch of /healthz from an allowed origin reads the answer;
    from a refused one the browser reports a network error (403 without the CORS header)."""
    url = stack.url("sse") + "/healthz"
    seen = {}
    for case, origin in (("allowed", stack.allowed), ("refused", stack.refused)):
        seen[case] = await (await stack.page(origin)).evaluate(
            "(u) => fetch(u).then(r => r.status, e => 'blocked: ' + e.name)", url)
    assert seen == {"allowed": 200, "refused": "blocked: TypeError"}


async def test_the_demo_page_works_end_to_end_on_every_transport() -> None:
    """In Chromium, alice switches through every transport: each time she chats, drops and
    resumes with nothing lost or duplicated (a bot keeps talking meanwhile); bob, on SSE, likes
    her message: the counter and her notification arrive, and she sees him online."""
    demo = await run.starter("demo")(run.Options(secret=SECRET, extra={"bot_seconds": "0.2"}))
    try:
        async with browser.chromium() as (chromium, _):
            alice = await browser.demo_page(chromium, demo.url, "alice", "ws")
            bob = await browser.demo_page(chromium, demo.url, "bob", "sse")
            await alice.wait_for_selector("#presence li:has-text('bob')")
            for transport in KINDS:
                await alice.click(f"button[data-transport='{transport}']")
                await browser.wait_demo_open(alice, transport, TIMEOUT_MS)
                await alice.fill("#text", f"hello over {transport}")
                await alice.click("#composer button")
                await alice.wait_for_selector(f".messages li:has-text('hello over {transport}')",
                                              timeout=TIMEOUT_MS)
                recovered = await alice.evaluate("window.demo.stats.recovered")
                await alice.click("#drop")
                await alice.wait_for_function(
                    "(n) => window.demo.client.state === 'open' && window.demo.stats.recovered > n",
                    arg=recovered, timeout=TIMEOUT_MS)
            stats = await alice.evaluate("window.demo.stats")
            assert stats["drops"] == len(KINDS)
            assert stats["lost"] == 0 and stats["duplicated"] == 0
            await bob.click(".messages li:has-text('hello over ws') .like")
            await alice.wait_for_selector("#notifications li:has-text('bob liked')",
                                          timeout=TIMEOUT_MS)
            assert "1" in await alice.inner_text(".messages li:has-text('hello over ws') .like")
            shot = await alice.screenshot()
            assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        await demo.stop()
