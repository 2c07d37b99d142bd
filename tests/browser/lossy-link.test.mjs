// Calls over a lossy link: 7 two-party calls between headless Chromiums,
// each client's media path to callgate losing 5% of datagrams and delaying
// the rest by 30 ± 30 ms (uniform 0–60 ms, so they reorder), independently
// in each direction. Every call must connect (each page decodes video from
// the other within 20 s of the pages opening) and stay connected (for the
// next 15 s both pages keep decoding new frames from each other, and
// neither sees the other leave nor is disconnected itself). Peer-to-peer
// Chromium calls connect 7 of 7 on such a link; callgate must do as well.
//
// The link: this kernel has no netem, so lossy-forwarder.mjs, a UDP
// forwarder in user space, stands at the media address the server
// advertises (--node-ip) on the server's worker ports, and relays each
// client to the server (bound elsewhere) from a socket of its own, like a
// NAT, dropping and delaying every datagram (seeded PRNG). ICE-TCP cannot
// go around it: the advertised ICE-TCP candidate is on the forwarder's
// address, where nothing listens on TCP; the test asserts that every
// transport's selected pair is UDP to the forwarder. TURN is off. The
// WebSocket goes straight to the server (signaling is not under test).
//
// Topology (network namespaces and veth pairs of this test's own, see
// netns.mjs; every address is one made here):
//
//   <p>-a (alices' Chromium) a0 10.19.1.2/24 ── s-a0 10.19.1.1/24 ┐ <p>-srv: callgate on 10.19.0.1 (lo),
//   <p>-b (bobs' Chromium)   b0 10.19.3.2/24 ── s-b0 10.19.3.1/24 ┘        forwarder on 10.19.0.2 (lo)
//
// One Chromium per side, each in its own namespace, so that the two ends of
// a call are separate browsers on separate hosts, as in a real call (and
// their host candidates differ); each call gets a fresh browser context on
// each side. The forwarder distinguishes clients by source address and
// port, so calls running at the same time each have their own lossy paths.
//
// Prints per call the connect time, and the forwarder's measured loss and
// reordering per direction; asserts the loss it applied was 3–7% in each
// direction, so a pass proves the link was lossy.
//
// Run from the repo root (as root): node --test tests/browser/lossy-link.test.mjs
// (scripts/test.sh runs it inside a private network namespace).
// Env: TEST_CALLGATE_BIN, CHROMIUM, TEST_SERVER_LOG (see harness.mjs),
//      TEST_LOSSY_SEED (the forwarder's PRNG seed, default 1).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

import {
  REPO_ROOT, runCallgate, readyLine, stopServer, selectedCandidatePairs, requireCallgateBinary
} from './harness.mjs';
import { NetLab, chromiumIn, namespacesUnavailable, serverIn } from './netns.mjs';

const SERVER_IP = '10.19.0.1';
const FORWARDER_IP = '10.19.0.2';
const HTTP_PORT = 7880; // alone in its namespace
const ORIGIN = `http://${SERVER_IP}:${HTTP_PORT}`;
/** The server's media ports are UDP_PORT .. UDP_PORT + WORKERS - 1; the forwarder takes the same on its address. */
const UDP_PORT = 40000;
const WORKERS = 2;

const CALLS = 7;
/** Calls in progress at once (this machine may have 2 cores; each call is 2 pages encoding and decoding). */
const CALLS_AT_ONCE = 2;
/** The link, each direction of each client's path. */
const LOSS = 0.05;
const DELAY_MIN_MS = 0;
const DELAY_MAX_MS = 60;
/** A call connects when each page has decoded video from the other within this long of the pages opening. */
const CONNECT_LIMIT_MS = 20_000;
/** ...and stays connected when, for this long after, both keep decoding new frames and nobody leaves. */
const STAY_MS = 15_000;
/** Decoded frames must grow on both sides between every two samples this far apart. */
const STAY_SAMPLE_MS = 2_500;
/** The loss the forwarder must have applied in each direction for the run to count as lossy. */
const LOSS_MEASURED_MIN = 0.03;
const LOSS_MEASURED_MAX = 0.07;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts lossy-forwarder.mjs inside namespace `ns`; resolves once it is ready.
 * `stats()` asks it for its counters; `stop()` ends it.
 */
