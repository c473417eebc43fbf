"""The in-process broker: ids and bounded history in dicts, delivery by a direct call."""

from __future__ import annotations

from collections import deque
from typing import Any

from servers.brokers.base import Broker, Deliver, Message
from sobranie_contract import wire


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, history_size: int = wire.HISTORY_SIZE) -> None:
        self._history_size = history_size
        self._last: dict[str, int] = {}
        self._history: dict[str, deque[Message]] = {}
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, channel: str, data: Any, sender: str) -> Message:
        id = self._last.get(channel, 0) + 1
        self._last[channel] = id
        msg = Message(channel, id, wire.encode(wire.message(channel, id, data, sender)))
        hist = self._history.get(channel)
        if hist is None:
            hist = self._history[channel] = deque(maxlen=self._history_size)
        hist.append(msg)
        assert self._deliver is not None, "broker not started"
        self._deliver(msg)
        return msg

    async def publish_transient(self, channel: str, envelope: dict[str, Any]) -> None:
        assert self._deliver is not None, "broker not started"
        self._deliver(Message(channel, 0, wire.encode(envelope)))

    async def last_id(self, channel: str) -> int:
        return self._last.get(channel, 0)

    async def history(self, channel: str, since: int) -> list[Message]:
        hist = self._history.get(channel)
        if not hist or since >= hist[-1].id:
            return []
        return list(hist)[max(0, since - hist[0].id + 1):]
