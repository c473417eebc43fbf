// The broker seam, as servers/brokers/: who assigns ids, keeps history and carries messages
// between instances. ``memory`` (one process) and ``redis`` (a cluster, interoperable with the
// Python Redis broker: the same keys, Lua script, frame and envelope).
import Redis from "ioredis";

import { encode, envelopeAroundId, type Envelope, HISTORY_BYTES, HISTORY_SIZE, WireError } from "./wire";

export type Message = { channel: string; id: number; text: string };
/** ``id`` 0: a transient envelope (presence): no id, no history, no order. */
export type Deliver = (msg: Message) => void;

export interface Broker {
  readonly name: string;
  start(deliver: Deliver): Promise<void>;
  publish(channel: string, data: unknown, sender: string): Promise<Message>;
  publishTransient(channel: string, envelope: Envelope): Promise<void>;
  history(channel: string, since: number): Promise<Message[]>;
  lastId(channel: string): Promise<number>;
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  close(): Promise<void>;
  /** History bytes held in this process and messages evicted by the budget (0, 0 when the
   * history lives elsewhere: Redis caps each stream itself). */
  historyStats(): [number, number];
}

export class MemoryBroker implements Broker {
  readonly name = "memory";
  private last = new Map<string, number>();
  private kept = new Map<string, Message[]>();
  private deliver: Deliver | null = null;
  /** Every retained message in publish order (and some already dropped by their channel's
   * cap, skipped when they come up): the oldest anywhere is evicted first past the budget. */
  private order: Message[] = [];
  private head = 0;
  private historyBytes = 0;
  private evicted = 0;

  constructor(private historySize = HISTORY_SIZE, private historyBudget = HISTORY_BYTES) {}

  async start(deliver: Deliver): Promise<void> {
    this.deliver = deliver;
  }

  async publish(channel: string, data: unknown, sender: string): Promise<Message> {
    const id = (this.last.get(channel) ?? 0) + 1;
    this.last.set(channel, id);
    const [head, tail] = envelopeAroundId(channel, data, sender);
    const msg = { channel, id, text: head + id + tail };
    this.keep(msg);
    this.deliver!(msg);
    return msg;
  }

  /** Retain ``msg``: its channel keeps its last ``historySize``, all channels together at most
   * ``historyBudget`` bytes (servers/brokers/memory_broker.py's ``_keep``). */
  private keep(msg: Message): void {
    if (this.historySize <= 0) return;
    let kept = this.kept.get(msg.channel);
    if (kept === undefined) this.kept.set(msg.channel, (kept = []));
    if (kept.length >= this.historySize) this.historyBytes -= kept.shift()!.text.length;
    kept.push(msg);
    this.order.push(msg);
    this.historyBytes += msg.text.length;
    while (this.historyBytes > this.historyBudget && this.head < this.order.length) {
      const oldest = this.order[this.head++];
      const of = this.kept.get(oldest.channel);
      if (of !== undefined && of[0] === oldest) {
        of.shift();
        this.historyBytes -= oldest.text.length;
        this.evicted++;
        if (!of.length) this.kept.delete(oldest.channel);
      }
    }
    if (this.head > 1024 && this.head * 2 > this.order.length) {  // mostly consumed: compact
      this.order = this.order.slice(this.head).filter((m) => (this.kept.get(m.channel)?.[0]?.id ?? Infinity) <= m.id);
      this.head = 0;
    }
  }

  historyStats(): [number, number] {
    return [this.historyBytes, this.evicted];
  }

  async publishTransient(channel: string, envelope: Envelope): Promise<void> {
    this.deliver!({ channel, id: 0, text: encode(envelope) });
  }

  async lastId(channel: string): Promise<number> {
    return this.last.get(channel) ?? 0;
  }

  async history(channel: string, since: number): Promise<Message[]> {
    const kept = this.kept.get(channel);
    if (!kept?.length || since >= kept[kept.length - 1].id) return [];
    return kept.slice(Math.max(0, since - kept[0].id + 1));
  }

  async subscribe(): Promise<void> {}
  async unsubscribe(): Promise<void> {}
  async close(): Promise<void> {}
}

// --- Redis ----------------------------------------------------------------------------------

/** The very script of servers/brokers/redis.py (KEYS: counter, stream; ARGV: envelope head,
 * envelope tail, history size, pub/sub channel): ids assigned in one place, in order. */
export const PUBLISH_SCRIPT = `
local id = redis.call('INCR', KEYS[1])
local text = ARGV[1] .. id .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], id .. '-0', 'm', text)
redis.call('PUBLISH', ARGV[4], id .. ' ' .. text)
return id
`;
const TIMEOUT_MS = 2000;
const NAMESPACE_RE = /^[A-Za-z0-9_-]{1,64}$/;

