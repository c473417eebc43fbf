"""The in-process broker: ids and bounded history in dicts, delivery by a direct call."""

from __future__ import annotations

from collections import deque
from typing import Any

from servers.brokers.base import Broker, Deliver, Message
from sobranie_contract import wire


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, history_size: int = wire.HISTORY_SIZE,
                 history_bytes: int = wire.HISTORY_BYTES) -> None:
        self._history_size = history_size
        self._last: dict[str, int] = {}
        self._history: dict[str, deque[Message]] = {}
        self._deliver: Deliver | None = None
        self.history_budget = history_bytes
        self._order: deque[Message] = deque()
        """Every retained message in publish order (and some already dropped by their channel's
        cap, skipped when they come up): the oldest is evicted first past the budget."""
        self._retained = 0
        self.history_bytes = 0
        self.history_evicted = 0

    def set_history_budget(self, nbytes: int) -> None:
        self.history_budget = nbytes

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, channel: str, data: Any, sender: str) -> Message:
        id = self._last.get(channel, 0) + 1
        self._last[channel] = id
        msg = Message(channel, id, wire.encode(wire.message(channel, id, data, sender)))
        self._keep(msg)
        assert self._deliver is not None, "broker not started"
        self._deliver(msg)
        return msg

    def _keep(self, msg: Message) -> None:
        """Retain ``msg``: its channel keeps its last ``history_size``, all channels together
        at most ``history_budget`` bytes (the oldest message anywhere goes first)."""
        if self._history_size <= 0:
            return
        hist = self._history.get(msg.channel)
        if hist is None:
            hist = self._history[msg.channel] = deque()
        if len(hist) >= self._history_size:
            self._drop(hist.popleft())
        hist.append(msg)
        self._order.append(msg)
        self._retained += 1
        self.history_bytes += len(msg.text)
        while self.history_bytes > self.history_budget and self._order:
            oldest = self._order.popleft()
            kept = self._history.get(oldest.channel)
            if kept and kept[0] is oldest:
                kept.popleft()
                self._drop(oldest)
                self.history_evicted += 1
                if not kept:
                    del self._history[oldest.channel]
        if len(self._order) > 2 * self._retained + 1024:  # mostly dropped: compact
            self._order = deque(m for m in self._order
                                if (h := self._history.get(m.channel)) and h[0].id <= m.id)

    def _drop(self, msg: Message) -> None:
        self._retained -= 1
        self.history_bytes -= len(msg.text)

    def history_stats(self) -> tuple[int, int]:
        return self.history_bytes, self.history_evicted

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
