// What SSE and long-polling share: the server speaks on a stream, the client by POST
// (/publish answers with the ack; /echo, /subscribe, /unsubscribe answer on the stream).
import { Client, ClientError } from "./client.js";

export class OneWayClient extends Client {
  async _send(req) {
    const { op, ...body } = req;
    if (op !== "publish") {
      if (!this.conn) throw new ClientError("not connected");
      body.conn = this.conn;
    }
    const resp = await fetch(`${this.url}/${op}`, {
      method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.token}` },
    });
    if (resp.status === 202) return;
    const text = await resp.text();
    let env;
    try { env = JSON.parse(text); } catch {
      throw new ClientError(`POST /${op}: HTTP ${resp.status}: ${text.slice(0, 200)}`);
    }
    if (env.type === "error") env.ref = req.ref;  // the answer to this request, whatever its ref
    this._dispatch(env);
  }

  get channelQuery() {
    return [...this.channels].map(encodeURIComponent).join(",");
  }
}
