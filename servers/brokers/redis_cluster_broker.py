"""Redis Cluster backplane: each channel lives on one shard, delivery by sharded pub/sub.

``redis+cluster://host:port?namespace=ns`` names any node of the cluster; the rest is
discovered from it. Per channel ``c`` every key carries the hash tag ``{ns:c}``, so the
channel's counter, its history and its shard channel map to one slot, hence one master:

* ``{ns:c}:id`` the counter (``INCR``);
* ``{ns:c}:h``  a Stream capped at ``history_size`` entries, entry id ``<id>-0``, field ``m``;
* ``{ns:c}:ch`` the shard channel (``SPUBLISH``/``SSUBSCRIBE``), payload ``<id> <envelope>``.

Publishing is the classic broker's one Lua step (INCR, XADD, SPUBLISH) run on the channel's
master, so ids and order are the classic broker's. Unlike classic pub/sub, where every
message is sent to every node of a cluster, a sharded message travels only within its shard:
the cost per message stays flat as masters are added (the capacity plan's 29 shards).

This instance keeps one subscriber connection per master that owns a channel it wants, each
with one reader task. When a master goes away (killed, or its slots moved: Redis then sends
``sunsubscribe``), its channels are re-homed: the slot map is read again, each channel is
SSUBSCRIBEd on its new master (a promoted replica), and the
:class:`~servers.brokers.backplane.Sequencer` reads what was missed from the Stream.
Replication is asynchronous: a message acknowledged by a master just before it died may
be missing on the replica that takes over (tests/servers/test_brokers.py measures it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from servers.brokers.backplane import (
    TIMEOUT_SECONDS,
    Sequencer,
    frame,
    split_namespace,
    unavailable,
    unframe,
)
from servers.brokers.base import Broker, BrokerUnavailable, Deliver
from servers.brokers.redis_broker import RECONNECT_SECONDS, RedisStore, publish_script
from sobranie_contract import wire

log = logging.getLogger("sobranie.broker.redis_cluster")

_FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)


@dataclass
class _Shard:
    """This instance's subscriber connection to one master."""

    node: str
    """``host:port`` of the master."""
    client: aioredis.Redis
    pubsub: PubSub
    channels: set[str] = field(default_factory=set)
    """Channels SSUBSCRIBEd on it."""
    reader: asyncio.Task[None] | None = None


