// Simulcast through callgate (docs/protocol.md, "Adaptive stream and
// simulcast"): page A publishes Chromium's fake camera, captured at
// 1280×720, as the SDK's three simulcast layers (rid q/h/f); pages B and C
// receive it. B asks for 320×180 (`room.setSubscription`), C for nothing in
// particular. Asserted, from each page's getStats, in this order (each test
// goes on from where the one before left the call; after a failure the rest
// are skipped):
//
//   1. A encodes three layers q, h and f, each narrower than the next, q at
//      most 320 wide;
//   2. B decodes the q layer (frameWidth ≤ 320) and C the f layer (A's f
//      frameWidth), and both keep decoding;
//   3. B, asking for the full size, decodes A's f width within 5 s, with no
//      gap over 500 ms between the frames it presents on the way up, and
//      keeps decoding;
//   4. dynacast: with B and C both asking for 320×180, A's h and f encodings
//      are turned off (`active: false`, after the server's
//      `subscribed_layers`) within 10 s and stop sending, while q goes on
//      and B and C keep decoding it;
//   5. when C asks for the full size again, A's f encoding is on again and C
//      decodes A's f width, and keeps decoding.
//
// All three pages drive the SDK (web/callgate.js, as the server serves it)
// directly, in one headless Chromium, over 127.0.0.1; A only publishes, B
// and C only subscribe. The figures (A's layer sizes and bitrates, B's and
// C's frame widths over time, the switch-up time, the server's packet
// counters) are printed as diagnostics.
//
// Run from the repo root: node --test tests/browser/simulcast.test.mjs
// Env: TEST_CALLGATE_BIN, CHROMIUM, TEST_SERVER_LOG (see harness.mjs).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

import {
  CALLGATE_BIN, CHROMIUM, HOST, CHROMIUM_ARGS,
  freeTcpPort, runCallgate, startServer, readyLine, stopServer,
} from './harness.mjs';

/** Until A sends all three layers (its bandwidth estimate has to grow to ~2.2 Mbit/s first). */
const MEDIA_TIMEOUT_MS = 30_000;
/** Until B and C are on the layers their sizes (and their estimates) call for. */
const LAYER_TIMEOUT_MS = 20_000;
/** Until A's f encoding is on again and C on it, when C asks for the full size again. */
const LAYER_UP_TIMEOUT_MS = 10_000;
/** What B's switch up to the full size may take, from its `setSubscription`. */
const SWITCH_UP_LIMIT_MS = 5_000;
/** Dynacast: the server's 5 s of "fewer layers are enough", its message and A's setParameters. */
const DYNACAST_LIMIT_MS = 10_000;
/** "Keeps decoding": this many more frames (1.5 s of the fake camera's 20 fps at 1280×720) ... */
const NEW_FRAMES = 30;
/** ... within this long. */
const KEEP_DECODING_MS = 5_000;
/**
 * A gap between two frames B presents, through its switch up, longer than
 * this is a freeze (Chromium's own freeze metric counts a frame late by
 * max(3 frame times, 1 frame time + 150 ms), 200 ms at 20 fps; this is
 * well above that so CPU hiccups of a shared test machine do not count).
 */
const FREEZE_MS = 500;
/** The size B (and later C) asks for: A's q layer is a quarter of 1280×720. */
const SMALL = { width: 320, height: 180 };
const POLL_MS = 200;

/**
 * In the page: what it sends (outbound-rtp video by rid, the sender's
 * encodings' `active`) and what it receives (inbound-rtp video).
 */
