"""The Sobranie real-time contract in code (see docs/protocol.md).

The one place servers and clients take envelopes, cursors, error codes and limits from.
Parsing never raises anything but :class:`WireError`; building never touches ``data``.
"""

from __future__ import annotations

import json
import json.encoder
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PROTOCOL_VERSION = "1"

MAX_ENVELOPE_BYTES = 64 * 1024
"""An envelope over this gets ``too_large`` and the connection stays open."""
HARD_FRAME_BYTES = 1024 * 1024
"""A frame over this closes the connection (WebSocket 1009)."""
HISTORY_SIZE = 1000
"""Messages kept per channel for resume."""
HISTORY_BYTES = 256 * 1024 * 1024
"""Bytes of history one server process keeps across all its channels (the oldest message of
any channel is evicted first): the per-channel cap alone lets one token fill memory by
publishing into ever new channels."""
MAX_DEPTH = 64
"""Nesting levels an envelope may have (the envelope object itself is level 1): deeper is
``bad_request``. Python's own JSON encoder gives up near 1000 levels, so without a bound the
parser would accept what the server could then not send on."""
MAX_ID = 2**63 - 1
"""The largest message id (and ``since``, and cursor id) of the contract: a signed 64-bit
integer, what every language's JSON reader and every broker can hold. Larger is
``bad_request``."""
HEADER_TIMEOUT_SECONDS = 5.0
"""An HTTP request (or WebSocket handshake) whose headers have not all arrived this long after
the connection opened, or after the last answer on a kept-alive connection, is closed: the
defence against slowloris (half-sent requests holding connections). Idle kept-alive
connections close after the same time, as Apache's default does."""
SSE_PING_SECONDS = 15.0
POLL_TIMEOUT_SECONDS = 25.0

CHANNEL_RE = re.compile(r"^[a-z0-9_-]{1,32}(:[A-Za-z0-9_.-]{1,64})?\Z")
"""The contract's channel pattern, anchored with ``\\Z``: ``$`` would also match before a final
newline, and ``chat:1\\n`` would then pass (and break an SSE ``id:`` line)."""
PRESENCE_CHANNEL = "presence"
PRIVATE_PREFIX = "user:"

CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    FORBIDDEN = "forbidden"
    UNKNOWN_CHANNEL = "unknown_channel"
    RATE_LIMITED = "rate_limited"
    HISTORY_GAP = "history_gap"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    """The shared broker (cluster backplane) cannot be reached; retry later (HTTP 503)."""


class WireError(Exception):
    """A contract violation, answered with an ``error`` envelope."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref

    def envelope(self) -> dict[str, Any]:
        return error(self.code, self.message, self.ref)


# --- client -> server -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    """Channel to join."""
    since: int | None = None
    """Last id the client has seen; history after it is replayed."""
    ref: str | None = None
    """Client's correlation string, echoed in the reply."""


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    """Channel to leave."""
    ref: str | None = None
    """Client's correlation string."""


@dataclass(frozen=True, slots=True)
class Publish:
    channel: str
    """Target channel."""
    data: Any
    """Opaque payload; servers never read it."""
    ref: str | None = None
    """Client's correlation string."""
    unreliable: bool = False
    """Best effort (WebTransport datagrams, WebRTC unordered channel)."""


@dataclass(frozen=True, slots=True)
class Echo:
    data: Any
    """Opaque payload sent back to the sender only."""
    ref: str | None = None
    """Client's correlation string."""


Request = Subscribe | Unsubscribe | Publish | Echo


def check_channel(channel: Any, ref: str | None = None) -> str:
    if not isinstance(channel, str):
        raise WireError(ErrorCode.BAD_REQUEST, "'channel' must be a string", ref)
    if not CHANNEL_RE.match(channel):
        raise WireError(ErrorCode.UNKNOWN_CHANNEL, f"no such channel: {channel[:100]!r}", ref)
    return channel


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf (1e400): it would go out as ``Infinity``, which is not JSON
        raise ValueError(f"number out of range: {text[:40]}")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
_scan = _DECODER.scan_once  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"


