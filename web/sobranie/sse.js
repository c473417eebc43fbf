// Server-Sent Events (GET /sse): EventSource reconnects by itself after a network error and
// sends Last-Event-ID (the stream's cursor); drop() closes it for good, and resume() opens a
// new one with ?last_event_id= carrying the cursor this client kept (as does connect() when a
// cursor was set before it).
import { formatCursor, parseCursor } from "./client.js";
import { OneWayClient } from "./http.js";

/** The SSE event of the contract's error envelope (wire.SSE_FAULT_EVENT): EventSource fires
 * its own "error" for connection failures, so the contract's is named otherwise. */
export const SSE_ERROR_EVENT = "fault";
const EVENTS = ["hello", "ack", "message", "echo", "presence"];

export class SseClient extends OneWayClient {
  static transport = "sse";

  _open(resume) {
    return new Promise((resolve, reject) => {
      let url = `${this.url}/sse?channels=${this.channelQuery}&${this.tokenQuery}`;
      if (Object.keys(this.cursor).length) {
        url += `&last_event_id=${encodeURIComponent(formatCursor(this.cursor))}`;
      }
      const es = (this._es = new EventSource(url));
      const onEvent = (event) => {
        if (es !== this._es) return;
        if (event.lastEventId) this.mergeCursor(parseCursor(event.lastEventId));
        const env = JSON.parse(event.data);
        if (env.type === "hello") resolve();
        this._dispatch(env);
      };
      for (const name of EVENTS) es.addEventListener(name, onEvent);
      if (SSE_ERROR_EVENT !== "error") es.addEventListener(SSE_ERROR_EVENT, onEvent);
      es.addEventListener("error", (event) => {
        if (event.data !== undefined) { onEvent(event); return; }  // a server before the rename
        if (es !== this._es) return;
        if (es.readyState === EventSource.CLOSED) {  // refused (HTTP error): not retried by it
          reject(new Error("EventSource refused"));
          this._ended("stream refused");
        } else {
          this._setState("reconnecting", "EventSource reconnects with Last-Event-ID");
        }
      });
    });
  }

  _abort() {
    if (this._es) {
      this._es.close();
      const es = this._es;
      queueMicrotask(() => { if (es === this._es) this._ended("dropped"); });
    }
  }
}
