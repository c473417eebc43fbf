"""The hub without sockets or sleeps: a fake clock, the memory broker, outboxes read directly.

Every test drives hub coroutines with ``await`` only; nothing here waits on time. What a client
would receive is read from ``conn.queue`` (the outbox) and decoded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from servers import sender
from servers.brokers import Message
from servers.brokers.memory_broker import MemoryBroker
from servers.hub import Connection, Hub, Inbox, Limits
from servers.sender import Sender
from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingBroker(MemoryBroker):
    """The memory broker, remembering which channels the hub joined and left."""

    def __init__(self, history_size: int = wire.HISTORY_SIZE) -> None:
        super().__init__(history_size)
        self.joined: list[str] = []
        self.left: list[str] = []

    async def subscribe(self, channel: str) -> None:
        self.joined.append(channel)

    async def unsubscribe(self, channel: str) -> None:
        self.left.append(channel)


class SlowHistoryBroker(MemoryBroker):
    """``history()`` waits for ``release`` (a slow Redis XRANGE): live messages published
    meanwhile reach the hub while the resume is still in flight.

    ``snapshot_first``: read the history before waiting (the live messages are then not in
    it, as with a read that raced ahead of the publishes), else after (they are in it too)."""

    def __init__(self, snapshot_first: bool, history_size: int = wire.HISTORY_SIZE) -> None:
        super().__init__(history_size)
        self.snapshot_first = snapshot_first
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def history(self, channel: str, since: int) -> list[Message]:
        before = await super().history(channel, since)
        self.waiting.set()
        await self.release.wait()
        return before if self.snapshot_first else await super().history(channel, since)


async def make_hub(broker: Any = None, **limits: Any) -> tuple[Hub, FakeClock]:
    clock = FakeClock()
    hub = Hub(broker, clock=clock, limits=Limits(**limits))
    await hub.start()
    return hub, clock


def drain(conn: Connection) -> list[dict[str, Any]]:
    """Everything in the outbox, decoded, oldest first; the outbox is left empty."""
    items = list(conn.queue)
    conn.queue.clear()
    return [json.loads(item.text) for item in items]


def of_type(envelopes: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in envelopes if e["type"] == kind]


async def send(hub: Hub, conn: Connection, **envelope: Any) -> None:
    await hub.handle(conn, json.dumps(envelope))


async def connected(hub: Hub, user: str, *channels: str) -> Connection:
    conn = await hub.connect(user, "ws")
    for channel in channels:
        await hub.subscribe(conn, channel)
    drain(conn)
    return conn


# --- connection lifecycle -----------------------------------------------------------------


async def test_hello_is_first_and_names_the_connection() -> None:
    hub, _ = await make_hub()
    a = await hub.connect("alice", "ws")
    b = await hub.connect("alice", "sse")
    (hello,) = drain(a)
    assert hello == {"type": "hello", "conn": a.id, "user": "alice", "server": hub.server}
    assert hub.server.startswith("sobranie-aiohttp/")
    assert drain(b)[0]["conn"] == b.id != a.id
    assert hub.lookup(a.id, "alice") is a


async def test_lookup_refuses_unknown_and_foreign_connections() -> None:
    hub, _ = await make_hub()
    a = await hub.connect("alice", "sse")
    with pytest.raises(WireError) as err:
        hub.lookup("nope", "alice")
    assert err.value.code == ErrorCode.BAD_REQUEST
    with pytest.raises(WireError) as err:
        hub.lookup(a.id, "mallory")
    assert err.value.code == ErrorCode.FORBIDDEN


async def test_outgoing_waits_for_a_push_and_takes_everything() -> None:
    hub, _ = await make_hub()
    conn = await connected(hub, "alice")
    waiting = asyncio.ensure_future(conn.outgoing())
    await asyncio.sleep(0)  # one loop turn: the reader is now parked on its waiter
    assert not waiting.done()
    await send(hub, conn, op="echo", data=1, ref="a")
    await send(hub, conn, op="echo", data=2, ref="b")
    items = await waiting
    assert [json.loads(i.text)["data"] for i in items] == [1, 2]
    assert not conn.queue


async def test_outgoing_returns_empty_once_closed() -> None:
    hub, _ = await make_hub()
    conn = await connected(hub, "alice")
    waiting = asyncio.ensure_future(conn.outgoing())
    await asyncio.sleep(0)
    await hub.disconnect(conn)
    assert list(await waiting) == []
    assert conn.closed and conn.close_code == wire.CLOSE_GOING_AWAY


# --- subscribe, publish, ack, echo --------------------------------------------------------


async def test_subscribe_ack_carries_the_latest_id_then_messages_in_order() -> None:
    hub, _ = await make_hub()
    await hub.publish("server-code", "chat:1", "before")
    sub = await hub.connect("bob", "ws")
    pub = await connected(hub, "alice")
    drain(sub)
    await send(hub, sub, op="subscribe", channel="chat:1", ref="s1")
    assert drain(sub) == [{"type": "ack", "ref": "s1", "id": 1}]
    for i in range(5):
        await send(hub, pub, op="publish", channel="chat:1", data={"n": i}, ref=f"p{i}")
    acks = drain(pub)
    assert acks == [{"type": "ack", "ref": f"p{i}", "id": i + 2} for i in range(5)]
    got = drain(sub)
    assert got == [{"type": "message", "channel": "chat:1", "id": i + 2, "data": {"n": i},
                    "from": "alice"} for i in range(5)]


async def test_publisher_subscribed_to_its_channel_gets_ack_and_its_own_message() -> None:
    hub, _ = await make_hub()
    alice = await connected(hub, "alice", "room:x")
    await send(hub, alice, op="publish", channel="room:x", data="hi", ref="r")
    got = drain(alice)
    assert {(e["type"], e["id"]) for e in got} == {("ack", 1), ("message", 1)}


async def test_ids_are_per_channel() -> None:
    hub, _ = await make_hub()
    ids = [(await hub.publish("u", ch, i)).id for i, ch in enumerate("abab")]
    assert ids == [1, 1, 2, 2]


async def test_echo_goes_to_the_sender_only() -> None:
    hub, _ = await make_hub()
    a = await connected(hub, "alice", "room:x")
    b = await connected(hub, "bob", "room:x")
    await send(hub, a, op="echo", data={"seq": 7, "pad": "x" * 48}, ref="e1")
    assert drain(a) == [{"type": "echo", "ref": "e1", "data": {"seq": 7, "pad": "x" * 48}}]
    assert drain(b) == []


async def test_echo_and_ack_without_ref_carry_null_ref() -> None:
    hub, _ = await make_hub()
    a = await connected(hub, "alice")
    await send(hub, a, op="echo", data=None)
    await send(hub, a, op="publish", channel="c", data=1)
    assert drain(a) == [{"type": "echo", "ref": None, "data": None},
                        {"type": "ack", "ref": None, "id": 1}]


async def test_non_string_ref_is_echoed_as_a_string() -> None:
    hub, _ = await make_hub()
    a = await connected(hub, "alice")
    await send(hub, a, op="echo", data=0, ref=42)
    assert drain(a)[0]["ref"] == "42"


async def test_unsubscribe_stops_delivery_and_releases_the_channel() -> None:
    broker = RecordingBroker()
    hub, _ = await make_hub(broker)
    a = await connected(hub, "alice", "chat:1")
    b = await connected(hub, "bob", "chat:1")
    assert broker.joined == ["chat:1"]  # the broker hears of the first local subscriber only
    await send(hub, a, op="unsubscribe", channel="chat:1", ref="u")
    assert drain(a) == [{"type": "ack", "ref": "u"}]
    await hub.publish("carol", "chat:1", "after")
    assert drain(a) == []
    assert [e["data"] for e in drain(b)] == ["after"]
    assert broker.left == []
    await hub.unsubscribe(b, "chat:1")
    assert broker.left == ["chat:1"] and "chat:1" not in hub.channels
    await hub.unsubscribe(b, "chat:1")  # leaving twice is harmless
    assert broker.left == ["chat:1"]


async def test_subscribing_twice_does_not_duplicate_delivery() -> None:
    hub, _ = await make_hub()
    a = await connected(hub, "alice", "chat:1")
    await hub.subscribe(a, "chat:1")
    drain(a)
    await hub.publish("bob", "chat:1", 1)
    assert len(of_type(drain(a), "message")) == 1


async def test_disconnect_leaves_every_channel() -> None:
    broker = RecordingBroker()
    hub, _ = await make_hub(broker)
    a = await connected(hub, "alice", "a", "b")
    await hub.disconnect(a)
    assert sorted(broker.left) == ["a", "b"] and hub.channels == {} and hub.conns == {}
    await hub.disconnect(a)  # idempotent


# --- presence -------------------------------------------------------------------------------


async def test_presence_online_on_first_and_offline_on_last_connection() -> None:
    hub, _ = await make_hub()
    watcher = await connected(hub, "watcher", "presence")
    first = await hub.connect("carol", "ws")
    second = await hub.connect("carol", "sse")
    assert drain(watcher) == [{"type": "presence", "channel": "presence", "user": "carol",
                               "status": "online"}]
    await hub.disconnect(first)
    assert drain(watcher) == []  # carol is still online on her other connection
    await hub.disconnect(second)
    assert drain(watcher) == [{"type": "presence", "channel": "presence", "user": "carol",
                               "status": "offline"}]
    again = await hub.connect("carol", "ws")
    assert [e["status"] for e in drain(watcher)] == ["online"]
    await hub.disconnect(again)


async def test_presence_has_no_id_and_is_not_kept_for_resume() -> None:
    hub, _ = await make_hub()
    await hub.connect("carol", "ws")
    late = await hub.connect("late", "ws")
    drain(late)
    await hub.subscribe(late, "presence", since=0)
    assert drain(late) == [{"type": "ack", "ref": None, "id": 0}]


# --- history and resume ---------------------------------------------------------------------


async def test_resume_with_since_replays_exactly_the_missed_then_live() -> None:
    hub, _ = await make_hub()
    for i in range(10):
        await hub.publish("alice", "feed:g", i)
    bob = await hub.connect("bob", "ws")
    drain(bob)
    await send(hub, bob, op="subscribe", channel="feed:g", since=4, ref="s")
    got = drain(bob)
    assert got[0] == {"type": "ack", "ref": "s", "id": 10}
    assert [e["id"] for e in got[1:]] == [5, 6, 7, 8, 9, 10]
    assert [e["data"] for e in got[1:]] == [4, 5, 6, 7, 8, 9]
    await hub.publish("alice", "feed:g", "live")
    assert [(e["id"], e["data"]) for e in drain(bob)] == [(11, "live")]


async def test_resume_when_nothing_was_missed_is_just_the_ack() -> None:
    hub, _ = await make_hub()
    for i in range(3):
        await hub.publish("alice", "feed:g", i)
    bob = await connected(hub, "bob")
    await hub.subscribe(bob, "feed:g", since=3, ref="s")
    assert drain(bob) == [{"type": "ack", "ref": "s", "id": 3}]
    await hub.subscribe(bob, "new:channel", since=0, ref="t")
    assert drain(bob) == [{"type": "ack", "ref": "t", "id": 0}]


async def test_subscribe_returns_the_cursor_it_starts_from() -> None:
    hub, _ = await make_hub()
    for i in range(4):
        await hub.publish("alice", "c", i)
    bob = await connected(hub, "bob")
    assert await hub.subscribe(bob, "c") == 4
    assert await hub.subscribe(bob, "c", since=2) == 2


@pytest.mark.parametrize("snapshot_first", [True, False],
                         ids=["history-before-live", "history-includes-live"])
async def test_live_messages_during_a_resume_are_held_then_flushed_once(
        snapshot_first: bool) -> None:
    broker = SlowHistoryBroker(snapshot_first)
    hub, _ = await make_hub(broker)
    for i in range(5):
        await hub.publish("alice", "chat:1", i)
    bob = await connected(hub, "bob")
    resume = asyncio.ensure_future(hub.subscribe(bob, "chat:1", since=2, ref="s"))
    await broker.waiting.wait()  # the hub is inside history(): the subscription is pending
    for i in range(5, 8):
        await hub.publish("alice", "chat:1", i)  # delivered live while the resume waits
    assert [item.type for item in bob.queue] == [], "held, not queued, until the replay"
    broker.release.set()
    await resume
    got = drain(bob)
    assert got[0] == {"type": "ack", "ref": "s", "id": 5}
    assert [e["id"] for e in got[1:]] == [3, 4, 5, 6, 7, 8], "all missed, in order, once"
    assert [e["data"] for e in got[1:]] == [2, 3, 4, 5, 6, 7]
    await hub.publish("alice", "chat:1", "after")
    assert [e["id"] for e in drain(bob)] == [9]


async def test_history_gap_replaces_the_ack_and_retained_messages_follow() -> None:
    hub, _ = await make_hub(MemoryBroker(history_size=5))
    for i in range(12):
        await hub.publish("alice", "chat:old", i)
    bob = await connected(hub, "bob")
    await send(hub, bob, op="subscribe", channel="chat:old", since=2, ref="s")
    got = drain(bob)
    assert got[0]["type"] == "error" and got[0]["code"] == "history_gap"
    assert got[0]["ref"] == "s" and "3..7" in got[0]["message"]
    assert of_type(got, "ack") == []
    assert [e["id"] for e in got[1:]] == [8, 9, 10, 11, 12]
    await hub.publish("alice", "chat:old", "live")  # the subscription stands
    assert [e["id"] for e in drain(bob)] == [13]
    assert hub.metrics.errors["history_gap"] == 1


async def test_no_gap_at_the_edge_of_the_retained_window() -> None:
    hub, _ = await make_hub(MemoryBroker(history_size=5))
    for i in range(12):
        await hub.publish("alice", "chat:old", i)
    bob = await connected(hub, "bob")
    await hub.subscribe(bob, "chat:old", since=7, ref="s")
    got = drain(bob)
    assert got[0] == {"type": "ack", "ref": "s", "id": 12}
    assert [e["id"] for e in got[1:]] == [8, 9, 10, 11, 12]


async def test_gap_when_everything_retained_is_gone_and_since_is_behind() -> None:
    hub, _ = await make_hub(MemoryBroker(history_size=0))
    for i in range(3):
        await hub.publish("alice", "c", i)
    bob = await connected(hub, "bob")
    await hub.subscribe(bob, "c", since=1, ref="s")
    (err,) = drain(bob)
    assert err["code"] == "history_gap"


# --- access control ---------------------------------------------------------------------------


async def test_private_channel_is_for_its_user_only() -> None:
    hub, _ = await make_hub()
    alice = await connected(hub, "alice")
    bob = await connected(hub, "bob")
    await send(hub, bob, op="subscribe", channel="user:alice", ref="x")
    assert drain(bob) == [{"type": "error", "ref": "x", "code": "forbidden",
                           "message": "user:alice is private"}]
    assert "user:alice" not in bob.subs
    await send(hub, alice, op="subscribe", channel="user:alice", ref="ok")
    assert drain(alice) == [{"type": "ack", "ref": "ok", "id": 0}]


async def test_clients_never_publish_to_private_or_presence_channels() -> None:
    hub, _ = await make_hub()
    alice = await connected(hub, "alice", "user:alice")
    for channel in ("user:alice", "user:bob", "presence"):
        await send(hub, alice, op="publish", channel=channel, data=1, ref=channel)
        (err,) = drain(alice)
        assert (err["type"], err["code"], err["ref"]) == ("error", "forbidden", channel)
    assert hub.metrics.published == 0


async def test_server_side_publish_reaches_a_private_channel() -> None:
    hub, _ = await make_hub()
    alice = await connected(hub, "alice", "user:alice")
    msg = await hub.publish(None, "user:alice", {"note": "liked"})
    assert msg.id == 1
    assert drain(alice) == [{"type": "message", "channel": "user:alice", "id": 1,
                             "data": {"note": "liked"}, "from": "server"}]


# --- errors keep the connection -------------------------------------------------------------


@pytest.mark.parametrize("raw, code", [
    ("not json", "bad_request"),
    (b"\xff\xfe not utf-8", "bad_request"),
    ("[1, 2]", "bad_request"),
    ('"just a string"', "bad_request"),
    ('{"data": 1}', "bad_request"),
    ('{"op": "dance"}', "bad_request"),
    ('{"op": "publish", "channel": "chat:1"}', "bad_request"),
    ('{"op": "subscribe", "channel": "chat:1", "since": -1}', "bad_request"),
    ('{"op": "subscribe", "channel": "chat:1", "since": "3"}', "bad_request"),
    ('{"op": "subscribe", "channel": 5}', "bad_request"),
    ('{"op": "echo"}', "bad_request"),
    ('{"op": "subscribe", "channel": "NO SUCH"}', "unknown_channel"),
    ('{"op": "publish", "channel": "a:b:c", "data": 1}', "unknown_channel"),
    ('{"op": "echo", "data": "' + "x" * 300 + '"}', "too_large"),
])
async def test_bad_envelopes_get_an_error_and_the_connection_stays(raw: Any, code: str) -> None:
    hub, _ = await make_hub(max_envelope=256)
    conn = await connected(hub, "alice", "chat:1")
    await hub.handle(conn, raw)
    (err,) = drain(conn)
    assert err["type"] == "error" and err["code"] == code and err["message"]
    assert not conn.closed
    await send(hub, conn, op="echo", data="still here")
    assert drain(conn)[0]["data"] == "still here"
    assert hub.metrics.errors[code] == 1


async def test_error_carries_the_ref_when_the_envelope_had_one() -> None:
    hub, _ = await make_hub()
    conn = await connected(hub, "alice")
    await send(hub, conn, op="publish", channel="chat:1", ref="p9")
    assert drain(conn)[0]["ref"] == "p9"


# --- rate limit (token bucket on the injected clock) ------------------------------------------


async def test_rate_limit_refuses_past_the_burst_and_refills_with_time() -> None:
    hub, clock = await make_hub(rate=10.0, burst=5.0, flood=100.0)
    conn = await connected(hub, "alice")
    for i in range(5):
        await send(hub, conn, op="echo", data=i)
    await send(hub, conn, op="echo", data="one too many", ref="x")
    got = drain(conn)
    assert [e["type"] for e in got] == ["echo"] * 5 + ["error"]
    assert (got[-1]["code"], got[-1]["ref"]) == ("rate_limited", None)
    clock.advance(0.05)  # half a token: still in debt
    await send(hub, conn, op="echo", data="still early")
    assert drain(conn)[0]["code"] == "rate_limited"
    clock.advance(1.0)  # ten tokens, capped at the burst of five
    for i in range(5):
        await send(hub, conn, op="echo", data=i)
    await send(hub, conn, op="echo", data="over again")
    assert [e["type"] for e in drain(conn)] == ["echo"] * 5 + ["error"]
    assert not conn.closed
    assert hub.metrics.errors["rate_limited"] == 3


async def test_flood_past_the_rate_limit_closes_with_1008_and_a_reason() -> None:
    hub, _ = await make_hub(rate=10.0, burst=2.0, flood=3.0)
    conn = await connected(hub, "alice")
    closes: list[tuple[int, str]] = []
    conn.on_close = lambda code, reason: closes.append((code, reason))
    for i in range(2 + 3):  # the burst, then three refusals: still open
        await send(hub, conn, op="echo", data=i)
    assert not conn.closed
    await send(hub, conn, op="echo", data="the flood")
    assert conn.closed
    assert closes == [(wire.CLOSE_POLICY, "rate limit: flood")]
    assert (conn.close_code, conn.close_reason) == (wire.CLOSE_POLICY, "rate limit: flood")
    got = drain(conn)
    assert [e.get("code") for e in got] == [None, None, "rate_limited", "rate_limited",
                                            "rate_limited", "rate_limited"]
    assert "flood" in got[-1]["message"], "the last envelope says why the close follows"
    await send(hub, conn, op="echo", data="ignored")  # a closed connection queues nothing
    assert drain(conn) == [] and closes == [(wire.CLOSE_POLICY, "rate limit: flood")]
    assert hub.metrics.cut["rate limit"] == 1


async def test_a_steady_rate_under_the_limit_is_never_refused() -> None:
    hub, clock = await make_hub(rate=100.0, burst=1.0, flood=0.0)
    conn = await connected(hub, "alice")
    for i in range(500):
        clock.advance(0.01)  # exactly the sustained rate
        await send(hub, conn, op="echo", data=i)
    assert of_type(drain(conn), "error") == []
    assert not conn.closed


# --- slow consumers -------------------------------------------------------------------------


async def test_slow_consumer_is_cut_off_at_the_queue_bound_and_others_keep_receiving() -> None:
    limit = 16
    hub, _ = await make_hub(send_queue=limit)
    stalled = await connected(hub, "stalled", "live:1")
    good = await connected(hub, "good", "live:1")
    closes: list[tuple[int, str]] = []
    stalled.on_close = lambda code, reason: closes.append((code, reason))
    received = []
    for i in range(200):
        await hub.publish("pub", "live:1", i)
        assert len(stalled.queue) <= limit, "memory stays bounded"
        received += drain(good)  # a reader that keeps up
    assert [e["data"] for e in received] == list(range(200))
    assert stalled.closed and stalled.close_code == wire.CLOSE_POLICY
    assert stalled.close_reason.startswith("slow consumer")
    assert len(closes) == 1 and closes[0][1].startswith("slow consumer")
    assert [e["data"] for e in drain(stalled)] == list(range(limit))
    assert hub.metrics.cut["slow consumer"] == 1
    await hub.disconnect(stalled)
    assert len(closes) == 1, "on_close is not called again by the disconnect"


async def test_server_shutdown_closes_every_connection_with_going_away() -> None:
    hub, _ = await make_hub()
    conns = [await connected(hub, f"u{i}") for i in range(3)]
    closes: list[int] = []
    for conn in conns:
        conn.on_close = lambda code, reason: closes.append(code)
    await hub.close()
    assert closes == [wire.CLOSE_GOING_AWAY] * 3
    assert all(c.closed for c in conns)


# --- metrics --------------------------------------------------------------------------------


async def test_metrics_count_what_happened() -> None:
    hub, _ = await make_hub()
    a = await connected(hub, "alice", "m:1")
    b = await hub.connect("bob", "sse")
    await send(hub, a, op="publish", channel="m:1", data=1, ref="p")
    await send(hub, a, op="subscribe", channel="user:bob", ref="x")
    await hub.handle(a, "garbage")
    m = hub.metrics
    assert m.opened == {"ws": 1, "sse": 1}
    assert m.received["ws"] == 3 and m.received["sse"] == 0
    assert m.published == 1
    assert m.errors == {"forbidden": 1, "bad_request": 1}
    # hello x2, subscribe ack, publish ack, the message itself, two errors
    assert m.sent["ws"] + m.sent["sse"] == 7
    text = m.render(hub)
    assert 'sobranie_connections{transport="ws"} 1' in text
    assert 'sobranie_connections{transport="sse"} 1' in text
    assert 'sobranie_errors_total{code="forbidden"} 1' in text
    assert "sobranie_published_total 1" in text
    assert "# TYPE sobranie_messages_in_total counter" in text
    await hub.disconnect(b)
    assert 'sobranie_connections{transport="sse"}' not in m.render(hub)
    assert m.opened["sse"] == 1


# --- Sender: the WebSocket adapters' outbox writer --------------------------------------------


class FakeSocket:
    """An adapter's ``send``: records what went out; ``block`` makes the next sends wait (a
    full socket buffer) until ``unblock``; ``gone`` makes them fail as a vanished peer."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.gone = False
        self.active = 0
        self.most_active = 0

    async def send(self, text: str) -> None:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.gone:
                raise ConnectionResetError("peer gone")
            await self.open.wait()
            self.sent.append(json.loads(text))
        finally:
            self.active -= 1