async function startForwarder(ns, opts) {
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, process.execPath, path.join(REPO_ROOT, 'tests/browser/lossy-forwarder.mjs'), JSON.stringify(opts)],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (c) => {
    stderr = (stderr + c).slice(-4000);
  });
  /** @type {Record<string, ((json: string) => void)[]>} */
  const waiting = { stats: [], paths: [] };
  const lines = readline.createInterface({ input: child.stdout });
  let readyInfo = null;
  let onReady;
  const ready = new Promise((resolve) => (onReady = resolve));
  lines.on('line', (line) => {
    if (line.startsWith('ready ')) {
      readyInfo = JSON.parse(line.slice(6));
      onReady(readyInfo);
    } else {
      const [word] = line.split(' ', 1);
      waiting[word]?.shift()?.(line.slice(word.length + 1));
    }
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const info = await Promise.race([
    ready,
    exited.then((e) => {
      throw new Error(`forwarder exited before it was ready (${JSON.stringify(e)}): ${stderr}`);
    }),
    sleep(10_000).then(() => {
      throw new Error(`forwarder not ready after 10 s: ${stderr}`);
    }),
  ]);
  return {
    info,
    get stderr() {
      return stderr;
    },
    /**
     * Asks for `stats` (per direction) or `paths` (per client path).
     * @param {'stats'|'paths'} what
     * @returns {Promise<any>}
     */
    ask(what) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`forwarder gave no ${what}: ${stderr}`)), 5000);
        waiting[what].push((json) => {
          clearTimeout(timer);
          resolve(JSON.parse(json));
        });
        child.stdin.write(`${what}\n`);
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin.end();
      const timer = sleep(3000).then(() => 'timeout');
      if ((await Promise.race([exited, timer])) === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}

/** Frames this page decoded from `identity`'s video (0 when none yet); null when the page has no stats. */
async function framesFrom(page, identity) {
  const stats = await page.evaluate(() => (typeof window.callgateStats === 'function' ? window.callgateStats() : null));
  if (!stats) return null;
  return stats.remote
    .filter((r) => r.kind === 'video' && r.identity === identity)
    .reduce((n, r) => Math.max(n, r.framesDecoded), 0);
}

/**
 * Installed in every page before its scripts run: notes when each
 * RTCPeerConnection's ICE and its DTLS (connectionState) reach each state.
 */
function recordPeerConnections() {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      const rec = { pc: this, created: Date.now(), ice: {}, conn: {} };
      window.__pcs.push(rec);
      this.addEventListener('iceconnectionstatechange', () => {
        rec.ice[this.iceConnectionState] ??= Date.now();
        if (this.iceConnectionState === 'connected' && !rec.local) {
          this.getStats().then((report) => {
            report.forEach((s) => {
              if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
              const local = report.get(report.get(s.selectedCandidatePairId)?.localCandidateId);
              if (local) rec.local = `${local.address ?? local.ip}:${local.port}`;
            });
          }, () => {});
        }
      });
      this.addEventListener('connectionstatechange', () => {
        rec.conn[this.connectionState] ??= Date.now();
      });
    }
  };
}

/**
 * Milliseconds after `openedAt` at which the page joined (signaling), and each
 * transport's ICE and DTLS first connected; null where it did not.
 */
function connectSteps(page, openedAt) {
  return page.evaluate((t0) => {
    const rel = (at) => (at == null ? null : at - t0);
    const room = window.callgate.room;
    const joined = window.callgate.events.find((e) => e.name === 'connectionStateChanged' && e.state === 'connected');
    const out = { joined: rel(joined?.at) };
    for (const [name, pc] of [['pub', room.publisherPc], ['sub', room.subscriberPc]]) {
      const rec = window.__pcs.find((r) => r.pc === pc);
      out[name] = rec ? { ice: rel(rec.ice.connected ?? rec.ice.completed), dtls: rel(rec.conn.connected) } : null;
    }
    return out;
  }, openedAt);
}

