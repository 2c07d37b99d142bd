// A user-space lossy link for the browser tests (this kernel has no netem):
// a UDP forwarder that stands where the server's media address is
// advertised and relays every client's datagrams to the real server and
// back, dropping and delaying each datagram independently in each direction.
//
//   client ──► <listen>:<port> ── per-client socket <listen>:<ephemeral> ──► <target>:<port>
//   client ◄── <listen>:<port> ◄─ per-client socket ◄──────────────────────  <target>:<port>
//
// Like a NAT, each client source (address and port) gets its own socket
// towards the server, so the server sees one distinct source per client.
// Each datagram is dropped with probability `loss`; the others are
// delivered after a delay drawn uniformly from [delayMin, delayMax] ms, so
// datagrams reorder. The draws come from a seeded PRNG (one per direction).
//
// Run as a child process (the test starts it inside the server's network
// namespace with `ip netns exec`):
//   node lossy-forwarder.mjs '{"listen":"10.9.0.2","target":"10.9.0.1","ports":[40000],
//                              "loss":0.05,"delayMin":0,"delayMax":60,"seed":1}'
// It prints one line `ready {...}` once every port is bound, a line
// `stats {...}` (JSON: datagrams received, dropped, reordered per
// direction) for every line `stats` it reads on stdin, and a line
// `paths [...]` (per client path: datagrams by kind and direction, and a
// log of its DTLS handshake datagrams, dropped or not) for every line
// `paths`; it exits when stdin closes. Not a test file (node --test runs *.test.mjs only).

import dgram from 'node:dgram';
import readline from 'node:readline';

const opts = JSON.parse(process.argv[2] ?? '{}');
const { listen, target, ports } = opts;
const loss = Number(opts.loss ?? 0.05);
const delayMin = Number(opts.delayMin ?? 0);
const delayMax = Number(opts.delayMax ?? 60);
const seed = Number(opts.seed ?? 1) >>> 0;
if (!listen || !target || !Array.isArray(ports) || ports.length === 0) {
  console.error('usage: lossy-forwarder.mjs \'{"listen":ip,"target":ip,"ports":[...],"loss":p,"delayMin":ms,"delayMax":ms,"seed":n}\'');
  process.exit(2);
}

