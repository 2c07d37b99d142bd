// A capped downlink: bob's link from callgate takes 500 kbit/s, and the
// same two-party call runs over it twice, each time on a fresh server:
// once with the server's defaults (adaptation: the server's estimate of
// bob's downlink, send-side from his transport-wide CC feedback
// (sfu/src/bwe; his browser's REMB with
// CALLGATE_RTC_SEND_SIDE_ESTIMATION=false), is shared among the tracks he
// receives, and alice, the publisher, is sent a
// REMB with bob's share of her video) and once with
// CALLGATE_RTC_ADAPT_TO_SUBSCRIBERS=false. What it proves is the product's
// claim: the capped page keeps decoding video, with fewer freezes than
// without adaptation, because the publisher hears of the cap.
//
// Topology (network namespaces and veth pairs of this test's own, see
// netns.mjs; every address is one made here):
//
//   <p>-a (alice's Chromium) a0 10.29.1.2/24 ── s-a0 10.29.1.1/24 ┐ <p>-srv: callgate on 10.29.0.1 (lo)
//   <p>-b (bob's Chromium)   b0 10.29.3.2/24 ── s-b0 10.29.3.1/24 ┘   tbf 500 kbit/s on s-b0's egress
//
// The cap: `tc qdisc add dev s-b0 root tbf rate 500kbit burst 3000 latency
// 150ms` in the server's namespace, so everything sent toward bob (media,
// RTCP, the WebSocket and the page itself) goes through one token bucket;
// bob's uplink and alice's link are not shaped. burst 3000 B is two
// full-size packets: the bucket passes no more back to back, as a real
// bottleneck does. latency 150 ms bounds the queue at 500 kbit/s × 150 ms +
// burst ≈ 12 kB (about 10 full packets): a bottleneck with a moderate buffer.
// Deep enough that overuse shows as queueing delay before it shows as loss,
// which is what bob's receive-side estimator (abs-send-time, delay-based:
// the subscriber leg has no transport-cc) needs to see; a much shorter queue
// would turn every overshoot into tail drops it cannot read. tc's counters
// (bytes, drops) are read for each window, so a run shows what the link
// carried and dropped.
//
// Each run: two pages on the demo page (alice and bob both publish the fake
// camera, 640x480 at the 20 fps it actually delivers, and microphone, as
// the demo does; as ONE encoding, `?simulcast=0`: what is proven here is
// that a single-stream publisher, an older client's or H.264's, is slowed
// for its weak subscriber by REMB; with simulcast (the SDK's default) both
// runs pick a layer that fits and neither freezes, and layer choice has
// its own tests, sfu/src/sim_tests/layers.rs and tests/simulcast.rs), a 10 s warm-up from bob's first decoded frame of alice's
// video, then a 30 s window sampled every second (getStats on both pages,
// the server's /metrics through alice's page, the qdisc's counters, the
// server's CPU time); ~95 s for the file. The table printed has, for both
// runs: bob's inbound video from alice (framesDecoded, frame size last and
// least, totalFreezesDuration, freezeCount, seconds without a new frame,
// packetsLost, nackCount, jitter buffer delay per frame), alice's
// outbound-rtp (targetBitrate, frameWidth, qualityLimitationReason) and
// candidate pair (availableOutgoingBitrate), the server's REMBs, bob's
// estimates and its bandwidth drops, and the link's rate and drops. The
// diagnostics have the per-second series.
//
// Measured on this 2-core machine (shared with other sessions' builds and
// tests, load 2–7; debug build of callgate, Chromium 156, VP8), six runs
// of this file (measuring as now, asserting as it was being settled; "on" =
// adaptation; decoded = B's framesDecoded in
// the 30 s window and its share of the frames A captured in it, ~600;
// stalled = seconds of the window in which B decoded no new frame; target =
// A's targetBitrate at the end of the window and its highest since B's
// first frame, kbit/s; width = frameWidth at the end / least in the window,
// A's sent and B's decoded; offered = packets a second the server sent
// toward B, before the qdisc dropped some):
//
//   run    decoded     stalled  freezes      lost  nacks  jitbuf  target       A width  B width  REMBs  bw drops  link kbit/s, drops  offered  srv CPU
//   1 on    75 (13%)   25 s     0.22 s, 1       0      0   100ms  1700 (1700)  640/640  640/640    5     1544      93,      0         68/s    11%
//   1 off  202 (34%)   7.5 s    21.05 s, 31  2088   1064  4379ms   294 (1700)  640/480  480/480    0        0     488,  58560       2047/s    37%
//   2 on   601 (100%)  0        0               0      0    75ms   283 (1417)  640/640  640/640   30        0     380,      0        107/s    12%
//   2 off  176 (29%)   11 s     11.17 s, 26   233   1200  4178ms   265 (786)   640/640  640/640    0        0     500,  62582       2188/s    42%
//   3 on   599 (100%)  0        0               0      0    44ms   367 (489)   640/640  640/640   30        0     403,      0        108/s    12%
//   3 off  140 (24%)   14.8 s   27.46 s, 25   575    977  1839ms  1700 (1700)  480/480  480/480    0        0     500,  46698       1651/s    33%
//   4 on   570 (97%)   1 s      0.55 s, 2       0      0   481ms    64 (1417)  480/480  480/480   30     1758     225,      0         86/s    11%
//   4 off  393 (66%)   2 s      15.31 s, 32    17    867  2946ms   195 (784)   480/480  480/480    0        0     435,  30204       1104/s    26%
//   5 on   603 (100%)  0        0               0      0   110ms   326 (1417)  640/640  640/640   58        0     315,      0        101/s    11%
//   5 off  524 (87%)   0        2.88 s, 7     -86    358  1094ms   520 (1088)  640/480  640/480    0        0     438,  12862        535/s    17%
//   6 on   601 (100%)  0        0               0      0   116ms   339 (1389)  640/640  640/640   30        0     380,      0        105/s    10%
//   6 off  504 (88%)   0        5.74 s, 16   -124    224   818ms   190 (1700)  480/480  480/480    0        0     299,   6178        298/s    12%
//
// Two earlier 30 s runs of the same call gave the same picture (on: 601 and
// 602 frames, no freeze, target 283 and 408; off: 177 and 227 frames, 22.5 s
// of freezes each).
//
// Run 1 FAILS this test, and rightly (runs 2–6 pass it as it is now). Run
// 1 "on": a hiccup (the 1 s sampling itself slipped by 0.4 s and alice's
// RTT to the server jumped to 81 ms; the machine was loaded) made bob's
// estimate drop to 254 and then 119 kbit/s; his video share (119 − 48 for
// audio) fell under the 100 kbit/s minimum, the server paused his video
// consumer and released alice (REMB 100 Mbit/s: her target went back to
// 1700), and it never came back: with only audio arriving, bob's REMB stayed
// at 119 kbit/s, every second, to the end. Two longer runs with adaptation
// (80 s and 100 s windows) did the same, at 63 s and at 10 s after bob's
// first frame; run 4 "on" ended with bob's estimate at 107 kbit/s and no new
// frame in its last second. Whether it happens within a run depends on when
// such a hiccup comes: 2 of the 10 runs with adaptation had it within 40 s
// of bob's first frame, 3 at all. totalFreezesDuration does not show it
// (0.22 s in run 1: a freeze counts only once a frame ends it), which is
// why the test also counts seconds without a new frame and frames decoded.
// Until a paused consumer can come back (probing, or resuming on a timer),
// expect this test to fail now and then with "bob decoded at least 60% ...
// consumer paused".
//
// Runs 5 and 6 show how shaky the baseline is: without adaptation alice's own
// estimate had collapsed (see below) and her target was under the cap for
// most of the window, so bob did fairly well; adaptation still did better
// by frames (100% against 87–88%) and freezes (0 s against 2.88 and 5.74
// s), but not by seconds without a new frame (0 and 0). An earlier form of
// this file that required fewer of those too failed on run 5; the test now compares
// totalFreezesDuration only, and bounds the stalled seconds on their own.
//
// In run 4 "on" the server dropped ~60 packets a second "for bandwidth"
// through the window while bob decoded 97% of alice's frames: another
// consumer was paused, most likely bob's video to alice, whose estimate on
// her unshaped link fell when her RTT to the server read 173 ms (t = 2.4 s).
// The table now also shows how many of bob's frames alice decoded: none
// at all in run 6 "on", with no drop for bandwidth, so there it was the
// start-up bug described below, the other way round.
//
// Frame size: Chromium scales alice's 640x480 down to 480x360 only when her
// target stays low for a while (~60–270 kbit/s): it did in run 4 (64–172
// kbit/s all window), at the start of an earlier run and for up to 35 s in
// the long ones; at 210–455 kbit/s (runs 2, 3, 5) it kept 640x480 and
// lowered quality (qualityLimitationReason "none"). So whether the width is
// lower depends on where bob's estimate settles within the window; it is
// printed, not asserted.
//
// Without adaptation alice's target does not stay well above the cap, as
// one might expect. It climbs to 784–1700 kbit/s, then falls under the cap
// for much of the window in all 8 runs (ending at 166–520 kbit/s in 7, back
// at 1700 in one). In 3 of them it fell by ~20% a second for 4–18 s, down
// to 30–76 kbit/s (where alice's RTT was recorded, it then read 548 and
// 267 ms once, and the target jumped back up): Chromium's send-side
// estimator's pattern when reports from the receiver, here the server, stop
// coming. Nothing told her of bob's cap (0 REMBs). The likeliest cause is the
// server spending itself on bob: it answers his NACKs by resending without
// limit (300–2190 packets a second offered toward a link that carries ~90,
// up to 70× the 24–44 alice sends; 12–42% of a core against 10–12% with
// adaptation), and its reports and transport-cc feedback to alice, on the
// same worker, come late or not at all. So without adaptation the test
// asserts only that no REMB was sent and that her target went above the
// cap at some point.
//
// Thresholds, from the runs above (with adaptation, when it works: 97–100%
// of frames decoded, at most 1 s without a new frame, 0–0.55 s of freezes,
// target 64–408 kbit/s at the end and at most 472 kbit/s before a back-off,
// 29–58 REMBs in 30 s; without: 24–88% decoded, 0–15 s stalled, 2.9–27.5 s
// of freezes, 0 REMBs, target max 784–1700 kbit/s):
//   - bob decodes ≥ 60% of the frames alice captured in the window (a 40%
//     margin for the loaded machine);
//   - he goes ≤ 3 s of the window without a new frame;
//   - his totalFreezesDuration grows ≤ 2 s and less than without;
//   - the server sent alice ≥ one REMB every 2 s; her target ends ≤ the cap
//     + 10% (her REMB is bob's estimate less 48 kbit/s for audio; Chromium's
//     estimate rises until the queue shows delay, so it may overshoot the
//     link for a moment; measured ≤ 472);
//   - without adaptation: no REMB, and her target went above the cap.
// The cap applied: bob's subscriber transport is UDP from the server (so
// through s-b0), and the qdisc carried ≤ the cap + 5% in every window.
//
// The runs above estimated bob's downlink from his REMB (the default
// then). With the server's own send-side estimator, now the default (two
// runs, 2026-11-28, same machine): bob decoded 598 frames (100% of those
// captured) in both, 0 s frozen, 0 packets lost; alice's target 290–607
// kbit/s in the window; the link carried 469–474 kbit/s with no drops.
// Without adaptation in the same runs: 19 and 61 frames, 25.5–28 s frozen.
//
// Two server bugs this test found are fixed since those runs: video did
// not start (the keyframe asked for at subscription arrived before the
// subscriber's leg connected, and the request at connect fell within the
// 500 ms throttle; a consumer waiting for a keyframe now keeps asking), and
// a subscriber whose estimate fell under audio + 100 kbit/s had its only
// video paused and never got it back (run 1 "on", and 2 long runs; one
// top-priority video is now never paused). Bob must decode alice's video
// within 20 s of the pages opening.
//
// Run from the repo root (as root): node --test tests/browser/capped-downlink.test.mjs
// (scripts/test.sh runs it inside a private network namespace).
// Env: TEST_CALLGATE_BIN, CHROMIUM, TEST_SERVER_LOG (see harness.mjs),
//      TEST_CAPPED_MEASURE_S (the window, default 30 s), TEST_CAPPED_WARMUP_S
//      (the warm-up, default 10 s), and for
//      measuring only: TEST_CAPPED_KBIT (the cap, default 500),
//      TEST_CAPPED_ONLY="adaptation" or "no adaptation" (one run, nothing asserted).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {
  runCallgate, readyLine, stopServer, selectedCandidatePairs, requireCallgateBinary, cpuSeconds
} from './harness.mjs';
import { NetLab, chromiumIn, namespacesUnavailable, serverIn, tc } from './netns.mjs';