async def with_sender(hub: Hub, user: str, *channels: str) -> tuple[Connection, Sender,
                                                                      FakeSocket]:
    conn = await connected(hub, user, *channels)
    sock = FakeSocket()
    return conn, Sender(conn, sock.send), sock


async def test_sender_sends_replies_inline_without_a_task() -> None:
    hub, _ = await make_hub()
    conn, sender, sock = await with_sender(hub, "alice")
    await sender.handle(json.dumps({"op": "echo", "data": 1, "ref": "e"}))
    assert sock.sent == [{"type": "echo", "ref": "e", "data": 1}]
    assert sender.task is None and conn.queue == []


async def test_sender_sends_the_replies_of_a_burst_together_after_it() -> None:
    hub, _ = await make_hub()
    conn, sender, sock = await with_sender(hub, "alice")
    for i in range(4):  # arrived in one read: handled in one turn of the loop
        await sender.handle(json.dumps({"op": "echo", "data": i}))
    assert [e["data"] for e in sock.sent] == [0], "the first reply goes out at once"
    assert len(conn.queue) == 3 and sender.task is None
    await asyncio.sleep(0)  # the loop's next turn: the burst is over
    task = sender.task
    assert task is not None
    await task
    assert [e["data"] for e in sock.sent] == [0, 1, 2, 3]
    await asyncio.sleep(0)
    await sender.handle(json.dumps({"op": "echo", "data": "next"}))  # a new burst
    assert sock.sent[-1]["data"] == "next"


