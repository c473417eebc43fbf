"""What the cluster brokers (Redis, NATS) share: the envelope built around its id, the frame
carried between instances, the namespace option, and the :class:`Sequencer` that turns an
at-most-once bus into in-order, exactly-once delivery on each instance.

A frame is ``<id> <envelope>``: the receiver reads the id without parsing the JSON, and id 0
marks a transient envelope (presence) that has no id, no history and no order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from servers.brokers.base import Deliver, Message
from sobranie_contract.wire import ErrorCode, WireError

log = logging.getLogger("sobranie.broker")

DEFAULT_NAMESPACE = "sobranie"
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TIMEOUT_SECONDS = 2.0
"""Longest wait for one broker operation before it is reported unavailable."""

History = Callable[[str, int], Awaitable[list[Message]]]


def split_namespace(url: str) -> tuple[str, str]:
    """``redis://h:p/0?namespace=t1`` -> (``redis://h:p/0``, ``t1``): every key, stream and
    subject of a broker starts with its namespace, so clusters and tests never meet."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    namespace = dict(query).get("namespace", DEFAULT_NAMESPACE)
    if not NAMESPACE_RE.match(namespace):
        raise ValueError(f"namespace {namespace!r}: use 1-64 of A-Z a-z 0-9 _ -")
    rest = urlencode([(k, v) for k, v in query if k != "namespace"])
    return urlunsplit(parts._replace(query=rest)), namespace


def envelope_around_id(channel: str, data: Any, sender: str) -> tuple[str, str]:
    """The ``message`` envelope encoded once, split where its id goes (the id is assigned
    later, inside the broker): ``head + str(id) + tail == wire.encode(wire.message(...))``."""
    head = f'{{"type":"message","channel":{json.dumps(channel)},"id":'
    tail = (f',"data":{json.dumps(data, separators=(",", ":"), ensure_ascii=False)},'
            f'"from":{json.dumps(sender, ensure_ascii=False)}}}')
    return head, tail


def frame(id: int, text: str) -> bytes:
    return f"{id} {text}".encode()


def unframe(channel: str, payload: bytes) -> Message:
    id, _, text = payload.decode().partition(" ")
    return Message(channel, int(id), text)


def unavailable(what: str, where: str, exc: BaseException) -> WireError:
    """The error a client sees when the backplane fails under a request (HTTP 503)."""
    return WireError(ErrorCode.UNAVAILABLE,
                     f"{what} at {where} unavailable ({type(exc).__name__}: {exc}); retry later")


class Sequencer:
    """Per-channel, in-order, exactly-once delivery on one instance.

    The bus between instances may drop messages (a reconnect, a slow consumer) or reorder
    them (several publishing instances), but the broker stores each message before it sends
    it. So a message whose id is not the next one makes the sequencer read the missing ones
    from the store first; ids already delivered are dropped. ``watch`` starts a channel from
    the id that was last when the instance subscribed; ``catch_up`` fills from the store (after
    a subscription becomes effective, or a reconnect)."""

    def __init__(self, deliver: Deliver, history: History) -> None:
        self._deliver = deliver
        self._history = history
        self._last: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def channels(self) -> list[str]:
        return list(self._last)

    def watch(self, channel: str, last_id: int) -> None:
        self._last[channel] = last_id
        self._locks.setdefault(channel, asyncio.Lock())

    def forget(self, channel: str) -> None:
        self._last.pop(channel, None)
        self._locks.pop(channel, None)

    async def receive(self, msg: Message) -> None:
        """One message from the bus."""
        if msg.id == 0:
            self._deliver(msg)
            return
        last = self._last.get(msg.channel)
        if last is None or msg.id <= last:
            return
        lock = self._locks[msg.channel]
        if msg.id == last + 1 and not lock.locked():
            self._last[msg.channel] = msg.id
            self._deliver(msg)
            return
        async with lock:
            last = self._last.get(msg.channel)
            if last is not None and msg.id > last + 1 and not await self._fill(msg.channel):
                return  # the store is unreachable: the next message or catch-up fills in
            self._accept(msg)

    async def catch_up(self, channel: str) -> None:
        lock = self._locks.get(channel)
        if lock is not None:
            async with lock:
                await self._fill(channel)

    async def _fill(self, channel: str) -> bool:
        last = self._last.get(channel)
        if last is None:
            return True
        try:
            missed = await self._history(channel, last)
        except WireError as exc:
            log.warning("%s: cannot read missed messages after id %d: %s", channel, last,
                        exc.message)
            return False
        for msg in missed:
            self._accept(msg)
        return True

    def _accept(self, msg: Message) -> None:
        last = self._last.get(msg.channel)
        if last is None or msg.id <= last:
            return
        if msg.id > last + 1:
            log.warning("%s: ids %d..%d were trimmed from history before this instance got "
                        "them", msg.channel, last + 1, msg.id - 1)
        self._last[msg.channel] = msg.id
        self._deliver(msg)

