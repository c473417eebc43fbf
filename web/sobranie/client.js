// One client interface for every transport, as sobranie_bench/clients/base.py in Python.
//
// connect(channels) opens the transport (subscribed to channels) and resolves with the hello;
// subscribe(channel, since), publish(channel, data) (resolves with the id), echo(data),
// on(type, fn) for the server's envelopes ("message", "echo", "presence", "ack", "error",
// "hello") and for "state" (connecting, open, reconnecting, closed); drop() cuts the
// connection; resume() reopens it from the cursor (drop() is followed by resume() after a
// backoff with full jitter, as in Python: uniform in [0, min(cap, base * 2**attempt)]).
// A cursor set before connect() ({channel: last id seen}) is where the subscriptions start.
// A transport implements only _open(resume), _send(request) and _abort(), and calls
// _dispatch(envelope) for what arrives and _ended(reason) when the connection is gone.

export class Backoff {
  constructor({ base = 0.05, cap = 5.0, attempts = 12, random = Math.random } = {}) {
    Object.assign(this, { base, cap, attempts, random });
  }

  /** Seconds to wait before reconnect attempt number `attempt` (0, 1, ...). */
  delay(attempt) {
    return this.random() * Math.min(this.cap, this.base * 2 ** attempt);
  }
}

export class ClientError extends Error {}

/** The channel pattern of the contract (docs/protocol.md, Channels). */
const CHANNEL = /^[a-z0-9_-]{1,32}(:[A-Za-z0-9_.-]{1,64})?$/;

export function formatCursor(cursor) {
  return Object.entries(cursor).map(([ch, id]) => `${ch}=${id}`).join(";");
}

export function parseCursor(text) {
  const cursor = {};
  for (const part of (text || "").split(";")) {
    const at = part.lastIndexOf("=");
    if (at > 0) cursor[part.slice(0, at)] = Number(part.slice(at + 1));
  }
  return cursor;
}

export class Client {
  static transport = "";

  constructor(url, token, { reconnect = true, backoff = new Backoff(), timeout = 10000 } = {}) {
    this.url = url.replace(/\/+$/, "");
    this.token = token;
    this.reconnect = reconnect;
    this.backoff = backoff;
    this.timeout = timeout;
    /** Last id seen per subscribed channel. */
    this.cursor = {};
    this.channels = new Set();
    this.conn = null;
    this.user = null;
    this.reconnects = 0;
    this.state = "new";
    this._listeners = new Map();
    this._pending = new Map();
    this._subscribing = new Map();
    this._refs = 0;
    this._hello = null;
    this._closing = false;
    this._retrying = false;
  }

  get transport() { return this.constructor.transport; }

  // --- the interface ------------------------------------------------------------------------

  async connect(channels = []) {
    for (const ch of channels) this.channels.add(checkChannel(ch));
    this._setState("connecting");
    const hello = this._expectHello();
    await this._open(false);
    return this._withTimeout(hello, "hello");
  }

  subscribe(channel, since = null) {
    this.channels.add(checkChannel(channel));
    if (since !== null) this.cursor[channel] = since;
    return this.request(this._subscription(channel, since));
  }

  unsubscribe(channel) {
    this.channels.delete(channel);
    delete this.cursor[channel];
    return this.request({ op: "unsubscribe", channel, ref: this._ref() });
  }

  async publish(channel, data) {
    const ack = await this.request({ op: "publish", channel, data, ref: this._ref() });
    return ack.id;
  }

  /** Ask for an echo (it arrives as an "echo" envelope: round-trip timing). */
  echo(data, ref = this._ref()) {
    return Promise.resolve().then(() => this._send({ op: "echo", data, ref }));
  }