type History = (channel: string, since: number) => Promise<Message[]>;

/** One lock per channel: what ``async with lock`` is in backplane.py. */
class Lock {
  private tail: Promise<void> = Promise.resolve();
  locked = false;
  private waiting = 0;

  async run<T>(body: () => Promise<T>): Promise<T> {
    this.waiting++;
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise((resolve) => (release = resolve));
    await previous;
    this.locked = true;
    try {
      return await body();
    } finally {
      this.waiting--;
      this.locked = this.waiting > 0;
      release();
    }
  }
}

/** Per-channel, in-order, exactly-once delivery on one instance (backplane.py's Sequencer):
 * a message whose id is not the next one makes it read the missing ones from the store. */
export class Sequencer {
  private last = new Map<string, number>();
  private locks = new Map<string, Lock>();

  constructor(private deliver: Deliver, private history: History) {}

  get channels(): string[] {
    return [...this.last.keys()];
  }

  watch(channel: string, lastId: number): void {
    this.last.set(channel, lastId);
    if (!this.locks.has(channel)) this.locks.set(channel, new Lock());
  }

  forget(channel: string): void {
    this.last.delete(channel);
    this.locks.delete(channel);
  }

  async receive(msg: Message): Promise<void> {
    if (msg.id === 0) {
      this.deliver(msg);
      return;
    }
    const last = this.last.get(msg.channel);
    if (last === undefined || msg.id <= last) return;
    const lock = this.locks.get(msg.channel)!;
    if (msg.id === last + 1 && !lock.locked) {
      this.last.set(msg.channel, msg.id);
      this.deliver(msg);
      return;
    }
    await lock.run(async () => {
      const now = this.last.get(msg.channel);
      if (now !== undefined && msg.id > now + 1 && !(await this.fill(msg.channel))) return;
      this.accept(msg);
    });
  }

  async catchUp(channel: string): Promise<void> {
    const lock = this.locks.get(channel);
    if (lock !== undefined) await lock.run(() => this.fill(channel));
  }

  private async fill(channel: string): Promise<boolean> {
    const last = this.last.get(channel);
    if (last === undefined) return true;
    let missed: Message[];
    try {
      missed = await this.history(channel, last);
    } catch (exc) {
      console.error(`${channel}: cannot read missed messages after id ${last}: ${(exc as Error).message}`);
      return false;
    }
    for (const msg of missed) this.accept(msg);
    return true;
  }

  private accept(msg: Message): void {
    const last = this.last.get(msg.channel);
    if (last === undefined || msg.id <= last) return;
    if (msg.id > last + 1) {
      console.error(`${msg.channel}: ids ${last + 1}..${msg.id - 1} were trimmed from history before this instance got them`);
    }
    this.last.set(msg.channel, msg.id);
    this.deliver(msg);
  }
}

/** ``redis://h:p/0?namespace=t1`` -> [``redis://h:p/0``, ``t1``] (backplane.split_namespace). */
export function splitNamespace(url: string): [string, string] {
  const parsed = new URL(url);
  const namespace = parsed.searchParams.get("namespace") ?? "sobranie";
  if (!NAMESPACE_RE.test(namespace)) throw new Error(`namespace ${namespace}: use 1-64 of A-Z a-z 0-9 _ -`);
  parsed.searchParams.delete("namespace");
  return [parsed.toString(), namespace];
}

export class RedisBroker implements Broker {
  readonly name = "redis";
  private redis: Redis;
  private sub: Redis;
  private namespace: string;
  readonly where: string;
  private seq: Sequencer | null = null;
  private wanted = new Set<string>();
  private topics: string;

  constructor(url: string, private historySize = HISTORY_SIZE) {
    const [bare, namespace] = splitNamespace(url);
    this.namespace = namespace;
    this.topics = `${namespace}:ch:`;
    const options = { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1,
      commandTimeout: TIMEOUT_MS, connectTimeout: TIMEOUT_MS,
      retryStrategy: (times: number) => Math.min(2000, 100 * 2 ** Math.min(times, 5)) };
    this.redis = new Redis(bare, options);
    this.sub = new Redis(bare, { ...options, commandTimeout: undefined });
    this.where = `${this.redis.options.host}:${this.redis.options.port}`;
    for (const client of [this.redis, this.sub]) client.on("error", () => {}); // reported below
    this.redis.defineCommand("sobraniePublish", { numberOfKeys: 2, lua: PUBLISH_SCRIPT });
  }