function installStats() {
  window.callgateStats = async () => {
    const room = window.sc?.room;
    const out = { at: Date.now(), state: room?.state ?? null, outbound: {}, encodings: {}, inbound: null };
    if (!room) return out;
    const pub = room.publisherPc;
    if (pub && pub.connectionState !== 'closed') {
      const report = await pub.getStats();
      report.forEach((s) => {
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
          out.availableOutgoingBitrate = s.availableOutgoingBitrate ?? null;
        }
        if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
        out.outbound[s.rid ?? '-'] = {
          active: s.active ?? null,
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          framesEncoded: s.framesEncoded ?? 0,
          framesPerSecond: s.framesPerSecond ?? null,
          keyFramesEncoded: s.keyFramesEncoded ?? 0,
          bytesSent: s.bytesSent ?? 0,
          packetsSent: s.packetsSent ?? 0,
          pliCount: s.pliCount ?? 0,
          targetBitrate: s.targetBitrate ?? null,
          qualityLimitationReason: s.qualityLimitationReason ?? null,
        };
      });
      const video = room.localTracks.find((p) => p.kind === 'video');
      for (const e of video?.transceiver?.sender?.getParameters()?.encodings ?? []) {
        out.encodings[e.rid ?? '-'] = e.active !== false;
      }
    }
    const sub = room.subscriberPc;
    if (sub && sub.connectionState !== 'closed') {
      const report = await sub.getStats();
      report.forEach((s) => {
        if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
        out.inbound = {
          frameWidth: s.frameWidth ?? 0,
          frameHeight: s.frameHeight ?? 0,
          framesDecoded: s.framesDecoded ?? 0,
          framesPerSecond: s.framesPerSecond ?? null,
          keyFramesDecoded: s.keyFramesDecoded ?? 0,
          freezeCount: s.freezeCount ?? 0,
          totalFreezesDuration: s.totalFreezesDuration ?? 0,
          pliCount: s.pliCount ?? 0,
          firCount: s.firCount ?? 0,
          packetsLost: s.packetsLost ?? 0,
          bytesReceived: s.bytesReceived ?? 0,
        };
      });
    }
    return out;
  };
}

/**
 * In the page: joins with the SDK (simulcast on); A publishes its camera at
 * 1280×720, B and C show what they receive in a <video> whose presented
 * frames are timed (requestVideoFrameCallback). Each page records the
 * `subscribed_layers` the server sends it (only A gets any).
 */
async function joinRoom({ token, publish }) {
  const { Room } = await import('/callgate.js');
  const layerMessages = [];
  class RecordingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (ev) => {
        if (typeof ev.data === 'string' && ev.data.includes('"subscribed_layers"')) {
          const msg = JSON.parse(ev.data);
          layerMessages.push({ at: Date.now(), layers: msg.layers.map((l) => `${l.rid}:${l.active ? 'on' : 'off'}`).join(' ') });
        }
      });
    }
  }
  const room = new Room({ url: `ws://${location.host}/rtc`, token, simulcast: true, WebSocket: RecordingWebSocket });
  const presented = [];
  window.sc = { room, layerMessages, presented, videoTrackSid: null };
  room.on('trackSubscribed', ({ trackSid, kind }) => {
    if (kind !== 'video') return;
    const video = document.createElement('video');
    video.autoplay = true;
    video.muted = true;
    video.playsInline = true;
    document.body.append(video);
    room.attachVideo(trackSid, video);
    const onFrame = (_now, meta) => {
      presented.push({ at: Date.now(), width: meta.width });
      if (presented.length > 5000) presented.splice(0, 1000);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    window.sc.videoTrackSid = trackSid;
  });
  await room.connect();
  if (publish) {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { exact: 1280 }, height: { exact: 720 }, frameRate: { ideal: 30 } },
    });
    await room.publish(stream);
  }
}

/**
 * The server's /metrics counters of dropped packets (by reason; those not
 * 0), keyframe requests (PLIs sent to publishers), media packets in and
 * out, NACKs from subscribers and REMBs sent, summed over its workers.
 */
