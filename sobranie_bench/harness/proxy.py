"""A counting TCP relay: the bytes a client sends and receives, measured at the socket.

The overhead scenario points a client at the relay instead of the server, so every byte of the
handshake, headers, framing, polling requests and keep-alives is counted, whatever the
transport or client library (TCP/IP headers are not: they are the same for every transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass
class Counts:
    up: int = 0
    """Client -> server bytes."""
    down: int = 0
    """Server -> client bytes."""
    connections: int = 0
    """TCP connections the client opened."""
    turns: list[float] = field(default_factory=list)
    """On the first connection: when the server began each answer to a client flight
    (monotonic seconds). The turns before the client's ``hello`` are its handshake round
    trips (TCP's own SYN/SYN-ACK not included: the same for every TCP transport)."""
    _last: str = ""

    def round_trips_before(self, t: float) -> int:
        """Round trips the first connection made before ``t`` (its ``hello``)."""
        return sum(1 for turn in self.turns if turn <= t)


@dataclass
class CountingProxy:
    target_host: str
    target_port: int
    counts: Counts = field(default_factory=Counts)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        first = self.counts.connections == 1
        try:
            up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(self._pipe(reader, up_w, "up", first),
                                 self._pipe(up_r, writer, "down", first))
        finally:
            self._tasks.discard(task)
            for w in (writer, up_w):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str, first: bool) -> None:
        counts = self.counts
        try:
            while data := await reader.read(65536):
                if first and direction != counts._last:
                    if direction == "down" and counts._last == "up":
                        counts.turns.append(time.monotonic())
                    counts._last = direction
                if direction == "up":
                    self.counts.up += len(data)
                else:
                    self.counts.down += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.write_eof()
