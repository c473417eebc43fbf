"""Real browsers driving the browser client (``web/``): launch, open tabs, run the check.

Two engines, both Debian's builds (``setup/apt.txt``), never a downloaded one:

- **Chromium**, driven by Playwright from PyPI with ``executable_path`` (``playwright install``
  is never run); as root it needs ``--no-sandbox``.
- **Firefox ESR**, which Playwright cannot launch: ``sobranie_bench/firefox/driver.mjs`` drives it
  with puppeteer-core over WebDriver BiDi, one JSON request per line on its stdin. WebRTC on
  loopback needs two prefs the driver sets (host candidates on 127.0.0.1, not mDNS names).

Both sit behind :class:`Browser` (``open`` a tab on a page, ``evaluate`` in it, ``close``), so a
test or the ``browser`` scenario runs the same check in either. Each launch gets a fresh
profile; every launch is closed on the way out, failures included, and every request is bounded
in time. Used by the browser tests and the ``browser`` harness scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

CHROMIUM_ARGS = ("--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu")
"""No update checks, sync or GPU process: nothing reaches for a network that is closed."""
CHECK_PAGE = "/web/check.html"
CHECK_READY = "window.sobranieReady === true"
ENGINES = ("chromium", "firefox")
"""Engines :func:`launch` knows, in the order tests and the scenario run them."""
DRIVER_DIR = Path(__file__).resolve().parent / "firefox"
"""puppeteer-core's folder (``npm ci`` there: setup/npm.txt) and the Firefox driver script."""
LAUNCH_SECONDS = 60.0
"""How long a browser may take to start (a cold Firefox profile on a loaded machine)."""
REQUEST_SECONDS = 120.0
"""Upper bound of any one request to a browser (a page's own waits are shorter)."""


class BrowserUnavailable(RuntimeError):
    """The engine is not installed (with the command that installs it)."""


@dataclass(frozen=True, slots=True)
class Engine:
    name: str
    """``chromium`` or ``firefox``."""
    version: str
    """The browser's own version string, e.g. ``156.0.8078.114`` or ``153.8.0esr``."""


class Tab(Protocol):
    """One page in a browser (a Playwright ``Page`` is one)."""

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        """Call the JS function ``expression`` with ``arg`` in the page; its (awaited) result."""
        ...

    async def close(self) -> None:
        ...


class Browser(Protocol):
    """A launched engine."""

    engine: Engine
    """What runs (name and version)."""

    async def open(self, url: str, ready: str = CHECK_READY, context: str | None = None,
                   timeout: float = 20.0) -> Tab:
        """A tab on ``url``, returned once the JS expression ``ready`` is true. Tabs with the
        same ``context`` name share one profile (cookies, and connections per origin, as tabs
        of one window do); ``None`` gives the tab a context of its own."""
        ...

    def alive(self) -> bool:
        """Whether the engine still runs (a crashed one is launched anew by who kept it)."""
        ...


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise BrowserUnavailable("chromium is not installed: run `make setup` as root, or "
                                 "sudo apt-get install -y chromium")
    return path


def firefox_path() -> str:
    path = shutil.which("firefox-esr") or shutil.which("firefox")
    if path is None:
        raise BrowserUnavailable("firefox-esr is not installed: run `make setup` as root, or "
                                 "sudo apt-get install -y firefox-esr")
    if shutil.which("node") is None:
        raise BrowserUnavailable("node is not installed (it runs the Firefox driver): run "
                                 "`make setup` as root, or sudo apt-get install -y nodejs npm")
    if not (DRIVER_DIR / "node_modules" / "puppeteer-core").is_dir():
        raise BrowserUnavailable("puppeteer-core is not installed: run `make setup` (npm ci in "
                                 "sobranie_bench/firefox)")
    return path


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[tuple[Any, Engine]]:
    """A headless Chromium (Playwright ``Browser``) and its engine record, closed after."""
    from playwright.async_api import async_playwright

    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start sandboxed as root
    async with async_playwright() as pw:
        browser = await asyncio.wait_for(pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=args), LAUNCH_SECONDS)
        try:
            yield browser, Engine("chromium", browser.version)
        finally:
            await browser.close()


