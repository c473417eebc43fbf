// The hub, as servers/hub.py: channels, subscriptions, ids and history (through the broker),
// presence and limits. Transport code only turns bytes into hub calls and drains each
// connection's outbox.
import { randomBytes } from "node:crypto";

import { mayPublish, maySubscribe } from "./auth";
import type { Broker, Message } from "./brokers";
import * as wire from "./wire";
import { type Envelope, type Request, WireError } from "./wire";

/** servers.hub.Limits (docs/protocol.md, limits): per connection, then per user and process. */
export type Limits = {
  maxEnvelope: number; hardFrame: number; sendQueue: number; rate: number; burst: number;
  flood: number; historyBytes: number; userConnections: number; userRate: number;
  userBurst: number; userChannels: number; userWindow: number;
};
export const DEFAULT_LIMITS: Limits = { maxEnvelope: wire.MAX_ENVELOPE, hardFrame: wire.HARD_FRAME,
  sendQueue: 4096, rate: 5000, burst: 5000, flood: 1000, historyBytes: wire.HISTORY_BYTES,
  userConnections: 256, userRate: 1000, userBurst: 2000, userChannels: 200, userWindow: 60 };

export type Outgoing = { type: string; text: string; channel: string | null; id: number };

type Sub = { last: number; pending: Outgoing[] | null };

const now = () => performance.now() / 1000;

export class Connection {
  subs = new Map<string, Sub>();
  queue: Outgoing[] = [];
  /** The outbox, oldest first; never longer than ``Limits.sendQueue``. */
  closeCode: number | null = null;
  closeReason = "";
  onClose: ((code: number, reason: string) => void) | null = null;
  /** Set by a WebSocket: sends one envelope; false when the socket is full (wait for drain). */
  sink: ((text: string) => boolean) | null = null;
  blocked = false;
  private waiter: (() => void) | null = null;
  private tokens: number;
  private refilled = now();
  /** Requests waiting while an earlier one of this connection is carried out (order kept). */
  inbox: (string | Uint8Array)[] | null = null;

  constructor(readonly hub: Hub, readonly id: string, readonly user: string, readonly transport: string) {
    this.tokens = hub.limits.burst;
  }

  get closed(): boolean {
    return this.closeCode !== null;
  }

  push(item: Outgoing): void {
    if (this.closeCode !== null) return;
    const queue = this.queue;
    if (this.sink !== null && !this.blocked && queue.length === 0) {
      this.hub.metrics.count(this.hub.metrics.sent, this.transport);
      if (!this.sink(item.text)) this.blocked = true;
      return;
    }
    if (queue.length >= this.hub.limits.sendQueue) {
      this.close(wire.CLOSE_POLICY, `slow consumer: ${queue.length} envelopes queued`);
      return;
    }
    queue.push(item);
    this.hub.metrics.count(this.hub.metrics.sent, this.transport);
    if (queue.length === 1) this.wake();
  }

  pushEnvelope(envelope: Envelope): void {
    this.push({ type: envelope.type as string, text: wire.encode(envelope), channel: null, id: 0 });
  }

  /** A message of a subscribed channel: held while resuming, dropped if already seen. */
  deliver(item: Outgoing): void {
    const sub = this.subs.get(item.channel!);
    if (sub === undefined) return;
    if (sub.pending !== null) sub.pending.push(item);
    else if (item.id > sub.last) {
      sub.last = item.id;
      this.push(item);
    }
  }

  /** The socket drained: send what queued up meanwhile. */
  drain(): void {
    this.blocked = false;
    const queue = this.queue;
    let i = 0;
    while (i < queue.length && this.closeCode === null) {
      if (!this.sink!(queue[i++].text)) {
        this.blocked = true;
        break;
      }
    }
    queue.splice(0, i);
  }

