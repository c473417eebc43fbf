"""Sending a connection's outbox without a writer task per connection (:class:`Sender`), and
what a socket adapter does when the hub cuts its connection off (:class:`Cut`).

A :class:`Sender` plays two roles, each a small state machine written out below (h11's
``_state.py`` style): the *reader* is the adapter's receive loop handing envelopes to the hub,
the *writer* is whoever drains the outbox right now. A move not in a table raises ``KeyError``:
a bug, not a state.

Reader::

    reading         --request-->  handling
    handling        --handled-->  reading
    reading         --burst-->    burst            the first reply of a read went out inline;
                                                   the others wait for the loop's next turn
    burst           --request-->  burst-handling   (more requests of the same read)
    burst-handling  --handled-->  burst
    burst           --turn-->     reading          the loop's next turn: the replies go together
    burst-handling  --turn-->     handling

Writer::

    idle       --wake-->   scheduled   the outbox stopped being empty while the reader is not
                                       handling: a short-lived task will send it
    scheduled  --run-->    sending     the task sends until the outbox is empty
    idle       --flush-->  flushing    the reader sends its replies inline...
    scheduled  --flush-->  flushing    ...and the task, not started yet, is cancelled
    sending    --done-->   idle        the outbox is empty (or the connection closed)
    flushing   --done-->   idle
    sending    --gone-->   stopped     ``send`` says the peer is gone: nothing more is sent
    flushing   --gone-->   stopped
    any        --stop-->   stopped     the connection is closing

Outside the tables: ``wake`` moves the writer only from ``idle`` and only while the reader is
not handling (the reader sends the replies itself when it is done); ``flush`` does nothing
while someone is already sending (whoever is sending loops until the outbox is empty, so order
is kept) or once stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from servers.hub import Connection

READING, HANDLING, BURST, BURST_HANDLING = "reading", "handling", "burst", "burst-handling"
IDLE, SCHEDULED, SENDING, FLUSHING, STOPPED = "idle", "scheduled", "sending", "flushing", "stopped"

READER: dict[tuple[str, str], str] = {
    (READING, "request"): HANDLING,
    (HANDLING, "handled"): READING,
    (READING, "burst"): BURST,
    (BURST, "request"): BURST_HANDLING,
    (BURST_HANDLING, "handled"): BURST,
    (BURST, "turn"): READING,
    (BURST_HANDLING, "turn"): HANDLING,
}
"""The reader's moves: (state, event) -> state."""

WRITER: dict[tuple[str, str], str] = {
    (IDLE, "wake"): SCHEDULED,
    (SCHEDULED, "run"): SENDING,
    (IDLE, "flush"): FLUSHING,
    (SCHEDULED, "flush"): FLUSHING,
    (SENDING, "done"): IDLE,
    (FLUSHING, "done"): IDLE,
    (SENDING, "gone"): STOPPED,
    (FLUSHING, "gone"): STOPPED,
    (STOPPED, "done"): STOPPED,
    **{(state, "stop"): STOPPED for state in (IDLE, SCHEDULED, SENDING, FLUSHING, STOPPED)},
}
"""The writer's moves: (state, event) -> state."""

CLOSE_GRACE_SECONDS = 1.0
"""How long a cut connection's closing handshake may take before its transport is aborted."""


