// Ring time (docs/benchmarks.md, "Several nodes"): how long from a
// backend's `POST /v1/calls` to the `call_ring` on the callee's presence
// connection, and how long the POST itself takes. The callee's device is
// on `ringUrl`, the POST goes to `postUrl` (one node, or two of a
// cluster). Each call is declined at once, so that the next starts clean.
// Usage: node scripts/bench-ring.mjs <postUrl> <ringUrl> <adminToken> <tokensFile>
// (tokensFile: one `identity token` per line, presence tokens).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../clients/js/package.json', import.meta.url));
const WebSocket = require('ws');

const [postUrl, ringUrl, admin, tokensFile] = process.argv.slice(2);
const devices = readFileSync(tokensFile, 'utf8').trim().split('\n').map((l) => l.split(' '));

function connect(token) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(ringUrl.replace(/^http/, 'ws') + '/rtc');
    const waiting = [];
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      const i = waiting.findIndex((w) => w.type === m.type);
      if (i >= 0) waiting.splice(i, 1)[0].resolve(m);
    });
    ws.next = (type) => new Promise((res) => waiting.push({ type, resolve: res }));
    ws.on('open', async () => {
      ws.send(JSON.stringify({ type: 'connect', token, protocol: 1 }));
      await ws.next('connected');
      resolve(ws);
    });
    ws.on('error', reject);
  });
}

const ring = [];
const post = [];
for (const [identity, token] of devices) {
  const ws = await connect(token);
  const rung = ws.next('call_ring');
  const start = performance.now();
  const answer = await fetch(postUrl + '/v1/calls', {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ caller: `caller-${identity}`, callees: [identity] }),
  });
  post.push(performance.now() - start);
  if (answer.status !== 201) throw new Error(`POST /v1/calls: ${answer.status} ${await answer.text()}`);
  const m = await rung;
  ring.push(performance.now() - start);
  const ended = ws.next('call_state');
  ws.send(JSON.stringify({ type: 'call_reject', call_id: m.call_id }));
  await ended;
  ws.close();
}
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(1);
};
console.log(
  JSON.stringify({
    calls: ring.length,
    post_ms: { p50: pct(post, 50), p95: pct(post, 95) },
    ring_ms: { p50: pct(ring, 50), p95: pct(ring, 95), max: pct(ring, 100) },
  }),
);