  /** Wait for queued envelopes and take them all; empty on close, after ``timeout`` s, or
   * when ``signal`` aborts (the envelopes then stay queued: nobody is there to take them). */
  async outgoing(timeout: number, signal?: AbortSignal): Promise<Outgoing[]> {
    if (this.queue.length === 0 && this.closeCode === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.wake(), timeout * 1000);
        const abort = () => this.wake();
        signal?.addEventListener("abort", abort);
        this.waiter = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", abort);
          resolve();
        };
      });
    }
    if (signal?.aborted) return [];
    const items = this.queue;
    this.queue = [];
    return items;
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  /** Cut the connection off (slow consumer, flood, shutdown); the transport closes the socket. */
  close(code: number, reason: string, byServer = true): void {
    if (this.closeCode !== null) return;
    this.closeCode = code;
    this.closeReason = reason;
    if (byServer) this.hub.metrics.count(this.hub.metrics.cut, reason.split(":")[0]);
    this.wake();
    this.onClose?.(code, reason);
  }

  /** Token bucket: false when over the rate (and closes the connection on a flood). */
  takeToken(): boolean {
    const limits = this.hub.limits;
    const t = now();
    this.tokens = Math.min(limits.burst, this.tokens + (t - this.refilled) * limits.rate);
    this.refilled = t;
    this.tokens -= 1;
    if (this.tokens > -1e-9) return true;
    if (this.tokens < -limits.flood && this.closeCode === null) {
      // the last envelope, past the outbox limit: the client learns why before the close
      this.hub.metrics.count(this.hub.metrics.errors, "rate_limited");
      const text = wire.encode(wire.error("rate_limited", "flood: the connection is closed"));
      if (this.sink !== null && !this.blocked && this.queue.length === 0) this.sink(text);
      else this.queue.push({ type: "error", text, channel: null, id: 0 });
      this.close(wire.CLOSE_POLICY, "rate limit: flood");
    }
    return false;
  }

  /** Once the hub closed the connection: the errors still queued (the flood's says why), for
   * the transport to send before its close; the rest of the outbox is dropped. */
  lastWords(): Outgoing[] {
    const items = this.queue;
    this.queue = [];
    return items.filter((item) => item.type === "error");
  }
}

/** One user's request token bucket and the channels they published to this window. */
class UserBudget {
  tokens: number;
  refilled: number;
  since: number;
  channels = new Set<string>();

  constructor(limits: Limits, t: number) {
    this.tokens = limits.userBurst;
    this.refilled = this.since = t;
  }

  /** Take one request's token (every kind), or throw ``rate_limited``. */
  spend(limits: Limits, t: number, ref: string | null): void {
    this.tokens = Math.min(limits.userBurst, this.tokens + (t - this.refilled) * limits.userRate);
    this.refilled = t;
    if (this.tokens < 1) throw new WireError("rate_limited", `over ${limits.userRate} requests/s for this user`, ref);
    this.tokens -= 1;
  }

  /** Take one publish to ``channel`` (its token and its place in the window), or throw. */
  charge(limits: Limits, t: number, channel: string, ref: string | null): void {
    if (t - this.since >= limits.userWindow) {
      this.since = t;
      this.channels = new Set();
    }
    if (!this.channels.has(channel) && this.channels.size >= limits.userChannels) {
      throw new WireError("rate_limited", `over ${limits.userChannels} channels per ${limits.userWindow} s for this user`, ref);
    }
    this.spend(limits, t, ref);
    this.channels.add(channel);
  }

  /** When this budget is as good as new (bucket full, channel window over). */
  spentUntil(limits: Limits): number {
    const full = this.refilled + Math.max(0, limits.userBurst - this.tokens) / limits.userRate;
    return this.channels.size ? Math.max(full, this.since + limits.userWindow) : full;
  }
}

export class Metrics {
  opened = new Map<string, number>();
  received = new Map<string, number>();
  sent = new Map<string, number>();
  errors = new Map<string, number>();
  cut = new Map<string, number>();
  published = 0;

  count(family: Map<string, number>, key: string): void {
    family.set(key, (family.get(key) ?? 0) + 1);
  }

