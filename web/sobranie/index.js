// The browser client: one class per transport behind one interface (client.js).
import { WsClient, WsWebsocketsClient } from "./ws.js";
import { SseClient } from "./sse.js";
import { PollClient } from "./longpoll.js";
import { WebTransportClient } from "./webtransport.js";
import { WebRTCClient } from "./webrtc.js";
import { SocketIOClient, SocketIOPollingClient } from "./socketio.js";

export { Backoff, Client, ClientError } from "./client.js";

/** Transport name (as in sobranie_bench/clients/__init__.py TRANSPORTS) -> client class. */
export const TRANSPORTS = Object.freeze({
  ws: WsClient,
  "ws-websockets": WsWebsocketsClient,
  sse: SseClient,
  longpoll: PollClient,
  webtransport: WebTransportClient,
  socketio: SocketIOClient,
  "socketio-polling": SocketIOPollingClient,
  webrtc: WebRTCClient,
});

/** A client for `transport` at `url` (the server's base http:// URL) with `token`. */
export function createClient(transport, url, token, options) {
  const cls = TRANSPORTS[transport];
  if (!cls) throw new Error(`unknown transport ${transport}`);
  return new cls(url, token, options);
}