class RedisClusterBroker(RedisStore, Broker):
    name = "redis-cluster"
    service = "Redis Cluster"
    failures = _FAILURES

    def __init__(self, url: str, history_size: int = wire.HISTORY_SIZE, *,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        base, self.namespace = split_namespace(url)
        parts = urlsplit(base)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.where = f"{host}:{port}"
        self._history_size = history_size
        self._timeout = timeout
        self._cluster = RedisCluster(host=host, port=port, socket_timeout=timeout,
                                     socket_connect_timeout=timeout)
        self._store = self._cluster
        self._script = self._cluster.register_script(publish_script("SPUBLISH"))
        self._wanted: set[str] = set()
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._seq: Sequencer | None = None
        self._shards: dict[str, _Shard] = {}
        self._homeless: set[str] = set()
        self._rehoming: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- keys ------------------------------------------------------------------------------

    def tag(self, channel: str) -> str:
        return f"{{{self.namespace}:{channel}}}"

    def counter_key(self, channel: str) -> str:
        return f"{self.tag(channel)}:id"

    def history_key(self, channel: str) -> str:
        return f"{self.tag(channel)}:h"

    def topic(self, channel: str) -> str:
        return f"{self.tag(channel)}:ch"

    def channel_of(self, topic: str) -> str | None:
        head = f"{{{self.namespace}:"
        if topic.startswith(head) and topic.endswith("}:ch"):
            return topic[len(head):-4]
        return None

    # --- the seam --------------------------------------------------------------------------

    async def start(self, deliver: Deliver) -> None:
        self._seq = Sequencer(deliver, self.history)
        try:
            await self._cluster.initialize()
            await self._cluster.ping()
        except _FAILURES as exc:
            await self._cluster.aclose()
            raise BrokerUnavailable(
                f"cannot reach the Redis Cluster at {self.where} ({exc}): start it "
                "(redis-cli --cluster create ...) or pass another --broker URL") from None

    async def publish_transient(self, channel: str, envelope: dict[str, Any]) -> None:
        try:
            await self._cluster.spublish(self.topic(channel), frame(0, wire.encode(envelope)))
        except _FAILURES as exc:  # presence is best effort
            log.warning("presence not sent, Redis Cluster at %s unavailable: %s", self.where,
                        exc)

    async def subscribe(self, channel: str) -> None:
        """Start from the channel's current id, SSUBSCRIBE on its master, and return once the
        subscription is effective and what was published meanwhile has been delivered."""
        assert self._seq is not None, "broker not started"
        self._wanted.add(channel)
        self._seq.watch(channel, await self.last_id(channel))
        confirmed = self._confirmed[channel] = asyncio.get_running_loop().create_future()
        try:
            async with self._lock:
                await self._home(channel)
            await asyncio.wait_for(confirmed, self._timeout)
        except _FAILURES as exc:  # re-homing retries wanted channels once the shard is back
            self._lost([channel])
            raise unavailable("Redis Cluster", self.where, exc) from None
        finally:
            self._confirmed.pop(channel, None)

    async def unsubscribe(self, channel: str) -> None:
        assert self._seq is not None, "broker not started"
        self._wanted.discard(channel)
        self._homeless.discard(channel)
        self._seq.forget(channel)
        for shard in self._shards.values():
            if channel in shard.channels:
                shard.channels.discard(channel)
                with contextlib.suppress(*_FAILURES):
                    await shard.pubsub.sunsubscribe(self.topic(channel))

    async def purge(self, channels: Iterable[str] | None = None) -> None:
        """Delete the ids and history of ``channels``, or of the whole namespace, on every
        master (tests; needs no ``start``)."""
        if channels is None:
            keys = []
            for node in self._cluster.get_primaries() or await self._primaries():
                keys += [key async for key in self._cluster.scan_iter(
                    match=f"{{{self.namespace}:*", target_nodes=node)]
        else:
            keys = [key for c in channels for key in (self.counter_key(c), self.history_key(c))]
        for key in keys:
            await self._cluster.delete(key)

    async def close(self) -> None:
        if self._rehoming is not None:
            self._rehoming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rehoming
        for shard in list(self._shards.values()):
            await self._drop(shard)
        await self._cluster.aclose()

    # --- the subscriber connections ---------------------------------------------------------

    async def _primaries(self) -> list[ClusterNode]:
        await self._cluster.initialize()
        return self._cluster.get_primaries()

    async def _home(self, channel: str) -> None:
        """SSUBSCRIBE ``channel`` on the master that owns its slot now (caller holds the
        lock); the reader catches the channel up when the confirmation arrives."""
        node = self._cluster.get_node_from_key(self.topic(channel))
        if node is None:
            raise RedisClusterException(f"no master serves {self.topic(channel)} now")
        shard = self._shards.get(node.name)
        if shard is None:
            client = aioredis.Redis(host=node.host, port=int(node.port),
                                    socket_connect_timeout=self._timeout,
                                    retry=Retry(NoBackoff(), 0))  # a lost master is re-homed
            shard = _Shard(node.name, client, client.pubsub())
            try:
                await shard.pubsub.ssubscribe(self.topic(channel))
            except BaseException:
                await self._drop(shard)
                raise
            self._shards[node.name] = shard
            shard.reader = asyncio.create_task(self._read(shard))
        else:
            await shard.pubsub.ssubscribe(self.topic(channel))
        shard.channels.add(channel)
        self._homeless.discard(channel)

    async def _drop(self, shard: _Shard) -> None:
        if self._shards.get(shard.node) is shard:
            del self._shards[shard.node]
        if shard.reader is not None and shard.reader is not asyncio.current_task():
            shard.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shard.reader
        with contextlib.suppress(*_FAILURES):
            await shard.pubsub.aclose()
        with contextlib.suppress(*_FAILURES):
            await shard.client.aclose()

    def _lost(self, channels: Iterable[str]) -> None:
        """These wanted channels have no subscription now: re-home them in the background."""
        self._homeless |= {c for c in channels if c in self._wanted}
        if self._homeless and (self._rehoming is None or self._rehoming.done()):
            self._rehoming = asyncio.create_task(self._rehome())

    async def _rehome(self) -> None:
        """Read the slot map again and SSUBSCRIBE every homeless channel on its master now,
        with backoff until each has a home."""
        pause, cap = RECONNECT_SECONDS
        while self._homeless:
            await asyncio.sleep(pause)
            try:
                async with self._lock:
                    await self._cluster.nodes_manager.initialize()  # the slot map, read again
                    for channel in sorted(self._homeless):
                        await self._home(channel)
            except _FAILURES as exc:
                log.info("Redis Cluster shard not back yet (%s)", exc)
                pause = min(cap, pause * 2)
                continue
            log.warning("Redis Cluster at %s: channels re-homed on their masters now",
                        self.where)

    async def _read(self, shard: _Shard) -> None:
        """One master's reader: hand messages to the sequencer; on loss, re-home its
        channels on whichever master owns them next."""
        try:
            while True:
                item = await shard.pubsub.get_message(timeout=None)
                if item is not None:
                    await self._handle(shard, item)
        except _FAILURES as exc:
            log.error("Redis Cluster master %s lost (%s): its channels move to the master "
                      "that takes over; local connections are still served", shard.node, exc)
        channels = set(shard.channels)
        await self._drop(shard)
        self._lost(channels)

    async def _handle(self, shard: _Shard, item: dict[str, Any]) -> None:
        assert self._seq is not None
        topic = item["channel"]
        channel = self.channel_of(topic.decode() if isinstance(topic, bytes) else topic)
        if channel is None:
            return
        kind = item["type"]
        if kind == "smessage":
            await self._seq.receive(unframe(channel, item["data"]))
        elif kind == "ssubscribe":
            await self._seq.catch_up(channel)
            confirmed = self._confirmed.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif kind == "sunsubscribe" and channel in self._wanted and channel in shard.channels:
            # the server dropped us: the slot moved to another master
            shard.channels.discard(channel)
            log.warning("Redis Cluster: %s moved off %s, re-homing", channel, shard.node)
            self._lost([channel])
