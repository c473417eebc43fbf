// The Elysia app: /ws, /sse, /poll and the HTTP endpoints of the contract (as
// servers/http_app.py, ws.py, sse.py and longpoll.py), on one port.
//
// Routing, the upgrade, the streams and the POSTs are Elysia routes. The WebSocket's open,
// message, drain and close go straight to Bun's handlers (given to Elysia's listen, which
// passes them to Bun.serve): Elysia's own `.ws()` JSON.parse-s every text frame before user
// code sees it, and the contract's strict JSON and 64 KiB count need the frame as it came.
//
// Each transport's own lines sit between `// adapter: <name>` and `// end adapter: <name>`:
// the complexity record counts them as it counts servers/ws.py, sse.py and longpoll.py; the
// rest is shared by the three, as servers/http_app.py and the hub are, and is not counted.
import { Elysia } from "elysia";
import type { Server, ServerWebSocket } from "bun";

import { Authenticator, type Claims, maySubscribe, Unauthorized } from "./auth";
import { type FdGuard, RETRY_AFTER_SECONDS, UNGUARDED } from "./fdguard";
import { type Connection, Hub } from "./hub";
import * as wire from "./wire";
import { type Cursor, HTTP_STATUS, WireError } from "./wire";

const JSON_TYPE = { "Content-Type": "application/json; charset=utf-8" };

export type Options = { pollIdleSeconds: number; guard: FdGuard };

// adapter: ws
export const CLOSE_GRACE_MS = 1000;
type WsData = { user: string; conn: Connection | null; terminate: Timer | null };
// end adapter: ws

// adapter: sse
const SSE_HEADERS = { "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
  "X-Accel-Buffering": "no" };
const enc = new TextEncoder();
// end adapter: sse

// adapter: longpoll
const FLOAT_RE = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;
type Session = { conn: Connection; cursor: Cursor; polling: boolean; idleSince: number };
// end adapter: longpoll

const seconds = () => performance.now() / 1000;

