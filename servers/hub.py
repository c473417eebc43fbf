"""The hub: channels, subscriptions, ids and history (through the broker), presence and limits.

Transport adapters only translate bytes into hub calls and drain each connection's outbox.
Time comes from an injected clock, so the unit tests drive the hub without sockets or sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, NamedTuple

from servers import auth
from servers.brokers import Broker, Message
from servers.brokers.memory_broker import MemoryBroker
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

Clock = Callable[[], float]
SUITE_VERSION = version("sobranie-bench")
"""The suite's version, in every ``hello`` and ``/healthz`` (``server`` is ``<kind>/<version>``)."""
REPLY_TYPES = frozenset({"ack", "echo", "error"})
"""Envelope types that answer a request (what ``Connection.replies`` collects)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_envelope: int = wire.MAX_ENVELOPE_BYTES
    """Envelope size answered with ``too_large`` (connection stays open)."""
    hard_frame: int = wire.HARD_FRAME_BYTES
    """Frame size that closes the connection (WebSocket 1009)."""
    send_queue: int = 4096
    """Envelopes queued for one connection before it is cut off as a slow consumer."""
    rate: float = 5000.0
    """Requests per second a connection may sustain (token bucket refill)."""
    burst: float = 5000.0
    """Token bucket size: requests a connection may send at once."""
    flood: float = 1000.0
    """Requests refused past the bucket before the connection is closed (1008)."""
    header_timeout: float = wire.HEADER_TIMEOUT_SECONDS
    """Seconds an HTTP server waits for a request's headers (slowloris defence)."""


class Outgoing(NamedTuple):
    """One encoded envelope in an outbox (immutable; a NamedTuple because one is built per
    envelope sent, and a frozen dataclass costs three times as much to build)."""

    type: str
    """Envelope type: hello, message, ack, echo, presence, error."""
    text: str
    """The encoded envelope."""
    channel: str | None = None
    """Channel of a ``message`` (for cursors)."""
    id: int = 0
    """Id of a ``message`` in its channel."""


class _Sub:
    """One connection's subscription: last id delivered, and live messages held during resume."""

    __slots__ = ("last", "pending")

    def __init__(self, last: int, pending: list[Outgoing] | None) -> None:
        self.last = last
        self.pending = pending


