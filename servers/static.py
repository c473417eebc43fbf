"""Web pages from our own servers: ``serve --static DIR`` mounts DIR (the browser client and
demo page live in ``web/``) at ``/web/`` of an aiohttp app, so a page and the transport it uses
share one origin; :func:`page_app` serves the same files alone (a page on another origin)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The browser client, its check page and the demo page (plain ES modules, no build step)."""
PREFIX = "/web/"


def mount(app: web.Application, directory: str | Path = WEB_DIR) -> None:
    """Serve ``directory`` under /web/ of ``app`` (no listings, no symlinks out of it)."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"--static {directory}: not a directory")
    app.router.add_static(PREFIX, root, show_index=False, follow_symlinks=False)


def page_app(directory: str | Path = WEB_DIR) -> web.Application:
    """An app that serves only the pages: another origin than the servers' own."""
    app = web.Application()
    mount(app, directory)
    return app