async def test_sender_wakes_a_task_for_what_others_push_then_lets_it_go() -> None:
    hub, _ = await make_hub()
    _conn, sender, sock = await with_sender(hub, "bob", "room:x")
    await hub.publish("alice", "room:x", "one")
    await hub.publish("alice", "room:x", "two")
    task = sender.task
    assert task is not None, "one task for the burst"
    await task
    assert [e["data"] for e in sock.sent] == ["one", "two"]
    assert sender.task is None, "no task stays behind for an idle connection"


async def test_sender_keeps_order_and_one_writer_when_the_socket_is_full() -> None:
    hub, _ = await make_hub()
    _conn, sender, sock = await with_sender(hub, "bob", "room:x")
    sock.open.clear()  # the client stops reading
    await hub.publish("alice", "room:x", 0)
    task = sender.task
    assert task is not None
    await asyncio.sleep(0)  # the task starts and blocks on the full socket
    for i in range(1, 4):
        await hub.publish("alice", "room:x", i)
    reply = asyncio.ensure_future(sender.handle(json.dumps({"op": "echo", "data": "e"})))
    await asyncio.sleep(0)
    assert reply.done(), "a request is handled even while the socket is full"
    sock.open.set()
    await task
    assert [e["data"] for e in sock.sent] == [0, 1, 2, 3, "e"]
    assert sock.most_active == 1


