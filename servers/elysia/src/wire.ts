// The contract in TypeScript: envelopes, strict parsing, cursors, error codes.
// The reference is sobranie_bench/wire.py; docs/protocol.md is the prose. Where the two
// languages could differ (strict JSON, channel names, cursors), this follows wire.py.

export const MAX_ENVELOPE = 64 * 1024;
export const HARD_FRAME = 1024 * 1024;
export const HISTORY_SIZE = 1000;
export const HISTORY_BYTES = 256 * 1024 * 1024;
/** History kept in one process across all channels, memory broker (wire.HISTORY_BYTES). */
export const SSE_PING_SECONDS = 15;
export const POLL_TIMEOUT_SECONDS = 25;
export const POLL_MAX_TIMEOUT_SECONDS = 60;
export const MAX_DEPTH = 64;
/** Nesting past this is ``bad_request`` (wire.MAX_DEPTH; the envelope itself is level 1). */
export const MAX_ID = 2n ** 63n - 1n;
/** The largest id, ``since`` and cursor id of the contract (wire.MAX_ID). */
export const SSE_FAULT_EVENT = "fault";
/** The SSE event of an ``error`` envelope: EventSource owns ``error`` (wire.SSE_FAULT_EVENT). */
export const sseEvent = (type: string): string => (type === "error" ? SSE_FAULT_EVENT : type);

export const CHANNEL_RE = /^[a-z0-9_-]{1,32}(:[A-Za-z0-9_.-]{1,64})?$/;
// JavaScript's `$` without the m flag matches only at the very end: `chat:1\n` fails, as in
// wire.py's `\Z`.
export const PRESENCE_CHANNEL = "presence";
export const PRIVATE_PREFIX = "user:";

export const CLOSE_TOO_BIG = 1009;
export const CLOSE_POLICY = 1008;
export const CLOSE_GOING_AWAY = 1001;

export type ErrorCode =
  | "bad_request" | "too_large" | "forbidden" | "unknown_channel" | "rate_limited"
  | "history_gap" | "unauthorized" | "unavailable";

export const HTTP_STATUS: Record<ErrorCode, number> = {
  bad_request: 400, unknown_channel: 404, forbidden: 403, too_large: 413, rate_limited: 429,
  history_gap: 409, unauthorized: 401, unavailable: 503,
};

export class WireError extends Error {
  constructor(public code: ErrorCode, message: string, public ref: string | null = null) {
    super(message);
  }

  envelope(): Envelope {
    return error(this.code, this.message, this.ref);
  }
}

export type Envelope = Record<string, unknown>;

export type Request =
  | { op: "echo"; data: unknown; ref: string | null }
  | { op: "publish"; channel: string; data: unknown; ref: string | null }
  | { op: "subscribe"; channel: string; since: number | null; ref: string | null }
  | { op: "unsubscribe"; channel: string; ref: string | null };

