"""The broker seam: who assigns ids, keeps history and carries messages between instances.

The hub talks to exactly this interface. ``memory`` is the default (one process); the Redis and
NATS brokers implement the same five calls for a cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sobranie_bench import wire


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    """Channel the message was published on."""
    id: int
    """Per-channel id (1, 2, 3, ...); 0 for transient envelopes such as presence."""
    text: str
    """The encoded server envelope, shared by every subscriber (encoded once)."""


Deliver = Callable[[Message], None]


class BrokerUnavailable(RuntimeError):
    """The broker cannot be reached; raised at start-up with a message a person can act on."""


class Broker(ABC):
    """Ids, history and delivery for one hub (or many hubs in a cluster)."""

    name: str = "abstract"

    @abstractmethod
    async def start(self, deliver: Deliver) -> None:
        """Connect; every message published anywhere on a subscribed channel goes to deliver."""

    @abstractmethod
    async def publish(self, channel: str, data: Any, sender: str) -> Message:
        """Assign the channel's next id, keep it in history, deliver it everywhere."""

    @abstractmethod
    async def publish_transient(self, channel: str, envelope: dict[str, Any]) -> None:
        """Deliver an envelope with no id and no history (presence)."""

    @abstractmethod
    async def history(self, channel: str, since: int) -> list[Message]:
        """The retained messages with an id after ``since``, in id order (the hub tells a
        gap from the first id)."""

    @abstractmethod
    async def last_id(self, channel: str) -> int:
        """The channel's latest id (0 if nothing was published)."""

    def set_history_budget(self, nbytes: int) -> None:
        """Bytes of history this process may keep across all channels (the memory broker's;
        a shared broker keeps history in its own memory, under its own limits)."""

    def history_stats(self) -> tuple[int, int]:
        """Bytes of history held in this process, and messages evicted by the budget."""
        return 0, 0

    async def subscribe(self, channel: str) -> None:
        """This instance has a first local subscriber on ``channel``."""

    async def unsubscribe(self, channel: str) -> None:
        """This instance's last local subscriber on ``channel`` left."""

    async def close(self) -> None:
        """Release connections."""


def make_broker(url: str | None, history_size: int = wire.HISTORY_SIZE) -> Broker:
    """``memory`` (default), ``redis://host:port/db`` or ``nats://host:port``."""
    if not url or url == "memory":
        from servers.brokers.memory import MemoryBroker

        return MemoryBroker(history_size)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from servers.brokers.redis import RedisBroker  # type: ignore[import-not-found]

        return RedisBroker(url, history_size)  # type: ignore[no-any-return]
    if url.startswith(("nats://", "tls://")):
        from servers.brokers.nats import NatsBroker  # type: ignore[import-not-found]

        return NatsBroker(url, history_size)  # type: ignore[no-any-return]
    raise ValueError(f"unknown broker {url!r}: use memory, redis://host:port or nats://host:port")