  /** Send a request and resolve with its ack (reject with its error). */
  request(req) {
    return this._withTimeout(new Promise((resolve, reject) => {
      this._pending.set(req.ref, { resolve, reject });
      Promise.resolve().then(() => this._send(req)).catch((err) => {
        this._pending.delete(req.ref);
        reject(err instanceof Error ? err : new ClientError(String(err)));
      });
    }), req.op, () => this._pending.delete(req.ref));
  }

  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    this._listeners.get(type).push(fn);
    return this;
  }

  /** Cut the connection abruptly; resume() follows after a backoff if reconnect is on. */
  drop() {
    this._abort();
  }

  /** Reopen the transport, subscribed to every channel from the cursor; resolves with hello. */
  async resume() {
    const hello = this._expectHello();
    await this._open(true);
    const env = await this._withTimeout(hello, "hello");
    this.reconnects += 1;
    return env;
  }

  close() {
    this._closing = true;
    this._abort();
    for (const { reject } of this._pending.values()) reject(new ClientError("client closed"));
    this._pending.clear();
    this._setState("closed");
  }

  // --- for transports -----------------------------------------------------------------------

  _dispatch(env) {
    const kind = env.type;
    if (kind === "message") {
      this.cursor[env.channel] = env.id;
    } else if (kind === "ack" && this._subscribing.has(env.ref)) {
      const ch = this._subscribing.get(env.ref);
      this._subscribing.delete(env.ref);
      if (this.channels.has(ch) && !(ch in this.cursor)) this.cursor[ch] = env.id ?? 0;
    } else if (kind === "hello") {
      this.conn = env.conn;
      this.user = env.user;
      this._setState("open");
      if (this._hello) { this._hello.resolve(env); this._hello = null; }
    }
    if ((kind === "ack" || kind === "error") && this._pending.has(env.ref)) {
      const { resolve, reject } = this._pending.get(env.ref);
      this._pending.delete(env.ref);
      if (kind === "ack") resolve(env);
      else reject(Object.assign(new ClientError(`${env.code}: ${env.message}`), { envelope: env }));
      return;
    }
    this._emit(kind, env);
  }

  /** Start cursors for subscribed channels not seen yet (from a server-side cursor). */
  mergeCursor(cursor) {
    for (const [ch, id] of Object.entries(cursor)) {
      if (this.channels.has(ch) && !(ch in this.cursor)) this.cursor[ch] = id;
    }
  }

  /** The transport ended: reconnect with backoff and resume from the cursor. */
  _ended(reason) {
    if (this._hello) {
      this._hello.reject(new ClientError(`${this.transport}: ${reason}`));
      this._hello = null;
    }
    if (this._closing || this.state === "connecting" || this._retrying) return;
    if (!this.reconnect) { this._setState("closed"); return; }
    this._retry(reason);
  }

  async _retry(reason) {
    this._retrying = true;
    this._setState("reconnecting", reason);
    try {
      for (let attempt = 0; attempt < this.backoff.attempts && !this._closing; attempt++) {
        await sleep(this.backoff.delay(attempt) * 1000);
        if (this._closing) return;
        try {
          await this.resume();
          return;
        } catch (err) {
          this._abort();
        }
      }
      if (!this._closing) { this._closing = true; this._setState("closed", "gave up"); }
    } finally {
      this._retrying = false;
    }
  }

  _subscription(channel, since) {
    const ref = this._ref();
    this._subscribing.set(ref, channel);
    const req = { op: "subscribe", channel, ref };
    if (since !== null && since !== undefined) req.since = since;
    return req;
  }

  /** One subscribe per channel from the cursor (transports without a server-side cursor). */
  _resubscribe() {
    for (const ch of this.channels) this._send(this._subscription(ch, this.cursor[ch] ?? null));
  }

  _ref() { return `r${++this._refs}`; }

  get tokenQuery() { return `token=${encodeURIComponent(this.token)}`; }

  // --- internals ----------------------------------------------------------------------------

  _expectHello() {
    return new Promise((resolve, reject) => { this._hello = { resolve, reject }; });
  }

  _setState(state, reason) {
    this.state = state;
    this._emit("state", { state, reason });
  }

  _emit(type, env) {
    for (const fn of this._listeners.get(type) || []) {
      try { fn(env); } catch (err) { console.error(err); }
    }
  }

  _withTimeout(promise, what, onTimeout = () => {}) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => {
        onTimeout();
        reject(new ClientError(`${this.transport}: no ${what} within ${this.timeout} ms`));
      }, this.timeout);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }
}

export function checkChannel(channel) {
  if (!CHANNEL.test(channel)) throw new ClientError(`unknown_channel: ${channel}`);
  return channel;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A refused HTTP answer as an error a person can read. */
export async function refused(resp) {
  const body = await resp.text().catch(() => "");
  return new ClientError(`HTTP ${resp.status}: ${body.slice(0, 200)}`);
}