const SERVER_IP = '10.29.0.1';
const HTTP_PORT = 7880; // alone in its namespace
const ORIGIN = `http://${SERVER_IP}:${HTTP_PORT}`;

/** B's downlink: the token bucket on the server side of B's veth (its egress goes toward B). */
const CAP_KBIT = Number(process.env.TEST_CAPPED_KBIT ?? 500);
/** Two full-size packets: the bucket lets no more than that through back to back. */
const TBF_BURST_BYTES = 3000;
/** The most a packet may wait in the queue (tbf's limit = rate × latency + burst, ~12 kB here). */
const TBF_LATENCY_MS = 150;

/**
 * Thresholds (see the header for the measurements behind them).
 * With adaptation, bob decodes at least this share of the frames alice captured in the window...
 */
const MIN_DECODED_SHARE = 0.6;
/** ...goes no more than this many seconds of it without a new frame... */
const MAX_STALLED_S = 3;
/** ...and his totalFreezesDuration grows by no more than this. */
const MAX_FREEZES_S = 2;
/** Alice's last target bitrate with adaptation: at most the cap times this. */
const TARGET_MARGIN = 1.1;

const MEASURE_MS = Number(process.env.TEST_CAPPED_MEASURE_S ?? 30) * 1000;
const WARMUP_MS = Number(process.env.TEST_CAPPED_WARMUP_S ?? 10) * 1000;
const SAMPLE_MS = 1000;
/** B must decode video from A within this long of the pages opening. */
const CONNECT_LIMIT_MS = 20_000;

