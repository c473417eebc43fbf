// Drives Debian's firefox-esr over WebDriver BiDi (puppeteer-core; no browser is downloaded)
// for sobranie_bench/browser.py. One JSON object per line on stdin, one answer per line on
// stdout:
//   start:  {"ready": true, "name": "firefox", "version": "153.8.0esr"}  (or {"error": ...})
//   {"id", "op": "open", "url", "ready": "<JS expression>", "context": name|null, "timeoutMs"}
//       -> {"id", "value": <tab number>}   (context: tabs with one name share a profile's
//          connections, as tabs of one window do; null = a context of its own)
//   {"id", "op": "eval", "tab", "fn": "(arg) => ...", "arg"}  -> {"id", "value"}
//   {"id", "op": "close", "tab"}  -> {"id", "value": null}
//   {"id", "op": "exit"}  (or stdin closed, or SIGTERM): the browser is closed, then the driver.
// An error answers {"id", "error": "..."}. Usage: node driver.mjs FIREFOX_EXECUTABLE
import { createInterface } from "node:readline";
import puppeteer from "puppeteer-core";

const PREFS = {
  // WebRTC between two ends on loopback: host candidates on 127.0.0.1, not mDNS names.
  "media.peerconnection.ice.loopback": true,
  "media.peerconnection.ice.obfuscate_host_addresses": false,
  // Nothing reaches for a network that is closed.
  "app.update.enabled": false,
  "browser.safebrowsing.malware.enabled": false,
  "browser.safebrowsing.phishing.enabled": false,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "datareporting.policy.dataSubmissionEnabled": false,
  "toolkit.telemetry.enabled": false,
};

const send = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const message = (err) => String(err && err.message ? err.message : err);

let browser = null;
let closing = null;
const tabs = new Map();
const contexts = new Map();
const own = new Map();  // tab -> the context made for it alone (the browser outlives tabs)

function close() {
  closing ??= (async () => {
    try {
      if (browser) await browser.close();
    } catch {
      // the browser is already gone
    }
    process.exit(0);
  })();
  return closing;
}

process.on("SIGTERM", close);
process.on("SIGINT", close);

async function context(name) {
  if (name === null || name === undefined) return browser.createBrowserContext();
  if (!contexts.has(name)) contexts.set(name, await browser.createBrowserContext());
  return contexts.get(name);
}

const ops = {
  async open({ url, ready, context: name, timeoutMs = 20000 }) {
    const ctx = await context(name);
    const page = await ctx.newPage();
    const tab = tabs.size ? Math.max(...tabs.keys()) + 1 : 1;
    tabs.set(tab, page);
    if (name === null || name === undefined) own.set(tab, ctx);  // closed with its tab
    try {
      page.setDefaultTimeout(timeoutMs);
      await page.goto(url);
      if (ready) await page.waitForFunction(ready, { timeout: timeoutMs });
    } catch (err) {
      await ops.close({ tab }).catch(() => {});  // nobody gets this tab to close it
      throw err;
    }
    return tab;
  },
  async eval({ tab, fn, arg }) {
    const page = tabs.get(tab);
    if (!page) throw new Error(`no tab ${tab}`);
    return page.evaluate(`(${fn})(${JSON.stringify(arg ?? null)})`);
  },
  async close({ tab }) {
    const page = tabs.get(tab);
    const ctx = own.get(tab);
    tabs.delete(tab);
    own.delete(tab);
    if (page) await page.close();
    if (ctx) await ctx.close();
    return null;
  },
  exit: close,
};

try {
  browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: process.argv[2],
    headless: true,
    protocol: "webDriverBiDi",
    acceptInsecureCerts: true,  // our servers' local CA is not in Firefox's store
    extraPrefsFirefox: PREFS,
  });
  const version = (await browser.version()).replace(/^firefox\//i, "");
  send({ ready: true, name: "firefox", version });
} catch (err) {
  send({ error: `firefox did not start: ${message(err)}` });
  process.exit(1);
}

const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  let req;
  try {
    req = JSON.parse(line);
  } catch {
    send({ error: `not JSON: ${line.slice(0, 80)}` });
    return;
  }
  try {
    const op = ops[req.op];
    if (!op) throw new Error(`unknown op ${req.op}`);
    send({ id: req.id, value: (await op(req)) ?? null });
  } catch (err) {
    send({ id: req.id, error: message(err) });
  }
});
lines.on("close", close);
