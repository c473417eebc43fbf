"""``sobranie-bench serve demo``: the live demo page and every transport behind it, in one process.

The aiohttp app (``/ws``, ``/sse``, ``/poll``) listens on ``--port`` and serves ``web/`` at
``/web/`` (the page is ``/web/demo/index.html``, and ``/`` leads there); the websockets, WebTransport, Socket.IO and WebRTC
servers listen on ports the OS chooses. All share one in-process broker, so a page on SSE and
a page on WebRTC chat in the same room. The demo adds three routes to the aiohttp app:

- ``GET /demo/config``: the base URL of each transport, for the page's switcher;
- ``GET /demo/token?user=NAME``: a token for anyone who asks (a demo, never production);
- ``POST /demo/like`` ``{"channel", "id", "author"}`` (token required): the like of a message,
  published by the server as Sobranie's back end would: the counter on ``counter:likes`` and a
  notification on the author's private ``user:<author>`` channel.

A bot user posts to ``chat:lobby`` every few seconds (``extra['bot_seconds']``, 0 = off), so a dropped connection has something to miss and its resume something to recover.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from servers import aiohttp_common, auth, http_app, socketio_app, static, webrtc
from servers.brokers import Message
from servers.brokers.memory_broker import MemoryBroker
from servers.hub import Hub
from servers.run import Options, Running, serve_app
from servers.webtransport import WebTransportServer
from servers.ws_websockets import WebsocketsServer
from sobranie_contract import tokens
from sobranie_contract.wire import WireError

PAGE = "/web/demo/index.html"
LOBBY = "chat:lobby"
LIKES = "counter:likes"
BOT = "sobranie-bot"
BOT_SECONDS = 4.0
BOT_LINES = ("Welcome to Sobranie: this room is live on every transport.",
             "Try the transport switcher: the room and its history stay the same.",
             "Press Drop connection: the messages you miss come back on resume, once each.",
             "Likes travel as a counter to everyone and a notification to the author.",
             "Open a second tab on another transport and chat with yourself.")
USER = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class SharedMemoryBroker(MemoryBroker):
    """The memory broker for several hubs in one process: one history, delivery to each."""

    def __init__(self, history_size: int) -> None:
        super().__init__(history_size)
        self._hubs: list[Callable[[Message], None]] = []
        self._deliver = self._fan_out

    async def start(self, deliver: Callable[[Message], None]) -> None:
        self._hubs.append(deliver)

    def _fan_out(self, msg: Message) -> None:
        for deliver in self._hubs:
            deliver(msg)

    async def close(self) -> None:
        """Each hub closes its broker; the shared one has nothing to release."""


async def start(opts: Options) -> Running:
    """Every server on one shared broker; the demo page on the aiohttp app."""
    broker = SharedMemoryBroker(opts.history_size)
    secret = tokens.secret_from_env(opts.secret)
    origins = tuple(opts.origins)
    if origins:  # the page's own origin must be allowed too
        origins += (f"http://{opts.host}:{opts.port}",)
    authenticator = auth.Authenticator(secret, origins)

    def core(server: str) -> tuple[Hub, auth.Authenticator]:
        """A hub of its own for each server, all on the one shared broker."""
        return Hub(broker, limits=opts.limits, server=server), authenticator
    stops: list[Callable[[], Awaitable[None]]] = []
    urls: dict[str, str] = {}
    side = Options(host=opts.host, port=0, secret=secret, origins=origins)
    try:
        ws_server = WebsocketsServer(*core("sobranie-websockets"))
        listening = await ws_server.start(opts.host, 0)
        stops.append(_stop_websockets(ws_server, listening))
        urls["ws-websockets"] = f"http://{opts.host}:{listening.sockets[0].getsockname()[1]}"

        wt = WebTransportServer(*core("sobranie-webtransport"))
        urls["webtransport"] = f"http://{opts.host}:{await wt.start(opts.host, 0)}"
        stops.append(wt.stop)

        sio = await serve_app(socketio_app.make_app(*core("sobranie-socketio")), side, lambda url: {})
        stops.append(sio.stop)
        urls["socketio"] = urls["socketio-polling"] = sio.url

        rtc = await serve_app(webrtc.make_app(
            *core("sobranie-webrtc"), ice_address=webrtc.candidate_address(opts.host)), side, lambda url: {})
        stops.append(rtc.stop)
        urls["webrtc"] = rtc.url

        app = http_app.make_app(*core("sobranie-aiohttp"))
        hub = app[aiohttp_common.HUB]
        _add_demo_routes(app, hub, secret, urls)
        bot = float(opts.extra.get("bot_seconds", BOT_SECONDS))
        if bot > 0:
            app.cleanup_ctx.append(_bot(hub, bot))
        main = await serve_app(app, Options(host=opts.host, port=opts.port, secret=secret,
                                            origins=origins,
                                            extra={"static": str(static.WEB_DIR)}),
                               lambda url: {"demo": f"{url}{PAGE}"})
        stops.append(main.stop)
        for transport in ("ws", "sse", "longpoll"):
            urls[transport] = main.url
    except BaseException:
        for stop in reversed(stops):
            await stop()
        raise

    async def stop_all() -> None:
        for stop in reversed(stops):
            with contextlib.suppress(Exception):
                await stop()

    return Running(main.url, stop_all, {**main.endpoints, **{f"url_{k}": v
                                                             for k, v in urls.items()}})


def _stop_websockets(server: WebsocketsServer, listening: Any) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        listening.close()
        await server.hub.close()
        await listening.wait_closed()

    return stop


def _add_demo_routes(app: web.Application, hub: Hub, secret: str,
                     urls: dict[str, str]) -> None:
    async def config(request: web.Request) -> web.Response:
        return web.json_response({"transports": urls, "lobby": LOBBY, "likes": LIKES})

    async def token(request: web.Request) -> web.Response:
        user = request.query.get("user", "")
        if not USER.match(user) or user == BOT:
            raise web.HTTPBadRequest(text="user: 1 to 32 of A-Z a-z 0-9 _ . -")
        return web.json_response({"user": user, "token": tokens.make_token(user, secret)})

    async def like(request: web.Request) -> web.Response:
        liker = str(aiohttp_common.authenticate(request)["sub"])
        try:
            body = await aiohttp_common.read_body(request, "channel", "id", "author")
        except WireError as exc:
            return aiohttp_common.error_response(hub, exc)
        author = str(body["author"])
        if not USER.match(author):
            raise web.HTTPBadRequest(text="author: not a user id")
        liked = {"channel": str(body["channel"]), "id": body["id"], "by": liker}
        counter = await hub.publish(None, LIKES, {**liked, "delta": 1})
        if author != liker and author != BOT:
            await hub.publish(None, f"user:{author}", {"kind": "like", **liked})
        return web.json_response({"status": "ok", "counter_id": counter.id})

    async def home(request: web.Request) -> web.Response:
        raise web.HTTPFound(PAGE)

    app.router.add_get("/", home)
    app.router.add_get("/demo/config", config)
    app.router.add_get("/demo/token", token)
    app.router.add_post("/demo/like", like)


def _bot(hub: Hub, seconds: float) -> Callable[[web.Application], Any]:
    async def ctx(app: web.Application) -> Any:
        async def talk() -> None:
            for line in itertools.cycle(BOT_LINES):
                await asyncio.sleep(seconds)
                await hub.publish(BOT, LOBBY, {"text": line})

        task = asyncio.create_task(talk())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
