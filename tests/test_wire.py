"""The contract in code: parsing is total (a request or WireError, nothing else), whatever it
accepts can be sent on as strict UTF-8 JSON, cursors round-trip, channel names match the
contract's pattern."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sobranie_contract import wire
from sobranie_contract.wire import ErrorCode, WireError

REQUEST_TYPES = (wire.Subscribe, wire.Unsubscribe, wire.Publish, wire.Echo)
CHANNEL = st.from_regex(r"[a-z0-9_-]{1,32}(:[A-Za-z0-9_.-]{1,64})?", fullmatch=True)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)
ENVELOPES = st.fixed_dictionaries(
    {"op": st.sampled_from(["subscribe", "unsubscribe", "publish", "echo", "dance", None, 3])},
    optional={"channel": CHANNEL | JSON_VALUES, "data": JSON_VALUES,
              "since": st.integers() | JSON_VALUES, "ref": st.text() | JSON_VALUES,
              "unreliable": JSON_VALUES})


def strict_json(text: str) -> Any:
    """What a browser's JSON.parse accepts from a UTF-8 frame (no NaN, no lone surrogates)."""
    def no_constant(name: str) -> Any:
        raise ValueError(name)

    text.encode("utf-8")  # raises on a lone surrogate
    return json.loads(text, parse_constant=no_constant)


def outcome(raw: str | bytes) -> wire.Request | WireError:
    try:
        req = wire.parse_request(raw)
    except WireError as exc:
        assert isinstance(exc.code, ErrorCode) and exc.message
        return exc
    assert isinstance(req, REQUEST_TYPES)
    return req


def assert_sendable(req: wire.Request | WireError) -> None:
    """Whatever the server accepted, every envelope it builds from it is strict JSON."""
    if isinstance(req, WireError):
        out = req.envelope()
    elif isinstance(req, wire.Echo):
        out = wire.echo(req.ref, req.data)
    elif isinstance(req, wire.Publish):
        out = wire.message(req.channel, 1, req.data, "alice")
    else:
        out = wire.ack(req.ref, 0)
    assert strict_json(wire.encode(out)) == out


# --- parse_request is total -------------------------------------------------------------------


@given(st.binary(max_size=300))
@example(b"\xff\xfe{}")
@example(b'\xef\xbb\xbf{"op":"echo","data":1}')
@example('{"op":"echo","data":1}'.encode("utf-16"))
def test_parse_request_on_any_bytes(raw: bytes) -> None:
    assert_sendable(outcome(raw))


@given(st.text(max_size=300))
@example('{"op":"echo","data":NaN}')
@example('{"op":"echo","data":-Infinity}')
@example('{"op":"publish","channel":"c","data":1e400}')
@example('{"op":"echo","data":"\\ud800"}')
@example('{"op":"echo","data":{"\\udfff":1}}')
@example('{"op":"echo","data":"\\ud83d\\ude00"}')
@example('{"op":"subscribe","channel":"chat:1\\n"}')
@example(' {"op":"echo","data":1}\n')
@example('{"op":"echo","data":1} {}')
def test_parse_request_on_any_text(raw: str) -> None:
    assert_sendable(outcome(raw))


@given(JSON_VALUES)
def test_parse_request_on_any_json_value(value: Any) -> None:
    got = outcome(json.dumps(value))
    if not isinstance(value, dict):
        assert isinstance(got, WireError) and got.code == ErrorCode.BAD_REQUEST
    assert_sendable(got)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(ENVELOPES)
def test_parse_request_on_envelope_shaped_objects(envelope: dict[str, Any]) -> None:
    got = outcome(json.dumps(envelope))
    assert_sendable(got)
    if isinstance(got, WireError):
        return
    assert envelope["op"] == {wire.Subscribe: "subscribe", wire.Unsubscribe: "unsubscribe",
                              wire.Publish: "publish", wire.Echo: "echo"}[type(got)]
    assert got.ref is None or isinstance(got.ref, str)
    if isinstance(got, (wire.Subscribe, wire.Unsubscribe, wire.Publish)):
        assert wire.CHANNEL_RE.match(got.channel)
    if isinstance(got, wire.Subscribe) and got.since is not None:
        assert type(got.since) is int and got.since >= 0


@pytest.mark.parametrize("raw", [
    "[" * 100_000, "{\"a\":" * 50_000, b"[" * 60_000,
    '{"op":"echo","data":' + "[" * 30_000 + "]" * 30_000 + "}",
])
def test_deep_nesting_is_a_bad_request_not_a_crash(raw: str | bytes) -> None:
    with pytest.raises(WireError) as err:
        wire.parse_request(raw, limit=10**6)
    assert err.value.code == ErrorCode.BAD_REQUEST