  render(hub: Hub): string {
    const openNow = new Map<string, number>();
    for (const conn of hub.conns.values()) this.count(openNow, conn.transport);
    const lines: string[] = [];
    const family = (name: string, kind: string, help: string, values: Map<string, number>, label: string) => {
      lines.push(`# HELP sobranie_${name} ${help}`, `# TYPE sobranie_${name} ${kind}`);
      for (const key of [...values.keys()].sort()) lines.push(`sobranie_${name}{${label}="${key}"} ${values.get(key)}`);
    };
    family("connections", "gauge", "Open connections.", openNow, "transport");
    family("connections_total", "counter", "Connections accepted.", this.opened, "transport");
    family("messages_in_total", "counter", "Client envelopes received.", this.received, "transport");
    family("messages_out_total", "counter", "Envelopes queued to clients.", this.sent, "transport");
    family("errors_total", "counter", "Error envelopes sent.", this.errors, "code");
    family("disconnects_total", "counter", "Connections cut off by the server.", this.cut, "reason");
    lines.push("# HELP sobranie_published_total Messages published through this instance.",
      "# TYPE sobranie_published_total counter", `sobranie_published_total ${this.published}`,
      `sobranie_channels ${hub.channels.size}`);
    const [held, evicted] = hub.broker.historyStats();
    lines.push("# HELP sobranie_history_bytes History held in this process, all channels.",
      "# TYPE sobranie_history_bytes gauge", `sobranie_history_bytes ${held}`,
      "# HELP sobranie_history_evicted_total Messages evicted by the history budget.",
      "# TYPE sobranie_history_evicted_total counter", `sobranie_history_evicted_total ${evicted}`);
    const cpu = process.cpuUsage();
    lines.push("# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
      "# TYPE process_cpu_seconds_total counter",
      `process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`,
      "# HELP process_resident_memory_bytes Resident memory size in bytes.",
      "# TYPE process_resident_memory_bytes gauge",
      `process_resident_memory_bytes ${process.memoryUsage.rss()}`);
    return lines.join("\n") + "\n";
  }
}

export class Hub {
  metrics = new Metrics();
  quiet = false;
  /** While true (the server's warm-up), no presence is published. */
  readonly conns = new Map<string, Connection>();
  readonly channels = new Map<string, Set<Connection>>();
  private online = new Map<string, number>();
  private budgets = new Map<string, UserBudget>();
  /** Users with no connection left whose budget is kept until it would have refilled (so
   * closing and reconnecting resets nothing), and the timer that forgets it then. */
  private spent = new Map<string, ReturnType<typeof setTimeout>>();
  private ids = 0;
  private prefix = randomBytes(3).toString("hex");

  constructor(readonly broker: Broker, readonly limits: Limits, readonly server: string) {}

  async start(): Promise<void> {
    await this.broker.start((msg) => this.deliver(msg));
  }

  async close(): Promise<void> {
    for (const conn of [...this.conns.values()]) conn.close(wire.CLOSE_GOING_AWAY, "server shutting down");
    await this.broker.close();
  }

  // --- connections --------------------------------------------------------------------------

  /** Before a handshake is accepted: ``rate_limited`` (HTTP 429) when ``user`` already holds
   * ``userConnections`` connections here. */
  admit(user: string): void {
    if ((this.online.get(user) ?? 0) >= this.limits.userConnections) {
      throw new WireError("rate_limited", `${user} already holds ${this.limits.userConnections} connections`);
    }
  }

  /** A new authenticated connection: hello first, presence ``online`` for the user (sent
   * without waiting: a WebSocket's first request may arrive before a Redis round trip). */
  connect(user: string, transport: string): Connection {
    const conn = new Connection(this, `${this.prefix}-${++this.ids}`, user, transport);
    this.conns.set(conn.id, conn);
    this.metrics.count(this.metrics.opened, transport);
    conn.pushEnvelope(wire.hello(conn.id, user, this.server));
    const count = (this.online.get(user) ?? 0) + 1;
    this.online.set(user, count);
    const forget = this.spent.get(user);
    if (forget !== undefined) {  // back before the budget expired: it stands
      clearTimeout(forget);
      this.spent.delete(user);
    }
    if (count === 1 && !this.quiet) void this.broker.publishTransient(wire.PRESENCE_CHANNEL, wire.presence(user, "online"));
    return conn;
  }

