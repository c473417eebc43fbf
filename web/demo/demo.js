// The live demo: chat, notifications, presence and like counters on one connection, over
// the transport chosen in the switcher (WebSockets by default, as results/recommendation.md
// recommends for all four features; SSE and long-polling are its fallbacks).
import { createClient } from "../sobranie/index.js";

const RECOMMENDED = "ws";
const LABELS = { ws: "WebSocket", "ws-websockets": "WebSocket (websockets)", sse: "SSE",
  longpoll: "Long-polling",
  webtransport: "WebTransport", socketio: "Socket.IO", "socketio-polling": "Socket.IO polling",
  webrtc: "WebRTC" };
const HISTORY_SHOWN = 60;
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const state = {
  client: null, transport: null, config: null, token: null, user: null,
  lastId: {}, likes: {}, liked: new Set(), online: new Set(), rtts: [],
  stats: { drops: 0, recovered: 0, lost: 0, duplicated: 0, notifications: 0 },
  dropCursor: null, reopenedAt: 0,
};
window.demo = state;  // for the browser tests

async function main() {
  state.user = params.get("user") || localStorage.getItem("sobranie-user") ||
    `guest-${Math.random().toString(36).slice(2, 6)}`;
  localStorage.setItem("sobranie-user", state.user);
  state.config = await (await fetch("/demo/config")).json();
  const got = await (await fetch(`/demo/token?user=${encodeURIComponent(state.user)}`)).json();
  state.token = got.token;
  $("me").textContent = state.user;
  paintAvatar($("me-avatar"), state.user);
  $("mapping").textContent = "Chat, notifications, presence and likes share one connection. " +
    "Recommended: WebSockets (fallback SSE or long-polling).";
  buildSwitcher();
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("drop").addEventListener("click", drop);
  setInterval(ping, 1000);
  await use(params.get("transport") || RECOMMENDED);
}

function buildSwitcher() {
  const names = Object.keys(state.config.transports);
  const order = (name) => (Object.keys(LABELS).indexOf(name) + 1) || names.length + 1;
  for (const name of names.sort((a, b) => order(a) - order(b))) {
    const button = document.createElement("button");
    button.dataset.transport = name;
    button.textContent = LABELS[name] || name;
    if (name === RECOMMENDED) button.insertAdjacentHTML("beforeend", '<span class="rec">★</span>');
    button.title = name === RECOMMENDED ? "recommended" : name;
    button.addEventListener("click", () => use(name));
    $("switcher").append(button);
  }
}

/** Switch transport: the new connection starts from the old one's cursor (nothing twice). */
async function use(transport) {
  const previous = state.client;
  const cursor = previous ? { ...previous.cursor } : null;
  if (previous) previous.close();
  for (const b of $("switcher").children) b.setAttribute("aria-pressed", b.dataset.transport === transport);
  state.transport = transport;
  const client = createClient(transport, state.config.transports[transport], state.token);
  state.client = client;
  const channels = [state.config.lobby, state.config.likes, `user:${state.user}`, "presence"];
  // Start where we were, or with the history of the lobby and of the counters.
  Object.assign(client.cursor, cursor || { [state.config.lobby]: 0, [state.config.likes]: 0 });
  client.on("state", ({ state: s }) => showState(client, s));
  client.on("message", onMessage);
  client.on("presence", onPresence);
  client.on("echo", (env) => { state.rtts.push(performance.now() - env.data.t); showLatency(); });
  showState(client, "connecting");
  try {
    await client.connect(channels);
    state.online.add(state.user);
    showPresence();
  } catch (err) {
    if (client === state.client) showState(client, "closed", String(err.message || err));
  }
}

function onMessage(env) {
  const last = state.lastId[env.channel];
  if (last !== undefined && env.id <= last) { state.stats.duplicated += 1; showStats(); return; }
  if (last !== undefined && env.id > last + 1) state.stats.lost += env.id - last - 1;
  state.lastId[env.channel] = env.id;
  const recovered = state.dropCursor && env.id > (state.dropCursor[env.channel] ?? Infinity) &&
    performance.now() - state.reopenedAt < 500;
  if (recovered) state.stats.recovered += 1;
  if (env.channel === state.config.lobby) addChat(env, recovered);
  else if (env.channel === state.config.likes) countLike(env.data);
  else if (env.channel.startsWith("user:")) notify(env.data);
  showStats();
}