async def test_sender_stops_quietly_when_the_peer_is_gone() -> None:
    hub, _ = await make_hub()
    conn, sender, sock = await with_sender(hub, "bob", "room:x")
    sock.gone = True
    await sender.handle(json.dumps({"op": "echo", "data": 1}))  # does not raise
    await hub.publish("alice", "room:x", "lost")
    assert sender.task is None and conn.wake is None


async def test_sender_stop_cancels_a_pending_task() -> None:
    hub, _ = await make_hub()
    conn, sender, sock = await with_sender(hub, "bob", "room:x")
    await hub.publish("alice", "room:x", 1)
    task = sender.task
    assert task is not None
    sender.stop()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sock.sent == [] and conn.wake is None


async def test_sender_with_a_stalled_reader_ends_in_a_slow_consumer_cut() -> None:
    hub, _ = await make_hub(send_queue=8)
    conn, sender, sock = await with_sender(hub, "bob", "room:x")
    closes: list[str] = []
    conn.on_close = lambda code, reason: (closes.append(reason), sender.stop())
    sock.open.clear()
    for i in range(20):
        await hub.publish("alice", "room:x", i)
        await asyncio.sleep(0)
        assert len(conn.queue) <= 8
    assert len(closes) == 1 and closes[0].startswith("slow consumer")
    assert conn.close_code == wire.CLOSE_POLICY


