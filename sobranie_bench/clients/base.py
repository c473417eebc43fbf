"""One client interface for every transport.

A client connects with a token, subscribes (optionally ``since`` an id), publishes (awaiting the
``ack``), sends ``echo``, and yields the server's envelopes as an async stream (or hands them to
``on_envelope``, the cheaper path the harness uses). It keeps a cursor of the last id seen per
channel; after a drop it reconnects with exponential backoff and full jitter and resumes from that
cursor, so nothing acknowledged is lost. Subclasses implement only ``_open``, ``_send`` and
``_abort``: how bytes move, never what they mean.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sobranie_contract import tls, wire
from sobranie_contract.framing import Delivery
from sobranie_contract.wire import WireError

Envelope = dict[str, Any]
log = logging.getLogger("sobranie.client")


class ClientError(Exception):
    """The server refused or could not be reached (with a message a person can act on)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.05
    """First retry ceiling, seconds."""
    cap: float = 5.0
    """Largest retry ceiling, seconds."""
    attempts: int = 12
    """Give up after this many failed reconnects in a row."""

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (AWS architecture blog)."""
        return rng.uniform(0.0, min(self.cap, self.base * 2 ** attempt))


class Client(ABC):
    transport: ClassVar[str]
    path: ClassVar[str]
    deliveries: ClassVar[frozenset[Delivery]] = frozenset({Delivery.ORDERED})
    """The :class:`~sobranie_contract.framing.Delivery` modes this transport offers."""

    def __init__(self, url: str, token: str, *, reconnect: bool = True,
                 backoff: Backoff = Backoff(), rng: random.Random | None = None,
                 on_envelope: Callable[[Envelope], None] | None = None,
                 timeout: float = 10.0, ca: str | None = None,
                 source: str | None = None, delivery: str = Delivery.ORDERED) -> None:
        if delivery not in self.deliveries:
            raise ClientError(f"{self.transport} cannot deliver {delivery!r}; it offers "
                              f"{', '.join(sorted(self.deliveries))}")
        self.delivery = Delivery(delivery)
        """Where the server sends this connection's messages (asked for at each connect)."""
        self._in_order = self.delivery is not Delivery.UNRELIABLE
        self.url = url.rstrip("/")
        self.source = source
        """Local address to connect from (127.0.0.2, ...: each source address has its own
        ephemeral ports, so one machine can open more than one range's worth)."""
        self.ca = ca
        """CA certificate to trust for https:// (default: the local CA of sobranie_contract.tls)."""
        self.token = token
        self.reconnect = reconnect
        self.backoff = backoff
        self.rng = rng or random.Random()
        self.on_envelope = on_envelope
        self.timeout = timeout
        self.cursor: wire.Cursor = {}
        """Last id seen per subscribed channel."""
        self.channels: dict[str, None] = {}
        self.conn: str | None = None
        self.user: str | None = None
        self.reconnects = 0
        self.migrations = 0
        """Times the connection moved to a new local address and carried on (:meth:`migrate`)."""
        self.ended_at: list[float] = []
        """``time.monotonic()`` of each end of the transport noticed (the reconnect scenario's
        time to detect)."""
        self.close_code: int | None = None
        """Close code of the last transport that ended (WebSocket), if any."""
        self._inbox: asyncio.Queue[Envelope] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[Envelope]] = {}
        self._refs = itertools.count(1)
        self._subscribing: dict[str, str] = {}
        self._hello: asyncio.Future[Envelope] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._ssl: ssl.SSLContext | None = None

    # --- the interface --------------------------------------------------------------------

    async def connect(self, channels: Sequence[str] = ()) -> Envelope:
        """Open the transport (already subscribed to ``channels``); return the ``hello``."""
        for channel in channels:
            self.channels[wire.check_channel(channel)] = None
        self._hello = asyncio.get_running_loop().create_future()
        try:
            await self._open(resume=False)
        except ClientError:
            raise
        except (TimeoutError, OSError) as exc:
            raise ClientError(f"cannot reach {self.url}: {str(exc) or type(exc).__name__}") from None
        self._runner = asyncio.create_task(self._run())
        return await asyncio.wait_for(self._hello, self.timeout)

    async def subscribe(self, channel: str, since: int | None = None) -> Envelope:
        self.channels[wire.check_channel(channel)] = None
        if since is not None:
            self.cursor[channel] = since
        try:
            return await self.request(self._subscription(channel, since))
        except WireError as exc:
            if exc.code != wire.ErrorCode.HISTORY_GAP:  # with a gap the subscription stands
                self.channels.pop(channel, None)
                self.cursor.pop(channel, None)
            raise

    async def unsubscribe(self, channel: str) -> Envelope:
        self.channels.pop(channel, None)
        self.cursor.pop(channel, None)
        return await self.request(wire.Unsubscribe(channel, self._ref()))

    async def publish(self, channel: str, data: Any, *, unreliable: bool = False) -> int:
        """Publish and wait for the ``ack``; return the assigned id."""
        ack = await self.request(wire.Publish(channel, data, self._ref(), unreliable))
        return int(ack["id"])

    def publish_nowait(self, channel: str, data: Any) -> asyncio.Future[Envelope]:
        """Publish without waiting (open-loop load); the future resolves with the ack."""
        return self._submit(wire.Publish(channel, data, self._ref()))

    async def echo(self, data: Any) -> None:
        """Ask for an ``echo``; it arrives on the stream (round-trip timing)."""
        await self._send(wire.Echo(data))

    async def request(self, req: wire.Request) -> Envelope:
        return await asyncio.wait_for(self._submit(req), self.timeout)

    async def recv(self, timeout: float | None = None) -> Envelope:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def __aiter__(self) -> AsyncIterator[Envelope]:
        while True:
            yield await self._inbox.get()

    @property
    def is_open(self) -> bool:
        """Connected, and the transport has not ended (nor is the client reconnecting)."""
        return self._runner is not None and not self._runner.done() and not self._closing

    async def drop(self) -> None:
        """Cut the connection abruptly (tests and fault scenarios); resume follows if enabled."""
        await self._abort()

    async def migrate(self) -> None:
        """Carry on from a new local address, as a phone moving to another network does. A
        transport whose connection can migrate keeps it (QUIC: WebTransport overrides this);
        any other loses its connection and reconnects as after a drop, resuming from the
        cursor."""
        await self.drop()

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
        await self._abort(graceful=True)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ClientError("client closed"))

    # --- for subclasses ----------------------------------------------------------------------

    @abstractmethod
    async def _open(self, resume: bool) -> None:
        """Open the transport, subscribed to ``self.channels`` from ``self.cursor`` if resuming."""

    @abstractmethod
    async def _read(self) -> None:
        """Feed every envelope to ``_dispatch`` until the transport ends."""

    @abstractmethod
    async def _send(self, req: wire.Request) -> None:
        """Send one request (its reply comes back through ``_dispatch``)."""

    @abstractmethod
    async def _abort(self, graceful: bool = False) -> None:
        """Close the transport."""

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS for an https:// URL (trusting ``ca``), None for http://; made once."""
        if not self.url.startswith("https://"):
            return None
        if self._ssl is None:
            self._ssl = tls.client_context(self.ca)
        return self._ssl

    @property
    def token_query(self) -> str:
        return f"token={self.token}"

    def _dispatch(self, env: Envelope) -> None:
        kind = env.get("type")
        if kind == "message":
            if self._in_order or env["id"] > self.cursor.get(env["channel"], 0):
                self.cursor[env["channel"]] = env["id"]
        elif kind == "ack" and env.get("ref") in self._subscribing:
            self.merge_cursor({self._subscribing.pop(env["ref"]): env.get("id", 0)})
        if kind in ("ack", "error") and env.get("ref") in self._pending:
            fut = self._pending.pop(env["ref"])
            if fut.done():
                return
            if kind == "ack":
                fut.set_result(env)
            else:
                fut.set_exception(WireError(wire.ErrorCode(env["code"]), env["message"],
                                            env["ref"]))
            return
        elif kind == "hello":
            self.conn, self.user = env["conn"], env["user"]
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(env)
        if self.on_envelope is not None:
            self.on_envelope(env)
        else:
            self._inbox.put_nowait(env)

    def merge_cursor(self, cursor: wire.Cursor) -> None:
        """Start cursors for subscribed channels not seen yet (from an ack or the server)."""
        for channel, id in cursor.items():
            if channel in self.channels:
                self.cursor.setdefault(channel, int(id))

    def _subscription(self, channel: str, since: int | None) -> wire.Subscribe:
        ref = self._ref()
        self._subscribing[ref] = channel
        return wire.Subscribe(channel, since, ref)

    # --- internals -------------------------------------------------------------------------

    def _ref(self) -> str:
        return f"r{next(self._refs)}"

    def _submit(self, req: wire.Request) -> asyncio.Future[Envelope]:
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        if req.ref is None:
            raise ValueError("a request awaiting its reply needs a ref")
        self._pending[req.ref] = fut

        async def send() -> None:
            try:
                await self._send(req)
            except Exception as exc:  # noqa: BLE001  (the reply will never come: fail it)
                self._pending.pop(req.ref, None)  # type: ignore[arg-type]
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, (WireError, ClientError))
                                      else ClientError(f"send failed: {exc}"))

        asyncio.ensure_future(send())
        return fut

    async def _run(self) -> None:
        """Read until the transport ends; then reconnect with backoff and resume."""
        while not self._closing:
            try:
                await self._read()
            except Exception as exc:  # noqa: BLE001  (whatever ended it, resume from the cursor)
                log.debug("%s transport ended: %r", self.transport, exc)
            self.ended_at.append(time.monotonic())
            if self._closing or not self.reconnect:
                break
            for attempt in itertools.count():
                if attempt >= self.backoff.attempts:
                    self._closing = True
                    break
                await asyncio.sleep(self.backoff.delay(attempt, self.rng))
                try:
                    await self._open(resume=True)
                except Exception as exc:  # noqa: BLE001  (unreachable for now: back off, retry)
                    log.debug("%s reconnect failed: %r", self.transport, exc)
                    continue
                self.reconnects += 1
                break