class Sender:
    """Drains a connection's outbox through ``send`` (the adapter's coroutine that sends one
    encoded envelope).

    The reply to a client's request goes out inline, right after the hub handled it
    (:meth:`handle`): no task switch per echo or ack. Requests that arrived in the same read
    (a pipelining client under load) are a burst: only the first reply goes inline, the rest go
    out together at the loop's next turn, as a writer task would have sent them; replying to
    each at once spreads the writes out and costs both ends a wake-up per message. What other
    connections push meanwhile (messages, presence) wakes a short-lived task that sends until
    the outbox is empty. ``send`` suspends only when the socket's buffer is full (the peer reads
    slowly); the outbox then grows until the hub cuts the connection off as a slow consumer."""

    __slots__ = ("conn", "gone", "reader", "send", "send_message", "task", "writer")

    def __init__(self, conn: Connection, send: Callable[[str], Awaitable[Any]],
                 gone: tuple[type[BaseException], ...] = (ConnectionError,),
                 send_message: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self.conn = conn
        self.send = send
        self.send_message = send_message or send
        """Sends a channel's ``message`` (an adapter whose connection asked for another carrier
        for them: WebRTC's deliveries channel); ``send`` by default."""
        self.gone = gone
        """Exceptions of ``send`` that mean the peer is gone: sending stops quietly."""
        self.reader = READING
        self.writer = IDLE
        self.task: asyncio.Task[None] | None = None
        """The woken writer task, while it is scheduled or sending."""
        conn.wake = self.wake

    async def handle(self, raw: str | bytes, *, reliable: bool = True) -> None:
        """One envelope from the client; its replies are sent before this returns (the first
        of a burst) or at the loop's next turn (the others)."""
        self.reader = READER[self.reader, "request"]
        try:
            await self.conn.hub.handle(self.conn, raw, reliable=reliable)
        finally:
            self.reader = READER[self.reader, "handled"]
        if (not self.conn.queue or self.reader is BURST
                or self.writer is not IDLE and self.writer is not SCHEDULED):
            return
        self.reader = READER[self.reader, "burst"]
        asyncio.get_running_loop().call_soon(self._end_burst)
        await self.flush()

    def _end_burst(self) -> None:
        self.reader = READER[self.reader, "turn"]
        if self.conn.queue:
            self.wake()

    def wake(self) -> None:
        if (self.writer is IDLE and self.reader is not HANDLING
                and self.reader is not BURST_HANDLING and self.conn.close_code is None):
            self.writer = WRITER[self.writer, "wake"]
            self.task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """The woken task's body."""
        self.writer = WRITER[self.writer, "run"]
        try:
            await self._send_all()
        finally:
            self.task = None

    async def flush(self) -> None:
        """Send until the outbox is empty (or the connection closed or the peer left)."""
        if self.writer is not IDLE and self.writer is not SCHEDULED:
            return
        if self.task is not None:  # scheduled, not started: this call sends it all instead
            self.task.cancel()
            self.task = None
        self.writer = WRITER[self.writer, "flush"]
        await self._send_all()

    async def _send_all(self) -> None:
        conn, send, message = self.conn, self.send, self.send_message
        try:
            while conn.queue and conn.close_code is None:
                items, conn.queue = conn.queue, []
                for item in items:
                    await (message if item.type == "message" else send)(item.text)
        except self.gone:
            conn.wake = None  # nothing more can be sent; the reader sees the close
            self.writer = WRITER[self.writer, "gone"]
        finally:
            self.writer = WRITER[self.writer, "done"]

    def stop(self) -> None:
        """No more sending (the connection is closing)."""
        self.conn.wake = None
        self.writer = WRITER[self.writer, "stop"]
        if self.task is not None:
            self.task.cancel()


class Cut:
    """What a socket adapter does when the hub cuts its connection off (it is the connection's
    ``on_close``): stop sending, close with the hub's code and reason, and abort the transport
    once the close is done or after :data:`CLOSE_GRACE_SECONDS` (a stalled reader's full socket
    would hold the closing handshake up), also when the close is cancelled with the sender's
    drain it shared. The errors the hub queued last (a flood's) go out before the close."""

    __slots__ = ("abort", "close", "closed", "sender")

    def __init__(self, sender: Sender, close: Callable[[int, str], Awaitable[Any]],
                 abort: Callable[[], None], closed: Callable[[], bool] = lambda: False) -> None:
        self.sender = sender
        self.close = close
        """Closes the transport with a code and a reason (cut to 120 characters)."""
        self.abort = abort
        self.closed = closed
        """True when the transport is closed already (nothing to do)."""

    def __call__(self, code: int, reason: str) -> None:
        self.sender.stop()
        if not self.closed():
            asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self._last_words(code, reason), CLOSE_GRACE_SECONDS)
        except (TimeoutError, ConnectionError):
            pass
        except self.sender.gone:
            pass
        finally:
            self.abort()

    async def _last_words(self, code: int, reason: str) -> None:
        """The errors the hub queued last (the flood's says why), then the close."""
        for item in self.sender.conn.last_words():
            await self.sender.send(item.text)
        await self.close(code, reason[:120])