# --- the rules every adapter leaves to the hub (the list at the top of servers/hub.py) --------


async def test_handle_returns_the_replies_and_queues_them_in_order() -> None:
    hub, _ = await make_hub()
    conn = await connected(hub, "alice")
    replies = await hub.handle(conn, json.dumps({"op": "subscribe", "channel": "c:1",
                                                 "ref": "s"}))
    assert replies == [{"type": "ack", "ref": "s", "id": 0}]
    assert drain(conn) == replies, "the reply also joins the outbox"
    [error] = await hub.handle(conn, "nope")
    assert error["code"] == "bad_request" and drain(conn) == [error]


async def test_replies_apart_skip_the_outbox() -> None:
    """Socket.IO carries replies as acks: they are returned, never queued."""
    hub, _ = await make_hub()
    conn = await connected(hub, "alice")
    conn.replies_apart = True
    replies = await hub.handle(conn, json.dumps({"op": "echo", "data": 1, "ref": "e"}))
    assert replies == [{"type": "echo", "ref": "e", "data": 1}]
    assert conn.queue == [] and conn.replies is None
    [error] = await hub.handle(conn, "not json")
    assert error["code"] == "bad_request" and conn.queue == []
    assert hub.metrics.errors["bad_request"] == 1


async def test_best_effort_publish_is_delivered_and_never_acked() -> None:
    hub, _ = await make_hub()
    sub = await connected(hub, "bob", "cursor:1")
    pub = await connected(hub, "alice")
    raw = json.dumps({"op": "publish", "channel": "cursor:1", "data": 1, "ref": "p"})
    assert await hub.handle(pub, raw, reliable=False) == []
    assert pub.queue == []
    assert [e["data"] for e in of_type(drain(sub), "message")] == [1]
    [error] = await hub.handle(pub, json.dumps({"op": "publish", "channel": "user:bob",
                                                "data": 1}), reliable=False)
    assert error["code"] == "forbidden", "errors still go back"