  counterKey = (channel: string) => `${this.namespace}:id:${channel}`;
  historyKey = (channel: string) => `${this.namespace}:h:${channel}`;
  topic = (channel: string) => `${this.topics}${channel}`;

  async start(deliver: Deliver): Promise<void> {
    this.seq = new Sequencer(deliver, (channel, since) => this.history(channel, since));
    try {
      await this.redis.connect();
      await this.sub.connect();
      await this.sub.subscribe(`${this.namespace}:ctl`);
    } catch (exc) {
      this.redis.disconnect();
      this.sub.disconnect();
      throw new Error(`cannot reach Redis at ${this.where} (${(exc as Error).message}): start it `
        + "(redis-server --port PORT) or pass another --broker URL");
    }
    this.sub.on("messageBuffer", (topic: Buffer, payload: Buffer) => {
      const name = topic.toString();
      if (!name.startsWith(this.topics)) return;
      const text = payload.toString("utf8");
      const space = text.indexOf(" ");
      void this.seq!.receive({ channel: name.slice(this.topics.length),
        id: Number(text.slice(0, space)), text: text.slice(space + 1) });
    });
    let lost = false;
    this.sub.on("close", () => {
      if (!lost) console.error(`Redis backplane at ${this.where} lost: local connections are still served, publishing fails until it is back`);
      lost = true;
    });
    this.sub.on("ready", () => {  // ioredis resubscribed by itself: fill what was missed
      if (!lost) return;
      lost = false;
      console.error(`Redis backplane at ${this.where} is back: ${this.wanted.size} channels resubscribed`);
      for (const channel of this.wanted) void this.seq!.catchUp(channel);
    });
  }

  private unavailable(exc: unknown): WireError {
    const err = exc as Error;
    return new WireError("unavailable",
      `Redis at ${this.where} unavailable (${err.name}: ${err.message}); retry later`);
  }

  async publish(channel: string, data: unknown, sender: string): Promise<Message> {
    const [head, tail] = envelopeAroundId(channel, data, sender);
    let id: number;
    try {
      // @ts-expect-error defined by defineCommand
      id = Number(await this.redis.sobraniePublish(this.counterKey(channel), this.historyKey(channel),
        head, tail, this.historySize, this.topic(channel)));
    } catch (exc) {
      throw this.unavailable(exc);
    }
    return { channel, id, text: head + id + tail };
  }

  async publishTransient(channel: string, envelope: Envelope): Promise<void> {
    try {
      await this.redis.publish(this.topic(channel), `0 ${encode(envelope)}`);
    } catch (exc) {  // presence is best effort: never fail a connection for it
      console.error(`presence not sent, Redis at ${this.where} unavailable: ${(exc as Error).message}`);
    }
  }

  async history(channel: string, since: number): Promise<Message[]> {
    let entries: [string, string[]][];
    try {
      entries = await this.redis.xrange(this.historyKey(channel), `${since + 1}-0`, "+");
    } catch (exc) {
      throw this.unavailable(exc);
    }
    return entries.map(([entryId, fields]) => ({ channel, id: Number(entryId.split("-")[0]),
      text: fields[fields.indexOf("m") + 1] }));
  }

  async lastId(channel: string): Promise<number> {
    try {
      return Number((await this.redis.get(this.counterKey(channel))) ?? 0);
    } catch (exc) {
      throw this.unavailable(exc);
    }
  }

  /** Start from the channel's current id, SUBSCRIBE, and return once the subscription is
   * effective and whatever was published meanwhile has been delivered. */
  async subscribe(channel: string): Promise<void> {
    this.wanted.add(channel);
    this.seq!.watch(channel, await this.lastId(channel));
    try {
      await this.sub.subscribe(this.topic(channel));
    } catch (exc) {
      throw this.unavailable(exc);
    }
    await this.seq!.catchUp(channel);
  }

  async unsubscribe(channel: string): Promise<void> {
    this.wanted.delete(channel);
    this.seq!.forget(channel);
    await this.sub.unsubscribe(this.topic(channel)).catch(() => {});
  }

  historyStats(): [number, number] {
    return [0, 0];  // each stream is capped in Redis (XADD MAXLEN)
  }

  async close(): Promise<void> {
    this.sub.disconnect();
    this.redis.disconnect();
  }
}

export function makeBroker(url: string | undefined, historySize: number, historyBytes = HISTORY_BYTES): Broker {
  if (!url || url === "memory") return new MemoryBroker(historySize, historyBytes);
  if (url.startsWith("redis://") || url.startsWith("rediss://")) return new RedisBroker(url, historySize);
  throw new Error(`unknown broker ${url}: use memory or redis://host:port (the Elysia server has no NATS broker)`);
}