/**
 * What one page sends and receives of video at one instant, for a failure
 * message: its publisher's outbound streams (one per simulcast layer) and
 * its subscriber's inbound video, each cut to the counters that tell an
 * encoder that stopped from a network that lost a keyframe from a decoder
 * waiting for one.
 */
function videoSnapshot(page, openedAt) {
  return page
    .evaluate(async (t0) => {
      const room = window.callgate.room;
      const pick = (s, keys) => Object.fromEntries(keys.map((k) => [k, s[k] ?? null]));
      const out = [];
      const inbound = [];
      const pub = room?.publisherPc;
      if (pub && pub.connectionState !== 'closed') {
        (await pub.getStats()).forEach((s) => {
          if (s.type === 'outbound-rtp' && s.kind === 'video') {
            out.push(pick(s, ['rid', 'active', 'framesEncoded', 'framesSent', 'keyFramesEncoded', 'frameHeight',
              'targetBitrate', 'qualityLimitationReason', 'pliCount', 'nackCount', 'retransmittedPacketsSent']));
          }
        });
      }
      const sub = room?.subscriberPc;
      if (sub && sub.connectionState !== 'closed') {
        (await sub.getStats()).forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') {
            inbound.push(pick(s, ['framesReceived', 'framesDecoded', 'keyFramesDecoded', 'framesDropped', 'frameHeight',
              'packetsReceived', 'packetsLost', 'nackCount', 'pliCount', 'freezeCount', 'totalFreezesDuration']));
          }
        });
      }
      out.sort((a, b) => String(a.rid).localeCompare(String(b.rid)));
      return { at: Date.now() - t0, out, in: inbound };
    }, openedAt)
    .catch((e) => ({ error: e.message }));
}

/** The page's own state, for a failure message. */
function pageState(page, openedAt) {
  return page
    .evaluate(async (t0) => ({
      peerConnections: window.__pcs.map((r) => ({
        role: r.pc === window.callgate.room.publisherPc ? 'publisher' : r.pc === window.callgate.room.subscriberPc ? 'subscriber' : 'earlier',
        local: r.local ?? null,
        created: r.created - t0,
        ice: Object.fromEntries(Object.entries(r.ice).map(([k, v]) => [k, v - t0])),
        conn: Object.fromEntries(Object.entries(r.conn).map(([k, v]) => [k, v - t0])),
      })),
      conn: document.getElementById('conn')?.textContent,
      status: document.getElementById('status')?.textContent,
      stats: typeof window.callgateStats === 'function' ? await window.callgateStats() : null,
      events: (window.callgate?.events ?? []).map((e) => ({ ...e, at: e.at - t0 })),
    }), openedAt)
    .catch((e) => ({ error: e.message }));
}

/** Runs `fn` over `items`, at most `limit` at a time; resolves with the results in order. */
async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const run = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, run));
  return results;
}

/**
 * One call: alice-<i> in `browsers.a`, bob-<i> in `browsers.b`, a room of their own.
 * Never throws; the result says what happened.
 */
