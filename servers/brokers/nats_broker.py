"""NATS backplane: ids and history in a JetStream stream, delivery by core NATS.

Per channel ``c`` in namespace ``ns`` (``?namespace=`` in the URL, default ``sobranie``),
with ``c`` written as a subject token (``.`` becomes ``~``):

* ``ns.h.c``  stored in the stream ``SOBRANIE_ns`` (``max_msgs_per_subject=history_size``);
* ``ns.ch.c`` the live subject every interested instance subscribes to.

Both carry the frame ``<id> <envelope>``. The stream's sequence is global, so per-channel ids
come from the stream itself by optimistic concurrency: a publish stores id ``n + 1`` with
``Nats-Expected-Last-Subject-Sequence`` set to the stream sequence of id ``n``; JetStream
refuses it (error 10071) if another instance stored a message on that subject first, and the
publisher re-reads the subject's last message and tries again. So ids are gap-free and stored
in id order. Only then is the frame sent on the live subject. Two instances' live sends can
cross, and core NATS drops messages across a reconnect, so each instance passes what arrives
through a :class:`~servers.brokers.backplane.Sequencer`: an id that is not the next one makes it
read the missing ids from the stream, which already holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from servers.brokers.backplane import (
    TIMEOUT_SECONDS,
    Sequencer,
    envelope_around_id,
    frame,
    split_namespace,
    unavailable,
    unframe,
)
from servers.brokers.base import Broker, BrokerUnavailable, Deliver, Message
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

log = logging.getLogger("sobranie.broker.nats")

EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code when another publisher stored on the subject first."""
STREAM_CONFIG_CHANGED = 10058
CAS_ATTEMPTS = 32
"""Attempts at storing the next id before a publish is reported unavailable."""
RECONNECT_WAIT_SECONDS = 0.5

_FAILURES = (NatsError, OSError, asyncio.TimeoutError)


@dataclass
class _Head:
    """What this instance last stored on a channel: the optimistic guess for the next CAS."""

    id: int = 0
    """The channel's last id."""
    seq: int | None = None
    """Its stream sequence; None when unknown (re-read before the next publish)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One publish per channel at a time from this instance (they would only collide)."""