def test_nesting_is_bounded_where_the_encoder_could_still_send_it() -> None:
    def nested(levels: int) -> str:  # the envelope is level 1
        return '{"op":"echo","data":' + "[" * (levels - 1) + "]" * (levels - 1) + "}"

    assert wire.parse_request(nested(wire.MAX_DEPTH)) == wire.Echo(
        json.loads(nested(wire.MAX_DEPTH))["data"])
    for levels in (wire.MAX_DEPTH + 1, 984):
        with pytest.raises(WireError, match="nested") as err:
            wire.parse_request(nested(levels))
        assert err.value.code == ErrorCode.BAD_REQUEST
    assert wire.parse_request('{"op":"echo","data":"' + "[{" * 100 + '"}')  # in a string
    assert wire.depth([{"a": [1]}, 2]) == 3 and wire.depth(5) == 0 and wire.depth({}) == 1


@pytest.mark.parametrize("since", [2**63, 10**30, -1])
def test_ids_are_signed_64_bit(since: int) -> None:
    with pytest.raises(WireError, match="2\\^63") as err:
        wire.parse_request(json.dumps({"op": "subscribe", "channel": "c", "since": since}))
    assert err.value.code == ErrorCode.BAD_REQUEST
    assert wire.parse_request(json.dumps({"op": "subscribe", "channel": "c",
                                          "since": wire.MAX_ID})).since == wire.MAX_ID


@pytest.mark.parametrize("raw, why", [
    ('{"op":"echo","data":NaN}', "NaN"),
    ('{"op":"echo","data":[Infinity]}', "Infinity"),
    ('{"op":"echo","data":1e999}', "out of range"),
    ('{"op":"echo","data":"\\ud800"}', "surrogate"),
    ('{"op":"echo","data":"\\uDC00x"}', "surrogate"),
    (b'{"op":"echo","data":"\xc3"}', "UTF-8"),
])
def test_what_could_not_be_sent_on_as_json_is_refused(raw: str | bytes, why: str) -> None:
    with pytest.raises(WireError, match=why) as err:
        wire.parse_request(raw)
    assert err.value.code == ErrorCode.BAD_REQUEST


def test_surrogate_pairs_and_utf8_text_are_fine() -> None:
    req = wire.parse_request('{"op":"echo","data":"\\ud83d\\ude00 привет"}')
    assert req == wire.Echo("\U0001f600 привет")
    assert wire.encode(wire.echo(None, req.data)) == \
        '{"type":"echo","ref":null,"data":"\U0001f600 привет"}'


def test_size_limit_comes_first() -> None:
    with pytest.raises(WireError) as err:
        wire.parse_request("x" * 101, limit=100)
    assert err.value.code == ErrorCode.TOO_LARGE
    assert wire.parse_request('{"op":"echo","data":"' + "x" * 60 + '"}', limit=100)


@pytest.mark.parametrize("raw, code, ref", [
    ('{"op":"publish","channel":"c","ref":"r1"}', "bad_request", "r1"),
    ('{"op":"subscribe","channel":"Bad","ref":7}', "unknown_channel", "7"),
    ('{"op":"subscribe","channel":"c","since":true}', "bad_request", None),
    ('{"op":"subscribe","channel":"c","since":1.0}', "bad_request", None),
    ('{"op":"unsubscribe"}', "bad_request", None),
    ('{"op":"teleport"}', "bad_request", None),
])
def test_errors_name_the_code_and_keep_the_ref(raw: str, code: str, ref: str | None) -> None:
    with pytest.raises(WireError) as err:
        wire.parse_request(raw)
    assert (err.value.code, err.value.ref) == (code, ref)
    assert err.value.envelope() == {"type": "error", "ref": ref, "code": code,
                                    "message": err.value.message}


# --- request_to_dict / request_from_dict ------------------------------------------------------

REFS = st.none() | st.text(max_size=10)
REQUESTS = st.one_of(
    st.builds(wire.Subscribe, CHANNEL, st.none() | st.integers(0, 2**53), REFS),
    st.builds(wire.Unsubscribe, CHANNEL, REFS),
    st.builds(wire.Publish, CHANNEL, JSON_VALUES, REFS, st.booleans()),
    st.builds(wire.Echo, JSON_VALUES, REFS),
)


@given(REQUESTS)
def test_request_dict_round_trip(req: wire.Request) -> None:
    out = wire.request_to_dict(req)
    assert wire.request_from_dict(out) == req
    assert wire.parse_request(json.dumps(out), limit=10**6) == req
    assert ("ref" in out) == (req.ref is not None)
    if isinstance(req, wire.Publish):
        assert ("unreliable" in out) == req.unreliable


