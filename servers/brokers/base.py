"""What a broker is: the five calls the hub makes, and the message it delivers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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

    async def subscribe(self, channel: str) -> None:
        """This instance has a first local subscriber on ``channel``."""

    async def unsubscribe(self, channel: str) -> None:
        """This instance's last local subscriber on ``channel`` left."""

    async def close(self) -> None:
        """Release connections."""