async def test_refusals_outside_a_connection_are_counted_once() -> None:
    hub, _ = await make_hub()
    envelope = hub.refused(WireError(ErrorCode.UNAUTHORIZED, "missing token"))
    assert envelope == {"type": "error", "ref": None, "code": "unauthorized",
                        "message": "missing token"}
    assert hub.metrics.errors == {"unauthorized": 1}


async def test_stream_channels_are_parsed_and_checked_before_anything_exists() -> None:
    hub, _ = await make_hub()
    assert hub.stream_channels("alice", "a,user:alice", None) == (["a", "user:alice"], {})
    assert hub.stream_channels("alice", None, "a=3;b=4") == (["a", "b"], {"a": 3, "b": 4})
    with pytest.raises(WireError) as err:
        hub.stream_channels("alice", "a,user:bob", None)
    assert err.value.code == ErrorCode.FORBIDDEN
    with pytest.raises(WireError) as err:
        hub.stream_channels("alice", None, "a=x")
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert hub.conns == {}


async def test_parked_connections_expire_on_the_injected_clock() -> None:
    hub, clock = await make_hub(idle=30.0)
    a, b = await connected(hub, "a"), await connected(hub, "b")
    assert hub.next_deadline() is None
    hub.park(a)
    clock.advance(10)
    hub.park(b)
    assert hub.next_deadline() == clock.now + 20
    assert hub.expire(clock.now) == []
    hub.unpark(a)  # a poll arrived
    assert hub.next_deadline() == clock.now + 30
    clock.advance(5)
    hub.park(a)  # and was answered
    clock.advance(25)
    assert hub.expire(clock.now) == [b]
    assert hub.next_deadline() == clock.now + 5
    clock.advance(5)
    assert hub.expire(clock.now) == [a] and hub.next_deadline() is None