  async disconnect(conn: Connection): Promise<void> {
    if (!this.conns.delete(conn.id)) return;
    const quiet = this.quiet;  // as it was when the connection went: the warm-up ends meanwhile
    conn.close(wire.CLOSE_GOING_AWAY, "disconnected", false);
    for (const channel of [...conn.subs.keys()]) await this.leave(conn, channel);
    const count = (this.online.get(conn.user) ?? 1) - 1;
    if (count > 0) {
      this.online.set(conn.user, count);
      return;
    }
    this.online.delete(conn.user);
    this.keepBudget(conn.user);
    if (!quiet) await this.broker.publishTransient(wire.PRESENCE_CHANNEL, wire.presence(conn.user, "offline"));
  }

  /** ``user``'s last connection left: their budget stays until it would have refilled. */
  private keepBudget(user: string): void {
    const budget = this.budgets.get(user);
    if (budget === undefined) return;
    const wait = budget.spentUntil(this.limits) - now();
    if (wait <= 0) {
      this.budgets.delete(user);
      return;
    }
    const timer = setTimeout(() => {
      this.spent.delete(user);
      this.budgets.delete(user);
    }, Math.ceil(wait * 1000));
    timer.unref?.();
    this.spent.set(user, timer);
  }

  /** Spend one of ``user``'s request tokens (for a publish, also a place for ``channel`` in
   * the channel window), or throw ``rate_limited``. */
  charge(user: string, ref: string | null, channel: string | null = null): void {
    const t = now();
    let budget = this.budgets.get(user);
    if (budget === undefined) this.budgets.set(user, (budget = new UserBudget(this.limits, t)));
    if (channel === null) budget.spend(this.limits, t, ref);
    else budget.charge(this.limits, t, channel, ref);
  }

  /** The stream ``connId`` of ``user`` (for /echo, /subscribe on SSE and polling). */
  lookup(connId: string, user: string): Connection {
    const conn = this.conns.get(connId);
    if (conn === undefined) throw new WireError("bad_request", `no open connection ${JSON.stringify(connId.slice(0, 40))}`);
    if (conn.user !== user) throw new WireError("forbidden", "that connection belongs to another user");
    return conn;
  }

  // --- requests -------------------------------------------------------------------------------

  /** One envelope from a client, in arrival order per connection; errors go back on it. */
  handle(conn: Connection, raw: string | Uint8Array): void {
    if (conn.inbox !== null) {
      conn.inbox.push(raw);
      return;
    }
    const pending = this.handleOne(conn, raw);
    if (pending !== null) void this.drainInbox(conn, pending);
  }

  private async drainInbox(conn: Connection, first: Promise<void>): Promise<void> {
    const inbox: (string | Uint8Array)[] = (conn.inbox = []);
    await first;
    while (inbox.length && !conn.closed) await this.handleOne(conn, inbox.shift()!);
    conn.inbox = null;
  }

  /** null when the request was carried out at once (no broker round trip). */
  private handleOne(conn: Connection, raw: string | Uint8Array): Promise<void> | null {
    this.metrics.count(this.metrics.received, conn.transport);
    if (!conn.takeToken()) {
      this.reject(conn, new WireError("rate_limited", "slow down"));
      return null;
    }
    let req: Request;
    try {
      req = wire.parseRequest(raw, this.limits.maxEnvelope);
    } catch (exc) {
      this.reject(conn, exc as WireError);
      return null;
    }
    if (req.op === "echo") {  // the hot path: no promise at all
      try {
        this.charge(conn.user, req.ref);
      } catch (exc) {
        this.reject(conn, exc as WireError);
        return null;
      }
      conn.pushEnvelope(wire.echo(req.ref, req.data));
      return null;
    }
    return this.execute(conn, req).catch((exc) => {
      if (!(exc instanceof WireError)) throw exc;
      if (exc.ref === null) exc.ref = req.ref;  // raised below the hub (broker unavailable)
      this.reject(conn, exc);
    });
  }

