"""Real browsers driving the browser client (``web/``): launch, open pages, run the check.

Chromium is Debian's (``setup/apt.txt``), driven by Playwright from PyPI with
``executable_path``: no browser is ever downloaded (``playwright install`` is never run). Each
launch gets a fresh profile (Playwright's temporary user-data-dir) and the flags that keep a
closed network quiet. Used by the browser tests and the ``browser`` harness scenario.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

CHROMIUM_ARGS = ("--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-gpu")
"""No update checks, sync or GPU process: nothing reaches for a network that is closed."""
CHECK_PAGE = "/web/check.html"


class BrowserUnavailable(RuntimeError):
    """The engine is not installed (with the command that installs it)."""


@dataclass(frozen=True, slots=True)
class Engine:
    name: str
    """``chromium``."""
    version: str
    """The browser's own version string, e.g. ``156.0.8078.114``."""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise BrowserUnavailable("chromium is not installed: run `make setup` as root, or "
                                 "sudo apt-get install -y chromium")
    return path


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[tuple[Any, Engine]]:
    """A headless Chromium (Playwright ``Browser``) and its engine record, closed after."""
    from playwright.async_api import async_playwright

    args = list(CHROMIUM_ARGS)
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start sandboxed as root
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                           args=args)
        try:
            yield browser, Engine("chromium", browser.version)
        finally:
            await browser.close()


async def open_check_page(browser: Any, origin: str) -> Any:
    """A new page (own context: no shared cache or connections) on ``origin``'s check page."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(origin + CHECK_PAGE)
    await page.wait_for_function("window.sobranieReady === true")
    return page


async def run_check(page: Any, **params: Any) -> dict[str, Any]:
    """``check(params)`` of web/check.js in ``page``: its result dict."""
    result: dict[str, Any] = await page.evaluate("(p) => window.sobranieCheck(p)", params)
    return result


async def connect_only(page: Any, **params: Any) -> dict[str, Any]:
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
