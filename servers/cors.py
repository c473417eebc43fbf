"""CORS for the aiohttp apps: the ``--origin`` allow-list is the CORS list too.

A web page on another origin may use /sse, /poll, /publish, /subscribe, /echo, /webrtc/offer...
when its ``Origin`` is on the allow-list (an empty list allows every origin, for local
benchmarking). Rules, in order:

- a request without ``Origin`` (a non-browser client, a same-origin GET) is served as before;
- a request whose ``Origin`` is not allowed is refused with 403 before its handler runs (the
  same answer as a refused WebSocket upgrade: a simple cross-origin POST would otherwise be
  carried out even though the page cannot read the answer);
- an allowed one gets ``Access-Control-Allow-Origin`` (the origin itself, or ``*`` with an empty
  allow-list) on every answer, errors included, so the page can read a 401 or a 429;
- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered 204 here.

Credentials stay off (no ``Access-Control-Allow-Credentials``; our servers read no cookie): the
token travels in the query string or the ``Authorization`` header, which the preflight allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from servers import auth

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
MAX_AGE_SECONDS = 600
"""How long a browser may cache a preflight's answer."""


def install(app: web.Application, authenticator: auth.Authenticator) -> None:
    """Mount CORS on ``app``: the refusal and the preflight first of all middlewares, the
    headers on every answer as it is prepared (streams such as SSE included)."""
    app.middlewares.insert(0, _middleware(authenticator))

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and authenticator.origin_allowed(origin):
            for name, value in _allow(authenticator, origin).items():
                response.headers.setdefault(name, value)  # engine.io sets its own

    app.on_response_prepare.append(add_headers)


def _middleware(authenticator: auth.Authenticator) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return await handler(request)
        if not authenticator.origin_allowed(origin):
            raise web.HTTPForbidden(text="origin not allowed")
        if (request.method == hdrs.METH_OPTIONS
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            return web.Response(status=204, headers={
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE_SECONDS)})
        return await handler(request)

    return cors


def _allow(authenticator: auth.Authenticator, origin: str) -> dict[str, str]:
    if not authenticator.origins:
        return {hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: "*"}
    return {hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin, hdrs.VARY: hdrs.ORIGIN}