class ChromiumBrowser:
    """:class:`Browser` over Playwright; ``playwright`` is its ``Browser`` (the demo's clicks)."""

    def __init__(self, playwright: Any, engine: Engine) -> None:
        self.playwright = playwright
        self.engine = engine
        self._contexts: dict[str, Any] = {}

    def alive(self) -> bool:
        return bool(self.playwright.is_connected())

    async def open(self, url: str, ready: str = CHECK_READY, context: str | None = None,
                   timeout: float = 20.0) -> Tab:
        if context is None or context not in self._contexts:
            # TLS runs: our local CA is not in Chromium's store (the handshake still happens)
            made = await self.playwright.new_context(ignore_https_errors=True)
            if context is not None:
                self._contexts[context] = made
        ctx = made if context is None else self._contexts[context]
        page = await ctx.new_page()
        tab = ChromiumTab(page, ctx if context is None else None)
        try:
            page.set_default_timeout(timeout * 1000)
            await page.goto(url)
            await page.wait_for_function(ready, timeout=timeout * 1000)
        except BaseException:
            await tab.close()
            raise
        return tab


class ChromiumTab:
    """A Playwright ``Page`` whose evaluations are bounded in time (Playwright's are not)."""

    def __init__(self, page: Any, own_context: Any = None) -> None:
        self.page = page
        self._own_context = own_context
        """The context made for this tab alone, closed with it (a browser outlives tabs)."""

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await asyncio.wait_for(self.page.evaluate(expression, arg), REQUEST_SECONDS)

    async def close(self) -> None:
        await self.page.close()
        if self._own_context is not None:
            await self._own_context.close()


class FirefoxTab:
    """A tab of :class:`FirefoxBrowser`."""

    def __init__(self, browser: FirefoxBrowser, number: int) -> None:
        self._browser = browser
        self.number = number

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self._browser.request("eval", tab=self.number, fn=expression, arg=arg)

    async def close(self) -> None:
        await self._browser.request("close", tab=self.number)