class Connection:
    """One client's session in the hub, whatever carries it, with a bounded outbox.

    The outbox is drained either by awaiting :meth:`outgoing` (one-way streams, whose writer is
    a loop anyway) or by a :class:`Sender` (WebSocket adapters: no task per connection)."""

    __slots__ = (
        "__weakref__",
        "_refilled",
        "_tokens",
        "_waiter",
        "close_code",
        "close_reason",
        "hub",
        "id",
        "on_close",
        "queue",
        "replies",  # set by the Socket.IO adapter
        "subs",
        "transport",
        "user",
        "wake",
    )

    def __init__(self, hub: Hub, id: str, user: str, transport: str) -> None:
        self.hub = hub
        self.id = id
        self.user = user
        self.transport = transport
        self.subs: dict[str, _Sub] = {}
        self.queue: list[Outgoing] = []
        """The outbox, oldest first; never longer than ``Limits.send_queue``."""
        self.close_code: int | None = None
        self.close_reason = ""
        self.on_close: Callable[[int, str], None] | None = None
        """Set by the adapter: called once when the hub cuts the connection off."""
        self.wake: Callable[[], None] | None = None
        """Set by a :class:`Sender`: called when the outbox stops being empty."""
        self.replies: list[dict[str, Any]] | None = None
        """Set to a list by an adapter whose transport carries replies apart from the stream
        (Socket.IO acks): while it is set, ack, echo and error envelopes land there instead of
        the outbox."""
        self._waiter: asyncio.Future[None] | None = None
        self._tokens = hub.limits.burst
        self._refilled = hub.clock()

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def push(self, item: Outgoing) -> None:
        if self.close_code is not None:
            return
        queue = self.queue
        if len(queue) >= self.hub.limits.send_queue:
            self.close(wire.CLOSE_POLICY, f"slow consumer: {len(queue)} envelopes queued")
            return
        queue.append(item)
        self.hub.metrics.sent[self.transport] += 1
        if len(queue) == 1:  # was empty: whoever drains it may be waiting
            if self.wake is not None:
                self.wake()
            elif self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def push_envelope(self, envelope: dict[str, Any]) -> None:
        if self.replies is not None and envelope["type"] in REPLY_TYPES:
            self.hub.metrics.sent[self.transport] += 1
            self.replies.append(envelope)
            return
        self.push(Outgoing(envelope["type"], wire.encode(envelope)))

    def deliver(self, item: Outgoing) -> None:
        """A message of a subscribed channel: held while resuming, dropped if already seen."""
        sub = self.subs.get(item.channel)  # type: ignore[arg-type]
        if sub is None:
            return
        if sub.pending is not None:
            sub.pending.append(item)
        elif item.id > sub.last:
            sub.last = item.id
            self.push(item)

    async def outgoing(self, timeout: float | None = None) -> list[Outgoing]:
        """Wait for queued envelopes and take them all; empty on close or after ``timeout``."""
        if not self.queue and self.close_code is None:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout, self._wake) if timeout is not None else None
            try:
                await self._waiter
            finally:
                self._waiter = None
                if timer:
                    timer.cancel()
        items, self.queue = self.queue, []
        return items

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self, code: int, reason: str, *, by_server: bool = True) -> None:
        """Cut the connection off (slow consumer, flood); the adapter closes the socket."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        if by_server:
            self.hub.metrics.cut[reason.split(":")[0]] += 1
        self._wake()
        if self.on_close is not None:
            self.on_close(code, reason)

    def take_token(self) -> bool:
        """Token bucket: False when over the rate (and closes the connection on a flood)."""
        limits = self.hub.limits
        now = self.hub.clock()
        self._tokens = min(limits.burst, self._tokens + (now - self._refilled) * limits.rate)
        self._refilled = now
        self._tokens -= 1
        if self._tokens >= 0:
            return True
        if self._tokens < -limits.flood:
            self.close(wire.CLOSE_POLICY, "rate limit: flood")
        return False


class Sender:
    """Drains a connection's outbox through ``send`` (the adapter's coroutine that sends one
    encoded envelope) without a writer task per connection.

    The reply to a client's request goes out inline, right after the hub handled it
    (:meth:`handle`): no task switch per echo or ack. Requests that arrived in the same read
    (a pipelining client under load) are a burst: only the first reply goes inline, the rest go
    out together when the reader has caught up (the loop's next turn), as a writer task would
    have sent them; replying to each at once spreads the writes out and costs both ends a
    wake-up per message. What other connections push meanwhile (messages, presence) wakes a
    short-lived task that sends until the outbox is empty. One sender at a time: whoever is
    sending loops until the outbox is empty, so order is kept. ``send`` suspends only when the
    socket's buffer is full (the peer reads slowly); the outbox then grows until the hub cuts
    the connection off as a slow consumer."""

    __slots__ = ("burst", "conn", "gone", "handling", "send", "sending", "task")

    def __init__(self, conn: Connection, send: Callable[[str], Awaitable[Any]],
                 gone: tuple[type[BaseException], ...] = (ConnectionError,)) -> None:
        self.conn = conn
        self.send = send
        self.gone = gone
        """Exceptions of ``send`` that mean the peer is gone: sending stops quietly."""
        self.handling = False
        self.sending = False
        self.burst = False
        self.task: asyncio.Task[None] | None = None
        conn.wake = self.wake

    async def handle(self, raw: str | bytes) -> None:
        """One envelope from the client; its replies are sent before this returns (the first
        of a burst) or at the loop's next turn (the others)."""
        self.handling = True
        try:
            await self.conn.hub.handle(self.conn, raw)
        finally:
            self.handling = False
        if not self.conn.queue or self.sending:
            return
        if self.burst:  # more requests in the same read: their replies go out together after it
            return
        self.burst = True
        asyncio.get_running_loop().call_soon(self._end_burst)
        await self.flush()

    def _end_burst(self) -> None:
        self.burst = False
        if self.conn.queue:
            self.wake()

    def wake(self) -> None:
        if not (self.handling or self.sending or self.task is not None
                or self.conn.close_code is not None):
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """The woken task's body: :meth:`flush` inlined (one coroutine fewer per wake-up, which
        a fan-out pays once per subscriber)."""
        if self.sending:  # the reader got there first and is waiting on a full socket
            self.task = None
            return
        self.sending = True
        conn, send = self.conn, self.send
        try:
            while conn.queue and conn.close_code is None:
                items, conn.queue = conn.queue, []
                for item in items:
                    await send(item.text)
        except self.gone:
            conn.wake = None
        finally:
            self.sending = False
            self.task = None

    async def flush(self) -> None:
        """Send until the outbox is empty (or the connection closed or the peer left)."""
        if self.sending:
            return
        self.sending = True
        conn, send = self.conn, self.send
        try:
            while conn.queue and conn.close_code is None:
                items, conn.queue = conn.queue, []
                for item in items:
                    await send(item.text)
        except self.gone:
            conn.wake = None  # nothing more can be sent; the reader sees the close
        finally:
            self.sending = False

    def stop(self) -> None:
        """No more sending (the connection is closing)."""
        self.conn.wake = None
        if self.task is not None:
            self.task.cancel()


class Metrics:
    """Counters rendered as Prometheus text at ``/metrics``."""

    def __init__(self) -> None:
        self.opened: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.cut: Counter[str] = Counter()
        self.published = 0

    def render(self, hub: Hub) -> str:
        open_now = Counter(c.transport for c in hub.conns.values())
        lines = []

        def family(name: str, kind: str, help: str, values: dict[str, int], label: str) -> None:
            lines.append(f"# HELP sobranie_{name} {help}")
            lines.append(f"# TYPE sobranie_{name} {kind}")
            for key, value in sorted(values.items()):
                lines.append(f'sobranie_{name}{{{label}="{key}"}} {value}')

        family("connections", "gauge", "Open connections.", open_now, "transport")
        family("connections_total", "counter", "Connections accepted.", self.opened, "transport")
        family("messages_in_total", "counter", "Client envelopes received.", self.received,
               "transport")
        family("messages_out_total", "counter", "Envelopes queued to clients.", self.sent,
               "transport")
        family("errors_total", "counter", "Error envelopes sent.", self.errors, "code")
        family("disconnects_total", "counter", "Connections cut off by the server.", self.cut,
               "reason")
        lines.append("# HELP sobranie_published_total Messages published through this instance.")
        lines.append("# TYPE sobranie_published_total counter")
        lines.append(f"sobranie_published_total {self.published}")
        lines.append(f"sobranie_channels {len(hub.channels)}")
        return "\n".join(lines) + "\n"


class Hub:
    """Every transport's connections meet here."""

    def __init__(self, broker: Broker | None = None, *, clock: Clock = time.monotonic,
                 limits: Limits | None = None, server: str = "sobranie-aiohttp") -> None:
        self.broker = broker or MemoryBroker()
        self.clock = clock
        self.limits = limits or Limits()
        self.server = f"{server}/{SUITE_VERSION}"
        self.metrics = Metrics()
        self.conns: dict[str, Connection] = {}
        self.channels: dict[str, dict[Connection, None]] = {}
        self._online: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self.broker.start(self._deliver)
            self._started = True

    async def close(self) -> None:
        for conn in list(self.conns.values()):
            conn.close(wire.CLOSE_GOING_AWAY, "server shutting down")
        await self.broker.close()

    # --- connections ------------------------------------------------------------------

    async def connect(self, user: str, transport: str) -> Connection:
        """A new authenticated connection: hello first, presence ``online`` for the user."""
        conn = Connection(self, f"{self._prefix}-{next(self._ids)}", user, transport)
        self.conns[conn.id] = conn
        self.metrics.opened[transport] += 1
        conn.push_envelope(wire.hello(conn.id, user, self.server))
        self._online[user] += 1
        if self._online[user] == 1:
            await self.broker.publish_transient(wire.PRESENCE_CHANNEL,
                                                wire.presence(user, "online"))
        return conn

    async def disconnect(self, conn: Connection) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        conn.close(wire.CLOSE_GOING_AWAY, "disconnected", by_server=False)
        for channel in list(conn.subs):
            await self._leave(conn, channel)
        self._online[conn.user] -= 1
        if self._online[conn.user] <= 0:
            del self._online[conn.user]
            await self.broker.publish_transient(wire.PRESENCE_CHANNEL,
                                                wire.presence(conn.user, "offline"))

    def lookup(self, conn_id: str, user: str) -> Connection:
        """The stream ``conn_id`` of ``user`` (for /echo, /subscribe on SSE and polling)."""
        conn = self.conns.get(conn_id)
        if conn is None:
            raise WireError(ErrorCode.BAD_REQUEST, f"no open connection {conn_id[:40]!r}")
        if conn.user != user:
            raise WireError(ErrorCode.FORBIDDEN, "that connection belongs to another user")
        return conn

    # --- requests -----------------------------------------------------------------------

    async def handle(self, conn: Connection, raw: str | bytes) -> None:
        """One envelope from a client: parse, check, dispatch; errors go back on the stream."""
        self.metrics.received[conn.transport] += 1
        if not conn.take_token():
            self.reject(conn, WireError(ErrorCode.RATE_LIMITED, "slow down"))
            return
        req: wire.Request | None = None
        try:
            req = wire.parse_request(raw, limit=self.limits.max_envelope)
            await self.execute(conn, req)
        except WireError as exc:
            if exc.ref is None and req is not None:  # raised below the hub (broker unavailable)
                exc.ref = req.ref
            self.reject(conn, exc)

    async def execute(self, conn: Connection, req: wire.Request) -> None:
        if isinstance(req, wire.Echo):
            conn.push_envelope(wire.echo(req.ref, req.data))
        elif isinstance(req, wire.Publish):
            msg = await self.publish(conn.user, req.channel, req.data, req.ref)
            conn.push_envelope(wire.ack(req.ref, msg.id))
        elif isinstance(req, wire.Subscribe):
            await self.subscribe(conn, req.channel, req.since, req.ref)
        else:
            await self.unsubscribe(conn, req.channel, req.ref)

    def reject(self, conn: Connection, exc: WireError) -> None:
        self.metrics.errors[exc.code] += 1
        conn.push_envelope(exc.envelope())

    async def publish(self, user: str | None, channel: str, data: Any,
                      ref: str | None = None) -> Message:
        """Publish as ``user``; ``user=None`` is a server-side code path (notifications)."""
        if user is not None and not auth.may_publish(user, channel):
            raise WireError(ErrorCode.FORBIDDEN, f"clients may not publish to {channel}", ref)
        self.metrics.published += 1
        return await self.broker.publish(channel, data, user or "server")

    async def subscribe(self, conn: Connection, channel: str, since: int | None = None,
                        ref: str | None = None) -> int:
        """Join ``channel``: ack (with the channel's latest id, the client's starting cursor),
        then the history after ``since``, then live messages. A ``since`` older than the
        retained history gets ``history_gap`` instead of the ack; the subscription stands and
        the retained messages follow. Returns the cursor it starts from."""
        if not auth.may_subscribe(conn.user, channel):
            raise WireError(ErrorCode.FORBIDDEN, f"{channel} is private", ref)
        if channel in conn.subs:
            await self._leave(conn, channel)
        sub = _Sub(since or 0, [] if since is not None else None)
        conn.subs[channel] = sub
        local = self.channels.setdefault(channel, {})
        local[conn] = None
        if len(local) == 1:
            await self.broker.subscribe(channel)
        latest = await self.broker.last_id(channel)
        if since is None:
            conn.push_envelope(wire.ack(ref, latest))
            return latest
        history = await self.broker.history(channel, since)
        if since < latest and (not history or history[0].id > since + 1):
            first = history[0].id if history else latest + 1
            self.reject(conn, WireError(
                ErrorCode.HISTORY_GAP, f"{channel}: ids {since + 1}..{first - 1} are no longer "
                "retained; resync, the retained messages follow", ref))
        else:
            conn.push_envelope(wire.ack(ref, latest))
        for msg in history:
            if msg.id > sub.last:
                sub.last = msg.id
                conn.push(Outgoing("message", msg.text, channel, msg.id))
        held, sub.pending = sub.pending or [], None
        for item in held:
            conn.deliver(item)
        return since

    async def unsubscribe(self, conn: Connection, channel: str, ref: str | None = None) -> None:
        await self._leave(conn, channel)
        conn.push_envelope(wire.ack(ref))

    async def _leave(self, conn: Connection, channel: str) -> None:
        if conn.subs.pop(channel, None) is None:
            return
        local = self.channels.get(channel)
        if local is not None:
            local.pop(conn, None)
            if not local:
                del self.channels[channel]
                await self.broker.unsubscribe(channel)

    # --- delivery (called by the broker) ----------------------------------------------------

    def _deliver(self, msg: Message) -> None:
        local = self.channels.get(msg.channel)
        if not local:
            return
        if msg.id == 0:
            item = Outgoing("presence", msg.text, msg.channel)
            for conn in tuple(local):
                conn.push(item)
            return
        item = Outgoing("message", msg.text, msg.channel, msg.id)
        for conn in tuple(local):
            conn.deliver(item)
