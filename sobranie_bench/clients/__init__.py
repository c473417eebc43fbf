"""One async client per transport, one interface (:class:`~sobranie_bench.clients.base.Client`).

``TRANSPORTS`` is the registry the CLI and the harness read: adding a transport is one server
adapter, one client and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from sobranie_bench.clients.base import Backoff, Client, ClientError


@dataclass(frozen=True, slots=True)
class Transport:
    name: str
    """Name used on the command line and in results: the transport (``ws``), or
    ``transport@server`` (``ws@elysia``) for the same transport served by another server."""
    server: str
    """``sobranie-bench serve`` kind that serves it."""
    client: str
    """``module:Class`` of its client (imported on first use)."""
    note: str = ""
    """One line for --help and the report."""

    def client_class(self) -> type[Client]:
        module, _, name = self.client.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


TRANSPORTS: dict[str, Transport] = {t.name: t for t in [
    Transport("ws", "ws", "sobranie_bench.clients.ws:WsClient", "WebSocket on aiohttp"),
    Transport("ws-websockets", "ws-websockets", "sobranie_bench.clients.ws:WsClient",
              "WebSocket on the websockets library"),
    Transport("sse", "sse", "sobranie_bench.clients.sse:SseClient",
              "Server-Sent Events (+ HTTP POST upstream)"),
    Transport("longpoll", "longpoll", "sobranie_bench.clients.longpoll:PollClient",
              "HTTP long-polling (+ HTTP POST upstream)"),
    Transport("webtransport", "webtransport", "sobranie_bench.clients.webtransport:WebTransportClient", "WebTransport over HTTP/3 (aioquic)"),
    Transport("socketio", "socketio", "sobranie_bench.clients.socketio:SocketIOClient",
              "Socket.IO over its websocket transport (python-socketio)"),
    Transport("socketio-polling", "socketio",
              "sobranie_bench.clients.socketio:SocketIOPollingClient",
              "Socket.IO over engine.io HTTP long-polling only"),
    Transport("webrtc", "webrtc", "sobranie_bench.clients.webrtc:WebRTCClient",
              "WebRTC data channels (aiortc), signalling by HTTP POST"),
    # transport@server: the same transport and client against another server, so one run
    # measures a transport row on several servers and each result names the one it came from
    Transport("ws@elysia", "elysia", "sobranie_bench.clients.ws:WsClient",
              "WebSocket on Bun + Elysia"),
    Transport("sse@elysia", "elysia", "sobranie_bench.clients.sse:SseClient",
              "Server-Sent Events on Bun + Elysia (+ HTTP POST upstream)"),
    Transport("longpoll@elysia", "elysia", "sobranie_bench.clients.longpoll:PollClient",
              "HTTP long-polling on Bun + Elysia (+ HTTP POST upstream)"),
]}


def base_transport(name: str) -> str:
    """``ws@elysia`` -> ``ws``: the technology a ``transport@server`` row measures."""
    return name.partition("@")[0]

__all__ = ["TRANSPORTS", "Backoff", "Client", "ClientError", "Transport", "base_transport"]