class NatsBroker(Broker):
    name = "nats"

    def __init__(self, url: str, history_size: int = wire.HISTORY_SIZE, *,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.url, self.namespace = split_namespace(url)
        self.where = urlsplit(self.url).netloc or self.url
        self.stream = f"SOBRANIE_{self.namespace}"
        self._history_size = history_size
        self._timeout = timeout
        self._nc: NatsClient | None = None
        self._heads: dict[str, _Head] = {}
        self._subs: dict[str, Subscription] = {}
        self._seq: Sequencer | None = None
        self._started = False
        self._startup_error: Exception | None = None
        self._catching_up: asyncio.Task[None] | None = None

    # --- subjects --------------------------------------------------------------------------

    def stored_subject(self, channel: str) -> str:
        return f"{self.namespace}.h.{channel.replace('.', '~')}"

    def live_subject(self, channel: str) -> str:
        return f"{self.namespace}.ch.{channel.replace('.', '~')}"

    # --- the seam -------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        self._seq = Sequencer(deliver, self.history)
        try:
            self._nc = await asyncio.wait_for(nats.connect(
                self.url, connect_timeout=int(max(1, self._timeout)),
                reconnect_time_wait=RECONNECT_WAIT_SECONDS, max_reconnect_attempts=-1,
                error_cb=self._on_error, disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected), 2 * self._timeout)
            await self._ensure_stream()
        except NoRespondersError:
            await self._abandon()
            raise BrokerUnavailable(
                f"NATS at {self.where} has no JetStream: start it with nats-server -js") from None
        except _FAILURES as exc:
            await self._abandon()
            cause = self._startup_error or exc
            raise BrokerUnavailable(
                f"cannot reach NATS at {self.where} ({type(cause).__name__}: {cause}): start "
                "it (nats-server -js -p PORT) or pass another --broker URL") from None
        self._started = True

    async def publish(self, channel: str, data: Any, sender: str) -> Message:
        head, tail = envelope_around_id(channel, data, sender)
        state = self._heads.setdefault(channel, _Head())
        nc = self._client()
        async with state.lock:
            try:
                for _ in range(CAS_ATTEMPTS):
                    if state.seq is None:
                        state.id, state.seq = await self._last(channel)
                    id = state.id + 1
                    text = f"{head}{id}{tail}"
                    payload = frame(id, text)
                    try:
                        ack = await nc.jetstream().publish(
                            self.stored_subject(channel), payload, timeout=self._timeout,
                            headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(state.seq)})
                    except APIError as exc:
                        if exc.err_code != WRONG_LAST_SEQUENCE:
                            raise
                        state.seq = None  # another instance stored first: re-read the head
                        continue
                    state.id, state.seq = id, ack.seq
                    await nc.publish(self.live_subject(channel), payload)
                    return Message(channel, id, text)
            except _FAILURES as exc:
                state.seq = None  # the store may or may not have it: re-read next time
                raise unavailable("NATS", self.where, exc) from None
        raise WireError(ErrorCode.UNAVAILABLE, f"{channel}: {CAS_ATTEMPTS} publishers got "
                        "ahead of this one in a row; retry")

    async def publish_transient(self, channel: str, envelope: dict[str, Any]) -> None:
        try:
            await self._client().publish(self.live_subject(channel),
                                         frame(0, wire.encode(envelope)))
        except _FAILURES as exc:  # presence is best effort: never fail a connection for it
            log.warning("presence not sent, NATS at %s unavailable: %s", self.where, exc)

    async def history(self, channel: str, since: int) -> list[Message]:
        """Read the channel's retained messages with an ordered consumer on its subject (the
        stream's sequence says nothing about where id ``since`` is) and keep those after it."""
        try:
            last, _ = await self._last(channel)
            if since >= last:
                return []
            sub = await self._client().jetstream().subscribe(
                self.stored_subject(channel), stream=self.stream, ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL)
            out: list[Message] = []
            try:
                while True:
                    msg = await sub.next_msg(self._timeout)
                    item = unframe(channel, msg.data)
                    if item.id > since:
                        out.append(item)
                    if item.id >= last or msg.metadata.num_pending == 0:
                        return out
            finally:
                with contextlib.suppress(*_FAILURES):
                    await sub.unsubscribe()
        except _FAILURES as exc:
            raise unavailable("NATS", self.where, exc) from None

    async def last_id(self, channel: str) -> int:
        try:
            return (await self._last(channel))[0]
        except _FAILURES as exc:
            raise unavailable("NATS", self.where, exc) from None

    async def subscribe(self, channel: str) -> None:
        """Subscribe the live subject, start from the channel's current id, and return once
        the subscription is effective and whatever was stored meanwhile has been delivered."""
        assert self._seq is not None, "broker not started"
        nc = self._client()
        if channel not in self._subs:  # nats-py renews it after a reconnect
            self._subs[channel] = await nc.subscribe(
                self.live_subject(channel), cb=functools.partial(self._on_live, channel))
        self._seq.watch(channel, await self.last_id(channel))
        try:
            await nc.flush(timeout=int(max(1, self._timeout)))
        except _FAILURES as exc:
            raise unavailable("NATS", self.where, exc) from None
        await self._seq.catch_up(channel)

    async def unsubscribe(self, channel: str) -> None:
        assert self._seq is not None, "broker not started"
        self._seq.forget(channel)
        sub = self._subs.pop(channel, None)
        if sub is not None:
            with contextlib.suppress(*_FAILURES):
                await sub.unsubscribe()

    async def purge(self, channels: Iterable[str] | None = None) -> None:
        """Delete the ids and history of ``channels``, or the namespace's whole stream (tests,
        experiments' clean-up; connects for the call when not started)."""
        nc = self._nc if self._nc is not None else await nats.connect(self.url)
        try:
            if channels is None:
                with contextlib.suppress(NotFoundError):
                    await nc.jsm().delete_stream(self.stream)
            else:
                for channel in channels:
                    await nc.jsm().purge_stream(self.stream,
                                                subject=self.stored_subject(channel))
        finally:
            if nc is not self._nc:
                await nc.close()

    async def close(self) -> None:
        self._started = False
        if self._catching_up is not None:
            self._catching_up.cancel()
        await self._abandon()

    # --- internals ----------------------------------------------------------------------------

    def _client(self) -> NatsClient:
        assert self._nc is not None, "broker not started"
        return self._nc

    async def _ensure_stream(self) -> None:
        config = api.StreamConfig(
            name=self.stream, subjects=[f"{self.namespace}.h.>"],
            max_msgs_per_subject=self._history_size, storage=api.StorageType.MEMORY,
            discard=api.DiscardPolicy.OLD, allow_direct=True, num_replicas=1)
        jsm = self._client().jsm()
        try:
            await jsm.add_stream(config)
        except APIError as exc:
            if exc.err_code != STREAM_CONFIG_CHANGED:
                raise
            await jsm.update_stream(config)

    async def _last(self, channel: str) -> tuple[int, int]:
        """The channel's last id and its stream sequence ((0, 0) before any publish)."""
        try:
            msg = await self._client().jsm().get_last_msg(
                self.stream, self.stored_subject(channel), direct=True)
        except NotFoundError:
            return 0, 0
        assert msg.data is not None and msg.seq is not None
        return unframe(channel, msg.data).id, msg.seq

    async def _on_live(self, channel: str, msg: Msg) -> None:
        assert self._seq is not None
        await self._seq.receive(unframe(channel, msg.data))

    async def _abandon(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(*_FAILURES):
                await self._nc.close()

    async def _on_error(self, exc: Exception) -> None:
        if not self._started:
            self._startup_error = exc  # reported by start() if connecting never succeeds
        else:
            log.warning("NATS backplane at %s: %s: %s", self.where, type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if self._started:
            log.error("NATS backplane at %s lost: local connections are still served, "
                      "publishing fails until it is back", self.where)

    async def _on_reconnected(self) -> None:
        log.warning("NATS backplane at %s is back: catching up %d channels", self.where,
                    len(self._subs))
        self._catching_up = asyncio.create_task(self._catch_up_all())

    async def _catch_up_all(self) -> None:
        """What core NATS dropped while disconnected is read from the stream."""
        assert self._seq is not None
        watched = set(self._seq.channels)
        for channel in list(self._subs):
            try:
                if channel not in watched:
                    self._seq.watch(channel, await self.last_id(channel))
                await self._seq.catch_up(channel)
            except WireError as exc:
                log.warning("%s: catch-up after reconnect failed: %s", channel, exc.message)
