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