function addChat(env, recovered) {
  const li = document.createElement("li");
  li.dataset.id = env.id;
  if (recovered) li.className = "recovered";
  const avatar = document.createElement("span");
  avatar.className = "avatar";
  paintAvatar(avatar, env.from);
  const body = document.createElement("div");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = env.from;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = `#${env.id}${env.data.via ? ` · ${LABELS[env.data.via] || env.data.via}` : ""}`;
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = String(env.data.text ?? "");
  body.append(who, when, text);
  const like = document.createElement("button");
  like.className = "like";
  like.dataset.key = `${env.channel}#${env.id}`;
  like.addEventListener("click", () => sendLike(env));
  li.append(avatar, body, like);
  paintLike(like);
  const list = $("messages");
  list.append(li);
  while (list.children.length > HISTORY_SHOWN) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
  $("room-info").textContent = `· ${env.id} messages`;
}

function countLike(data) {
  const key = `${data.channel}#${data.id}`;
  state.likes[key] = (state.likes[key] || 0) + (data.delta || 0);
  if (data.by === state.user) state.liked.add(key);
  const button = document.querySelector(`.like[data-key="${CSS.escape(key)}"]`);
  if (button) paintLike(button);
}

function paintLike(button) {
  const key = button.dataset.key;
  button.textContent = `♥ ${state.likes[key] || 0}`;
  button.classList.toggle("mine", state.liked.has(key));
}

function notify(data) {
  const list = $("notifications");
  if (state.stats.notifications === 0) list.textContent = "";
  state.stats.notifications += 1;
  const li = document.createElement("li");
  li.textContent = data.kind === "like" ? `${data.by} liked your message #${data.id}` : JSON.stringify(data);
  list.prepend(li);
  $("notif-count").textContent = state.stats.notifications;
}

function onPresence(env) {
  if (env.status === "online") state.online.add(env.user);
  else if (env.user !== state.user) state.online.delete(env.user);
  showPresence();
}

function showPresence() {
  const list = $("presence");
  list.textContent = "";
  for (const user of [...state.online].sort()) {
    const li = document.createElement("li");
    li.textContent = user === state.user ? `${user} (you)` : user;
    list.append(li);
  }
  $("online-count").textContent = state.online.size;
}

async function send() {
  const input = $("text");
  const text = input.value.trim();
  if (!text || !state.client) return;
  input.value = "";
  try {
    await state.client.publish(state.config.lobby, { text, via: state.transport });
  } catch (err) {
    input.value = text;
    showState(state.client, state.client.state, `not sent: ${err.message || err}`);
  }
}

async function sendLike(env) {
  await fetch("/demo/like", {
    method: "POST", headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ channel: env.channel, id: env.id, author: env.from }),
  });
}

function drop() {
  if (!state.client || state.client.state !== "open") return;
  state.stats.drops += 1;
  state.dropCursor = { ...state.client.cursor };
  state.client.drop();
  showStats();
}

function ping() {
  if (state.client && state.client.state === "open") {
    state.client.echo({ t: performance.now() }).catch(() => {});
  }
}

function showLatency() {
  state.rtts = state.rtts.slice(-20);
  const sorted = [...state.rtts].sort((a, b) => a - b);
  $("latency").textContent = sorted[Math.floor(sorted.length / 2)].toFixed(1);
}

function showState(client, s, detail) {
  if (client !== state.client) return;
  if (s === "open" && state.dropCursor) state.reopenedAt = performance.now();
  const pill = $("state");
  pill.className = `pill ${s}`;
  pill.textContent = `${LABELS[state.transport] || state.transport} · ${s}`;
  pill.title = detail || "";
  if (detail) $("resume-note").textContent = detail;
}

function showStats() {
  for (const key of ["drops", "recovered", "lost", "duplicated"]) $(key).textContent = state.stats[key];
}

function paintAvatar(el, user) {
  let hash = 0;
  for (const ch of user) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  el.style.background = `hsl(${hash % 360} 55% 52%)`;
  el.textContent = user.slice(0, 2).toUpperCase();
}

main().catch((err) => showState(state.client, "closed", String(err)));
