"""The broker seam: who assigns ids, keeps history and carries messages between instances.

The hub talks to exactly this interface. ``memory`` is the default (one process); the Redis,
Redis Cluster and NATS brokers implement the same five calls for a cluster
(servers/brokers/base.py).
"""

from __future__ import annotations

from servers.brokers.base import Broker, BrokerUnavailable, Deliver, Message
from sobranie_contract import wire

__all__ = ["Broker", "BrokerUnavailable", "Deliver", "Message", "make_broker"]


def make_broker(url: str | None, history_size: int = wire.HISTORY_SIZE) -> Broker:
    """``memory`` (default), ``redis://host:port/db``, ``redis+cluster://host:port`` (any
    node of a Redis Cluster: sharded pub/sub) or ``nats://host:port``."""
    if not url or url == "memory":
        from servers.brokers.memory_broker import MemoryBroker

        return MemoryBroker(history_size)
    if url.startswith("redis+cluster://"):
        from servers.brokers.redis_cluster_broker import RedisClusterBroker

        return RedisClusterBroker(url, history_size)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from servers.brokers.redis_broker import RedisBroker  # type: ignore[import-not-found]

        return RedisBroker(url, history_size)  # type: ignore[no-any-return]
    if url.startswith(("nats://", "tls://")):
        from servers.brokers.nats_broker import NatsBroker  # type: ignore[import-not-found]

        return NatsBroker(url, history_size)  # type: ignore[no-any-return]
    raise ValueError(f"unknown broker {url!r}: use memory, redis://host:port, "
                     "redis+cluster://host:port or nats://host:port")