export function buildApp(hub: Hub, auth: Authenticator, options: Options) {
  // adapter: longpoll
  const sessions = new Map<string, Session>();
  // end adapter: longpoll

  // --- CORS: the Origin allow-list is the CORS list (as servers/cors.py) ----------------------
  // A request without Origin is served as before; one whose Origin is not allowed is refused
  // (403) before anything runs; an allowed one gets Access-Control-Allow-Origin on every
  // answer, errors included (``*`` with an empty list); a preflight is answered 204.
  // Credentials stay off: the token travels as ?token= or Authorization, never a cookie.
  const corsHeaders = (request: Request): Record<string, string> => {
    const origin = request.headers.get("origin");
    if (origin === null || !auth.originAllowed(origin)) return {};
    return auth.origins.size ? { "Access-Control-Allow-Origin": origin, Vary: "Origin" }
      : { "Access-Control-Allow-Origin": "*" };
  };
  const json = (request: Request, body: unknown, status = 200, headers: Record<string, string> = {}) =>
    new Response(typeof body === "string" ? body : wire.encode(body),
      { status, headers: { ...JSON_TYPE, ...corsHeaders(request), ...headers } });
  const errorResponse = (request: Request, exc: WireError) =>
    json(request, exc.envelope(), HTTP_STATUS[exc.code] ?? 400);
  const unauthorized = (request: Request, exc: Unauthorized) =>
    json(request, wire.error("unauthorized", exc.message), 401, { "WWW-Authenticate": "Bearer" });

  /** null when ``user`` may open one more connection, else the 429 to answer (counted). */
  const refusedAdmission = (request: Request, user: string): Response | null => {
    try {
      hub.admit(user);
      return null;
    } catch (exc) {
      return failed(request, exc);
    }
  };

  /** The token's claims, or the 401 to answer before anything is spent on the request. */
  const authenticate = (request: Request, query: URLSearchParams): Claims | Response => {
    try {
      return auth.claims(auth.tokenFrom(query, request.headers));
    } catch (exc) {
      if (exc instanceof Unauthorized) return unauthorized(request, exc);
      throw exc;
    }
  };

  const readBody = async (request: Request, ...fields: string[]): Promise<Record<string, unknown>> => {
    const raw = new Uint8Array(await request.arrayBuffer());
    if (raw.length > hub.limits.maxEnvelope) throw new WireError("too_large", `body of ${raw.length} bytes`);
    const body = wire.loads(raw);
    if (!wire.isObject(body)) throw new WireError("bad_request", "body must be a JSON object");
    const missing = fields.filter((f) => !(f in body));
    if (missing.length) {
      const ref = body.ref === undefined || body.ref === null ? null : wire.refString(body.ref);
      throw new WireError("bad_request", `missing ${missing.join(", ")}`, ref);
    }
    return body;
  };

  const failed = (request: Request, exc: unknown): Response => {
    if (!(exc instanceof WireError)) throw exc;
    hub.metrics.count(hub.metrics.errors, exc.code);
    return errorResponse(request, exc);
  };

  /** POST /echo, /subscribe, /unsubscribe: an op for the SSE or poll stream ``conn``. */
  const streamRequest = (op: "echo" | "subscribe" | "unsubscribe") => async ({ request }: { request: Request }) => {
    const claims = authenticate(request, new URL(request.url).searchParams);
    if (claims instanceof Response) return claims;
    try {
      const body = await readBody(request, "conn");
      const conn = hub.lookup(String(body.conn), claims.sub);
      body.op = op;
      await hub.execute(conn, wire.requestFromDict(body));
    } catch (exc) {
      return failed(request, exc);
    }
    return json(request, { status: "accepted" }, 202);
  };

  // adapter: longpoll
  // --- long-polling sessions -----------------------------------------------------------------
  const endSession = async (session: Session) => {
    sessions.delete(session.conn.id);
    await hub.disconnect(session.conn);
  };
  const reaper = setInterval(() => {
    const now = seconds();
    for (const session of [...sessions.values()]) {
      if (session.polling) continue;
      if (session.conn.closed || now - session.idleSince > options.pollIdleSeconds) void endSession(session);
    }
  }, 1000);
  // end adapter: longpoll

  const app = new Elysia()
    .onRequest(({ request }) => {
      if (options.guard.full() && !UNGUARDED.has(new URL(request.url).pathname)) {
        hub.metrics.count(hub.metrics.errors, "unavailable");
        return json(request, wire.error("unavailable", options.guard.refuse()), 503,
          { "Retry-After": String(RETRY_AFTER_SECONDS), Connection: "close" });
      }
      const origin = request.headers.get("origin");
      if (origin === null) return;
      if (!auth.originAllowed(origin)) return new Response("origin not allowed", { status: 403 });
      if (request.method === "OPTIONS" && request.headers.has("access-control-request-method")) {
        return new Response(null, { status: 204, headers: { ...corsHeaders(request),
          "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
          "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
          "Access-Control-Max-Age": "600" } });
      }
    })
    .onAfterHandle(({ request, response }) => {  // what the handlers did not set themselves
      if (!(response instanceof Response)) return;
      for (const [name, value] of Object.entries(corsHeaders(request))) {
        if (!response.headers.has(name)) response.headers.set(name, value);
      }
    })
    .get("/healthz", ({ request }) => json(request, { status: "ok", server: hub.server }))
    .get("/metrics", () => new Response(hub.metrics.render(hub) + options.guard.render(), { headers: { "Content-Type": "text/plain; charset=utf-8" } }))
    .post("/publish", async ({ request }) => {
      const claims = authenticate(request, new URL(request.url).searchParams);
      if (claims instanceof Response) return claims;
      let ref: string | null = null;
      try {
        const body = await readBody(request, "channel", "data");
        ref = body.ref === undefined || body.ref === null ? null : wire.refString(body.ref);
        const channel = wire.checkChannel(body.channel, ref);
        const msg = await hub.publish(claims.scope === "server" ? null : claims.sub, channel, body.data, ref);
        return json(request, wire.ack(ref, msg.id));
      } catch (exc) {
        return failed(request, exc);
      }
    }, { parse: "none" })
    .post("/echo", streamRequest("echo"), { parse: "none" })
    .post("/subscribe", streamRequest("subscribe"), { parse: "none" })
    .post("/unsubscribe", streamRequest("unsubscribe"), { parse: "none" })
    // adapter: ws
    .get("/ws", async ({ request, server }) => {
      // One turn of the loop before the new connection is served, as asyncio gives aiohttp:
      // requests already read from open connections are handled first. A client that sends
      // a subscribe and then opens a second connection (whose presence it must see) relies
      // on it; without the turn, uWS serves whichever socket epoll lists first.
      await new Promise((resolve) => setImmediate(resolve));
      const claims = authenticate(request, new URL(request.url).searchParams);
      if (claims instanceof Response) return claims;
      if (!auth.originAllowed(request.headers.get("origin"))) {
        return new Response("origin not allowed", { status: 403 });
      }
      const refused = refusedAdmission(request, claims.sub);
      if (refused !== null) return refused;
      const data: WsData = { user: claims.sub, conn: null, terminate: null };
      if ((server as Server<WsData>).upgrade(request, { data })) return;
      return new Response("expected a WebSocket upgrade", { status: 400 });
    })
    // end adapter: ws
    // adapter: sse
    .get("/sse", ({ request, server }) => {
      const query = new URL(request.url).searchParams;
      const claims = authenticate(request, query);
      if (claims instanceof Response) return claims;
      let cursor: Cursor;
      let channels: string[];
      try {
        cursor = wire.parseCursor(request.headers.get("last-event-id") || query.get("last_event_id"));
        channels = wire.splitChannels(query.get("channels"));
        if (!channels.length) channels = [...cursor.keys()];
        for (const channel of channels) {
          if (!maySubscribe(claims.sub, channel)) throw new WireError("forbidden", `${channel} is private`);
        }
      } catch (exc) {
        if (exc instanceof WireError) return errorResponse(request, exc);
        throw exc;
      }
      const refused = refusedAdmission(request, claims.sub);
      if (refused !== null) return refused;
      server?.timeout(request, 0);  // a stream: idle between events by design (pings: 15 s)
      return new Response(sseStream(hub, request, claims.sub, channels, cursor),
        { headers: { ...SSE_HEADERS, ...corsHeaders(request) } });
    })
    // end adapter: sse
    // adapter: longpoll
    .get("/poll", async ({ request, server }) => {
      const query = new URL(request.url).searchParams;
      const claims = authenticate(request, query);
      if (claims instanceof Response) return claims;
      const user = claims.sub;
      let cursor: Cursor;
      let channels: string[];
      let timeout = wire.POLL_TIMEOUT_SECONDS;
      try {
        cursor = wire.parseCursor(query.get("cursor"));
        channels = wire.splitChannels(query.get("channels"));
        if (!channels.length) channels = [...cursor.keys()];
        const given = query.get("timeout");
        if (given !== null) timeout = FLOAT_RE.test(given) ? Number(given) : NaN;
        if (!(timeout >= 0 && timeout <= wire.POLL_MAX_TIMEOUT_SECONDS)) {
          throw new WireError("bad_request", "timeout must be 0..60 s");
        }
        for (const channel of channels) {
          if (!maySubscribe(user, channel)) throw new WireError("forbidden", `${channel} is private`);
        }
      } catch (exc) {
        if (exc instanceof WireError) return errorResponse(request, exc);
        throw exc;
      }
      server?.timeout(request, Math.ceil(timeout) + 10);  // held on purpose, up to timeout
      let session = sessions.get(query.get("conn") ?? "");
      const fresh = session === undefined || session.conn.user !== user || !continues(session, cursor);
      if (fresh) {
        if (session !== undefined && session.conn.user === user) await endSession(session);
        const refused = refusedAdmission(request, user);
        if (refused !== null) return refused;
        const conn = hub.connect(user, "longpoll");
        const opened: Session = { conn, cursor: new Map(), polling: false, idleSince: seconds() };
        sessions.set(conn.id, opened);
        for (const channel of channels) {
          opened.cursor.set(channel, await hub.subscribe(conn, channel, cursor.get(channel) ?? null));
        }
        session = opened;
      }
      session!.polling = true;
      let items;
      try {
        const deadline = seconds() + timeout;
        items = await session!.conn.outgoing(timeout, request.signal);
        while (fresh && cursor.size && items.length && items.every((item) => NOT_NEWS.has(item.type))) {
          // a fresh session for a poll that carries a cursor: its hello and acks are not news
          // after that cursor, so the poll holds on as any other would (servers/longpoll.py)
          const left = deadline - seconds();
          const more = left > 0 ? await session!.conn.outgoing(left, request.signal) : [];
          if (!more.length) break;
          items.push(...more);
        }
      } finally {
        session.polling = false;
        session.idleSince = seconds();
      }
      const messages: string[] = [];
      for (const item of items) {
        if (item.id) session.cursor.set(item.channel!, item.id);
        messages.push(item.text);
      }
      return json(request, `{"messages":[${messages.join(",")}],"cursor":${JSON.stringify(wire.formatCursor(session.cursor))},"conn":${JSON.stringify(session.conn.id)}}`);
    });
    // end adapter: longpoll

  // adapter: ws
  const websocket = {
    open(ws: ServerWebSocket<WsData>) {
      const conn = hub.connect(ws.data.user, "ws");
      ws.data.conn = conn;
      conn.sink = (text) => ws.sendText(text) > 0;
      conn.onClose = (code, reason) => {
        conn.sink = null;
        for (const item of conn.lastWords()) ws.sendText(item.text);  // the flood's error
        ws.close(code, reason.slice(0, 120));
        ws.data.terminate = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);  // a stalled reader
      };
      conn.drain();  // hello
    },
    message(ws: ServerWebSocket<WsData>, message: string | Buffer) {
      hub.handle(ws.data.conn!, message);
    },
    drain(ws: ServerWebSocket<WsData>) {
      ws.data.conn?.drain();
    },
    close(ws: ServerWebSocket<WsData>) {
      if (ws.data.terminate !== null) clearTimeout(ws.data.terminate);
      const conn = ws.data.conn;
      if (conn !== null) {
        conn.sink = null;
        void hub.disconnect(conn);
      }
    },
    maxPayloadLength: hub.limits.hardFrame,
    perMessageDeflate: false,
    idleTimeout: 0,
    sendPings: false,
    backpressureLimit: 16 * 1024 * 1024,
    closeOnBackpressureLimit: false,
  };
  // end adapter: ws

  // adapter: longpoll
  const stop = () => clearInterval(reaper);
  // end adapter: longpoll
  return { app, websocket, stop };
}