/** mulberry32: a small seeded PRNG, uniform in [0, 1). */
function prng(s) {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One direction of the link: its PRNG and what it did. */
function direction(name, s) {
  return {
    name,
    random: prng(s),
    received: 0,
    dropped: 0,
    delivered: 0,
    bytes: 0,
    /** Datagrams delivered after one that arrived later than them. */
    reordered: 0,
    nextSeq: 0,
    maxDeliveredSeq: -1,
    delaySum: 0,
  };
}
const up = direction('up', seed);
const down = direction('down', (seed ^ 0x9e3779b9) >>> 0);

const HANDSHAKE_TYPES = {
  0: 'HelloRequest', 1: 'ClientHello', 2: 'ServerHello', 3: 'HelloVerifyRequest', 11: 'Certificate',
  12: 'ServerKeyExchange', 13: 'CertificateRequest', 14: 'ServerHelloDone', 15: 'CertificateVerify',
  16: 'ClientKeyExchange', 20: 'Finished',
};

/**
 * What a datagram is (RFC 7983 demultiplexing), and for DTLS other than
 * application data the records in it, e.g. `ClientHello`, `CCS`, `e1:22`
 * (an encrypted handshake record, i.e. Finished), `Alert`.
 */
function classify(msg) {
  const b = msg[0];
  if (b <= 3) return { kind: 'stun' };
  if (b >= 128 && b <= 191) return { kind: 'rtp' };
  if (b < 20 || b > 63) return { kind: 'other' };
  const recs = [];
  for (let o = 0; o + 13 <= msg.length; ) {
    const ct = msg[o];
    const epoch = msg.readUInt16BE(o + 3);
    const len = msg.readUInt16BE(o + 11);
    if (ct === 23) recs.push('AppData');
    else if (ct === 20) recs.push('CCS');
    else if (ct === 21) recs.push(epoch === 0 ? 'Alert' : `e${epoch}:Alert`);
    else if (ct === 22 && epoch === 0 && o + 13 < msg.length) {
      const hs = msg[o + 13];
      const fragOff = o + 13 + 6 <= msg.length ? msg.readUIntBE(o + 13 + 6, 3) : 0;
      recs.push(`${HANDSHAKE_TYPES[hs] ?? `hs${hs}`}${fragOff ? `@${fragOff}` : ''}`);
    } else recs.push(`e${epoch}:${ct}`);
    o += 13 + len;
  }
  return { kind: recs.every((r) => r === 'AppData') ? 'dtls-data' : 'dtls', recs };
}

/** At most this many DTLS handshake datagrams are noted per client path. */
const DTLS_LOG_MAX = 200;

/** In-flight timers, so that nothing outlives an exit. */
let inFlight = 0;

/**
 * Passes `msg` through direction `dir`: dropped, or sent by `send` after the delay.
 * @param {ReturnType<typeof direction>} dir
 * @param {Buffer} msg
 * @param {() => void} send
 */
function pass(dir, msg, send, session) {
  dir.received++;
  dir.bytes += msg.length;
  const seq = dir.nextSeq++;
  const dropped = dir.random() < loss;
  const c = classify(msg);
  const counts = (session.counts[`${dir.name} ${c.kind}`] ??= { received: 0, dropped: 0 });
  counts.received++;
  if (dropped) counts.dropped++;
  if (c.kind === 'dtls' && session.dtls.length < DTLS_LOG_MAX) {
    session.dtls.push({ t: Date.now() - session.created, dir: dir.name, dropped, recs: c.recs.join(',') });
  }
  if (dropped) {
    dir.dropped++;
    return;
  }
  const delay = delayMin + dir.random() * (delayMax - delayMin);
  dir.delaySum += delay;
  inFlight++;
  setTimeout(() => {
    inFlight--;
    if (seq < dir.maxDeliveredSeq) dir.reordered++;
    else dir.maxDeliveredSeq = seq;
    dir.delivered++;
    send();
  }, delay);
}

/** Per client: the socket towards the server. Key: `<port>|<address>:<port>`. */
const sessions = new Map();
const fronts = [];

function onFrontMessage(front, port, msg, rinfo) {
  const key = `${port}|${rinfo.address}:${rinfo.port}`;
  let session = sessions.get(key);
  if (!session) {
    const back = dgram.createSocket('udp4');
    session = { key, back, ready: false, queue: [], created: Date.now(), counts: {}, dtls: [] };
    sessions.set(key, session);
    back.on('error', (err) => console.error(`forwarder: back socket for ${key}: ${err.message}`));
    back.on('message', (reply) => {
      pass(down, reply, () => front.send(reply, rinfo.port, rinfo.address), session);
    });
    back.bind(0, listen, () => {
      back.connect(port, target, () => {
        session.ready = true;
        for (const m of session.queue.splice(0)) back.send(m);
      });
    });
  }
  const s = session;
  pass(up, msg, () => {
    if (s.ready) s.back.send(msg);
    else s.queue.push(msg);
  }, s);
}

/** Every client path: when it began, what went each way, and its DTLS handshake datagrams. */
function paths() {
  return [...sessions.values()].map((s) => ({ key: s.key, created: s.created, counts: s.counts, dtls: s.dtls }));
}

function snapshot() {
  const d = (dir) => ({
    received: dir.received,
    dropped: dir.dropped,
    delivered: dir.delivered,
    bytes: dir.bytes,
    reordered: dir.reordered,
    lossRate: dir.received ? dir.dropped / dir.received : 0,
    meanDelayMs: dir.delivered ? dir.delaySum / (dir.received - dir.dropped) : 0,
  });
  return { up: d(up), down: d(down), clients: sessions.size, inFlight };
}

await Promise.all(
  ports.map(
    (port) =>
      new Promise((resolve, reject) => {
        const front = dgram.createSocket('udp4');
        front.once('error', reject);
        front.on('message', (msg, rinfo) => onFrontMessage(front, port, msg, rinfo));
        front.bind(port, listen, () => {
          front.removeListener('error', reject);
          front.on('error', (err) => console.error(`forwarder: ${listen}:${port}: ${err.message}`));
          fronts.push(front);
          resolve();
        });
      }),
  ),
);
process.stdout.write(`ready ${JSON.stringify({ listen, target, ports, loss, delayMin, delayMax, seed })}\n`);

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'stats') process.stdout.write(`stats ${JSON.stringify(snapshot())}\n`);
  if (line.trim() === 'paths') process.stdout.write(`paths ${JSON.stringify(paths())}\n`);
});
rl.on('close', () => process.exit(0));
