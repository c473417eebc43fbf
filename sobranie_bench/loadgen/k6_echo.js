// The contract's WebSocket echo as k6 virtual users, for sobranie_bench.loadgen.
//
// One VU per connection (its own token), one iteration each: it connects, sends `echo` (a
// 48-byte pad and the send time) every SOBRANIE_GAP_MS milliseconds on k6's own timer (open
// loop: it never waits for a reply), parses every reply and adds its round trip to the
// `echo_rtt` trend; after SOBRANIE_SECONDS it closes. TLS trusts SSL_CERT_FILE.
import ws from 'k6/ws';
import { Trend } from 'k6/metrics';

const URL = __ENV.SOBRANIE_URL.replace(/^http/, 'ws');
const TOKENS = open(__ENV.SOBRANIE_TOKENS).split('\n').filter((t) => t);
const GAP_MS = Number(__ENV.SOBRANIE_GAP_MS);
const SECONDS = Number(__ENV.SOBRANIE_SECONDS);
const PAD = __ENV.SOBRANIE_PAD;
const rtt = new Trend('echo_rtt', true);

export const options = {
  scenarios: {
    echo: { executor: 'per-vu-iterations', vus: TOKENS.length, iterations: 1,
            maxDuration: `${Math.ceil(SECONDS) + 60}s` },
  },
  summaryTrendStats: ['med', 'p(99)', 'count'],
};

export default function () {
  ws.connect(`${URL}/ws?token=${TOKENS[__VU - 1]}`, {}, (socket) => {
    socket.on('open', () => {
      socket.setInterval(() => {
        socket.send(JSON.stringify({ op: 'echo', data: { t: Date.now(), pad: PAD } }));
      }, GAP_MS);
      socket.setTimeout(() => socket.close(), SECONDS * 1000);
    });
    socket.on('message', (text) => {
      const env = JSON.parse(text);
      if (env.type === 'echo') rtt.add(Date.now() - env.data.t);
    });
  });
}

export function handleSummary(data) {
  return { [__ENV.SOBRANIE_SUMMARY]: JSON.stringify(data) };
}