const ALL_RUNS = [
  { name: 'adaptation', env: {} },
  { name: 'no adaptation', env: { CALLGATE_RTC_ADAPT_TO_SUBSCRIBERS: 'false' } },
];
const RUNS = process.env.TEST_CAPPED_ONLY ? ALL_RUNS.filter((r) => r.name === process.env.TEST_CAPPED_ONLY) : ALL_RUNS;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The tbf qdisc's counters on `dev` in `ns`. */
async function qdiscStats(ns, dev) {
  const all = JSON.parse(await tc(['-n', ns, '-s', '-j', 'qdisc', 'show', 'dev', dev]));
  const q = all.find((x) => x.kind === 'tbf');
  if (!q) throw new Error(`no tbf on ${dev}: ${JSON.stringify(all)}`);
  return { bytes: q.bytes, packets: q.packets, drops: q.drops, overlimits: q.overlimits };
}

/**
 * B's view: the inbound video from `from` on its subscriber transport, and
 * the transport's selected pair.
 */
function subscriberStats(page, from) {
  return page.evaluate(async (identity) => {
    const room = window.callgate.room;
    const pc = room?.subscriberPc;
    if (!pc || pc.connectionState === 'closed') return null;
    const report = await pc.getStats();
    const subs = [...room.subscribedTracks.values()];
    let video = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      const t = subs.find((x) => x.track.id === s.trackIdentifier) ?? subs.find((x) => x.mid != null && x.mid === s.mid);
      const who = t && room.participants.get(t.participantSid)?.identity;
      if (who === identity) video = s;
    });
    if (!video) return null;
    const pick = (s, keys) => Object.fromEntries(keys.map((k) => [k, s[k] ?? null]));
    return {
      at: Date.now(),
      codec: report.get(video.codecId)?.mimeType ?? null,
      video: pick(video, [
        'framesDecoded', 'framesReceived', 'framesDropped', 'keyFramesDecoded', 'frameWidth', 'frameHeight', 'framesPerSecond',
        'freezeCount', 'totalFreezesDuration', 'pauseCount', 'totalPausesDuration', 'packetsLost', 'packetsReceived',
        'nackCount', 'pliCount', 'firCount', 'jitterBufferDelay', 'jitterBufferEmittedCount', 'bytesReceived',
        'decoderImplementation',
      ]),
      pair: pair ? pick(pair, ['availableIncomingBitrate', 'currentRoundTripTime', 'bytesReceived', 'packetsReceived']) : null,
    };
  }, from);
}