async function oneCall(i, browsers) {
  const room = `lossy-${i}-${randomBytes(4).toString('hex')}`;
  const who = { alice: `alice-${i}`, bob: `bob-${i}` };
  const result = {
    call: i,
    room,
    connectMs: null,
    connected: false,
    stayed: false,
    why: null,
    frames: { alice: [], bob: [] },
    /** Each side's videoSnapshot at every stay sample. */
    video: { alice: [], bob: [] },
    pairs: null,
    steps: null,
    events: null,
    state: null,
    logs: { alice: [], bob: [] },
  };
  /** @type {import('playwright-core').BrowserContext[]} */
  const contexts = [];
  try {
    const tokens = {};
    for (const side of ['alice', 'bob']) {
      tokens[side] = (await runCallgate(['token', '--dev', '--room', room, '--identity', who[side]])).trim();
    }
    const pages = {};
    for (const [side, browser] of [['alice', browsers.a], ['bob', browsers.b]]) {
      const context = await browser.newContext();
      contexts.push(context);
      await context.addInitScript(recordPeerConnections);
      const page = await context.newPage();
      const log = result.logs[side];
      page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
      page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
      pages[side] = page;
    }
    const other = { alice: 'bob', bob: 'alice' };

    // --- connect: each page decodes video from the other
    const openedAt = Date.now();
    await Promise.all(
      ['alice', 'bob'].map((side) => pages[side].goto(`${ORIGIN}/?token=${encodeURIComponent(tokens[side])}`)),
    );
    for (;;) {
      const f = {};
      for (const side of ['alice', 'bob']) f[side] = await framesFrom(pages[side], who[other[side]]);
      if (f.alice > 0 && f.bob > 0) {
        result.connectMs = Date.now() - openedAt;
        result.connected = true;
        result.frames.alice.push(f.alice);
        result.frames.bob.push(f.bob);
        break;
      }
      if (Date.now() - openedAt >= CONNECT_LIMIT_MS) {
        result.why = `no video both ways within ${CONNECT_LIMIT_MS} ms (frames decoded: alice from bob ${f.alice}, bob from alice ${f.bob})`;
        break;
      }
      await sleep(250);
    }

    // --- stay connected: frames keep coming both ways, nobody leaves
    if (result.connected) {
      const stayFrom = Date.now();
      let stalled = null;
      for (let n = 1; n * STAY_SAMPLE_MS <= STAY_MS; n++) {
        await sleep(Math.max(0, stayFrom + n * STAY_SAMPLE_MS - Date.now()));
        for (const side of ['alice', 'bob']) {
          const frames = (await framesFrom(pages[side], who[other[side]])) ?? 0;
          const series = result.frames[side];
          if (frames <= series[series.length - 1] && stalled === null) {
            stalled = `${side} decoded no new frame from ${other[side]} between ${(n - 1) * STAY_SAMPLE_MS} and ${n * STAY_SAMPLE_MS} ms after connecting (${frames})`;
          }
          series.push(frames);
          result.video[side].push(await videoSnapshot(pages[side], openedAt));
        }
      }
      result.pairs = { alice: await selectedCandidatePairs(pages.alice), bob: await selectedCandidatePairs(pages.bob) };
      result.steps = { alice: await connectSteps(pages.alice, openedAt), bob: await connectSteps(pages.bob, openedAt) };
      result.events = {};
      const gone = [];
      for (const side of ['alice', 'bob']) {
        const events = (await pages[side].evaluate(() => window.callgate.events)).map((e) => ({ ...e, at: e.at - openedAt }));
        result.events[side] = events.filter((e) => e.name !== 'connectionStateChanged' || e.state !== 'connected');
        for (const e of events) {
          if (e.name === 'participantLeft') gone.push(`${side} saw ${e.identity} leave (${e.reason}) at +${e.at} ms`);
          if (e.name === 'disconnected') gone.push(`${side} was disconnected (${e.reason}) at +${e.at} ms`);
        }
      }
      if (gone.length) result.why = gone.join('; ');
      else if (stalled) result.why = stalled;
      else result.stayed = true;
    }
    if (!result.stayed) {
      result.state = { alice: await pageState(pages.alice, openedAt), bob: await pageState(pages.bob, openedAt) };
      result.openedAt = openedAt;
    }
  } catch (err) {
    result.why = `error: ${err.message}`;
  } finally {
    for (const context of contexts) await context.close().catch(() => {});
  }
  return result;
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

test(`${CALLS} of ${CALLS} calls connect and stay connected through callgate at 5% loss and 30 ± 30 ms jitter on each client's link`, { timeout: 240_000 }, async (t) => {
  requireCallgateBinary();
  const unavailable = await namespacesUnavailable();
  assert.equal(unavailable, null, `this test makes network namespaces (root, ip netns): ${unavailable}`);

  const seed = Number(process.env.TEST_LOSSY_SEED ?? 1);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'callgate-lossy-'));
  const lab = new NetLab(`cgls${process.pid}`);
  let server = null;
  let forwarder = null;
  /** @type {import('playwright-core').Browser[]} */
  const browsers = [];
  const killOnExit = () => {
    server?.child.kill('SIGKILL');
    forwarder?.kill();
  };
  process.once('exit', killOnExit);

  try {
    // --- the networks
    const srv = await lab.namespace('srv');
    const nsA = await lab.namespace('a');
    const nsB = await lab.namespace('b');
    await lab.in(srv, ['addr', 'add', `${SERVER_IP}/32`, 'dev', 'lo']);
    await lab.in(srv, ['addr', 'add', `${FORWARDER_IP}/32`, 'dev', 'lo']);
    await lab.veth({ ns: nsA, dev: 'a0', addr: '10.19.1.2/24' }, { ns: srv, dev: 's-a0', addr: '10.19.1.1/24' });
    await lab.in(nsA, ['route', 'add', 'default', 'via', '10.19.1.1', 'dev', 'a0']);
    await lab.veth({ ns: nsB, dev: 'b0', addr: '10.19.3.2/24' }, { ns: srv, dev: 's-b0', addr: '10.19.3.1/24' });
    await lab.in(nsB, ['route', 'add', 'default', 'via', '10.19.3.1', 'dev', 'b0']);

    // --- the lossy link, at the address the server advertises for media
    const ports = Array.from({ length: WORKERS }, (_, k) => UDP_PORT + k);
    forwarder = await startForwarder(srv, {
      listen: FORWARDER_IP, target: SERVER_IP, ports, loss: LOSS, delayMin: DELAY_MIN_MS, delayMax: DELAY_MAX_MS, seed,
    });
    t.diagnostic(`forwarder ready: ${JSON.stringify(forwarder.info)}`);

    // --- the server: media bound on 10.19.0.1, advertised on the forwarder's 10.19.0.2
    server = serverIn(srv, {
      bindIp: SERVER_IP,
      nodeIp: FORWARDER_IP,
      httpPort: HTTP_PORT,
      udpPort: UDP_PORT,
      dataDir: path.join(tmp, 'data'),
      args: ['--workers', String(WORKERS)],
    });
    t.diagnostic(await readyLine(server));

    // --- one Chromium per side, each in its namespace
    const launched = {};
    for (const [side, ns] of [['a', nsA], ['b', nsB]]) {
      const browser = await chromiumIn(lab, ns, tmp, ORIGIN);
      browsers.push(browser);
      launched[side] = browser;
    }

    // --- the calls
    const started = Date.now();
    const results = await pool(
      Array.from({ length: CALLS }, (_, i) => i + 1),
      CALLS_AT_ONCE,
      (i) => oneCall(i, launched),
    );
    const link = await forwarder.ask('stats');
    const took = Date.now() - started;

    for (const r of results) {
      const line = `call ${r.call}: ${r.connected ? `connected in ${r.connectMs} ms` : 'did not connect'}, ${
        r.stayed ? 'stayed connected' : `FAILED: ${r.why}`
      }; frames decoded alice←bob ${JSON.stringify(r.frames.alice)} bob←alice ${JSON.stringify(r.frames.bob)}`;
      console.log(line);
      if (r.steps) {
        const f = (x) => (x ? `ice +${x.ice} dtls +${x.dtls}` : 'none');
        console.log(
          `  call ${r.call} steps (ms after the pages opened): ${['alice', 'bob']
            .map((side) => `${side} joined +${r.steps[side].joined}, publisher ${f(r.steps[side].pub)}, subscriber ${f(r.steps[side].sub)}`)
            .join('; ')}`,
        );
      }
      t.diagnostic(`call ${r.call}: ${JSON.stringify({ pairs: r.pairs, events: r.events })}`);
    }
    const connectTimes = results.filter((r) => r.connected).map((r) => r.connectMs).sort((x, y) => x - y);
    const connected = results.filter((r) => r.connected).length;
    const stayed = results.filter((r) => r.stayed).length;
    const pct = (x) => `${(100 * x).toFixed(2)}%`;
    console.log(
      `lossy link: ${connected}/${CALLS} connected, ${stayed}/${CALLS} stayed connected; connect time p50 ${percentile(connectTimes, 50)} ms, max ${connectTimes[connectTimes.length - 1] ?? null} ms; ${took} ms for all calls (${CALLS_AT_ONCE} at a time)`,
    );
    for (const dir of ['up', 'down']) {
      const d = link[dir];
      console.log(
        `forwarder ${dir === 'up' ? 'client→server' : 'server→client'}: ${d.received} datagrams, ${d.dropped} dropped (${pct(d.lossRate)}), ${d.reordered} delivered out of order (${pct(d.reordered / Math.max(1, d.delivered))}), mean delay ${d.meanDelayMs.toFixed(1)} ms`,
      );
    }
    console.log(`forwarder: ${link.clients} client paths (seed ${seed})`);

    const failed = results.filter((r) => !r.stayed);
    for (const r of failed) {
      console.error(`--- call ${r.call} (${r.room}): ${r.why}`);
      console.error(`state: ${JSON.stringify(r.state)}`);
      for (const side of ['alice', 'bob']) console.error(`${side}'s video at each sample: ${JSON.stringify(r.video[side])}`);
      for (const side of ['alice', 'bob']) console.error(`${side}'s console:\n${r.logs[side].slice(-30).join('\n')}`);
    }
    if (failed.length) {
      // The forwarder's view of each failed call's paths: what went each way, and the DTLS handshakes.
      const allPaths = await forwarder.ask('paths');
      for (const r of failed) {
        for (const side of ['alice', 'bob']) {
          for (const pc of r.state?.[side]?.peerConnections ?? []) {
            if (!pc.local) continue;
            for (const p of allPaths.filter((x) => x.key.endsWith(`|${pc.local}`))) {
              console.error(`--- call ${r.call}: ${side}'s ${pc.role} transport, path ${p.key} (began +${p.created - r.openedAt} ms): ${JSON.stringify(p.counts)}`);
              for (const d of p.dtls) {
                console.error(`  +${p.created - r.openedAt + d.t} ms ${d.dir === 'up' ? 'client→server' : 'server→client'} ${d.dropped ? 'DROPPED ' : ''}${d.recs}`);
              }
            }
          }
        }
      }
    }
    if (failed.length && server) console.error(`--- callgate log (tail):\n${server.log.slice(-8000)}`);

    // The link really was lossy and jittery, in both directions.
    for (const dir of ['up', 'down']) {
      const d = link[dir];
      assert.ok(d.received > 1000, `the forwarder carried media ${dir} (${d.received} datagrams)`);
      assert.ok(
        d.lossRate >= LOSS_MEASURED_MIN && d.lossRate <= LOSS_MEASURED_MAX,
        `the forwarder dropped ${pct(LOSS_MEASURED_MIN)}–${pct(LOSS_MEASURED_MAX)} of datagrams ${dir}: ${pct(d.lossRate)}`,
      );
      assert.ok(d.reordered > 0, `the forwarder reordered datagrams ${dir}`);
    }
    // Every connected call's media went through the forwarder over UDP (not ICE-TCP, not around it).
    for (const r of results.filter((x) => x.pairs)) {
      for (const side of ['alice', 'bob']) {
        for (const transport of ['publisher', 'subscriber']) {
          const pair = r.pairs[side][transport];
          assert.ok(
            pair && pair.remote?.protocol === 'udp' && pair.remote.address.startsWith(`${FORWARDER_IP}:`),
            `call ${r.call}: ${side}'s ${transport} transport uses UDP to the forwarder ${FORWARDER_IP}: ${JSON.stringify(pair)}`,
          );
        }
      }
    }
    assert.deepEqual(
      failed.map((r) => `call ${r.call}: ${r.why}`),
      [],
      `all ${CALLS} calls connect within ${CONNECT_LIMIT_MS} ms and stay connected for ${STAY_MS} ms`,
    );
  } finally {
    for (const browser of browsers) await browser.close().catch(() => {});
    await stopServer(server);
    await forwarder?.stop().catch(() => {});
    process.removeListener('exit', killOnExit);
    const errors = await lab.destroy();
    if (errors.length) console.error(`netns cleanup: ${errors.join('; ')}`);
    await rm(tmp, { recursive: true, force: true });
  }
});
