// WebRTC data channels (POST /webrtc/offer): the page offers two channels, "sobranie"
// (reliable, ordered: the envelopes) and "sobranie-unreliable", gathers its ICE candidates
// (no STUN: host candidates only), posts the offer with the token and applies the answer.
import { Client, ClientError, refused } from "./client.js";

const GATHER_MS = 2000;

export class WebRTCClient extends Client {
  static transport = "webrtc";

  async _open(resume) {
    const pc = (this._pc = new RTCPeerConnection({ iceServers: [] }));
    const reliable = pc.createDataChannel("sobranie");
    pc.createDataChannel("sobranie-unreliable", { ordered: false, maxRetransmits: 0 });
    const opened = new Promise((resolve, reject) => {
      reliable.onopen = resolve;
      pc.onconnectionstatechange = () => {
        if (["failed", "closed"].includes(pc.connectionState)) {
          reject(new ClientError(`WebRTC ${pc.connectionState}`));
          if (pc === this._pc) this._ended(`peer connection ${pc.connectionState}`);
        }
      };
    });
    reliable.onmessage = (event) => this._dispatch(JSON.parse(event.data));
    reliable.onclose = () => { if (pc === this._pc) this._ended("data channel closed"); };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const resp = await fetch(`${this.url}/webrtc/offer?${this.tokenQuery}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    if (resp.status !== 200) throw await refused(resp);
    await pc.setRemoteDescription(await resp.json());
    await opened;
    this._reliable = reliable;
    this._resubscribe();
  }

  _send(req) {
    if (!this._reliable || this._reliable.readyState !== "open") {
      throw new ClientError("not connected");
    }
    this._reliable.send(JSON.stringify(req));
  }

  _abort() {
    if (this._pc) this._pc.close();
    const pc = this._pc;
    queueMicrotask(() => { if (pc && pc === this._pc) this._ended("dropped"); });
  }
}

/** Resolves once ICE gathering is complete (or after GATHER_MS with what it has). */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}