/** A's view: its video sender (outbound-rtp, what the server reports back, the camera) and the selected pair. */
function publisherStats(page) {
  return page.evaluate(async () => {
    const pc = window.callgate.room?.publisherPc;
    if (!pc || pc.connectionState === 'closed') return null;
    const report = await pc.getStats();
    let out = null;
    let remote = null;
    let source = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') out = s;
      if (s.type === 'remote-inbound-rtp' && s.kind === 'video') remote = s;
      if (s.type === 'media-source' && s.kind === 'video') source = s;
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    });
    if (!out) return null;
    const pick = (s, keys) => (s ? Object.fromEntries(keys.map((k) => [k, s[k] ?? null])) : null);
    return {
      at: Date.now(),
      codec: report.get(out.codecId)?.mimeType ?? null,
      out: pick(out, [
        'targetBitrate', 'frameWidth', 'frameHeight', 'framesPerSecond', 'framesEncoded', 'framesSent', 'bytesSent',
        'packetsSent', 'retransmittedPacketsSent', 'qualityLimitationReason', 'qualityLimitationDurations',
        'qualityLimitationResolutionChanges', 'nackCount', 'pliCount', 'encoderImplementation', 'totalEncodeTime',
      ]),
      remote: pick(remote, ['fractionLost', 'packetsLost', 'roundTripTime']),
      source: pick(source, ['width', 'height', 'framesPerSecond', 'frames']),
      pair: pick(pair, ['availableOutgoingBitrate', 'currentRoundTripTime']),
    };
  });
}

/** The server's counters that show adaptation at work, read through A's page (same origin, A's link is not capped). */
async function serverMetrics(page) {
  const text = await page.evaluate(async () => (await fetch('/metrics')).text());
  const sum = (name, match = () => true) =>
    text
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
      .filter(match)
      .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  return {
    rembs: sum('callgate_rembs_total'),
    estimateSum: sum('callgate_subscriber_estimate_bps_sum'),
    estimateCount: sum('callgate_subscriber_estimate_bps_count'),
    sendSideEstimates: sum('callgate_subscriber_estimate_bps_count', (l) => l.includes('source="send_side"')),
    bandwidthDrops: sum('callgate_dropped_packets_total', (l) => l.includes('reason="bandwidth"')),
    awaitingKeyframe: sum('callgate_dropped_packets_total', (l) => l.includes('reason="awaiting_keyframe"')),
    nacks: sum('callgate_nacks_total'),
    plis: sum('callgate_keyframe_requests_total'),
  };
}

/**
 * One call over the capped link on a fresh server started with `run.env`:
 * connect, let it settle for WARMUP_MS, then sample both pages every
 * SAMPLE_MS for MEASURE_MS. Resolves with the samples and the summary.
 */