class FirefoxBrowser:
    """:class:`Browser` over ``driver.mjs`` (a node process in a session of its own, whose
    child is Firefox): requests and answers are JSON lines matched by id."""

    def __init__(self, proc: asyncio.subprocess.Process, engine: Engine) -> None:
        self.proc = proc
        self.engine = engine
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.ensure_future(self._read())

    def alive(self) -> bool:
        return self.proc.returncode is None and not self._reader.done()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            answer = json.loads(line)
            future = self._waiting.pop(answer.get("id", -1), None)
            if future is not None and not future.done():
                if "error" in answer:
                    future.set_exception(RuntimeError(answer["error"]))
                else:
                    future.set_result(answer.get("value"))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("the Firefox driver exited"))

    async def request(self, op: str, timeout: float = REQUEST_SECONDS, **fields: Any) -> Any:
        assert self.proc.stdin is not None
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self.proc.stdin.write((json.dumps({"id": rid, "op": op, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(rid, None)

    async def open(self, url: str, ready: str = CHECK_READY, context: str | None = None,
                   timeout: float = 20.0) -> Tab:
        number = await self.request("open", timeout=timeout + 10, url=url, ready=ready,
                                    context=context, timeoutMs=int(timeout * 1000))
        return FirefoxTab(self, int(number))


async def _stop_driver(proc: asyncio.subprocess.Process) -> None:
    """Close stdin (the driver closes Firefox and exits), then its whole session if it lingers."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # node and the Firefox it started
        await proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a Firefox child left behind by a crashed driver


@contextlib.asynccontextmanager
async def firefox() -> AsyncIterator[FirefoxBrowser]:
    """A headless Firefox ESR behind ``driver.mjs``, closed after (its processes with it)."""
    executable = firefox_path()
    proc = await asyncio.create_subprocess_exec(
        "node", str(DRIVER_DIR / "driver.mjs"), executable, cwd=DRIVER_DIR,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True, limit=1 << 24,
        env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"})
    try:
        assert proc.stdout is not None
        try:
            first = json.loads(await asyncio.wait_for(proc.stdout.readline(), LAUNCH_SECONDS)
                               or b"{}")
        except (TimeoutError, ValueError):
            first = {"error": "firefox did not start within "
                              f"{LAUNCH_SECONDS:.0f} s"}
        if not first.get("ready"):
            raise BrowserUnavailable(str(first.get("error", "the Firefox driver exited")))
        version = str(first["version"])
        if "esr" in Path(executable).name and not version.endswith("esr"):
            version += "esr"  # Debian's build reports 153.8.0 over BiDi; its binary is ESR
        browser = FirefoxBrowser(proc, Engine("firefox", version))
        try:
            yield browser
        finally:
            browser._reader.cancel()
    finally:
        await _stop_driver(proc)


@contextlib.asynccontextmanager
async def launch(name: str) -> AsyncIterator[Browser]:
    """The engine ``name`` (one of :data:`ENGINES`), headless, closed after."""
    if name == "chromium":
        async with chromium() as (playwright, engine):
            yield ChromiumBrowser(playwright, engine)
    elif name == "firefox":
        async with firefox() as browser:
            yield browser
    else:
        raise ValueError(f"unknown browser engine {name!r}; known: {', '.join(ENGINES)}")


async def open_check_page(browser: Browser, origin: str, context: str | None = None) -> Tab:
    """A tab (own context unless ``context`` names a shared one) on ``origin``'s check page."""
    return await browser.open(origin + CHECK_PAGE, context=context)


async def run_check(page: Tab, **params: Any) -> dict[str, Any]:
    """``check(params)`` of web/check.js in ``page``: its result dict."""
    result: dict[str, Any] = await page.evaluate("(p) => window.sobranieCheck(p)", params)
    return result


async def connect_only(page: Tab, **params: Any) -> dict[str, Any]:
    """``connectOnly(params)`` of web/check.js: ``{ok, helloMs, error}``."""
    result: dict[str, Any] = await page.evaluate("(p) => window.sobranieConnect(p)", params)
    return result


DEMO_VIEWPORT = {"width": 1280, "height": 820}


async def demo_page(browser: Any, url: str, user: str, transport: str) -> Any:
    """The demo page at ``url`` (``serve demo``'s base URL) as ``user``, open on ``transport``."""
    context = await browser.new_context(viewport=DEMO_VIEWPORT)
    page = await context.new_page()
    await page.goto(f"{url}/web/demo/index.html?user={user}&transport={transport}")
    await wait_demo_open(page, transport)
    return page


async def wait_demo_open(page: Any, transport: str, timeout_ms: float = 20000) -> None:
    await page.wait_for_function(
        "(t) => window.demo && window.demo.transport === t && window.demo.client "
        "&& window.demo.client.state === 'open'", arg=transport, timeout=timeout_ms)


async def demo_screenshot(url: str, path: str) -> None:
    """The README's screenshot: alice on WebSockets, bob on SSE, a chat, a like, a drop."""
    import asyncio

    async with chromium() as (browser, _):
        alice = await demo_page(browser, url, "alice", "ws")
        bob = await demo_page(browser, url, "bob", "sse")
        for page, text in ((alice, "Shipping the browser client today"),
                           (bob, "Nice: SSE and WebSockets in one room")):
            await page.fill("#text", text)
            await page.click("#composer button")
            await asyncio.sleep(0.3)
        await bob.click(".messages li:has-text('Shipping') .like")
        await alice.click("#drop")
        await bob.fill("#text", "Posted while alice was dropped: she gets it on resume")
        await bob.click("#composer button")
        await asyncio.sleep(1.5)
        await wait_demo_open(alice, "ws")
        await asyncio.sleep(1.0)
        await alice.screenshot(path=path)


if __name__ == "__main__":  # python -m sobranie_bench.browser URL PNG (a running `serve demo`)
    import asyncio
    import sys

    asyncio.run(demo_screenshot(sys.argv[1], sys.argv[2]))
