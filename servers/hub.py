"""The hub: every rule of the contract that does not depend on the transport.

Adapters only translate: bytes and transport events in, hub calls; the outbox out, bytes. What
they may not decide themselves is written here, once (h11's ``_state.py`` keeps its rules at
the top of the module that owns them, and so does this one):

1. **A request** is one envelope: :meth:`Hub.handle` ``(conn, raw, reliable=...)`` counts it,
   spends a token (rule 4), parses it strictly (``sobranie_contract.wire``), checks it, runs it
   and returns its replies (``ack``, ``echo`` or ``error``). The replies also join the
   connection's outbox, in order with everything else, unless the adapter's transport carries
   replies apart (``Connection.replies_apart``: Socket.IO acks).
2. **Best effort**: an envelope that came on a carrier without delivery guarantees and without
   a reply path of its own (``reliable=False``: a WebTransport datagram) is handled as any
   other, except that a publish gets no ``ack``; errors still go back on the outbox. (WebRTC's
   unordered channel has its replies carried by the reliable channel: it is ``reliable=True``.)
3. **Errors are counted once**, here: every ``error`` envelope sent (:meth:`Hub.reject`) and
   every request refused outside a connection (:meth:`Hub.refused`: an HTTP answer, a refused
   handshake, a 401) adds one to ``sobranie_errors_total{code}``.
4. **Rate**: a token bucket per connection (``Limits.rate``, ``burst``); a request past it gets
   ``rate_limited``, and ``Limits.flood`` refusals past it close the connection (1008).
5. **Unread input is bounded**: transports that read without backpressure (aioquic, aiortc)
   queue what they read in an :class:`Inbox`; past ``Limits.hard_frame`` bytes waiting for the
   hub the connection is cut off as a flood (1008, :data:`FLOOD_REASON`).
6. **The outbox is bounded**: past ``Limits.send_queue`` envelopes the connection is cut off as
   a slow consumer (1008); the adapter closes its transport when ``Connection.on_close`` says.
7. **Channels are checked before anything is spent**: a one-way stream's opening request (SSE's
   GET, a poll) names channels and a cursor; :meth:`Hub.stream_channels` parses both and refuses
   a private channel of someone else before a stream or session exists.
8. **Subscribing** acks with the channel's latest id, then replays history after ``since``
   (``history_gap`` instead of the ack when part of it is gone), then live messages; a message
   is never delivered twice or out of order on one connection.
9. **Presence**: a user's first connection publishes ``online``, the last one to leave
   ``offline``.
10. **Time is injected** (``clock``): the token bucket and expiry read it, nothing here sleeps.
    A connection *parked* without a carrier (a long-poll session between polls,
    :meth:`Hub.park`) expires ``Limits.idle`` seconds later, or at once when the hub cut it off
    meanwhile; the adapter asks :meth:`Hub.next_deadline` when to come back and calls
    :meth:`Hub.expire` ``(now)`` then (aioquic's ``get_timer()`` / ``handle_timer(now)``).
11. **Per user and per process** (docs/protocol.md, limits): a user holds at most
    ``Limits.user_connections`` connections (:meth:`Hub.admit`, before a handshake is
    accepted: HTTP 429), sends at most ``user_rate`` requests per second over all of them and
    their POSTs (every kind: publish, echo, subscribe, unsubscribe; ``rate_limited``) and
    publishes to at most ``user_channels`` distinct channels per ``user_window``; history
    across all channels is bounded by ``history_bytes`` (the oldest message goes first).
    A user's budget outlives their last connection until it would have refilled (bucket full
    and channel window over): closing and reconnecting resets nothing. The expiry pass
    (:meth:`Hub.expire`, and every disconnect) forgets budgets whose time is up.
12. **Last words**: a connection closed for a flood gets a ``rate_limited`` error first; the
    adapter sends :meth:`Connection.last_words` before its close.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
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
"""Envelope types that answer a request (what :meth:`Hub.handle` returns)."""
FLOOD_REASON = "flood: unread input over the hard frame limit"
"""Why a connection whose unread input passed ``Limits.hard_frame`` was cut off (rule 5)."""


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
    idle: float = 30.0
    """Seconds a parked connection (no carrier: a long-poll session between polls) lives."""
    history_bytes: int = wire.HISTORY_BYTES
    """History kept in this process across all channels (memory broker), oldest evicted."""
    user_connections: int = 256
    """Open connections one user may hold on this process (all transports); one more is
    refused at its handshake (HTTP 429)."""
    user_rate: float = 1000.0
    """Requests per second (every kind) one user may sustain over all their connections and
    POSTs."""
    user_burst: float = 2000.0
    """Requests one user may send at once."""
    user_channels: int = 200
    """Distinct channels one user may publish to per ``user_window`` (new channels cost
    history memory, see ``history_bytes``)."""
    user_window: float = 60.0
    """Seconds of the ``user_channels`` window."""


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
        "replies",
        "replies_apart",
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
        """The replies of the request being handled (a list only inside :meth:`Hub.handle`)."""
        self.replies_apart = False
        """Set by an adapter whose transport carries replies apart from the stream (Socket.IO
        acks): replies then go only to what :meth:`Hub.handle` returns, not to the outbox."""
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
            self.close(wire.CLOSE_POLICY, f"slow consumer: {self.hub.limits.send_queue} "
                       "envelopes queued")
            return
        queue.append(item)
        self.hub.metrics.sent[self.transport] += 1
        if len(queue) == 1:  # was empty: whoever drains it may be waiting
            if self.wake is not None:
                self.wake()
            elif self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def push_envelope(self, envelope: dict[str, Any]) -> None:
        replies = self.replies
        if replies is not None and envelope["type"] in REPLY_TYPES:
            replies.append(envelope)
            if self.replies_apart:
                self.hub.metrics.sent[self.transport] += 1
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
        if self in self.hub._parked:
            self.hub._due(self, self.hub.clock())  # a parked connection cut off expires now
        self._wake()
        if self.on_close is not None:
            self.on_close(code, reason)

    def last_words(self) -> list[Outgoing]:
        """Once the hub closed the connection: the errors still queued (the flood's says why),
        for the adapter to send before its close; the rest of the outbox is dropped."""
        items, self.queue = self.queue, []
        return [item for item in items if item.type == "error"]

    def take_token(self) -> bool:
        """Token bucket: False when over the rate (and closes the connection on a flood)."""
        limits = self.hub.limits
        now = self.hub.clock()
        self._tokens = min(limits.burst, self._tokens + (now - self._refilled) * limits.rate)
        self._refilled = now
        self._tokens -= 1
        if self._tokens > -1e-9:  # a request exactly on the rate, give or take float rounding
            return True
        if self._tokens < -limits.flood and self.close_code is None:
            # the last envelope, past the outbox limit: the client learns why before the close
            self.queue.append(Outgoing("error", wire.encode(wire.error(
                ErrorCode.RATE_LIMITED, "flood: the connection is closed"))))
            self.hub.metrics.errors[ErrorCode.RATE_LIMITED] += 1
            self.close(wire.CLOSE_POLICY, "rate limit: flood")
        return False


class _UserBudget:
    """One user's request token bucket and the channels they published to this window."""

    __slots__ = ("channels", "refilled", "since", "tokens")

    def __init__(self, limits: Limits, now: float) -> None:
        self.tokens = limits.user_burst
        self.refilled = self.since = now
        self.channels: set[str] = set()

    def spend(self, limits: Limits, now: float, ref: str | None) -> None:
        """Take one request's token, or raise ``rate_limited``."""
        self.tokens = min(limits.user_burst, self.tokens + (now - self.refilled) * limits.user_rate)
        self.refilled = now
        if self.tokens < 1:
            raise WireError(ErrorCode.RATE_LIMITED,
                            f"over {limits.user_rate:g} requests/s for this user", ref)
        self.tokens -= 1

    def charge(self, limits: Limits, now: float, channel: str, ref: str | None) -> None:
        """Take one publish to ``channel`` (its token and its place in the channel window),
        or raise ``rate_limited``."""
        if now - self.since >= limits.user_window:
            self.since, self.channels = now, set()
        if channel not in self.channels and len(self.channels) >= limits.user_channels:
            raise WireError(ErrorCode.RATE_LIMITED, f"over {limits.user_channels} channels "
                            f"per {limits.user_window:g} s for this user", ref)
        self.spend(limits, now, ref)
        self.channels.add(channel)

    def spent_until(self, limits: Limits) -> float:
        """When this budget is as good as new (bucket full, channel window over): a fresh
        record from then on would change nothing."""
        full = self.refilled + max(0.0, limits.user_burst - self.tokens) / limits.user_rate
        return max(full, self.since + limits.user_window) if self.channels else full


class Inbox:
    """Input from a transport that reads without backpressure (aioquic, aiortc), waiting for
    the hub in arrival order with the carrier it came on: bounded in bytes (rule 5)."""

    __slots__ = ("_queue", "bytes", "limit")

    def __init__(self, limits: Limits) -> None:
        self._queue: asyncio.Queue[tuple[str | bytes, bool] | None] = asyncio.Queue()
        self.bytes = 0
        """Bytes read and not yet taken by :meth:`get`."""
        self.limit = limits.hard_frame

    def put(self, raw: str | bytes, reliable: bool = True) -> bool:
        """Queue one envelope; False (and nothing queued) once unread input passes the limit:
        the adapter then cuts the connection off with :data:`FLOOD_REASON`."""
        self.bytes += len(raw)
        if self.bytes > self.limit:
            return False
        self._queue.put_nowait((raw, reliable))
        return True

    def end(self) -> None:
        """No more input: :meth:`get` returns None once the queued envelopes are taken."""
        self._queue.put_nowait(None)

    async def get(self) -> tuple[str | bytes, bool] | None:
        """The next envelope and whether its carrier was reliable; None at the end."""
        item = await self._queue.get()
        if item is not None:
            self.bytes -= len(item[0])
        return item


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
        held, evicted = hub.broker.history_stats()
        lines.append("# HELP sobranie_history_bytes History held in this process, all channels.")
        lines.append("# TYPE sobranie_history_bytes gauge")
        lines.append(f"sobranie_history_bytes {held}")
        lines.append("# HELP sobranie_history_evicted_total Messages evicted by the history "
                     "budget.")
        lines.append("# TYPE sobranie_history_evicted_total counter")
        lines.append(f"sobranie_history_evicted_total {evicted}")
        lines += process_metrics()
        return "\n".join(lines) + "\n"


def process_metrics() -> list[str]:
    """Prometheus' standard process lines (as its client's process collector writes them, and
    as the Elysia server does): what ``run --target`` reads as the server's CPU."""
    lines = ["# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
             "# TYPE process_cpu_seconds_total counter",
             f"process_cpu_seconds_total {time.process_time():.6f}"]  # ns clock, not ticks
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return lines
    return [*lines, "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge", f"process_resident_memory_bytes {rss}"]


class Hub:
    """Every transport's connections meet here."""

    def __init__(self, broker: Broker | None = None, *, clock: Clock = time.monotonic,
                 limits: Limits | None = None, server: str = "sobranie-aiohttp") -> None:
        self.broker = broker or MemoryBroker()
        self.clock = clock
        self.limits = limits or Limits()
        self.broker.set_history_budget(self.limits.history_bytes)
        self.server = f"{server}/{SUITE_VERSION}"
        self.metrics = Metrics()
        self.conns: dict[str, Connection] = {}
        self.channels: dict[str, dict[Connection, None]] = {}
        self._online: Counter[str] = Counter()
        self._budgets: dict[str, _UserBudget] = {}
        self._spent: dict[str, float] = {}
        """Users whose budget has a timer armed (their last connection left), and when it
        fires (rule 11)."""
        self._spent_heap: list[tuple[float, str]] = []
        """The same as a heap of (when, user): one entry per user in ``_spent``."""
        self._ids = itertools.count(1)
        self._parked: dict[Connection, float] = {}
        """Parked connections and when each expires (rule 10)."""
        self._deadlines: list[tuple[float, int, Connection]] = []
        """A heap of (deadline, tie-breaker, connection); entries no longer in ``_parked``
        with that deadline are stale and skipped."""
        self._order = itertools.count()
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

    def admit(self, user: str) -> None:
        """Before a handshake is accepted (rule 11): ``rate_limited`` when ``user`` already
        holds ``user_connections`` connections here."""
        if self._online[user] >= self.limits.user_connections:
            raise WireError(ErrorCode.RATE_LIMITED, f"{user} already holds "
                            f"{self.limits.user_connections} connections")

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
        self._parked.pop(conn, None)
        if self.conns.pop(conn.id, None) is None:
            return
        conn.close(wire.CLOSE_GOING_AWAY, "disconnected", by_server=False)
        for channel in list(conn.subs):
            await self._leave(conn, channel)
        self._online[conn.user] -= 1
        if self._online[conn.user] <= 0:
            del self._online[conn.user]
            self._keep_budget(conn.user)
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

    async def handle(self, conn: Connection, raw: str | bytes, *,
                     reliable: bool = True) -> list[dict[str, Any]]:
        """One envelope from a client (rules 1-4): parse, check, run; returns its replies."""
        replies: list[dict[str, Any]] = []
        conn.replies = replies
        try:
            self.metrics.received[conn.transport] += 1
            if not conn.take_token():
                self.reject(conn, WireError(ErrorCode.RATE_LIMITED, "slow down"))
                return replies
            req: wire.Request | None = None
            try:
                req = wire.parse_request(raw, limit=self.limits.max_envelope)
                await self.execute(conn, req, reliable=reliable)
            except WireError as exc:
                if exc.ref is None and req is not None:  # raised below the hub (broker down)
                    exc.ref = req.ref
                self.reject(conn, exc)
        finally:
            conn.replies = None
        return replies

    async def execute(self, conn: Connection, req: wire.Request, *,
                      reliable: bool = True) -> None:
        if not isinstance(req, wire.Publish):  # a publish is charged by publish()
            self.charge(conn.user, req.ref)
        if isinstance(req, wire.Echo):
            conn.push_envelope(wire.echo(req.ref, req.data))
        elif isinstance(req, wire.Publish):
            msg = await self.publish(conn.user, req.channel, req.data, req.ref)
            if reliable:  # rule 2: best effort is never acknowledged
                conn.push_envelope(wire.ack(req.ref, msg.id))
        elif isinstance(req, wire.Subscribe):
            await self.subscribe(conn, req.channel, req.since, req.ref)
        else:
            await self.unsubscribe(conn, req.channel, req.ref)

    def reject(self, conn: Connection, exc: WireError) -> None:
        """An ``error`` envelope for ``conn`` (counted: rule 3)."""
        conn.push_envelope(self.refused(exc))

    def refused(self, exc: WireError) -> dict[str, Any]:
        """Count a refusal (rule 3) and return its ``error`` envelope, for what answers it
        outside the outbox (an HTTP response, a refused handshake)."""
        self.metrics.errors[exc.code] += 1
        return exc.envelope()

    def stream_channels(self, user: str, channels: str | None,
                        cursor: str | None) -> tuple[list[str], wire.Cursor]:
        """The channels and cursor of a one-way stream's opening request (rule 7): the
        channels default to the cursor's; each must be one ``user`` may subscribe to."""
        parsed = wire.parse_cursor(cursor)
        names = wire.split_channels(channels) or list(parsed)
        for channel in names:
            if not auth.may_subscribe(user, channel):
                raise WireError(ErrorCode.FORBIDDEN, f"{channel} is private")
        return names, parsed

    # --- parked connections (rule 10) -------------------------------------------------------

    def park(self, conn: Connection) -> None:
        """``conn`` has no carrier from now on: it expires ``Limits.idle`` seconds from now
        (at once if the hub has cut it off)."""
        now = self.clock()
        self._due(conn, now if conn.closed else now + self.limits.idle)

    def unpark(self, conn: Connection) -> None:
        """``conn`` has a carrier again (a poll arrived): it no longer expires."""
        self._parked.pop(conn, None)

    def _due(self, conn: Connection, deadline: float) -> None:
        self._parked[conn] = deadline
        heapq.heappush(self._deadlines, (deadline, next(self._order), conn))

    def next_deadline(self) -> float | None:
        """When the first parked connection expires (on the hub's clock); None if none is."""
        heap = self._deadlines
        while heap and self._parked.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # resumed, re-parked or gone since
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[Connection]:
        """The parked connections whose deadline is ``now`` or earlier, no longer parked: the
        adapter ends each (:meth:`disconnect`) and forgets it."""
        expired = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            conn = heapq.heappop(self._deadlines)[2]
            del self._parked[conn]
            expired.append(conn)
        self._forget_budgets(now)
        return expired

    def _keep_budget(self, user: str) -> None:
        """``user``'s last connection left: keep their budget until it would have refilled
        (rule 11), so that closing and reconnecting resets nothing. One timer per user at a
        time (a user reconnecting in a loop does not grow the heap): the armed one checks
        again when it fires."""
        budget = self._budgets.get(user)
        now = self.clock()
        if budget is not None and user not in self._spent:
            self._arm(user, budget.spent_until(self.limits), now)
        self._forget_budgets(now)

    def _arm(self, user: str, until: float, now: float) -> None:
        if until <= now:
            del self._budgets[user]
        else:
            self._spent[user] = until
            heapq.heappush(self._spent_heap, (until, user))

    def _forget_budgets(self, now: float) -> None:
        """Drop the budgets of users gone whose time is up; a user back online keeps theirs
        (their next last disconnect arms a timer again)."""
        heap = self._spent_heap
        while heap and heap[0][0] <= now:
            _, user = heapq.heappop(heap)
            del self._spent[user]
            if user not in self._online:
                self._arm(user, self._budgets[user].spent_until(self.limits), now)

    def charge(self, user: str, ref: str | None = None, channel: str | None = None) -> None:
        """Spend one of ``user``'s request tokens (and, for a publish, a place for
        ``channel`` in their channel window), or raise ``rate_limited`` (rule 11)."""
        now = self.clock()
        budget = self._budgets.get(user)
        if budget is None:
            budget = self._budgets[user] = _UserBudget(self.limits, now)
        if channel is None:
            budget.spend(self.limits, now, ref)
        else:
            budget.charge(self.limits, now, channel, ref)

    async def publish(self, user: str | None, channel: str, data: Any,
                      ref: str | None = None) -> Message:
        """Publish as ``user``; ``user=None`` is a server-side code path (notifications)."""
        if user is not None:
            if not auth.may_publish(user, channel):
                raise WireError(ErrorCode.FORBIDDEN, f"clients may not publish to {channel}",
                                ref)
            self.charge(user, ref, channel)
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