async def test_a_parked_connection_cut_off_expires_at_once() -> None:
    hub, clock = await make_hub(idle=30.0)
    conn = await connected(hub, "a")
    hub.park(conn)
    conn.close(wire.CLOSE_POLICY, "slow consumer: test")
    assert hub.next_deadline() == clock.now
    assert hub.expire(clock.now) == [conn]
    hub.park(conn)  # a poll of a session cut off while it waited
    assert hub.expire(clock.now) == [conn]


async def test_a_disconnected_connection_is_no_longer_parked() -> None:
    hub, _ = await make_hub()
    conn = await connected(hub, "a")
    hub.park(conn)
    await hub.disconnect(conn)
    assert hub.next_deadline() is None


async def test_inbox_is_bounded_in_unread_bytes() -> None:
    inbox = Inbox(Limits(hard_frame=10))
    assert inbox.put(b"12345") and inbox.put(b"123", reliable=False)
    assert not inbox.put(b"123"), "11 unread bytes: a flood"
    assert await inbox.get() == (b"12345", True)
    assert inbox.bytes == 6  # 3 queued, and 3 counted when refused
    assert await inbox.get() == (b"123", False)
    inbox.end()
    assert await inbox.get() is None


# --- Sender's tables --------------------------------------------------------------------------


def test_sender_tables_name_every_move_between_known_states() -> None:
    readers = {sender.READING, sender.HANDLING, sender.BURST, sender.BURST_HANDLING}
    writers = {sender.IDLE, sender.SCHEDULED, sender.SENDING, sender.FLUSHING, sender.STOPPED}
    assert {s for pair in sender.READER.items() for s in (pair[0][0], pair[1])} == readers
    assert {s for pair in sender.WRITER.items() for s in (pair[0][0], pair[1])} == writers
    with pytest.raises(KeyError):
        sender.READER.__getitem__((sender.HANDLING, "request"))  # one request at a time


async def test_sender_stops_for_good_when_the_peer_is_gone() -> None:
    hub, _ = await make_hub()
    _conn, s, sock = await with_sender(hub, "bob")
    sock.gone = True
    await s.handle(json.dumps({"op": "echo", "data": 1}))
    assert s.writer == sender.STOPPED and s.reader == sender.BURST
    await asyncio.sleep(0)
    assert s.reader == sender.READING


# --- budgets across channels and per user -----------------------------------------------------


async def test_history_budget_evicts_the_oldest_message_of_any_channel() -> None:
    hub, _ = await make_hub(history_bytes=10_000, user_channels=10**6)
    for i in range(1000):  # one token, 1000 fresh channels, 1 kB each
        await hub.publish("mallory", f"fresh:{i}", "x" * 1000)
    held, evicted = hub.broker.history_stats()
    assert held <= 10_000 and evicted > 980
    assert await hub.broker.history(f"fresh:{999}", 0) != []  # the newest are kept
    assert await hub.broker.history("fresh:0", 0) == []
    assert await hub.broker.last_id("fresh:0") == 1, "ids go on after eviction"
    late = await connected(hub, "late")
    await hub.subscribe(late, "fresh:0", since=0)
    assert of_type(drain(late), "error")[0]["code"] == "history_gap"
    text = hub.metrics.render(hub)
    assert f"sobranie_history_bytes {held}" in text
    assert f"sobranie_history_evicted_total {evicted}" in text


