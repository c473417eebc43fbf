// The browser check, run in a page by the browser tests and by the `browser` harness scenario:
// token, hello, subscribe, publish, receive, drop, resume, nothing lost or duplicated.
// Resolves with {ok, transport, helloMs, firstMs, received, reconnects, error}.
import { createClient } from "./sobranie/index.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(test, ms, what) {
  const end = performance.now() + ms;
  while (!test()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * transport, url: where to connect; token, publisherToken: two users' tokens; channel: a fresh
 * channel; missed: messages published while the subscriber is dropped; timeoutMs: every wait.
 */
export async function check({ transport, url, token, publisherToken, channel, missed = 3,
  timeoutMs = 10000, drop = true }) {
  const result = { transport, ok: false, helloMs: null, firstMs: null, received: [],
    reconnects: 0, error: null };
  const options = { timeout: timeoutMs };
  const sub = createClient(transport, url, token, options);
  const pub = createClient(transport, url, publisherToken, options);
  const received = result.received;
  const start = performance.now();
  sub.on("message", (env) => {
    if (env.channel !== channel) return;
    if (result.firstMs === null) result.firstMs = performance.now() - start;
    received.push(env.data.n);
  });
  try {
    await sub.connect([channel]);
    result.helloMs = performance.now() - start;
    await pub.connect([]);
    await pub.publish(channel, { n: 1 });
    await until(() => received.length >= 1, timeoutMs, "the first message");
    if (drop) {
      // the state events, not a poll of sub.state: a resume after a backoff of a few ms is
      // open again before a 5 ms poll would have seen it leave
      let left = false;
      sub.on("state", ({ state }) => { if (state !== "open") left = true; });
      sub.drop();
      await until(() => left, timeoutMs, "the drop");
      for (let n = 2; n < 2 + missed; n++) await pub.publish(channel, { n });
      await until(() => sub.reconnects >= 1 && sub.state === "open", timeoutMs, "the resume");
    }
    const last = drop ? 2 + missed : 2;
    await pub.publish(channel, { n: last });
    await until(() => received.includes(last), timeoutMs, "the message after the resume");
    await sleep(50);  // room for a duplicate to show
    result.reconnects = sub.reconnects;
    const expected = Array.from({ length: last }, (_, i) => i + 1);
    result.ok = JSON.stringify(received) === JSON.stringify(expected);
    if (!result.ok) result.error = `received ${JSON.stringify(received)}`;
  } catch (err) {
    result.error = String(err && err.message ? err.message : err);
  } finally {
    sub.close();
    pub.close();
  }
  return result;
}

/** Only connect and wait for the hello (the refusal cases): {ok, helloMs, error}. */
export async function connectOnly({ transport, url, token, timeoutMs = 10000 }) {
  const client = createClient(transport, url, token, { timeout: timeoutMs, reconnect: false });
  const start = performance.now();
  try {
    await client.connect([]);
    return { transport, ok: true, helloMs: performance.now() - start, error: null };
  } catch (err) {
    return { transport, ok: false, helloMs: null, error: String(err && err.message ? err.message : err) };
  } finally {
    client.close();
  }
}

/**
 * Connect and keep the connection open (the SSE per-origin limit: a 7th EventSource of one
 * profile waits for one of the first six to close). Returns at once; `held()` reports
 * {helloMs, error} as they come (helloMs null while the hello has not arrived); `release()`
 * closes the connection.
 */
let holding = null;
export function hold({ transport, url, token, timeoutMs = 60000 }) {
  const client = createClient(transport, url, token, { timeout: timeoutMs, reconnect: false });
  const start = performance.now();
  holding = { client, helloMs: null, error: null };
  const state = holding;
  client.connect([]).then(
    () => { state.helloMs = performance.now() - start; },
    (err) => { state.error = String(err && err.message ? err.message : err); });
  return true;
}

export function held() {
  return holding ? { helloMs: holding.helloMs, error: holding.error } : null;
}

export function release() {
  if (holding) holding.client.close();
  return true;
}