// adapter: longpoll
/** What a fresh session queues before anything a poll's cursor has not seen. */
const NOT_NEWS = new Set(["hello", "ack"]);

function continues(session: Session, cursor: Cursor): boolean {
  if (session.polling || session.conn.closed) return false;
  for (const [channel, sent] of session.cursor) if ((cursor.get(channel) ?? 0) < sent) return false;
  return true;
}
// end adapter: longpoll

// adapter: sse
/** The SSE stream: hello, the subscribe acks and history, live events; each event carries the
 * stream's full cursor. Pulled by Bun as the socket takes it: a reader that stops reading
 * stops the pulls, the outbox grows, and the hub cuts the stream off as a slow consumer. */
function sseStream(hub: Hub, request: Request, user: string, channels: string[], resume: Cursor): ReadableStream {
  const conn = hub.connect(user, "sse");
  const cursor: Cursor = new Map();
  let lastId = "";
  let started = false;
  let ended = false;
  const end = () => {
    if (!ended) {
      ended = true;
      void hub.disconnect(conn);
    }
  };
  request.signal.addEventListener("abort", end);
  return new ReadableStream({
    start(controller) {
      conn.onClose = (_code, reason) => {  // the hub gave up on this stream: the final event
        if (ended) return;
        try {
          const last = conn.lastWords().map((item) => `event: ${wire.SSE_FAULT_EVENT}\ndata: ${item.text}\n\n`);
          controller.enqueue(enc.encode(`${last.join("")}event: ${wire.SSE_FAULT_EVENT}\ndata: ${wire.encode(wire.error("closed", reason))}\n\n`));
          controller.close();
        } catch {
          // the reader is gone already
        }
        end();
      };
    },
    async pull(controller) {
      if (!started) {
        started = true;
        for (const channel of channels) cursor.set(channel, await hub.subscribe(conn, channel, resume.get(channel) ?? null));
        lastId = wire.formatCursor(cursor);
      }
      const items = await conn.outgoing(wire.SSE_PING_SECONDS, request.signal);
      if (ended || conn.closed) return;
      if (!items.length) {
        controller.enqueue(enc.encode(": ping\n\n"));
        return;
      }
      let out = "";
      for (const item of items) {
        if (item.id) {
          cursor.set(item.channel!, item.id);
          lastId = wire.formatCursor(cursor);
        }
        out += `id: ${lastId}\nevent: ${wire.sseEvent(item.type)}\ndata: ${item.text}\n\n`;
      }
      controller.enqueue(enc.encode(out));
    },
    cancel: end,
  }, { highWaterMark: 0 });
}
// end adapter: sse