def test_floats_survive_the_round_trip() -> None:
    req = wire.Echo({"t": 1.5e-7, "big": 1.7976931348623157e308})
    assert wire.parse_request(json.dumps(wire.request_to_dict(req))) == req
    assert not any(math.isinf(v) for v in req.data.values())


# --- encode -------------------------------------------------------------------------------------


@given(JSON_VALUES)
def test_encode_is_compact_utf8_json(value: Any) -> None:
    text = wire.encode({"type": "echo", "ref": None, "data": value})
    assert strict_json(text) == {"type": "echo", "ref": None, "data": value}
    assert text == json.dumps({"type": "echo", "ref": None, "data": value},
                              separators=(",", ":"), ensure_ascii=False)


def test_decode_reads_server_envelopes_only() -> None:
    assert wire.decode('{"type":"ack","ref":"r"}') == {"type": "ack", "ref": "r"}
    for raw in ('{"op":"echo"}', "[1]"):
        with pytest.raises(WireError):
            wire.decode(raw)


# --- cursors ------------------------------------------------------------------------------------


@given(st.dictionaries(CHANNEL, st.integers(0, wire.MAX_ID), max_size=8))
def test_cursor_round_trip(cursor: dict[str, int]) -> None:
    text = wire.format_cursor(cursor)
    assert wire.parse_cursor(text) == cursor
    assert list(wire.parse_cursor(text)) == list(cursor), "order kept"


def test_cursor_format_is_the_contracts() -> None:
    assert wire.format_cursor({"chat:42": 17, "user:alice": 3}) == "chat:42=17;user:alice=3"
    assert wire.parse_cursor("user:alice=3;chat:42=17") == {"chat:42": 17, "user:alice": 3}
    assert wire.parse_cursor(None) == {} == wire.parse_cursor("")
    assert wire.parse_cursor("a=1;;b=2;") == {"a": 1, "b": 2}, "empty parts are skipped"


@pytest.mark.parametrize("text", [
    "chat", "chat=", "=5", "chat=-1", "chat=x", "chat=1.5", "chat= 1", "Chat=1", "a:b:c=1",
    "chat:1=2=3", "chat=²", "chat=١", "chat\n=1", "a=1;b", "чат=1",
    f"chat={2**63}", "chat=" + "9" * 5000, "chat=" + "0" * 30 + "1",
])
def test_malformed_cursor_is_a_bad_request(text: str) -> None:
    with pytest.raises(WireError) as err:
        wire.parse_cursor(text)
    assert err.value.code == ErrorCode.BAD_REQUEST


@given(st.text(max_size=80))
def test_parse_cursor_on_any_text(text: str) -> None:
    try:
        cursor = wire.parse_cursor(text)
    except WireError as exc:
        assert exc.code == ErrorCode.BAD_REQUEST
        return
    assert all(wire.CHANNEL_RE.match(ch) and id >= 0 for ch, id in cursor.items())


# --- channel names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "chat:42", "feed:global", "user:alice", "presence", "a", "0", "_", "-", "a_b-c",
    "x" * 32, "x" * 32 + ":" + "Y" * 64, "doc:A.b-C_9", "room:...",
])
def test_contract_channel_names(name: str) -> None:
    assert wire.check_channel(name) == name


@pytest.mark.parametrize("name", [
    "", ":", "chat:", ":42", "Chat:1", "CHAT", "x" * 33, "x:" + "y" * 65, "a:b:c", "a b",
    "chat:4 2", "chat:42\n", "chat\n", "чат:1", "chat:ñ", "chat/1", "chat:1/2", "a;b", "a=b",
    "a,b",
])
def test_not_channel_names(name: str) -> None:
    with pytest.raises(WireError) as err:
        wire.check_channel(name)
    assert err.value.code == ErrorCode.UNKNOWN_CHANNEL


def test_channel_must_be_a_string() -> None:
    with pytest.raises(WireError) as err:
        wire.check_channel(["chat:1"], "r")
    assert (err.value.code, err.value.ref) == (ErrorCode.BAD_REQUEST, "r")


@given(st.text(max_size=100))
def test_channel_regex_agrees_with_the_contract(name: str) -> None:
    import re

    contract = re.fullmatch(r"[a-z0-9_-]{1,32}(:[A-Za-z0-9_.-]{1,64})?", name, re.ASCII)
    assert bool(wire.CHANNEL_RE.match(name)) == bool(contract)


def test_split_channels() -> None:
    assert wire.split_channels("a,b,,a,chat:1") == ["a", "b", "chat:1"]
    assert wire.split_channels(None) == [] == wire.split_channels("")
    with pytest.raises(WireError):
        wire.split_channels("ok,Not OK")