async function oneRun(t, run, ctx) {
  const { srv, tmp, browsers } = ctx;
  const out = { name: run.name, warmup: [], samples: [], summary: null, logs: { alice: [], bob: [] }, pairs: null };
  let server = null;
  /** @type {import('playwright-core').BrowserContext[]} */
  const contexts = [];
  ctx.current = () => server;
  try {
    server = serverIn(srv, {
      bindIp: SERVER_IP,
      httpPort: HTTP_PORT,
      dataDir: path.join(tmp, `data-${ALL_RUNS.indexOf(run)}`),
      env: run.env,
    });
    t.diagnostic(`${run.name}: ${await readyLine(server)}`);

    const room = `capped-${randomBytes(6).toString('hex')}`;
    const tokens = {};
    for (const identity of ['alice', 'bob']) {
      tokens[identity] = (await runCallgate(['token', '--dev', '--room', room, '--identity', identity])).trim();
    }
    const pages = {};
    for (const [identity, browser] of [['alice', browsers.a], ['bob', browsers.b]]) {
      const context = await browser.newContext();
      contexts.push(context);
      const page = await context.newPage();
      const log = out.logs[identity];
      page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
      page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
      pages[identity] = page;
    }
    const openedAt = Date.now();
    await Promise.all(['alice', 'bob'].map((who) => pages[who].goto(`${ORIGIN}/?simulcast=0&token=${encodeURIComponent(tokens[who])}`)));
    for (;;) {
      const b = await subscriberStats(pages.bob, 'alice').catch(() => null);
      if (b && b.video.framesDecoded > 0) break;
      if (Date.now() - openedAt > CONNECT_LIMIT_MS) {
        const state = await pages.bob.evaluate(() => window.callgateStats?.()).catch((e) => e.message);
        const m = await serverMetrics(pages.alice).catch(() => null);
        throw new Error(
          `${run.name}: bob decoded no video from alice within ${CONNECT_LIMIT_MS} ms; ` +
            `the server dropped ${m?.awaitingKeyframe} video packets awaiting a keyframe and sent ${m?.plis} keyframe requests; ` +
            `bob's stats ${JSON.stringify(state)}`,
        );
      }
      await sleep(250);
    }
    out.connectMs = Date.now() - openedAt;
    const snapshot = async () => {
      const [b, a, q, m, cpu, back] = await Promise.all([
        subscriberStats(pages.bob, 'alice'),
        publisherStats(pages.alice),
        qdiscStats(srv, 's-b0'),
        serverMetrics(pages.alice),
        cpuSeconds(server.child.pid),
        // The other way (bob publishes too): alice's uncapped page decoding bob.
        subscriberStats(pages.alice, 'bob').catch(() => null),
      ]);
      if (!b || !a) {
        throw new Error(`${run.name}: ${!b ? "bob's page has no inbound video from alice" : "alice's page has no outbound video"} any more`);
      }
      return { b, a, q, m, cpu, backFrames: back?.video.framesDecoded ?? 0, sinceVideo: Date.now() - openedAt - out.connectMs };
    };
    // Sampled from B's first frame on: the warm-up's samples show how fast A
    // heard of the cap; the window's are the ones measured.
    const from = Date.now();
    const total = WARMUP_MS + MEASURE_MS;
    for (let n = 0; n * SAMPLE_MS <= total; n++) {
      await sleep(Math.max(0, from + n * SAMPLE_MS - Date.now()));
      const sample = await snapshot();
      (n * SAMPLE_MS < WARMUP_MS ? out.warmup : out.samples).push(sample);
    }
    out.pairs = { alice: await selectedCandidatePairs(pages.alice), bob: await selectedCandidatePairs(pages.bob) };
    out.summary = { connectMs: out.connectMs, ...summarize(out.samples), ...warmupSummary(out.warmup, out.samples) };
  } catch (err) {
    if (server) console.error(`--- ${run.name}: callgate log (tail):\n${server.log.slice(-6000)}`);
    for (const who of ['alice', 'bob']) console.error(`--- ${run.name}: ${who}'s console:\n${out.logs[who].slice(-30).join('\n')}`);
    throw err;
  } finally {
    for (const context of contexts) await context.close().catch(() => {});
    await stopServer(server);
    ctx.current = () => null;
  }
  return out;
}

