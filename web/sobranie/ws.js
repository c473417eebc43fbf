// WebSocket (GET /ws): one envelope per text frame; the token in the query string.
import { Client } from "./client.js";

export class WsClient extends Client {
  static transport = "ws";
  static path = "/ws";

  _open(resume) {
    return new Promise((resolve, reject) => {
      const url = `${this.url.replace(/^http/, "ws")}${this.constructor.path}?${this.tokenQuery}`;
      const ws = (this._ws = new WebSocket(url));
      ws.onopen = () => {
        resolve();
        this._resubscribe();
      };
      ws.onmessage = (event) => this._dispatch(JSON.parse(event.data));
      ws.onclose = (event) => {
        reject(new Error(`WebSocket refused or closed (${event.code})`));
        if (ws === this._ws) this._ended(`closed ${event.code} ${event.reason}`.trim());
      };
    });
  }

  _send(req) {
    if (!this._ws || this._ws.readyState !== WebSocket.OPEN) throw new Error("not connected");
    this._ws.send(JSON.stringify(req));
  }

  _abort() {
    if (this._ws) this._ws.close();
  }
}

/** The websockets-library server speaks the same contract on its own port. */
export class WsWebsocketsClient extends WsClient {
  static transport = "ws-websockets";
}