async def test_a_user_may_publish_to_so_many_channels_per_window() -> None:
    hub, clock = await make_hub(user_channels=3, user_window=60.0)
    conn = await connected(hub, "mallory")
    for i in range(4):
        await send(hub, conn, op="publish", channel=f"c:{i}", data=1, ref=str(i))
    errors = of_type(drain(conn), "error")
    assert [(e["ref"], e["code"]) for e in errors] == [("3", "rate_limited")]
    await send(hub, conn, op="publish", channel="c:0", data=1, ref="again")  # a known one
    assert of_type(drain(conn), "ack")[0]["ref"] == "again"
    clock.advance(60.0)
    await send(hub, conn, op="publish", channel="c:3", data=1, ref="later")
    assert of_type(drain(conn), "ack")[0]["ref"] == "later"


async def test_a_users_publishes_are_limited_over_all_their_connections() -> None:
    hub, clock = await make_hub(user_rate=10.0, user_burst=4.0)
    conns = [await connected(hub, "mallory") for _ in range(4)]
    for i in range(8):  # two each: under every connection's own limit
        await send(hub, conns[i % 4], op="publish", channel="c:1", data=i)
    codes = [e.get("code") for c in conns for e in drain(c)]
    assert codes.count("rate_limited") == 4 and codes.count(None) == 4
    assert not any(c.closed for c in conns)
    clock.advance(0.1)
    await send(hub, conns[0], op="publish", channel="c:1", data="refilled")
    assert of_type(drain(conns[0]), "ack")


async def test_a_user_holds_so_many_connections() -> None:
    hub, _ = await make_hub(user_connections=2)
    await connected(hub, "mallory")
    second = await connected(hub, "mallory")
    with pytest.raises(WireError) as err:
        hub.admit("mallory")
    assert err.value.code == ErrorCode.RATE_LIMITED
    hub.admit("someone-else")
    await hub.disconnect(second)
    hub.admit("mallory")


async def test_every_request_kind_counts_against_the_users_budget() -> None:
    hub, _ = await make_hub(user_rate=10.0, user_burst=4.0)
    conns = [await connected(hub, "mallory") for _ in range(4)]
    requests = [{"op": "echo", "data": 1}, {"op": "subscribe", "channel": "c:1"},
                {"op": "unsubscribe", "channel": "c:1"}, {"op": "publish", "channel": "c:1",
                                                          "data": 1}]
    for i in range(8):  # two each: under every connection's own limit, twice the user's
        await send(hub, conns[i % 4], **requests[i // 2], ref=str(i))
    errors = [e for c in conns for e in of_type(drain(c), "error")]
    assert sorted(e["ref"] for e in errors) == ["4", "5", "6", "7"]
    assert all(e["code"] == "rate_limited" and "for this user" in e["message"] for e in errors)


async def test_a_users_budget_outlives_their_last_connection_until_it_refills() -> None:
    hub, clock = await make_hub(user_rate=10.0, user_burst=4.0, user_channels=2,
                                user_window=60.0)
    conn = await connected(hub, "mallory")
    for i in range(2):
        await send(hub, conn, op="publish", channel=f"c:{i}", data=1)
    await hub.disconnect(conn)
    conn = await connected(hub, "mallory")  # close and reconnect: the window stands
    await send(hub, conn, op="publish", channel="c:2", data=1, ref="new")
    assert [e["code"] for e in of_type(drain(conn), "error")] == ["rate_limited"]
    await hub.disconnect(conn)
    clock.advance(59.0)
    assert hub.expire(clock()) == [] and "mallory" in hub._budgets  # not refilled yet
    clock.advance(1.0)
    hub.expire(clock())
    assert "mallory" not in hub._budgets, "a refilled budget of a user gone is forgotten"
    conn = await connected(hub, "mallory")
    await send(hub, conn, op="publish", channel="c:2", data=1, ref="later")
    assert of_type(drain(conn), "ack")[0]["ref"] == "later"


async def test_an_emptied_bucket_is_kept_until_it_refills() -> None:
    hub, clock = await make_hub(user_rate=10.0, user_burst=4.0)
    conn = await connected(hub, "mallory")
    for _ in range(4):
        await send(hub, conn, op="echo", data=1)
    await hub.disconnect(conn)
    conn = await connected(hub, "mallory")
    await send(hub, conn, op="echo", data=1, ref="no")
    assert of_type(drain(conn), "error")[0]["ref"] == "no"
    await hub.disconnect(conn)
    clock.advance(0.4)  # 4 tokens at 10/s
    hub.expire(clock())
    assert "mallory" not in hub._budgets


async def test_reconnecting_in_a_loop_keeps_one_budget_timer() -> None:
    hub, clock = await make_hub(user_rate=10.0, user_burst=4.0, user_window=60.0)
    for i in range(100):
        conn = await connected(hub, "mallory")
        await send(hub, conn, op="publish", channel="c:1", data=i)
        await hub.disconnect(conn)
        clock.advance(1.0)  # the window outlives each reconnect; one timer re-checks it
        hub.expire(clock())
    assert len(hub._spent_heap) == 1 and "mallory" in hub._budgets
    clock.advance(60.0)
    hub.expire(clock())
    assert hub._spent_heap == [] and "mallory" not in hub._budgets