/** What the measured window shows: differences of cumulative counters, last and least of the gauges. */
function summarize(samples) {
  const s0 = samples[0];
  const s1 = samples[samples.length - 1];
  const secs = (s1.b.at - s0.b.at) / 1000;
  const d = (get) => get(s1) - get(s0);
  const bv = (k) => (s) => s.b.video[k] ?? 0;
  const ao = (k) => (s) => s.a.out[k] ?? 0;
  const min = (get) => Math.min(...samples.map(get).filter((x) => x != null));
  const max = (get) => Math.max(...samples.map(get).filter((x) => x != null));
  const last = (get) => get(s1);
  const tailN = Math.min(5, samples.length);
  const tail = samples.slice(-tailN);
  const qld = (s) => s.a.out.qualityLimitationDurations ?? {};
  const qlDelta = {};
  for (const k of Object.keys(qld(s1))) qlDelta[k] = +((qld(s1)[k] ?? 0) - (qld(s0)[k] ?? 0)).toFixed(1);
  const emitted = d(bv('jitterBufferEmittedCount'));
  // Seconds in which B decoded no new frame (a freeze still going on at the
  // end counts too; totalFreezesDuration only counts a freeze once it ends).
  let stalledS = 0;
  let run = 0;
  let longestStallS = 0;
  for (let i = 1; i < samples.length; i++) {
    const gap = (samples[i].b.at - samples[i - 1].b.at) / 1000;
    if (samples[i].b.video.framesDecoded === samples[i - 1].b.video.framesDecoded) {
      stalledS += gap;
      run += gap;
      longestStallS = Math.max(longestStallS, run);
    } else {
      run = 0;
    }
  }
  const estimates = d((s) => s.m.estimateCount);
  return {
    secs: +secs.toFixed(1),
    codec: s1.b.codec,
    // B, inbound video from A
    framesDecoded: d(bv('framesDecoded')),
    decodedFps: +(d(bv('framesDecoded')) / secs).toFixed(1),
    widthLast: last(bv('frameWidth')),
    heightLast: last(bv('frameHeight')),
    widthMin: min(bv('frameWidth')),
    heightMin: min(bv('frameHeight')),
    freezesS: +d(bv('totalFreezesDuration')).toFixed(2),
    stalledS: +stalledS.toFixed(1),
    longestStallS: +longestStallS.toFixed(1),
    freezeCount: d(bv('freezeCount')),
    pausesS: +d(bv('totalPausesDuration')).toFixed(2),
    packetsLost: d(bv('packetsLost')),
    packetsReceived: d(bv('packetsReceived')),
    nackCount: d(bv('nackCount')),
    pliCount: d(bv('pliCount')),
    jitterBufferMs: emitted > 0 ? Math.round((1000 * d(bv('jitterBufferDelay'))) / emitted) : null,
    receivedKbps: Math.round((8 * d(bv('bytesReceived'))) / secs / 1000),
    availableIncomingKbps: s1.b.pair?.availableIncomingBitrate != null ? Math.round(s1.b.pair.availableIncomingBitrate / 1000) : null,
    // A, outbound video
    targetKbpsLast: Math.round(last(ao('targetBitrate')) / 1000),
    targetKbpsTailMax: Math.round(Math.max(...tail.map(ao('targetBitrate'))) / 1000),
    targetKbpsMin: Math.round(min(ao('targetBitrate')) / 1000),
    targetKbpsMax: Math.round(max(ao('targetBitrate')) / 1000),
    sentKbps: Math.round((8 * d(ao('bytesSent'))) / secs / 1000),
    sendWidthLast: last(ao('frameWidth')),
    sendHeightLast: last(ao('frameHeight')),
    sendWidthMin: min(ao('frameWidth')),
    captureWidth: s1.a.source?.width ?? null,
    captureHeight: s1.a.source?.height ?? null,
    captureFps: s1.a.source?.framesPerSecond ?? null,
    capturedFrames: s1.a.source?.frames != null && s0.a.source?.frames != null ? s1.a.source.frames - s0.a.source.frames : null,
    encodedFps: +(d(ao('framesEncoded')) / secs).toFixed(1),
    qualityLimitation: s1.a.out.qualityLimitationReason,
    qualityLimitationS: qlDelta,
    resolutionChanges: s1.a.out.qualityLimitationResolutionChanges,
    availableOutgoingKbps: s1.a.pair?.availableOutgoingBitrate != null ? Math.round(s1.a.pair.availableOutgoingBitrate / 1000) : null,
    rttMs: s1.a.remote?.roundTripTime != null ? Math.round(1000 * s1.a.remote.roundTripTime) : null,
    encoder: s1.a.out.encoderImplementation,
    // the server
    rembs: d((s) => s.m.rembs),
    meanEstimateKbps: estimates > 0 ? Math.round(d((s) => s.m.estimateSum) / estimates / 1000) : null,
    estimates,
    sendSideEstimates: d((s) => s.m.sendSideEstimates),
    lastEstimateKbps: (() => {
      for (let i = samples.length - 1; i > 0; i--) {
        const n = samples[i].m.estimateCount - samples[i - 1].m.estimateCount;
        if (n > 0) return Math.round((samples[i].m.estimateSum - samples[i - 1].m.estimateSum) / n / 1000);
      }
      return null;
    })(),
    bandwidthDrops: d((s) => s.m.bandwidthDrops),
    serverNacks: d((s) => s.m.nacks),
    serverPlis: d((s) => s.m.plis),
    // the link toward B
    linkKbps: Math.round((8 * d((s) => s.q.bytes)) / secs / 1000),
    linkDrops: d((s) => s.q.drops),
    linkOfferedPps: Math.round((d((s) => s.q.packets) + d((s) => s.q.drops)) / secs),
    bDatagramsPps: s1.b.pair && s0.b.pair ? Math.round(d((s) => s.b.pair.packetsReceived ?? 0) / secs) : null,
    bVideoPps: Math.round(d(bv('packetsReceived')) / secs),
    aVideoPps: Math.round(d(ao('packetsSent')) / secs),
    backFrames: d((s) => s.backFrames),
    serverCpuPct: s1.cpu != null && s0.cpu != null ? Math.round((100 * (s1.cpu - s0.cpu)) / secs) : null,
    linkOverlimits: d((s) => s.q.overlimits),
  };
}

/**
 * What happened to A's target bitrate from B's first frame on: its highest,
 * and when it first came down to the cap (and stayed there for the rest of
 * the run).
 */
function warmupSummary(warmup, window) {
  const all = [...warmup, ...window];
  const target = (s) => (s.a?.out.targetBitrate ?? 0) / 1000;
  let settledAt = null;
  for (let i = all.length - 1; i >= 0 && target(all[i]) <= CAP_KBIT; i--) settledAt = all[i].sinceVideo;
  return {
    targetKbpsMaxSinceVideo: Math.round(Math.max(...all.map(target))),
    targetAtOrBelowCapFromS: settledAt == null ? null : +(settledAt / 1000).toFixed(1),
  };
}

