// Socket.IO (/socket.io/): the ops are events whose replies are Socket.IO acks; the server's
// envelopes arrive as events. socket.io-client's own reconnection is off: this client's
// backoff reconnects and resumes by subscribing with `since`, as every other transport does.
import { io } from "../node_modules/socket.io-client/dist/socket.io.esm.min.js";
import { Client, ClientError } from "./client.js";

const SERVER_EVENTS = ["hello", "message", "presence", "error"];

export class SocketIOClient extends Client {
  static transport = "socketio";
  static engineTransports = ["websocket"];

  _open(resume) {
    return new Promise((resolve, reject) => {
      const socket = (this._socket = io(this.url, {
        transports: this.constructor.engineTransports, reconnection: false, forceNew: true,
        auth: { token: this.token }, timeout: this.timeout,
      }));
      for (const name of SERVER_EVENTS) socket.on(name, (env) => this._dispatch(env));
      socket.on("connect", () => { resolve(); this._resubscribe(); });
      socket.on("connect_error", (err) => {
        reject(new ClientError(`Socket.IO refused: ${err.message}`));
        if (socket === this._socket) this._ended(`connect_error ${err.message}`);
      });
      socket.on("disconnect", (reason) => {
        if (socket === this._socket) this._ended(reason);
      });
    });
  }

  _send(req) {
    const socket = this._socket;
    if (!socket || !socket.connected) throw new ClientError("not connected");
    const { op, ...body } = req;
    socket.emit(op, body, (reply) => {
      if (reply && typeof reply === "object") this._dispatch({ ...reply, ref: reply.ref ?? req.ref });
    });
  }

  _abort() {
    if (this._socket) this._socket.disconnect();
  }
}

/** Socket.IO over engine.io's HTTP long-polling only. */
export class SocketIOPollingClient extends SocketIOClient {
  static transport = "socketio-polling";
  static engineTransports = ["polling"];
}
