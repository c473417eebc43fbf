// WebTransport (CONNECT /wt over HTTP/3): newline-delimited envelopes on one bidirectional
// stream. The server's certificate is self-signed: the page pins its SHA-256, fetched from
// /wt-cert-hash on the same port number over plain HTTP, with serverCertificateHashes.
import { ClientError } from "./client.js";
import { Client } from "./client.js";

export class WebTransportClient extends Client {
  static transport = "webtransport";

  /** `url` is the plain-HTTP side (http://host:port); the session goes to https://host:port. */
  async _open(resume) {
    const hash = await this._certHash();
    const url = `${this.url.replace(/^http:/, "https:")}/wt?${this.tokenQuery}`;
    const wt = (this._wt = new WebTransport(url, {
      serverCertificateHashes: [{ algorithm: "sha-256", value: hash }],
    }));
    wt.closed.then(() => "closed", (err) => String(err)).then((reason) => {
      if (wt === this._wt) this._ended(reason);
    });
    try {
      await wt.ready;
    } catch (err) {
      throw new ClientError(`WebTransport refused: ${err}`);
    }
    const stream = await wt.createBidirectionalStream();
    this._writer = stream.writable.getWriter();
    this._encoder = new TextEncoder();
    this._read(stream.readable, wt);
    // The server learns of the stream from its first byte: an empty line (skipped) lets it
    // start with the hello before we have anything to say.
    await this._writer.write(this._encoder.encode("\n"));
    this._resubscribe();
  }

  async _read(readable, wt) {
    const reader = readable.pipeThrough(new TextDecoderStream()).getReader();
    let partial = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        partial += value;
        let end;
        while ((end = partial.indexOf("\n")) >= 0) {
          const line = partial.slice(0, end);
          partial = partial.slice(end + 1);
          if (line.trim()) this._dispatch(JSON.parse(line));
        }
      }
    } catch (err) {
      // the session ended; wt.closed reports it
    }
    if (wt === this._wt) wt.close();
  }

  async _certHash() {
    if (!this._hash) {
      const resp = await fetch(`${this.url}/wt-cert-hash`);
      if (resp.status !== 200) throw new ClientError(`/wt-cert-hash: HTTP ${resp.status}`);
      const { value } = await resp.json();
      this._hash = Uint8Array.from(value.match(/../g), (byte) => parseInt(byte, 16));
    }
    return this._hash;
  }

  _send(req) {
    if (!this._writer) throw new ClientError("not connected");
    return this._writer.write(this._encoder.encode(`${JSON.stringify(req)}\n`));
  }

  _abort() {
    if (this._wt) {
      try { this._wt.close(); } catch { /* already closed */ }
    }
  }
}