/** One table, a row per figure, a column per run. */
function table(results) {
  const rows = [
    ['B first video (ms after opening)', (s) => `${s.connectMs}`],
    ['window (s)', 'secs'],
    ['codec', 'codec'],
    ['B framesDecoded (Δ)', (s) => `${s.framesDecoded} (${s.capturedFrames ? Math.round((100 * s.framesDecoded) / s.capturedFrames) : '?'}% of A's captured)`],
    ['B decoded fps', 'decodedFps'],
    ['B frame last', (s) => `${s.widthLast}x${s.heightLast}`],
    ['B frame min', (s) => `${s.widthMin}x${s.heightMin}`],
    ['B totalFreezesDuration (Δ s)', 'freezesS'],
    ['B seconds without a new frame', (s) => `${s.stalledS} (longest ${s.longestStallS})`],
    ['B freezeCount (Δ)', 'freezeCount'],
    ['B totalPausesDuration (Δ s)', 'pausesS'],
    ['B packetsLost (Δ)', 'packetsLost'],
    ['B packetsReceived (Δ)', 'packetsReceived'],
    ['B nackCount (Δ)', 'nackCount'],
    ['B pliCount (Δ)', 'pliCount'],
    ['B jitter buffer (ms/frame)', 'jitterBufferMs'],
    ['B video received (kbit/s)', 'receivedKbps'],
    ['A targetBitrate last (kbit/s)', 'targetKbpsLast'],
    ['A targetBitrate last 5 s max', 'targetKbpsTailMax'],
    ['A targetBitrate min..max', (s) => `${s.targetKbpsMin}..${s.targetKbpsMax}`],
    ['A targetBitrate max since B\'s 1st frame', 'targetKbpsMaxSinceVideo'],
    ['A target <= cap for good from (s)', 'targetAtOrBelowCapFromS'],
    ['A video sent (kbit/s)', 'sentKbps'],
    ['A frameWidth last / min', (s) => `${s.sendWidthLast}x${s.sendHeightLast} / ${s.sendWidthMin}`],
    ['A capture', (s) => `${s.captureWidth}x${s.captureHeight}@${s.captureFps}`],
    ['A frames captured (Δ)', 'capturedFrames'],
    ['A encoded fps', 'encodedFps'],
    ['A qualityLimitationReason', 'qualityLimitation'],
    ['A qualityLimitation (Δ s)', (s) => JSON.stringify(s.qualityLimitationS)],
    ['A resolution changes', 'resolutionChanges'],
    ['A availableOutgoingBitrate', 'availableOutgoingKbps'],
    ['A RTT to server (ms)', 'rttMs'],
    ['server REMBs to A (Δ)', 'rembs'],
    ['server B estimate mean, last (kbit/s)', (s) => `${s.meanEstimateKbps} (${s.estimates} estimates), ${s.lastEstimateKbps}`],
    ['server drops bandwidth (Δ)', 'bandwidthDrops'],
    ['server NACKs / PLIs (Δ)', (s) => `${s.serverNacks} / ${s.serverPlis}`],
    ['link to B (kbit/s)', 'linkKbps'],
    ['link drops / overlimits', (s) => `${s.linkDrops} / ${s.linkOverlimits}`],
    ['link offered (packets/s)', 'linkOfferedPps'],
    ['A video packets sent/s', 'aVideoPps'],
    ['B video packets/s, all datagrams/s', (s) => `${s.bVideoPps}, ${s.bDatagramsPps}`],
    ['server CPU (% of a core)', 'serverCpuPct'],
    ['A framesDecoded of B\'s video (Δ)', 'backFrames'],
  ];
  const cols = results.map((r) => r.name);
  const cells = rows.map(([label, key]) => [
    label,
    ...results.map((r) => String(typeof key === 'function' ? key(r.summary) : r.summary[key])),
  ]);
  const widths = [0, ...cols.map((_, i) => i + 1)].map((i) =>
    Math.max(...cells.map((c) => c[i].length), i === 0 ? 0 : cols[i - 1].length),
  );
  const line = (c) => c.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  return [line(['', ...cols]), ...cells.map(line)].join('\n');
}

