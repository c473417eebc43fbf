// Long-polling (GET /poll): fetch in a loop carrying the cursor; an aborted poll resumes from
// it (a fresh session replays what the cursor has not seen).
import { ClientError, formatCursor, parseCursor, refused } from "./client.js";
import { OneWayClient } from "./http.js";

export const POLL_TIMEOUT_SECONDS = 25;

export class PollClient extends OneWayClient {
  static transport = "longpoll";

  async _open(resume) {
    this.conn = null;
    const run = (this._run = new AbortController());
    await this._poll(0, run);
    this._loop(run);
  }

  async _loop(run) {
    try {
      while (!run.signal.aborted) await this._poll(POLL_TIMEOUT_SECONDS, run);
    } catch (err) {
      if (run === this._run) this._ended(String(err));
    }
  }

  async _poll(timeout, run) {
    const params = new URLSearchParams({
      channels: [...this.channels].join(","), cursor: formatCursor(this.cursor),
      timeout: String(timeout), token: this.token,
    });
    if (this.conn) params.set("conn", this.conn);
    const resp = await fetch(`${this.url}/poll?${params}`, { signal: run.signal });
    if (resp.status !== 200) throw await refused(resp);
    const body = await resp.json();
    if (run.signal.aborted) throw new ClientError("aborted");
    this.conn = body.conn ?? this.conn;
    for (const env of body.messages) this._dispatch(env);
    this.mergeCursor(parseCursor(body.cursor));
  }

  _abort() {
    if (this._run) this._run.abort();
  }
}