def loads(raw: str | bytes) -> Any:
    """Strict JSON, as every envelope or body from a client is read: UTF-8 (bytes), no
    ``NaN``/``Infinity`` and no out-of-range floats, no lone surrogates (``"\\ud800"``: text
    that cannot be sent on as UTF-8), bounded nesting. Anything else is ``bad_request``; this
    never raises anything but :class:`WireError`, so what it returns can always be re-encoded
    and sent to every subscriber."""
    if not isinstance(raw, str):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(ErrorCode.BAD_REQUEST, f"not UTF-8: {exc}") from None
        raw = raw.removeprefix("\ufeff")  # a UTF-8 BOM may be ignored (RFC 8259)
    try:
        try:
            obj, end = _scan(raw, 0)  # the fast path: no leading space, nothing after
        except StopIteration:
            obj, end = _DECODER.decode(raw), len(raw)  # raises with a position
        if end != len(raw) and raw[end:].strip(_JSON_SPACE):
            _DECODER.decode(raw)  # raises "Extra data" with a position
    except RecursionError:
        raise WireError(ErrorCode.BAD_REQUEST, "not JSON: nested too deeply") from None
    except ValueError as exc:
        raise WireError(ErrorCode.BAD_REQUEST, f"not JSON: {exc}") from None
    if raw.count("[") + raw.count("{") > MAX_DEPTH and depth(obj) > MAX_DEPTH:
        raise WireError(ErrorCode.BAD_REQUEST, f"nested deeper than {MAX_DEPTH} levels")
    if "\\ud" in raw or "\\uD" in raw:  # an escaped surrogate: fine only as half of a pair
        try:
            encode(obj).encode("utf-8")
        except UnicodeEncodeError:
            raise WireError(ErrorCode.BAD_REQUEST, "lone surrogate in a string") from None
    return obj


def depth(obj: Any) -> int:
    """Nesting levels of a parsed JSON value (a scalar is 0, ``[]`` and ``{}`` are 1); walked
    without recursion, so any depth the parser produced can be measured."""
    deepest = 0
    stack = [(obj, 1)] if type(obj) in (dict, list) else []
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        items = value.values() if type(value) is dict else value
        stack.extend((item, level + 1) for item in items if type(item) in (dict, list))
    return deepest


def check_id(value: Any, name: str, ref: str | None = None) -> int:
    """An id of the contract (``since``, a cursor's id): an integer in 0..MAX_ID."""
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise WireError(ErrorCode.BAD_REQUEST,
                        f"{name!r} must be an integer in 0..2^63-1", ref)
    return value


def reencode(value: Any) -> bytes:
    """An envelope a library already decoded (Socket.IO events), as the UTF-8 JSON that
    :func:`parse_request` reads, so it meets the same rules: text that cannot be sent on as
    UTF-8 (a lone surrogate), binary attachments and unbounded nesting are ``bad_request``."""
    try:
        return encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise WireError(ErrorCode.BAD_REQUEST, "lone surrogate in a string") from None
    except RecursionError:
        raise WireError(ErrorCode.BAD_REQUEST, "not JSON: nested too deeply") from None
    except (TypeError, ValueError):
        raise WireError(ErrorCode.BAD_REQUEST,
                        "binary attachments are not part of the contract") from None


def parse_request(raw: str | bytes, *, limit: int = MAX_ENVELOPE_BYTES) -> Request:
    """Parse one client envelope; raise :class:`WireError` for anything else."""
    if len(raw) > limit:
        raise WireError(ErrorCode.TOO_LARGE, f"envelope of {len(raw)} bytes over {limit}",
                        _ref_of(raw))
    obj = loads(raw)
    if type(obj) is not dict:
        raise WireError(ErrorCode.BAD_REQUEST, "envelope must be a JSON object")
    return request_from_dict(obj)


def _ref_of(raw: str | bytes) -> str | None:
    """The ``ref`` of an envelope refused as too large, so the client's request fails at once
    (it is under the hard frame limit, so parsing it once more is bounded)."""
    try:
        obj = loads(raw)
    except WireError:
        return None
    ref = obj.get("ref") if type(obj) is dict else None
    return None if ref is None else str(ref)


def request_from_dict(obj: dict[str, Any]) -> Request:
    ref = obj.get("ref")
    if ref is not None and not isinstance(ref, str):
        ref = str(ref)
    op = obj.get("op")
    if op == "echo":
        if "data" not in obj:
            raise WireError(ErrorCode.BAD_REQUEST, "echo needs 'data'", ref)
        return Echo(obj["data"], ref)
    if op == "publish":
        if "channel" not in obj or "data" not in obj:
            raise WireError(ErrorCode.BAD_REQUEST, "publish needs 'channel' and 'data'", ref)
        return Publish(check_channel(obj["channel"], ref), obj["data"], ref,
                       obj.get("unreliable") is True)
    if op == "subscribe":
        if "channel" not in obj:
            raise WireError(ErrorCode.BAD_REQUEST, "subscribe needs 'channel'", ref)
        since = obj.get("since")
        if since is not None:
            check_id(since, "since", ref)
        return Subscribe(check_channel(obj["channel"], ref), since, ref)
    if op == "unsubscribe":
        if "channel" not in obj:
            raise WireError(ErrorCode.BAD_REQUEST, "unsubscribe needs 'channel'", ref)
        return Unsubscribe(check_channel(obj["channel"], ref), ref)
    if op is None:
        raise WireError(ErrorCode.BAD_REQUEST, "missing 'op'", ref)
    raise WireError(ErrorCode.BAD_REQUEST, f"unknown op {str(op)[:40]!r}", ref)