export function checkChannel(channel: unknown, ref: string | null = null): string {
  if (typeof channel !== "string") throw new WireError("bad_request", "'channel' must be a string", ref);
  if (!CHANNEL_RE.test(channel)) {
    throw new WireError("unknown_channel", `no such channel: ${JSON.stringify(channel.slice(0, 100))}`, ref);
  }
  return channel;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Strict JSON, as wire.loads: UTF-8 (bytes; a BOM is ignored), no NaN/Infinity, no number
 * that overflows a double, no lone surrogate, bounded nesting; else ``bad_request``. */
export function loads(raw: string | Uint8Array): unknown {
  let text: string;
  if (typeof raw === "string") {
    text = raw;
  } else {
    try {
      text = utf8.decode(raw);
    } catch (exc) {
      throw new WireError("bad_request", `not UTF-8: ${(exc as Error).message}`);
    }
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (exc) {
    throw new WireError("bad_request", `not JSON: ${(exc as Error).message}`);
  }
  if (typeof value === "object" && value !== null) checkStrict(value);
  else if (!isStrictScalar(value)) throw new WireError("bad_request", "not JSON: number out of range");
  return value;
}

function isStrictScalar(value: unknown): boolean {
  if (typeof value === "number") return Number.isFinite(value);
  if (typeof value === "string") return value.isWellFormed();
  return true;
}

/** JSON.parse accepts what wire.loads refuses: 1e400 (Infinity) and "\ud800" (a lone
 * surrogate). One iterative walk (no recursion: a deep document cannot blow the stack). */
function checkStrict(root: object): void {
  const stack: [unknown, number][] = [[root, 1]];
  while (stack.length) {
    const [node, depth] = stack.pop()!;
    if (depth > MAX_DEPTH) throw new WireError("bad_request", "not JSON: nested too deeply");
    if (Array.isArray(node)) {
      for (const item of node) {
        if (typeof item === "object" && item !== null) stack.push([item, depth + 1]);
        else if (!isStrictScalar(item)) throw strictError(item);
      }
    } else {
      for (const key in node as Record<string, unknown>) {
        if (!key.isWellFormed()) throw strictError(key);
        const item = (node as Record<string, unknown>)[key];
        if (typeof item === "object" && item !== null) stack.push([item, depth + 1]);
        else if (!isStrictScalar(item)) throw strictError(item);
      }
    }
  }
}

function strictError(value: unknown): WireError {
  return new WireError("bad_request", typeof value === "number"
    ? "not JSON: number out of range" : "lone surrogate in a string");
}

/** The ``ref`` of a request refused as too large (under the hard limit: parsing is bounded). */
function refOf(raw: string | Uint8Array): string | null {
  try {
    const obj = loads(raw);
    if (isObject(obj) && obj.ref !== undefined && obj.ref !== null) return refString(obj.ref);
  } catch {
    // not even JSON: no ref
  }
  return null;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A ref that is not a string is turned into one (Python's ``str()`` of it). */
export function refString(ref: unknown): string {
  if (typeof ref === "string") return ref;
  if (ref === true) return "True";
  if (ref === false) return "False";
  return typeof ref === "object" ? pyRepr(ref) : String(ref);
}

function pyRepr(value: unknown): string {
  // str() of a dict or list in Python: what a client that sent one gets back, near enough
  return JSON.stringify(value).replaceAll('"', "'").replaceAll(",", ", ").replaceAll(":", ": ");
}

/** ``raw`` has length in characters (text) or bytes (binary), as wire.py counts. */
export function parseRequest(raw: string | Uint8Array, limit = MAX_ENVELOPE): Request {
  if (raw.length > limit) {
    throw new WireError("too_large", `envelope of ${raw.length} bytes over ${limit}`, refOf(raw));
  }
  const obj = loads(raw);
  if (!isObject(obj)) throw new WireError("bad_request", "envelope must be a JSON object");
  return requestFromDict(obj);
}

export function requestFromDict(obj: Record<string, unknown>): Request {
  const ref = obj.ref === undefined || obj.ref === null ? null : refString(obj.ref);
  const op = obj.op;
  if (op === "echo") {
    if (!("data" in obj)) throw new WireError("bad_request", "echo needs 'data'", ref);
    return { op, data: obj.data, ref };
  }
  if (op === "publish") {
    if (!("channel" in obj) || !("data" in obj)) {
      throw new WireError("bad_request", "publish needs 'channel' and 'data'", ref);
    }
    return { op, channel: checkChannel(obj.channel, ref), data: obj.data, ref };
  }
  if (op === "subscribe") {
    if (!("channel" in obj)) throw new WireError("bad_request", "subscribe needs 'channel'", ref);
    const since = obj.since;
    if (since !== undefined && since !== null
        && !(typeof since === "number" && Number.isSafeInteger(since) && since >= 0)) {
      // above 2^53 a double cannot tell ids apart: refused as out of range (wire.check_id)
      throw new WireError("bad_request", "'since' must be an integer in 0..2^63-1", ref);
    }
    return { op, channel: checkChannel(obj.channel, ref), since: (since as number | null) ?? null, ref };
  }
  if (op === "unsubscribe") {
    if (!("channel" in obj)) throw new WireError("bad_request", "unsubscribe needs 'channel'", ref);
    return { op, channel: checkChannel(obj.channel, ref), ref };
  }
  if (op === undefined || op === null) throw new WireError("bad_request", "missing 'op'", ref);
  throw new WireError("bad_request", `unknown op ${JSON.stringify(String(op).slice(0, 40))}`, ref);
}

// --- server -> client -----------------------------------------------------------------------

export const encode = (envelope: unknown): string => JSON.stringify(envelope);

export const hello = (conn: string, user: string, server: string): Envelope =>
  ({ type: "hello", conn, user, server });

export function ack(ref: string | null, id?: number): Envelope {
  return id === undefined ? { type: "ack", ref } : { type: "ack", ref, id };
}

export const echo = (ref: string | null, data: unknown): Envelope => ({ type: "echo", ref, data });

export const presence = (user: string, status: "online" | "offline"): Envelope =>
  ({ type: "presence", channel: PRESENCE_CHANNEL, user, status });

export const error = (code: string, message: string, ref: string | null = null): Envelope =>
  ({ type: "error", ref, code, message });

/** The ``message`` envelope split where its id goes, byte for byte as backplane.py's
 * envelope_around_id: ``head + id + tail`` is the envelope (the id is assigned later, by the
 * broker). */
export function envelopeAroundId(channel: string, data: unknown, sender: string): [string, string] {
  return [`{"type":"message","channel":${JSON.stringify(channel)},"id":`,
    `,"data":${JSON.stringify(data)},"from":${JSON.stringify(sender)}}`];
}

// --- cursors --------------------------------------------------------------------------------

export type Cursor = Map<string, number>;

export function formatCursor(cursor: Cursor): string {
  let out = "";
  for (const [ch, id] of cursor) out += (out ? ";" : "") + `${ch}=${id}`;
  return out;
}

export function parseCursor(text: string | null | undefined): Cursor {
  const out: Cursor = new Map();
  if (!text) return out;
  for (const part of text.split(";")) {
    if (!part) continue;
    const at = part.lastIndexOf("=");
    const ch = part.slice(0, at);
    const num = part.slice(at + 1);
    if (at < 0 || !/^[0-9]+$/.test(num) || !CHANNEL_RE.test(ch)) {
      throw new WireError("bad_request", `bad cursor part ${JSON.stringify(part.slice(0, 80))}`);
    }
    if (num.length > 19 || BigInt(num) > MAX_ID) {
      throw new WireError("bad_request", `cursor id of ${ch} out of range 0..2^63-1`);
    }
    out.set(ch, Number(num));
  }
  return out;
}

export function splitChannels(text: string | null | undefined): string[] {
  if (!text) return [];
  return [...new Set(text.split(",").filter((c) => c).map((c) => checkChannel(c)))];
}
