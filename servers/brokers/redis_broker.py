"""Redis backplane: ids and history kept in Redis by one Lua script, delivery by pub/sub.

Per channel ``c`` in namespace ``ns`` (``?namespace=`` in the URL, default ``sobranie``):

* ``ns:id:c`` the counter: ``INCR`` assigns the channel's next id;
* ``ns:h:c``  a Stream capped at ``history_size`` entries, entry id ``<id>-0``, field ``m``;
* ``ns:ch:c`` the pub/sub channel, payload ``<id> <envelope>`` (id 0: presence).

The script runs INCR, completes the envelope, XADD and PUBLISH as one atomic step: ids are
assigned in one place, the history has no holes, and every instance receives a channel's
messages in id order. One connection SUBSCRIBEs (channels follow the instance's interest);
one reader task hands what arrives to the :class:`~servers.brokers.backplane.Sequencer`, which
reads missed messages from the Stream after a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

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

log = logging.getLogger("sobranie.broker.redis")

def publish_script(command: str = "PUBLISH") -> str:
    """The Lua step of a publish: KEYS counter, stream; ARGV envelope head, envelope tail,
    history size, pub/sub channel. ``command`` is PUBLISH, or SPUBLISH for sharded pub/sub."""
    return f"""
local id = redis.call('INCR', KEYS[1])
local text = ARGV[1] .. id .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], id .. '-0', 'm', text)
redis.call('{command}', ARGV[4], id .. ' ' .. text)
return id
"""


RECONNECT_SECONDS = (0.1, 2.0)
"""First and largest pause between attempts to restore the subscriber connection."""

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class RedisStore:
    """What both Redis brokers do alike: ids, history and the publishing script, on one client
    (a Redis, or a RedisCluster routing each channel's keys by their shared hash tag)."""

    service = "Redis"
    """How errors name the store."""
    failures: tuple[type[BaseException], ...] = _FAILURES
    """What a failed call to the store raises."""
    where: str
    _store: Any
    _script: Any
    _history_size: int

    def counter_key(self, channel: str) -> str:
        raise NotImplementedError

    def history_key(self, channel: str) -> str:
        raise NotImplementedError

    def topic(self, channel: str) -> str:
        raise NotImplementedError

    async def publish(self, channel: str, data: Any, sender: str) -> Message:
        head, tail = envelope_around_id(channel, data, sender)
        try:
            id = int(await self._script(
                keys=[self.counter_key(channel), self.history_key(channel)],
                args=[head, tail, self._history_size, self.topic(channel)]))
        except self.failures as exc:
            raise unavailable(self.service, self.where, exc) from None
        return Message(channel, id, f"{head}{id}{tail}")

    async def history(self, channel: str, since: int) -> list[Message]:
        try:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._store.xrange(
                self.history_key(channel), min=f"{since + 1}-0")  # type: ignore[assignment]
        except self.failures as exc:
            raise unavailable(self.service, self.where, exc) from None
        return [Message(channel, int(entry_id.partition(b"-")[0]), fields[b"m"].decode())
                for entry_id, fields in entries]

    async def last_id(self, channel: str) -> int:
        try:
            value = await self._store.get(self.counter_key(channel))
        except self.failures as exc:
            raise unavailable(self.service, self.where, exc) from None
        return int(value or 0)


class RedisBroker(RedisStore, Broker):
    name = "redis"

    def __init__(self, url: str, history_size: int = wire.HISTORY_SIZE, *,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.url, self.namespace = split_namespace(url)
        self._history_size = history_size
        self._timeout = timeout
        self._redis = aioredis.from_url(self.url, socket_timeout=timeout,
                                        socket_connect_timeout=timeout,
                                        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)))
        kwargs = self._redis.connection_pool.connection_kwargs
        self.where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self._store = self._redis
        self._script = self._redis.register_script(publish_script())
        self._topics = f"{self.namespace}:ch:"
        self._control = f"{self.namespace}:ctl"
        self._wanted: set[str] = set()
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._seq: Sequencer | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None

    # --- keys --------------------------------------------------------------------------

    def counter_key(self, channel: str) -> str:
        return f"{self.namespace}:id:{channel}"

    def history_key(self, channel: str) -> str:
        return f"{self.namespace}:h:{channel}"

    def topic(self, channel: str) -> str:
        return f"{self._topics}{channel}"

    # --- the seam -------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        self._seq = Sequencer(deliver, self.history)
        try:
            await self._redis.ping()
            self._pubsub = await self._open_pubsub()
        except _FAILURES as exc:
            await self._redis.aclose()
            raise BrokerUnavailable(
                f"cannot reach Redis at {self.where} ({exc}): start it (redis-server --port "
                f"PORT) or pass another --broker URL") from None
        self._reader = asyncio.create_task(self._read(self._pubsub))

    async def publish_transient(self, channel: str, envelope: dict[str, Any]) -> None:
        try:
            await self._redis.publish(self.topic(channel), frame(0, wire.encode(envelope)))
        except _FAILURES as exc:  # presence is best effort: never fail a connection for it
            log.warning("presence not sent, Redis at %s unavailable: %s", self.where, exc)

    async def subscribe(self, channel: str) -> None:
        """Start from the channel's current id, SUBSCRIBE, and return once the subscription
        is effective and whatever was published meanwhile has been delivered."""
        assert self._seq is not None, "broker not started"
        self._wanted.add(channel)
        self._seq.watch(channel, await self.last_id(channel))
        confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
        try:
            if self._pubsub is None:
                raise RedisConnectionError("the subscriber connection is down")
            await self._pubsub.subscribe(self.topic(channel))
            await asyncio.wait_for(confirmed, self._timeout)
        except _FAILURES as exc:  # the reader resubscribes wanted channels once Redis is back
            raise unavailable("Redis", self.where, exc) from None
        finally:
            self._confirmed.pop(channel, None)

    async def unsubscribe(self, channel: str) -> None:
        assert self._seq is not None, "broker not started"
        self._wanted.discard(channel)
        self._seq.forget(channel)
        if self._pubsub is not None:
            with contextlib.suppress(*_FAILURES):
                await self._pubsub.unsubscribe(self.topic(channel))

    async def purge(self, channels: Iterable[str] | None = None) -> None:
        """Delete the ids and history of ``channels``, or of the whole namespace (tests,
        experiments' clean-up; needs no ``start``)."""
        if channels is None:
            keys = [key async for key in self._redis.scan_iter(match=f"{self.namespace}:*")]
        else:
            keys = [key for c in channels for key in (self.counter_key(c), self.history_key(c))]
        if keys:
            await self._redis.delete(*keys)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(*_FAILURES):
                await self._pubsub.aclose()
        await self._redis.aclose()

    # --- the subscriber connection -----------------------------------------------------------

    async def _open_pubsub(self) -> PubSub:
        """SUBSCRIBE the control channel (so the connection exists before any interest) and
        every wanted channel; the reader catches each up when its confirmation arrives."""
        assert self._seq is not None
        for channel in self._wanted - set(self._seq.channels):
            self._seq.watch(channel, await self.last_id(channel))
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._control, *(self.topic(c) for c in self._wanted))
        except BaseException:
            await pubsub.aclose()
            raise
        return pubsub

    async def _read(self, pubsub: PubSub) -> None:
        """The single reader: hand messages to the sequencer; on loss, report and reconnect."""
        while True:
            try:
                while True:
                    item = await pubsub.get_message(timeout=None)
                    if item is not None:
                        await self._handle(item)
            except _FAILURES as exc:
                log.error("Redis backplane at %s lost (%s): local connections are still "
                          "served, publishing fails until it is back", self.where, exc)
            self._pubsub = None
            with contextlib.suppress(*_FAILURES):
                await pubsub.aclose()
            pubsub = await self._reconnect()

    async def _reconnect(self) -> PubSub:
        pause, cap = RECONNECT_SECONDS
        while True:
            await asyncio.sleep(pause)
            try:
                pubsub = await self._open_pubsub()
            except _FAILURES:
                pause = min(cap, pause * 2)
                continue
            self._pubsub = pubsub
            log.warning("Redis backplane at %s is back: %d channels resubscribed", self.where,
                        len(self._wanted))
            return pubsub

    async def _handle(self, item: dict[str, Any]) -> None:
        assert self._seq is not None
        topic = item["channel"].decode()
        if not topic.startswith(self._topics):
            return
        channel = topic[len(self._topics):]
        if item["type"] == "message":
            await self._seq.receive(unframe(channel, item["data"]))
        elif item["type"] == "subscribe":
            await self._seq.catch_up(channel)
            confirmed = self._confirmed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
