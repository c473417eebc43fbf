// `bun run src/main.ts [options]`: the Sobranie contract server on Bun + Elysia.
// Prints one JSON line ({"url", "pid", ...}) once it listens (servers/elysia/__init__.py, the
// Python starter, waits for it); SIGTERM or SIGINT stops it cleanly (1001 to every WebSocket).
import { parseArgs } from "node:util";

import { buildApp } from "./app";
import { Authenticator, DEV_SECRET } from "./auth";
import { makeBroker } from "./brokers";
import { FdGuard, openFiles } from "./fdguard";
import { DEFAULT_LIMITS, Hub, Metrics } from "./hub";
import { HISTORY_SIZE } from "./wire";

// OpenSSL's (and BoringSSL's) SSL_OP_* bits, for Bun's `secureOptions`
const SSL_OP_NO_TICKET = 0x00004000;
const SSL_OP_NO_TLSv1 = 0x04000000;
const SSL_OP_NO_TLSv1_2 = 0x08000000;
const SSL_OP_NO_TLSv1_1 = 0x10000000;

const HELP = `usage: bun run src/main.ts [--host H] [--port P] [--broker memory|redis://h:p]
  [--origin O ...] [--send-queue N] [--max-envelope B] [--hard-frame B] [--rate R] [--burst N]
  [--flood N] [--history-size N] [--history-bytes B] [--user-connections N] [--user-rate R]
  [--user-burst N] [--user-channels N] [--user-window S] [--poll-idle S] [--header-timeout S]
  [--server-name NAME] [--reuse-port]  (SO_REUSEPORT: several processes share --port)
  [--cert PEM --key PEM [--ca PEM] [--tls-resumption]]
  [--exit-with-stdin]  (stop when standard input closes: the parent that started it is gone)
The JWT secret is $SOBRANIE_JWT_SECRET (else the development secret).`;

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8080" },
    broker: { type: "string", default: "memory" },
    origin: { type: "string", multiple: true, default: [] },
    "send-queue": { type: "string" },
    "max-envelope": { type: "string" },
    "hard-frame": { type: "string" },
    rate: { type: "string" },
    burst: { type: "string" },
    flood: { type: "string" },
    "history-bytes": { type: "string" },
    "user-connections": { type: "string" },
    "user-rate": { type: "string" },
    "user-burst": { type: "string" },
    "user-channels": { type: "string" },
    "user-window": { type: "string" },
    "history-size": { type: "string", default: String(HISTORY_SIZE) },
    "poll-idle": { type: "string", default: "30" },
    "header-timeout": { type: "string", default: "5" },
    "server-name": { type: "string", default: "sobranie-elysia/0.1.0" },
    cert: { type: "string" },
    key: { type: "string" },
    ca: { type: "string" },
    "tls-resumption": { type: "boolean", default: false },
    "exit-with-stdin": { type: "boolean", default: false },
    "reuse-port": { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (args.help) {
  console.log(HELP);
  process.exit(0);
}

function number(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`error: --${name} must be a non-negative number, got ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return n;
}

let secret = process.env.SOBRANIE_JWT_SECRET;
if (!secret) {
  console.error("SOBRANIE_JWT_SECRET is not set: using the development secret");
  secret = DEV_SECRET;
}
const limits = {
  maxEnvelope: number("max-envelope", args["max-envelope"], DEFAULT_LIMITS.maxEnvelope),
  hardFrame: number("hard-frame", args["hard-frame"], DEFAULT_LIMITS.hardFrame),
  sendQueue: number("send-queue", args["send-queue"], DEFAULT_LIMITS.sendQueue),
  rate: number("rate", args.rate, DEFAULT_LIMITS.rate),
  burst: number("burst", args.burst, DEFAULT_LIMITS.burst),
  flood: number("flood", args.flood, DEFAULT_LIMITS.flood),
  historyBytes: number("history-bytes", args["history-bytes"], DEFAULT_LIMITS.historyBytes),
  userConnections: number("user-connections", args["user-connections"], DEFAULT_LIMITS.userConnections),
  userRate: number("user-rate", args["user-rate"], DEFAULT_LIMITS.userRate),
  userBurst: number("user-burst", args["user-burst"], DEFAULT_LIMITS.userBurst),
  userChannels: number("user-channels", args["user-channels"], DEFAULT_LIMITS.userChannels),
  userWindow: number("user-window", args["user-window"], DEFAULT_LIMITS.userWindow),
};

let hub: Hub;
try {
  hub = new Hub(makeBroker(args.broker, number("history-size", args["history-size"], HISTORY_SIZE),
    limits.historyBytes), limits, args["server-name"]!);
  await hub.start();
} catch (exc) {
  console.error(`error: ${(exc as Error).message}`);
  process.exit(1);
}
const auth = new Authenticator(secret, args.origin);
const guard = new FdGuard();
const { app, websocket, stop } = buildApp(hub, auth,
  { pollIdleSeconds: number("poll-idle", args["poll-idle"], 30), guard });
if (Boolean(args.cert) !== Boolean(args.key)) {
  console.error("error: --cert and --key go together");
  process.exit(2);
}
const tls = args.cert && args.key ? serverTls(args.cert, args.key, args["tls-resumption"]!) : undefined;
// what the warm-up's own connections trust: the CA that signed --cert (else any certificate:
// they only dial this server on its own loopback address)
const clientTls = args.ca ? { ca: Bun.file(args.ca) } : { rejectUnauthorized: false };

/** Bun.serve's `tls` (BoringSSL): TLS 1.3 only and no session tickets unless `resumption`
 * (every connect pays a full handshake), as sobranie_contract/tls.py's server_context gives
 * the Python servers. (Bun.serve answers no ALPN: the client's http/1.1 offer goes
 * unacknowledged, and HTTP/1.1 is what both speak.) */
function serverTls(cert: string, key: string, resumption: boolean) {
  for (const path of [cert, key]) {
    if (!Bun.file(path).size) {
      console.error(`error: cannot read ${path}`);
      process.exit(2);
    }
  }
  const noTlsBelow13 = SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 | SSL_OP_NO_TLSv1_2;
  return { cert: Bun.file(cert), key: Bun.file(key),
    secureOptions: noTlsBelow13 | (resumption ? 0 : SSL_OP_NO_TICKET) };
}

/** Listen on `port` (`reusePort`: shared with the other processes of `serve elysia
 * --processes N`). Idle HTTP connections (and half-sent requests) close after
 * --header-timeout; a held poll and an SSE stream set their own (app.ts). */
function listen(port: number, reusePort: boolean) {
  try {
    app.listen({
      hostname: args.host, port, reusePort, maxRequestBodySize: limits.hardFrame,
      development: false,
      idleTimeout: Math.max(1, Math.round(number("header-timeout", args["header-timeout"], 5))),
      websocket, tls,
    });
  } catch (exc) {
    console.error(`error: cannot listen on ${args.host}:${port}: ${(exc as Error).message}`);
    process.exit(1);
  }
  const host = args.host!.includes(":") ? `[${args.host}]` : args.host;
  return `${tls ? "https" : "http"}://${host}:${app.server!.port}`;
}

// The warm-up runs on a port of this process's own, then the server listens where it was
// asked: on a shared port (--reuse-port) the kernel could hand the warm-up's connections to
// another process, whose counters would then count them.
await warmUp(listen(0, false));
await app.stop(true);
const url = listen(number("port", args.port, 8080), args["reuse-port"]!);
const server = app.server!;
await Bun.sleep(0);  // Elysia reloads the server with its compiled routes after a tick
guard.base = openFiles();
guard.connections = () => {
  const now = app.server;
  return now ? now.pendingRequests + now.pendingWebSockets : 0;
};
console.log(JSON.stringify({ kind: "elysia", url, pid: process.pid, ws: `${url.replace("http", "ws")}/ws`,
  sse: `${url}/sse`, poll: `${url}/poll`, bun: Bun.version }));

/** Before saying ready: Elysia compiles its routes and reloads the server after the first
 * tick, and the JIT compiles each handler on first use, so the first connections of a cold
 * server each took 5-35 ms -- long enough for a client's second connection to overtake its
 * first one's subscribe. A few WebSocket and SSE sessions of our own go through every path
 * first (no presence is published for them, and the counters start from zero after). */
async function warmUp(base: string): Promise<void> {
  const token = auth.token("sobranie-warmup");
  hub.quiet = true;
  for (let round = 0; round < 5; round++) {
    await new Promise<void>((resolve, reject) => {
      const origin = [...auth.origins][0];  // Bun's client sends none; the allow-list wants one
      const ws = new WebSocket(`${base.replace("http", "ws")}/ws?token=${token}`,
        { headers: origin ? { Origin: origin } : {}, tls: clientTls });
      let seen = 0;
      ws.onopen = () => {
        ws.send(JSON.stringify({ op: "subscribe", channel: "presence", ref: "s" }));
        ws.send(JSON.stringify({ op: "echo", data: { round }, ref: "e" }));
        ws.send("not json");
      };
      ws.onmessage = () => {
        if (++seen === 4) ws.close();
      };
      ws.onclose = () => resolve();
      ws.onerror = () => reject(new Error("warm-up WebSocket failed"));
    });
    const sse = await fetch(`${base}/sse?channels=presence&token=${token}`, { tls: clientTls });
    const reader = sse.body!.getReader();
    await reader.read();
    await reader.cancel();
    for (const path of ["/healthz", "/metrics", "/ws", "/poll", "/nope"]) {
      await (await fetch(base + path, { tls: clientTls })).text();
    }
    await (await fetch(`${base}/publish`, { method: "POST", body: "{}", tls: clientTls,
      headers: { Authorization: `Bearer ${token}` } })).text();
  }
  for (let i = 0; i < 1000 && hub.conns.size; i++) await Bun.sleep(1);
  hub.quiet = false;
  hub.metrics = new Metrics();
}

let stopping = false;
async function shutdown(): Promise<void> {
  if (stopping) return;
  stopping = true;
  stop();
  await hub.close();  // 1001 to every WebSocket, the final event to every stream
  setTimeout(() => process.exit(0), 200);
  await server.stop(false);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
if (args["exit-with-stdin"]) {
  process.stdin.on("data", () => {});
  process.stdin.on("end", shutdown);
  process.stdin.on("close", shutdown);
}