def request_to_dict(req: Request) -> dict[str, Any]:
    """The envelope a client sends for ``req`` (``ref`` omitted when None)."""
    if isinstance(req, Echo):
        out: dict[str, Any] = {"op": "echo", "data": req.data}
    elif isinstance(req, Publish):
        out = {"op": "publish", "channel": req.channel, "data": req.data}
        if req.unreliable:
            out["unreliable"] = True
    elif isinstance(req, Subscribe):
        out = {"op": "subscribe", "channel": req.channel}
        if req.since is not None:
            out["since"] = req.since
    else:
        out = {"op": "unsubscribe", "channel": req.channel}
    if req.ref is not None:
        out["ref"] = req.ref
    return out


# --- server -> client -------------------------------------------------------------------


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)
try:  # the C encoder built once: json.dumps with options builds one per call (3x slower)
    _c_encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False,
        True)
    if "".join(_c_encode({"a": [1, "\u00e9"]}, 0)) != '{"a":[1,"\u00e9"]}':
        _c_encode = None
except (AttributeError, TypeError):  # no C accelerator, or another signature
    _c_encode = None


def encode(envelope: Any) -> str:
    """Compact JSON, UTF-8 text kept as is (never ``\\u`` escapes for non-ASCII)."""
    if _c_encode is not None:
        return "".join(_c_encode(envelope, 0))
    return _ENCODER.encode(envelope)


def decode(raw: str | bytes) -> dict[str, Any]:
    """Parse a server envelope (clients' side). Envelopes are UTF-8: bytes are decoded as such
    (json.loads would first guess among UTF-8, -16 and -32, in Python, per message)."""
    obj = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if not isinstance(obj, dict) or "type" not in obj:
        raise WireError(ErrorCode.BAD_REQUEST, f"not a server envelope: {str(raw)[:80]!r}")
    return obj


def hello(conn: str, user: str, server: str) -> dict[str, Any]:
    return {"type": "hello", "conn": conn, "user": user, "server": server}


def message(channel: str, id: int, data: Any, sender: str) -> dict[str, Any]:
    return {"type": "message", "channel": channel, "id": id, "data": data, "from": sender}


def ack(ref: str | None, id: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "ack", "ref": ref}
    if id is not None:
        out["id"] = id
    return out


def echo(ref: str | None, data: Any) -> dict[str, Any]:
    return {"type": "echo", "ref": ref, "data": data}


def presence(user: str, status: str) -> dict[str, Any]:
    return {"type": "presence", "channel": PRESENCE_CHANNEL, "user": user, "status": status}


def error(code: ErrorCode | str, message: str, ref: str | None = None) -> dict[str, Any]:
    return {"type": "error", "ref": ref, "code": str(code), "message": message}


SSE_FAULT_EVENT = "fault"
"""The SSE event name of an ``error`` envelope. Not ``error``: EventSource fires its own
``error`` event (a connection failure, with no ``data``) under that name, so a page's
``addEventListener("error", e => JSON.parse(e.data))`` would also catch those and throw."""


def sse_event(envelope_type: str) -> str:
    """The SSE ``event:`` name that carries an envelope of ``envelope_type``."""
    return SSE_FAULT_EVENT if envelope_type == "error" else envelope_type


# --- cursors ------------------------------------------------------------------------------

Cursor = dict[str, int]


def format_cursor(cursor: Cursor) -> str:
    """``{"chat:42": 17, "user:alice": 3}`` -> ``chat:42=17;user:alice=3``."""
    return ";".join(f"{ch}={i}" for ch, i in cursor.items())


def parse_cursor(text: str | None) -> Cursor:
    """Inverse of :func:`format_cursor`; raises ``bad_request`` on anything malformed."""
    out: Cursor = {}
    if not text:
        return out
    for part in text.split(";"):
        if not part:
            continue
        ch, sep, num = part.rpartition("=")
        if not sep or not (num.isascii() and num.isdigit()) or not CHANNEL_RE.match(ch):
            raise WireError(ErrorCode.BAD_REQUEST, f"bad cursor part {part[:80]!r}")
        if len(num) > len(str(MAX_ID)) or int(num) > MAX_ID:  # int() of 5000 digits raises
            raise WireError(ErrorCode.BAD_REQUEST,
                            f"cursor id of {ch} out of range 0..2^63-1")
        out[ch] = int(num)
    return out


def split_channels(text: str | None) -> list[str]:
    """``a,b`` -> ``["a", "b"]`` (validated, order kept, duplicates dropped)."""
    if not text:
        return []
    return list(dict.fromkeys(check_channel(c) for c in text.split(",") if c))