  async execute(conn: Connection, req: Request): Promise<void> {
    if (req.op !== "publish") this.charge(conn.user, req.ref);  // publish() charges its own
    if (req.op === "echo") conn.pushEnvelope(wire.echo(req.ref, req.data));
    else if (req.op === "publish") {
      const msg = await this.publish(conn.user, req.channel, req.data, req.ref);
      conn.pushEnvelope(wire.ack(req.ref, msg.id));
    } else if (req.op === "subscribe") await this.subscribe(conn, req.channel, req.since, req.ref);
    else await this.unsubscribe(conn, req.channel, req.ref);
  }

  reject(conn: Connection, exc: WireError): void {
    this.metrics.count(this.metrics.errors, exc.code);
    conn.pushEnvelope(exc.envelope());
  }

  /** Publish as ``user``; ``user`` null is a server-side code path (notifications). */
  async publish(user: string | null, channel: string, data: unknown, ref: string | null): Promise<Message> {
    if (user !== null) {
      if (!mayPublish(user, channel)) throw new WireError("forbidden", `clients may not publish to ${channel}`, ref);
      this.charge(user, ref, channel);
    }
    this.metrics.published++;
    return await this.broker.publish(channel, data, user ?? "server");
  }

  /** Join ``channel``: ack (with the channel's latest id), then the history after ``since``,
   * then live messages; ``history_gap`` replaces the ack when ``since`` is too old. Returns
   * the cursor it starts from. */
  async subscribe(conn: Connection, channel: string, since: number | null, ref: string | null = null): Promise<number> {
    if (!maySubscribe(conn.user, channel)) throw new WireError("forbidden", `${channel} is private`, ref);
    if (conn.subs.has(channel)) await this.leave(conn, channel);
    const sub: Sub = { last: since ?? 0, pending: since !== null ? [] : null };
    conn.subs.set(channel, sub);
    let local = this.channels.get(channel);
    if (local === undefined) this.channels.set(channel, (local = new Set()));
    local.add(conn);
    if (local.size === 1) await this.broker.subscribe(channel);
    const latest = await this.broker.lastId(channel);
    if (since === null) {
      conn.pushEnvelope(wire.ack(ref, latest));
      return latest;
    }
    const history = await this.broker.history(channel, since);
    if (since < latest && (history.length === 0 || history[0].id > since + 1)) {
      const first = history.length ? history[0].id : latest + 1;
      this.reject(conn, new WireError("history_gap", `${channel}: ids ${since + 1}..${first - 1} are no `
        + "longer retained; resync, the retained messages follow", ref));
    } else conn.pushEnvelope(wire.ack(ref, latest));
    for (const msg of history) {
      if (msg.id > sub.last) {
        sub.last = msg.id;
        conn.push({ type: "message", text: msg.text, channel, id: msg.id });
      }
    }
    const held = sub.pending ?? [];
    sub.pending = null;
    for (const item of held) conn.deliver(item);
    return since;
  }

  async unsubscribe(conn: Connection, channel: string, ref: string | null): Promise<void> {
    await this.leave(conn, channel);
    conn.pushEnvelope(wire.ack(ref));
  }

  private async leave(conn: Connection, channel: string): Promise<void> {
    if (!conn.subs.delete(channel)) return;
    const local = this.channels.get(channel);
    if (local === undefined) return;
    local.delete(conn);
    if (local.size === 0) {
      this.channels.delete(channel);
      await this.broker.unsubscribe(channel);
    }
  }

  // --- delivery (called by the broker) --------------------------------------------------------

  private deliver(msg: Message): void {
    const local = this.channels.get(msg.channel);
    if (local === undefined) return;
    if (msg.id === 0) {
      const item: Outgoing = { type: "presence", text: msg.text, channel: msg.channel, id: 0 };
      for (const conn of [...local]) conn.push(item);
      return;
    }
    const item: Outgoing = { type: "message", text: msg.text, channel: msg.channel, id: msg.id };
    for (const conn of [...local]) conn.deliver(item);
  }
}