async function serverCounters(httpPort) {
  const text = await (await fetch(`http://${HOST}:${httpPort}/metrics`)).text();
  const sums = new Map();
  for (const line of text.split('\n')) {
    const m = /^(callgate_(?:dropped_packets_total|keyframe_requests_total|packets_total|nacks_total|rembs_total))(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = (m[2] ?? '').split(',').filter((l) => l && !l.startsWith('worker=')).join(',');
    const key = labels ? `${m[1]}{${labels}}` : m[1];
    sums.set(key, (sums.get(key) ?? 0) + Number(m[3]));
  }
  return Object.fromEntries([...sums].filter(([k, v]) => v !== 0 || !k.startsWith('callgate_dropped')));
}

/** A's layers by rid between two of its stats samples: size, fps, kbit/s, on or off, limitation. */
function layerFigures(first, last) {
  const secs = (last.at - first.at) / 1000;
  return Object.fromEntries(
    ['q', 'h', 'f'].filter((rid) => last.outbound[rid]).map((rid) => {
      const s = last.outbound[rid];
      return [
        rid,
        {
          size: `${s.frameWidth}x${s.frameHeight}`,
          fps: s.framesPerSecond,
          kbps: Math.round(((s.bytesSent - (first.outbound[rid]?.bytesSent ?? 0)) * 8) / secs / 1000),
          on: last.encodings[rid],
          limitation: s.qualityLimitationReason,
        },
      ];
    }),
  );
}

const threeLayers = (a) =>
  ['q', 'h', 'f'].every((rid) => a.outbound[rid]?.framesEncoded > 10 && a.outbound[rid]?.frameWidth > 0);

// --- shared by the tests below, which run in order on one call
const ctx = {
  /** @type {ReturnType<typeof startServer>|null} */ server: null,
  /** @type {import('playwright-core').Browser|null} */ browser: null,
  /** @type {Record<string, import('playwright-core').Page>} */ pages: {},
  /** @type {Record<string, string[]>} */ pageLogs: {},
  httpPort: 0,
  dataDir: '',
  trackSid: '',
  /** A's f layer: {width, height}, as read in test 1 (and again in test 2). */
  full: null,
  /**
   * Every poll: [ms since A started publishing, A's encodings on ("qhf" / "q--"),
   * B's frameWidth, C's frameWidth]; printed where it changes.
   */
  timeline: [],
  startedAt: 0,
  failed: null,
};
const killOnExit = () => ctx.server?.child.kill('SIGKILL');

/** Stats of A, B and C at once, noted in the timeline. */
async function sample() {
  const [a, b, c] = await Promise.all(['A', 'B', 'C'].map((w) => ctx.pages[w].evaluate(() => window.callgateStats())));
  const on = ['q', 'h', 'f'].map((rid) => (a.encodings[rid] ? rid : '-')).join('');
  ctx.timeline.push([a.at - ctx.startedAt, on, b.inbound?.frameWidth ?? null, c.inbound?.frameWidth ?? null]);
  return { a, b, c };
}

/** The timeline where something in it changed. */
function timelineChanges() {
  return ctx.timeline.filter(
    (x, i, all) => i === 0 || i === all.length - 1 || x.slice(1).join() !== all[i - 1].slice(1).join(),
  );
}

/** Polls A, B and C until `done({a, b, c})` holds; fails with `what` and the last stats after `timeoutMs`. */
async function waitFor(done, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await sample();
    if (done(s)) return s;
    if (Date.now() >= deadline) {
      assert.fail(`${what}: not within ${timeoutMs} ms; last stats: ${JSON.stringify(s)}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/**
 * Waits until each page named in `widthOk` (B, C) decoded NEW_FRAMES more
 * frames (within KEEP_DECODING_MS), its frameWidth passing `widthOk[page]`
 * at every poll; returns the first and last stats.
 */
async function keepsDecoding(widthOk, what) {
  const who = Object.keys(widthOk);
  const first = await sample();
  const deadline = Date.now() + KEEP_DECODING_MS;
  for (;;) {
    const s = await sample();
    for (const w of who) {
      const inbound = s[w.toLowerCase()].inbound;
      assert.ok(widthOk[w](inbound.frameWidth), `${what}: ${w}'s frameWidth ${inbound.frameWidth}: ${JSON.stringify(inbound)}`);
    }
    const decoded = (w, stats) => stats[w.toLowerCase()].inbound.framesDecoded;
    if (who.every((w) => decoded(w, s) >= decoded(w, first) + NEW_FRAMES)) return { first, last: s };
    if (Date.now() >= deadline) {
      const inbound = (stats) => Object.fromEntries(who.map((w) => [w, stats[w.toLowerCase()].inbound]));
      assert.fail(`${what}: ${who.join(' and ')} did not each decode ${NEW_FRAMES} more frames within ${KEEP_DECODING_MS} ms: ${JSON.stringify({ from: inbound(first), to: inbound(s) })}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Asks for `size` of A's video on `who`'s page (`{}`: as large as there is). */
function setSubscription(who, size) {
  return ctx.pages[who].evaluate(([sid, s]) => window.sc.room.setSubscription(sid, s), [ctx.trackSid, size]);
}

before(async () => {
  accessSync(CALLGATE_BIN, fsConstants.X_OK);
  process.once('exit', killOnExit);
  ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'callgate-simulcast-'));
  ctx.httpPort = await freeTcpPort();
  ctx.server = startServer([
    'serve', '--dev', '--no-turn',
    '--data-dir', ctx.dataDir,
    '--http-port', String(ctx.httpPort),
    '--udp-port', '0',
    '--tcp-port', '0',
  ]);
  await readyLine(ctx.server);

  const room = `simulcast-${randomBytes(6).toString('hex')}`;
  const tokens = {
    // A only publishes, B and C only subscribe: one encoder in the browser, not three.
    A: await runCallgate(['token', '--dev', '--room', room, '--identity', 'A', '--no-subscribe']),
    B: await runCallgate(['token', '--dev', '--room', room, '--identity', 'B', '--no-publish']),
    C: await runCallgate(['token', '--dev', '--room', room, '--identity', 'C', '--no-publish']),
  };
  ctx.browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  for (const who of ['A', 'B', 'C']) {
    const page = await (await ctx.browser.newContext()).newPage();
    const log = (ctx.pageLogs[who] = []);
    page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
    page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
    // The demo page without a token joins nothing: an origin to load the SDK from.
    await page.goto(`http://${HOST}:${ctx.httpPort}/`);
    await page.evaluate(installStats);
    ctx.pages[who] = page;
  }
  // B and C first, so both subscribe to A's track as soon as it is published.
  for (const who of ['B', 'C']) {
    await ctx.pages[who].evaluate(joinRoom, { token: tokens[who].trim(), publish: false });
  }
  ctx.startedAt = Date.now();
  await ctx.pages.A.evaluate(joinRoom, { token: tokens.A.trim(), publish: true });
});

after(async () => {
  if (ctx.failed) {
    for (const [who, page] of Object.entries(ctx.pages)) {
      const state = await page
        .evaluate(async () => ({
          stats: await window.callgateStats(),
          subscribedLayers: window.sc?.layerMessages,
        }))
        .catch((e) => ({ error: e.message }));
      if (who === 'A' && state.subscribedLayers) {
        state.subscribedLayers = state.subscribedLayers.map((m) => ({ ...m, at: m.at - ctx.startedAt }));
      }
      console.error(`--- ${who}'s page: ${JSON.stringify(state)}`);
      const log = ctx.pageLogs[who] ?? [];
      if (log.length) console.error(`--- ${who}'s console:\n${log.slice(-30).join('\n')}`);
    }
    console.error(`--- [ms, A's encodings on, B's width, C's width] where they changed: ${JSON.stringify(timelineChanges())}`);
    if (ctx.server && !ctx.server.exit) {
      console.error(`--- server counters: ${JSON.stringify(await serverCounters(ctx.httpPort).catch((e) => e.message))}`);
    }
    if (ctx.server) console.error(`--- callgate log (tail):\n${ctx.server.log.slice(-4000)}`);
  }
  await ctx.browser?.close().catch(() => {});
  await stopServer(ctx.server);
  process.removeListener('exit', killOnExit);
  if (ctx.dataDir) await rm(ctx.dataDir, { recursive: true, force: true });
});

/** A test body that is skipped after an earlier failure (it would go on from a call in an unknown state). */
const step = (fn) => async (t) => {
  if (ctx.failed) {
    t.skip(`after the failure of "${ctx.failed}"`);
    return;
  }
  try {
    await fn(t);
  } catch (err) {
    ctx.failed = t.name;
    throw err;
  }
};

test('A sends its 1280×720 camera as three simulcast layers q, h and f, each narrower than the next, q at most 320 wide', { timeout: MEDIA_TIMEOUT_MS + 15_000 }, step(async (t) => {
  const first = await waitFor(({ a }) => threeLayers(a), MEDIA_TIMEOUT_MS, 'A encodes q, h and f');
  const layersAt = first.a.at - ctx.startedAt;
  // Its sizes settle on the first keyframes: read them once more, a second on.
  const { a } = await waitFor(({ a }) => threeLayers(a) && a.at >= first.a.at + 1000, 5_000, 'A still encodes q, h and f');
  const { q, h, f } = a.outbound;
  t.diagnostic(`A encodes all three layers ${layersAt} ms after it started publishing: ${JSON.stringify(layerFigures(first.a, a))}; its estimate ${a.availableOutgoingBitrate} bit/s`);
  assert.ok(q.frameWidth <= SMALL.width, `q is at most ${SMALL.width} wide: ${JSON.stringify(a.outbound)}`);
  assert.ok(q.frameWidth < h.frameWidth && h.frameWidth < f.frameWidth, `q < h < f in width: ${JSON.stringify(a.outbound)}`);
  ctx.full = { width: f.frameWidth, height: f.frameHeight };
  ctx.trackSid = await ctx.pages.A.evaluate(() => window.sc.room.localTracks.find((p) => p.kind === 'video').sid);
  assert.match(ctx.trackSid ?? '', /^TR_/, 'A\'s video has its track sid');
}));

test('B, asking for 320×180, decodes A\'s q layer (≤ 320 wide) while C decodes A\'s f layer, and both keep decoding', { timeout: LAYER_TIMEOUT_MS + KEEP_DECODING_MS + 10_000 }, step(async (t) => {
  for (const who of ['B', 'C']) {
    const sid = await ctx.pages[who].evaluate(() => window.sc.videoTrackSid);
    assert.equal(sid, ctx.trackSid, `${who} receives A's video`);
  }
  await setSubscription('B', SMALL);
  const asked = Date.now();
  const { a, b, c } = await waitFor(
    ({ a, b, c }) =>
      b.inbound?.framesDecoded > 0 && b.inbound.frameWidth > 0 && b.inbound.frameWidth <= SMALL.width &&
      c.inbound?.framesDecoded > 0 && c.inbound.frameWidth === a.outbound.f?.frameWidth,
    LAYER_TIMEOUT_MS,
    `B on the q layer (≤ ${SMALL.width} wide) and C on the f layer (A's f width)`,
  );
  ctx.full = { width: a.outbound.f.frameWidth, height: a.outbound.f.frameHeight };
  t.diagnostic(`${Date.now() - asked} ms after B asked for ${SMALL.width}x${SMALL.height}: B decodes ${b.inbound.frameWidth}x${b.inbound.frameHeight}, C ${c.inbound.frameWidth}x${c.inbound.frameHeight} (A's f: ${ctx.full.width}x${ctx.full.height})`);
  const { first, last } = await keepsDecoding(
    { B: (w) => w > 0 && w <= SMALL.width, C: (w) => w === ctx.full.width },
    'B on q, C on f',
  );
  t.diagnostic(`then in ${last.b.at - first.b.at} ms B decoded ${last.b.inbound.framesDecoded - first.b.inbound.framesDecoded} frames ${last.b.inbound.frameWidth} wide and C ${last.c.inbound.framesDecoded - first.c.inbound.framesDecoded} frames ${last.c.inbound.frameWidth} wide`);
}));

test('B, asking for the full size, decodes A\'s f width within 5 s, presents its frames with no gap over 500 ms through the switch, and keeps decoding', { timeout: 2 * SWITCH_UP_LIMIT_MS + KEEP_DECODING_MS + 15_000 }, step(async (t) => {
  const { b: before } = await sample();
  assert.ok(before.inbound.frameWidth <= SMALL.width, `B on q before: ${JSON.stringify(before.inbound)}`);
  await setSubscription('B', ctx.full);
  const asked = Date.now();
  let up = null;
  let b = before;
  // Polled often, to time the switch; watched past the limit, to print when it came.
  while (Date.now() < asked + 2 * SWITCH_UP_LIMIT_MS) {
    ({ b } = await sample());
    if (b.inbound.frameWidth === ctx.full.width) {
      up = b.at;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const upMs = up === null ? null : up - asked;
  t.diagnostic(`B decodes ${ctx.full.width} wide ${upMs === null ? `not within ${2 * SWITCH_UP_LIMIT_MS} ms` : `${upMs} ms`} after it asked for ${ctx.full.width}x${ctx.full.height}`);
  assert.ok(upMs !== null && upMs <= SWITCH_UP_LIMIT_MS, `B decodes ${ctx.full.width} wide within ${SWITCH_UP_LIMIT_MS} ms: ${JSON.stringify({ upMs, before: before.inbound, last: b.inbound })}`);
  const { last } = await keepsDecoding({ B: (w) => w === ctx.full.width }, 'B on f');
  // The frames B presented from 1 s before it asked until now: no long gap.
  const frames = await ctx.pages.B.evaluate((from) => window.sc.presented.filter((f) => f.at >= from), asked - 1000);
  let longest = 0;
  let endsAt = null;
  for (let i = 1; i < frames.length; i++) {
    const gap = frames[i].at - frames[i - 1].at;
    if (gap > longest) [longest, endsAt] = [gap, frames[i].at - asked];
  }
  const widths = [...new Set(frames.map((f) => f.width))];
  t.diagnostic(`B presented ${frames.length} frames from 1 s before it asked until ${last.b.at - asked} ms after (widths ${widths.join(', ')}); the longest gap ${longest} ms, ending ${endsAt} ms after it asked; freezes (Chromium's count) ${before.inbound.freezeCount} -> ${last.b.inbound.freezeCount}, keyframes decoded ${before.inbound.keyFramesDecoded} -> ${last.b.inbound.keyFramesDecoded}`);
  assert.ok(widths.includes(ctx.full.width) && widths.some((w) => w <= SMALL.width), `B presented frames of both sizes: ${widths}`);
  assert.ok(longest <= FREEZE_MS, `no gap over ${FREEZE_MS} ms between B's presented frames through the switch: the longest ${longest} ms, ending ${endsAt} ms after it asked`);
}));

test('dynacast: with B and C both asking for 320×180, A\'s h and f encodings are off within 10 s and stop sending, while q goes on and B and C keep decoding it', { timeout: DYNACAST_LIMIT_MS + KEEP_DECODING_MS + 20_000 }, step(async (t) => {
  const { a: a0 } = await sample();
  assert.deepEqual(a0.encodings, { q: true, h: true, f: true }, 'all three on while B and C want the full size');
  await setSubscription('B', SMALL);
  await setSubscription('C', SMALL);
  const asked = Date.now();
  const { a } = await waitFor(
    ({ a }) => a.encodings.h === false && a.encodings.f === false,
    DYNACAST_LIMIT_MS,
    'A\'s h and f encodings off',
  );
  const offMs = a.at - asked;
  const messages = await ctx.pages.A.evaluate(() => window.sc.layerMessages);
  const last = messages.at(-1);
  t.diagnostic(`A's h and f off ${offMs} ms after B and C asked for ${SMALL.width}x${SMALL.height}; the server's subscribed_layers came ${last.at - asked} ms after: ${last.layers}`);
  assert.equal(a.encodings.q, true, 'q stays on');
  // h and f send nothing more (a packet in flight may still go): two samples at least 1 s apart.
  let quiet = null;
  let prev = a;
  const deadline = Date.now() + 5_000;
  while (!quiet && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    const { a: cur } = await sample();
    if (cur.at - prev.at < 1000) continue;
    const sent = (rid) => cur.outbound[rid].bytesSent - prev.outbound[rid].bytesSent;
    if (sent('h') === 0 && sent('f') === 0) quiet = { q: sent('q'), secs: (cur.at - prev.at) / 1000 };
    prev = cur;
  }
  assert.ok(quiet, `A's h and f stop sending: ${JSON.stringify(prev.outbound)}`);
  t.diagnostic(`then in ${quiet.secs} s A sent ${Math.round((quiet.q * 8) / quiet.secs / 1000)} kbit/s on q and nothing on h and f`);
  assert.ok(quiet.q > 0, 'q goes on sending');
  await keepsDecoding({ B: (w) => w > 0 && w <= SMALL.width, C: (w) => w > 0 && w <= SMALL.width }, 'B and C on q');
}));

test('C, asking for the full size again, has A\'s f encoding on again and decodes A\'s f width, and keeps decoding', { timeout: LAYER_UP_TIMEOUT_MS + KEEP_DECODING_MS + 10_000 }, step(async (t) => {
  await setSubscription('C', ctx.full);
  const asked = Date.now();
  const { a } = await waitFor(
    ({ a, c }) => a.encodings.f === true && c.inbound.frameWidth === ctx.full.width,
    LAYER_UP_TIMEOUT_MS,
    'A\'s f on again and C on it',
  );
  t.diagnostic(`${a.at - asked} ms after C asked for the full size: A's encodings on ${JSON.stringify(a.encodings)}, C decodes ${ctx.full.width} wide`);
  await keepsDecoding({ C: (w) => w === ctx.full.width }, 'C on f');
  const { a: a2 } = await sample();
  t.diagnostic(`A's layers over the last ${a2.at - a.at} ms: ${JSON.stringify(layerFigures(a, a2))}`);
  const messages = await ctx.pages.A.evaluate(() => window.sc.layerMessages);
  t.diagnostic(`subscribed_layers A got [ms since it started publishing, layers]: ${JSON.stringify(messages.map((m) => [m.at - ctx.startedAt, m.layers]))}`);
  t.diagnostic(`[ms, A's encodings on, B's width, C's width] where they changed: ${JSON.stringify(timelineChanges())}`);
  t.diagnostic(`server: ${JSON.stringify(await serverCounters(ctx.httpPort))}`);
}));