test(`over a ${CAP_KBIT} kbit/s downlink, the capped page keeps decoding video at a lower bitrate with fewer freezes with adaptation than without`, { timeout: 240_000 }, async (t) => {
  requireCallgateBinary();
  const unavailable = await namespacesUnavailable();
  assert.equal(unavailable, null, `this test makes network namespaces (root, ip netns): ${unavailable}`);

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'callgate-capped-'));
  const lab = new NetLab(`cgcp${process.pid}`);
  /** @type {import('playwright-core').Browser[]} */
  const launched = [];
  const ctx = { lab, tmp, srv: null, browsers: {}, current: () => null };
  const killOnExit = () => ctx.current()?.child.kill('SIGKILL');
  process.once('exit', killOnExit);

  try {
    // --- the networks
    const srv = (ctx.srv = await lab.namespace('srv'));
    const nsA = await lab.namespace('a');
    const nsB = await lab.namespace('b');
    await lab.in(srv, ['addr', 'add', `${SERVER_IP}/32`, 'dev', 'lo']);
    await lab.veth({ ns: nsA, dev: 'a0', addr: '10.29.1.2/24' }, { ns: srv, dev: 's-a0', addr: '10.29.1.1/24' });
    await lab.in(nsA, ['route', 'add', 'default', 'via', '10.29.1.1', 'dev', 'a0']);
    await lab.veth({ ns: nsB, dev: 'b0', addr: '10.29.3.2/24' }, { ns: srv, dev: 's-b0', addr: '10.29.3.1/24' });
    await lab.in(nsB, ['route', 'add', 'default', 'via', '10.29.3.1', 'dev', 'b0']);
    // --- the cap: everything the server's namespace sends toward B
    await tc(['-n', srv, 'qdisc', 'add', 'dev', 's-b0', 'root', 'tbf',
      'rate', `${CAP_KBIT}kbit`, 'burst', String(TBF_BURST_BYTES), 'latency', `${TBF_LATENCY_MS}ms`]);
    t.diagnostic(`cap: ${(await tc(['-n', srv, 'qdisc', 'show', 'dev', 's-b0'])).trim()}`);

    // --- one Chromium per side, each in its namespace
    for (const [side, ns] of [['a', nsA], ['b', nsB]]) {
      const browser = await chromiumIn(lab, ns, tmp, ORIGIN);
      launched.push(browser);
      ctx.browsers[side] = browser;
    }

    // --- the same call, with adaptation and without
    const results = [];
    for (const run of RUNS) results.push(await oneRun(t, run, ctx));

    console.log(`capped downlink (${CAP_KBIT} kbit/s tbf toward B, burst ${TBF_BURST_BYTES} B, latency ${TBF_LATENCY_MS} ms; warm-up ${WARMUP_MS / 1000} s, window ${MEASURE_MS / 1000} s):`);
    console.log(table(results));
    for (const r of results) {
      const all = [...r.warmup, ...r.samples];
      const series = all.map((s, i) => ({
        t: +(s.sinceVideo / 1000).toFixed(1),
        w: s.b.video.frameWidth,
        fd: s.b.video.framesDecoded,
        fz: +s.b.video.totalFreezesDuration.toFixed(2),
        tb: Math.round((s.a.out.targetBitrate ?? 0) / 1000),
        aw: s.a.out.frameWidth,
        ql: s.a.out.qualityLimitationReason,
        aob: Math.round((s.a.pair?.availableOutgoingBitrate ?? 0) / 1000),
        fl: s.a.remote?.fractionLost,
        // B's REMB estimates heard by the server since the previous sample: their mean.
        est: i > 0 && s.m.estimateCount > all[i - 1].m.estimateCount
          ? Math.round((s.m.estimateSum - all[i - 1].m.estimateSum) / (s.m.estimateCount - all[i - 1].m.estimateCount) / 1000)
          : null,
        rembs: s.m.rembs,
        bwDrops: s.m.bandwidthDrops,
        back: s.backFrames,
        rtt: s.a.remote?.roundTripTime != null ? Math.round(1000 * s.a.remote.roundTripTime) : null,
      }));
      t.diagnostic(`${r.name}: connected in ${r.connectMs} ms; pairs ${JSON.stringify(r.pairs)}; samples ${JSON.stringify(series)}`);
    }
    if (results.length < 2) return; // TEST_CAPPED_ONLY: measuring one mode, nothing to compare
    const [on, off] = results.map((r) => r.summary);

    // The cap applied: B's media came over UDP from the server, through the shaped link.
    for (const r of results) {
      const pair = r.pairs.bob.subscriber;
      assert.ok(
        pair?.remote?.protocol === 'udp' && pair.remote.address.startsWith(`${SERVER_IP}:`),
        `${r.name}: bob's subscriber transport uses UDP from ${SERVER_IP}: ${JSON.stringify(pair)}`,
      );
      assert.ok(
        r.summary.linkKbps <= CAP_KBIT * 1.05,
        `${r.name}: the link toward bob carried no more than the cap (${r.summary.linkKbps} kbit/s)`,
      );
    }

    // With adaptation bob keeps decoding video throughout the window...
    const paused = `the server dropped ${on.bandwidthDrops} of alice's video packets for want of bandwidth (bob's consumer paused) and sent alice ${on.rembs} REMBs; bob's estimate ${on.lastEstimateKbps} kbit/s at the end`;
    assert.ok(
      on.capturedFrames > 0 && on.framesDecoded >= MIN_DECODED_SHARE * on.capturedFrames,
      `adaptation: bob decoded at least ${100 * MIN_DECODED_SHARE}% of the frames alice captured in the window: ${on.framesDecoded} of ${on.capturedFrames}; ${paused}`,
    );
    assert.ok(
      on.stalledS <= MAX_STALLED_S,
      `adaptation: bob went at most ${MAX_STALLED_S} s of the window without a new frame: ${on.stalledS} s (longest ${on.longestStallS} s); ${paused}`,
    );
    // ...with fewer freezes than without (and few in absolute terms).
    assert.ok(
      on.freezesS <= MAX_FREEZES_S && on.freezesS < off.freezesS,
      `adaptation: bob's freezes ${on.freezesS} s <= ${MAX_FREEZES_S} s and < ${off.freezesS} s without adaptation`,
    );
    // By default the server estimates each subscriber's downlink itself, from its transport-wide feedback.
    assert.ok(
      on.sendSideEstimates > 0 && on.sendSideEstimates === on.estimates,
      `adaptation: every subscriber estimate in the window (bob's and alice's) was send-side (${on.sendSideEstimates} of ${on.estimates})`,
    );
    // Alice heard of the cap (REMB, about once a second): her encoder's target ends at or below it.
    assert.ok(on.rembs >= on.secs / 2, `adaptation: the server sent alice REMBs through the window (${on.rembs} in ${on.secs} s)`);
    assert.ok(
      on.targetKbpsLast <= CAP_KBIT * TARGET_MARGIN,
      `adaptation: alice's target bitrate ends at or below the cap (+${Math.round(100 * (TARGET_MARGIN - 1))}%): ${on.targetKbpsLast} kbit/s`,
    );
    // Without adaptation nothing tells her: no REMB, and her encoder went above what bob's link takes.
    assert.equal(off.rembs, 0, 'no adaptation: the server sent alice no REMB');
    assert.ok(
      off.targetKbpsMaxSinceVideo > CAP_KBIT,
      `no adaptation: alice's target bitrate went above the cap after bob's first frame (max ${off.targetKbpsMaxSinceVideo} kbit/s)`,
    );
  } finally {
    for (const browser of launched) await browser.close().catch(() => {});
    await stopServer(ctx.current());
    process.removeListener('exit', killOnExit);
    const errors = await lab.destroy();
    if (errors.length) console.error(`netns cleanup: ${errors.join('; ')}`);
    await rm(tmp, { recursive: true, force: true });
  }
});
