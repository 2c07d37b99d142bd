// A capped uplink: alice's link toward callgate takes 300 kbit/s, put on
// mid-call. What it proves is the product's claim that the publisher's own
// congestion control works against callgate: transport-cc is negotiated on
// publisher transports and the server's TWCC receiver sends the feedback,
// so Chromium's send-side estimate (availableOutgoingBitrate) and its
// encoder (targetBitrate) follow a cap on the publisher's uplink, and the
// subscriber keeps decoding.
//
// The server runs with CALLGATE_RTC_ADAPT_TO_SUBSCRIBERS=false: it then
// sends publishers no REMB at all (asserted), so transport-cc feedback is
// the only thing that can tell alice's browser of her link; with the
// default (REMB on, bob's estimate shared out) the capped phase measured
// the same (runs 6 and 7 below, TEST_UPLINK_ADAPT=1).
//
// Topology (network namespaces and veth pairs of this test's own, see
// netns.mjs; every address is one made here):
//
//   <p>-a (alice's Chromium) a0 10.31.1.2/24 ── s-a0 10.31.1.1/24 ┐ <p>-srv: callgate on 10.31.0.1 (lo)
//   <p>-b (bob's Chromium)   b0 10.31.3.2/24 ── s-b0 10.31.3.1/24 ┘
//   tbf 300 kbit/s on a0's egress (in alice's namespace), from 10 s after bob's first frame
//
// The cap: `tc qdisc add dev a0 root tbf rate 300kbit burst 3000 latency
// 150ms` in alice's namespace, so everything she sends (media, RTCP, the
// WebSocket) goes through one token bucket; her downlink and bob's link are
// not shaped. As in capped-downlink.test.mjs: burst 3000 B is two
// full-size packets, so the bucket passes no more back to back, as a real
// bottleneck does; latency 150 ms bounds the queue at 300 kbit/s × 150 ms +
// burst ≈ 8.6 kB (about 7 full packets), a bottleneck with a moderate
// buffer. Deep enough that overuse shows as queueing delay before it shows
// as loss, which is what Chromium's delay-based estimator reads from the
// transport-cc feedback (arrival times of each packet at the server); a
// much shorter queue would turn every overshoot into tail drops, and the
// test could not tell the delay-based estimator (transport-cc) from the
// loss-based one (which receiver reports alone would also drive). It
// worked out so: once settled, the link dropped nothing in any window,
// and the estimate still backed off 3–6 times in each.
//
// The run: two pages on the demo page (both publish the fake camera,
// 640x480 at 20 fps, as one encoding, `?simulcast=0`, so the figures are
// one encoder's following its estimate, and microphone; bob's video to alice is not shaped),
// then from bob's first decoded frame of alice's video: 10 s uncapped (the
// baseline), the cap, a 10 s warm-up, a 25 s window, sampled every second
// (getStats on both pages, the server's /metrics through bob's page, the
// qdisc's counters, the server's CPU time); ~50 s for the file. The table
// printed has, for each phase: alice's availableOutgoingBitrate (min,
// median, max, last, mean, max over the last 10 s) and video targetBitrate,
// what she sent (video, audio, the pair), retransmissions, NACKs, the
// server's remote-inbound-rtp (packetsLost, fractionLost, RTT), her
// frame width and qualityLimitationReason; bob's decoded frames against
// the frames alice captured, freezes, seconds without a new frame, loss;
// the link's rate, packets and drops; the server's REMBs and CPU. The
// diagnostics have the per-second series, the estimate before bob's first
// frame, and what alice's publisher negotiated (from its SDP).
//
// Negotiated (alice's publisher; its offer, the server's answer): every
// m-section carries `a=rtcp-fb:<pt> transport-cc` (offer: audio 1, video
// 10 lines; answer: audio 1, video 6) and the transport-wide-cc extmap,
// both ways; goog-remb too on video. Asserted.
//
// Measured on this 2-core machine (shared with other sessions' builds and
// tests, load 1–12; debug build of callgate, Chromium 156, VP8), ten runs
// (1–5 measuring only, 8–10 the test as it is; 2 was exploratory, with a
// 40 s baseline, 5 s warm-up and 10 s window; 6–7 with REMB on). All
// figures kbit/s but where said; "before" = A's availableOutgoingBitrate
// when the cap went on (its highest since B's first frame) and the next
// sample, ~1 s after; "window" = its min/median/mean/max over the window,
// "tail" its max over the last 10 s; "target" = A's video targetBitrate,
// max over the last 10 s (over the window); "b-o" = back-offs in the window
// (a sample ≥ 10% under the one before); link = what the qdisc carried in
// the window, drops; RTT = remote-inbound-rtp roundTripTime max in the
// window (queueing included); B = frames decoded of A's captured in the
// window, freezes (totalFreezesDuration growth), seconds without a new frame:
//
//   run         before → 1 s later   window (min/med/mean/max) tail target     b-o link, drops RTT ms  B decoded  freezes stalled
//   1  off       152 (152)  → 167    164/271/271/362  351  293 (302)  5  266, 0   431   487/498   0.53 s  0
//   2  off       556 (3834) → 242    231/293/282/327  327  264 (264)  3  296, 0   133   191/196   0.22 s  0
//   3  off      1607 (1607) → 244    220/277/284/365  357  298 (305)  5  297, 0    49   502/501   0       0
//   4  off      3296 (3296) → 261    203/266/273/356  340  278 (296)  6  282, 0    94   491/493   0       0
//   5  off       885 (885)  → 242    230/273/279/351  351  293 (293)  4  293, 0   174   502/499   0       0
//   6  REMB on   619 (2859) → 259    231/281/287/366  366  308 (308)  5  297, 0    61   480/500   0       1 s
//   7  REMB on   632 (922)  → 271    230/263/274/335  335  276 (276)  4  295, 0   102   503/500   0       0
//   8  off      1112 (1112) → 238    233/273/276/331  331  270 (270)  6  288, 0    98   504/500   0       0
//   9  off      3133 (3133) → 275    229/271/282/370  354  294 (310)  4  286, 0   287   483/490   1.07 s  0
//  10  off       663 (663)  → 240    228/276/279/356  356  297 (297)  5  293, 0   178   508/501   0       0
//
// So: uncapped, the estimate sat at 560–3800 kbit/s (GoogCC's start-up
// probes; alice's encoder, application-limited at ~470 kbit/s of the fake
// camera's video with a 1700 target, then holds it; with REMB on, bob's
// estimate held it at 620–630 by the cap); the cap brought it to
// 238–275 within the next sample (~1 s), with 11–20 packets dropped by the
// qdisc, 17–32 retransmitted and up to 15% fractionLost reported by the
// server in that second, and bob's freezes of 0.3–1.3 s in the warm-up.
// From then on it is the sawtooth of a delay-based AIMD estimator: it
// climbs ~25–40 kbit/s a second to 305–370, the queue grows (RTT up to
// 50–430 ms), and it backs off to 200–250 (0.85 × what was acked; 164
// once, run 1), every 4–9 s, with no loss at all (0 drops, 0 packets lost, 0 retransmitted in
// every window). The target follows it ~60 kbit/s lower (audio and
// overhead); alice's encoder went to 480x360 ("bandwidth") in 9 of 10
// runs (320x240 for a while in run 1), stayed at 640x480 in run 8. The link carried 266–297 kbit/s (tbf counts Ethernet headers, so
// ~290 is what the IP-level estimate can get); bob decoded 96–100% of the
// frames alice captured with at most 1.07 s of freezes.
//
// Run 1 is the odd one: its estimate was at 73–80 kbit/s at bob's first
// frame (3.9 s after opening, RTT 192 ms: the machine was at load 12) and
// climbed only ~8% a second, so it was under the cap when the cap went on
// (152) and met it 7 s later (362, then backed off). Since then the test
// records the estimate from the pages opening: 300 kbit/s (Chromium's
// start), then 574–13346 after the probes before bob's first frame (run
// 10: still 301–315 there, 663 by the cap).
// Whether the baseline goes above the cap is therefore not asserted.
//
// Thresholds, from the runs above:
//   - transport-cc in alice's publisher offer and answer (feedback and
//     extension, every m-section), her transport UDP to the server, no
//     REMB sent to her;
//   - the link carried ≤ the cap + 5% in the window (the cap applied);
//   - the estimate's median over the window ≤ cap × 1.05 (measured 263–293,
//     ≥ 22 kbit/s under 315): it settles at the cap, at ~290 IP-level;
//   - its max over the last 10 s ≤ cap × 1.35 = 405: the sawtooth's peaks
//     measured 327–366 there (370 over a window), 1.09–1.23 × the cap; one
//     more second of detection lag on a loaded machine adds ~35, so 1.15
//     (345) as first proposed would have failed 6 of the 10 runs that
//     behaved as they should. Uncapped it is 600–3800;
//   - the video targetBitrate's max over the last 10 s ≤ cap × 1.15 = 345
//     (measured 264–308);
//   - not collapsed (the pattern when feedback stops coming): the estimate's
//     mean over the window and what the link carried ≥ cap × 0.6 (measured
//     271–287 and 266–297);
//   - ≥ 2 back-offs in the window while the link dropped ≤ 1% of its
//     packets (measured 3–6 back-offs, 0 drops): the estimate reads delay,
//     which without REMB only the transport-cc feedback carries;
//   - bob decoded ≥ 80% of the frames alice captured in the window
//     (measured 96–100%), ≤ 2 s of it without a new frame (0–1 s) and
//     ≤ 2 s of freezes (0–1.07 s).
//
// Run from the repo root (as root): node --test tests/browser/capped-uplink.test.mjs
// (scripts/test.sh runs it inside a private network namespace).
// Env: TEST_CALLGATE_BIN, CHROMIUM, TEST_SERVER_LOG (see harness.mjs),
//      TEST_UPLINK_BASELINE_S (default 10), TEST_UPLINK_WARMUP_S (10),
//      TEST_UPLINK_MEASURE_S (the window, 25), and for measuring only:
//      TEST_UPLINK_KBIT (the cap, 300), TEST_UPLINK_BURST (bytes, 3000),
//      TEST_UPLINK_LATENCY_MS (150), TEST_UPLINK_ADAPT=1 (REMB to publishers
//      on, the server's default), TEST_UPLINK_MEASURE_ONLY=1 (print, assert
//      nothing).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {
  runCallgate, readyLine, stopServer, selectedCandidatePairs, cpuSeconds, requireCallgateBinary
} from './harness.mjs';
import { NetLab, chromiumIn, namespacesUnavailable, serverIn, tc } from './netns.mjs';

const SERVER_IP = '10.31.0.1';
const HTTP_PORT = 7880; // alone in its namespace
const ORIGIN = `http://${SERVER_IP}:${HTTP_PORT}`;

/** A's uplink: the token bucket on A's end of its veth (its egress goes toward the server). */
const CAP_KBIT = Number(process.env.TEST_UPLINK_KBIT ?? 300);
/** Two full-size packets: the bucket lets no more than that through back to back. */
const TBF_BURST_BYTES = Number(process.env.TEST_UPLINK_BURST ?? 3000);
/** The most a packet may wait in the queue (tbf's limit = rate × latency + burst). */
const TBF_LATENCY_MS = Number(process.env.TEST_UPLINK_LATENCY_MS ?? 150);

/**
 * Thresholds (see the header for the measurements behind them). Through the
 * last TAIL_S seconds of the window, A's availableOutgoingBitrate stays at
 * or under the cap times AOB_PEAK_MARGIN (the peaks of its sawtooth) and
 * its video targetBitrate under the cap times TARGET_MARGIN...
 */
const TAIL_S = 10;
const AOB_PEAK_MARGIN = 1.35;
const TARGET_MARGIN = 1.15;
/** ...the estimate's median over the window is at most the cap times this... */
const AOB_MEDIAN_MARGIN = 1.05;
/** ...and its mean, and what the link carried, at least the cap times this (the feedback kept coming). */
const MIN_USE = 0.6;
/** The estimate backs off (a sample BACKOFF lower than the one before) at least this often in the window... */
const MIN_BACKOFFS = 2;
const BACKOFF = 0.1;
/** ...while the link drops at most this share of its packets (so it is delay that it reads, not loss). */
const MAX_DROP_SHARE = 0.01;
/** B decodes at least this share of the frames A captured in the window... */
const MIN_DECODED_SHARE = 0.8;
/** ...goes no more than this many seconds of it without a new frame, and its totalFreezesDuration grows no more than this. */
const MAX_STALLED_S = 2;
const MAX_FREEZES_S = 2;

const BASELINE_MS = Number(process.env.TEST_UPLINK_BASELINE_S ?? 10) * 1000;
const WARMUP_MS = Number(process.env.TEST_UPLINK_WARMUP_S ?? 10) * 1000;
const MEASURE_MS = Number(process.env.TEST_UPLINK_MEASURE_S ?? 25) * 1000;
const SAMPLE_MS = 1000;
/** B must decode video from A within this long of the pages opening. */
const CONNECT_LIMIT_MS = 20_000;
/** Measuring only: TEST_UPLINK_MEASURE_ONLY=1 prints without asserting; TEST_UPLINK_ADAPT=1 keeps the server's REMB to publishers on. */
const MEASURE_ONLY = process.env.TEST_UPLINK_MEASURE_ONLY === '1';
const ADAPT = process.env.TEST_UPLINK_ADAPT === '1';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The tbf qdisc's counters on `dev` in `ns` (zeros before the cap is put on). */
async function qdiscStats(ns, dev) {
  const all = JSON.parse(await tc(['-n', ns, '-s', '-j', 'qdisc', 'show', 'dev', dev]));
  const q = all.find((x) => x.kind === 'tbf');
  if (!q) return { bytes: 0, packets: 0, drops: 0, overlimits: 0, backlog: 0 };
  return { bytes: q.bytes, packets: q.packets, drops: q.drops, overlimits: q.overlimits, backlog: q.backlog ?? 0 };
}

/** B's view: the inbound video from `from` on its subscriber transport. */
function subscriberStats(page, from) {
  return page.evaluate(async (identity) => {
    const room = window.callgate.room;
    const pc = room?.subscriberPc;
    if (!pc || pc.connectionState === 'closed') return null;
    const report = await pc.getStats();
    const subs = [...room.subscribedTracks.values()];
    let video = null;
    report.forEach((s) => {
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
        'framesDecoded', 'framesReceived', 'frameWidth', 'frameHeight', 'freezeCount', 'totalFreezesDuration',
        'packetsLost', 'packetsReceived', 'nackCount', 'pliCount', 'jitterBufferDelay', 'jitterBufferEmittedCount',
        'bytesReceived',
      ]),
    };
  }, from);
}

/**
 * A's view of its publisher transport: the video and audio outbound-rtp, what
 * the server reports back of the video (remote-inbound-rtp), the camera, the
 * transport and its selected pair.
 */
function publisherStats(page) {
  return page.evaluate(async () => {
    const pc = window.callgate.room?.publisherPc;
    if (!pc || pc.connectionState === 'closed') return null;
    const report = await pc.getStats();
    let out = null;
    let audio = null;
    let remote = null;
    let source = null;
    let transport = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') out = s;
      if (s.type === 'outbound-rtp' && s.kind === 'audio') audio = s;
      if (s.type === 'remote-inbound-rtp' && s.kind === 'video') remote = s;
      if (s.type === 'media-source' && s.kind === 'video') source = s;
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        transport = s;
        pair = report.get(s.selectedCandidatePairId);
      }
    });
    if (!out) return null;
    const pick = (s, keys) => (s ? Object.fromEntries(keys.map((k) => [k, s[k] ?? null])) : null);
    return {
      at: Date.now(),
      codec: report.get(out.codecId)?.mimeType ?? null,
      out: pick(out, [
        'targetBitrate', 'frameWidth', 'frameHeight', 'framesPerSecond', 'framesEncoded', 'framesSent', 'bytesSent',
        'packetsSent', 'retransmittedPacketsSent', 'retransmittedBytesSent', 'qualityLimitationReason',
        'qualityLimitationDurations', 'nackCount', 'pliCount', 'encoderImplementation',
      ]),
      audio: pick(audio, ['targetBitrate', 'bytesSent', 'packetsSent']),
      remote: pick(remote, ['fractionLost', 'packetsLost', 'roundTripTime']),
      source: pick(source, ['width', 'height', 'framesPerSecond', 'frames']),
      transport: pick(transport, ['bytesSent', 'packetsSent']),
      pair: pick(pair, ['availableOutgoingBitrate', 'currentRoundTripTime', 'bytesSent', 'packetsSent']),
    };
  });
}

/** What A's publisher negotiated for congestion control, from its SDP (offer and answer). */
function publisherSdp(page) {
  return page.evaluate(() => {
    const pc = window.callgate.room?.publisherPc;
    const look = (sdp) => {
      if (!sdp) return null;
      const sections = sdp.split(/\r?\nm=/).slice(1).map((s) => `m=${s}`);
      return sections.map((s) => {
        const lines = s.split(/\r?\n/);
        return {
          kind: lines[0].split(' ')[0].slice(2),
          mid: lines.find((l) => l.startsWith('a=mid:'))?.slice(6) ?? null,
          direction: lines.find((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l))?.slice(2) ?? null,
          transportCcFb: lines.filter((l) => /^a=rtcp-fb:\S+ transport-cc$/.test(l)).length,
          rembFb: lines.filter((l) => /^a=rtcp-fb:\S+ goog-remb$/.test(l)).length,
          twccExt: lines.some((l) => l.startsWith('a=extmap:') && l.includes('transport-wide-cc')),
          absSendTimeExt: lines.some((l) => l.startsWith('a=extmap:') && l.includes('abs-send-time')),
        };
      });
    };
    return {
      localType: pc?.localDescription?.type ?? null,
      local: look(pc?.localDescription?.sdp),
      remote: look(pc?.remoteDescription?.sdp),
    };
  });
}

/** The server's counters (through B's page: same origin, B's link is not capped). */
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
    nacks: sum('callgate_nacks_total'),
    plis: sum('callgate_keyframe_requests_total'),
  };
}

/** A few figures of a phase's samples (`phase` = those samples, `prev` = the sample before, for counters). */
function summarize(phase, prev) {
  const s0 = prev ?? phase[0];
  const s1 = phase[phase.length - 1];
  const secs = (s1.a.at - s0.a.at) / 1000;
  const d = (get) => (get(s1) ?? 0) - (get(s0) ?? 0);
  const kbps = (bytes) => Math.round((8 * bytes) / secs / 1000);
  const kb = (bps) => (bps == null ? null : Math.round(bps / 1000));
  const vals = (get) => phase.map(get).filter((x) => x != null);
  const stat = (get) => {
    const v = vals(get);
    if (!v.length) return null;
    const sorted = [...v].sort((a, b) => a - b);
    return { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1], last: v[v.length - 1] };
  };
  const aob = (s) => kb(s.a.pair?.availableOutgoingBitrate);
  const target = (s) => kb(s.a.out.targetBitrate);
  const tail = phase.filter((s) => s.a.at >= s1.a.at - TAIL_S * 1000);
  let stalledS = 0;
  for (let i = 1; i < phase.length; i++) {
    if (phase[i].b.video.framesDecoded === phase[i - 1].b.video.framesDecoded) stalledS += (phase[i].b.at - phase[i - 1].b.at) / 1000;
  }
  const rtts = vals((s) => s.a.remote?.roundTripTime).map((x) => Math.round(1000 * x));
  const emitted = d((s) => s.b.video.jitterBufferEmittedCount);
  return {
    secs: +secs.toFixed(1),
    aob: stat(aob),
    aobMean: Math.round(vals(aob).reduce((a, b) => a + b, 0) / Math.max(1, vals(aob).length)),
    target: stat(target),
    tailAobMax: Math.max(...tail.map(aob).filter((x) => x != null)),
    tailTargetMax: Math.max(...tail.map(target).filter((x) => x != null)),
    tailN: tail.length,
    videoKbps: kbps(d((s) => s.a.out.bytesSent)),
    audioKbps: kbps(d((s) => s.a.audio?.bytesSent)),
    pairKbps: kbps(d((s) => s.a.pair?.bytesSent)),
    packetsSent: d((s) => s.a.out.packetsSent),
    retransmitted: d((s) => s.a.out.retransmittedPacketsSent),
    aNacks: d((s) => s.a.out.nackCount),
    aPlis: d((s) => s.a.out.pliCount),
    remoteLost: d((s) => s.a.remote?.packetsLost),
    fractionLostMax: Math.max(0, ...vals((s) => s.a.remote?.fractionLost)),
    rttMs: rtts.length ? { min: Math.min(...rtts), max: Math.max(...rtts), last: rtts[rtts.length - 1] } : null,
    widthLast: s1.a.out.frameWidth,
    widthMin: Math.min(...vals((s) => s.a.out.frameWidth)),
    quality: s1.a.out.qualityLimitationReason,
    captured: d((s) => s.a.source?.frames),
    // B
    decoded: d((s) => s.b.video.framesDecoded),
    bWidthLast: s1.b.video.frameWidth,
    freezesS: +d((s) => s.b.video.totalFreezesDuration).toFixed(2),
    freezeCount: d((s) => s.b.video.freezeCount),
    stalledS: +stalledS.toFixed(1),
    bLost: d((s) => s.b.video.packetsLost),
    bNacks: d((s) => s.b.video.nackCount),
    bKbps: kbps(d((s) => s.b.video.bytesReceived)),
    jitterBufferMs: emitted > 0 ? Math.round((1000 * d((s) => s.b.video.jitterBufferDelay)) / emitted) : null,
    // the link and the server
    linkKbps: kbps(d((s) => s.q.bytes)),
    linkDrops: d((s) => s.q.drops),
    linkPackets: d((s) => s.q.packets),
    linkOverlimits: d((s) => s.q.overlimits),
    rembs: d((s) => s.m.rembs),
    serverNacks: d((s) => s.m.nacks),
    serverPlis: d((s) => s.m.plis),
    serverCpuPct: s1.cpu != null && s0.cpu != null ? Math.round((100 * (s1.cpu - s0.cpu)) / secs) : null,
  };
}

/** One table, a row per figure, a column per phase. */
function table(phases) {
  const st = (x) => (x ? `${x.min}/${x.median}/${x.max}, ${x.last}` : 'null');
  const rows = [
    ['seconds', 'secs'],
    ['A availableOutgoingBitrate min/med/max, last', (s) => st(s.aob)],
    ['A availableOutgoingBitrate mean', 'aobMean'],
    [`A availableOutgoingBitrate max, last ${TAIL_S} s`, (s) => `${s.tailAobMax} (${s.tailN} samples)`],
    ['A video targetBitrate min/med/max, last', (s) => st(s.target)],
    [`A video targetBitrate max, last ${TAIL_S} s`, 'tailTargetMax'],
    ['A sent kbit/s: video, audio, pair', (s) => `${s.videoKbps}, ${s.audioKbps}, ${s.pairKbps}`],
    ['A video packets sent, retransmitted', (s) => `${s.packetsSent}, ${s.retransmitted}`],
    ['A NACKs / PLIs received', (s) => `${s.aNacks} / ${s.aPlis}`],
    ['A remote-inbound lost (Δ), fractionLost max', (s) => `${s.remoteLost}, ${s.fractionLostMax}`],
    ['A remote-inbound RTT ms min/max, last', (s) => (s.rttMs ? `${s.rttMs.min}/${s.rttMs.max}, ${s.rttMs.last}` : 'null')],
    ['A frameWidth last / min, limitation', (s) => `${s.widthLast} / ${s.widthMin}, ${s.quality}`],
    ['B framesDecoded (Δ) of A captured', (s) => `${s.decoded} of ${s.captured}`],
    ['B freezes s (count), s without a frame', (s) => `${s.freezesS} (${s.freezeCount}), ${s.stalledS}`],
    ['B lost, NACKs, kbit/s, jitbuf ms', (s) => `${s.bLost}, ${s.bNacks}, ${s.bKbps}, ${s.jitterBufferMs}`],
    ['B frameWidth last', 'bWidthLast'],
    ['link kbit/s, packets, drops, overlimits', (s) => `${s.linkKbps}, ${s.linkPackets}, ${s.linkDrops}, ${s.linkOverlimits}`],
    ['server REMBs, NACKs, PLIs (Δ)', (s) => `${s.rembs}, ${s.serverNacks}, ${s.serverPlis}`],
    ['server CPU (% of a core)', 'serverCpuPct'],
  ];
  const cols = phases.map((p) => p.name);
  const cells = rows.map(([label, key]) => [
    label,
    ...phases.map((p) => String(typeof key === 'function' ? key(p.summary) : p.summary[key])),
  ]);
  const widths = [0, ...cols.map((_, i) => i + 1)].map((i) =>
    Math.max(...cells.map((c) => c[i].length), i === 0 ? 0 : cols[i - 1].length),
  );
  const line = (c) => c.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  return [line(['', ...cols]), ...cells.map(line)].join('\n');
}

test(`over a ${CAP_KBIT} kbit/s uplink, the publisher's estimate and encoder follow the cap through callgate (transport-cc) and the subscriber keeps decoding`, { timeout: 180_000 }, async (t) => {
  requireCallgateBinary();
  const unavailable = await namespacesUnavailable();
  assert.equal(unavailable, null, `this test makes network namespaces (root, ip netns): ${unavailable}`);

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'callgate-uplink-'));
  const lab = new NetLab(`cgup${process.pid}`);
  /** @type {import('playwright-core').Browser[]} */
  const launched = [];
  let server = null;
  const logs = { alice: [], bob: [] };
  const killOnExit = () => server?.child.kill('SIGKILL');
  process.once('exit', killOnExit);

  try {
    // --- the networks
    const srv = await lab.namespace('srv');
    const nsA = await lab.namespace('a');
    const nsB = await lab.namespace('b');
    await lab.in(srv, ['addr', 'add', `${SERVER_IP}/32`, 'dev', 'lo']);
    await lab.veth({ ns: nsA, dev: 'a0', addr: '10.31.1.2/24' }, { ns: srv, dev: 's-a0', addr: '10.31.1.1/24' });
    await lab.in(nsA, ['route', 'add', 'default', 'via', '10.31.1.1', 'dev', 'a0']);
    await lab.veth({ ns: nsB, dev: 'b0', addr: '10.31.3.2/24' }, { ns: srv, dev: 's-b0', addr: '10.31.3.1/24' });
    await lab.in(nsB, ['route', 'add', 'default', 'via', '10.31.3.1', 'dev', 'b0']);

    // --- one Chromium per side, each in its namespace
    const browsers = {};
    for (const [side, ns] of [['a', nsA], ['b', nsB]]) {
      const browser = await chromiumIn(lab, ns, tmp, ORIGIN);
      launched.push(browser);
      browsers[side] = browser;
    }

    // --- the server (REMB to publishers off unless TEST_UPLINK_ADAPT=1: only transport-cc can tell A of its link)
    server = serverIn(srv, {
      bindIp: SERVER_IP,
      httpPort: HTTP_PORT,
      dataDir: path.join(tmp, 'data'),
      env: ADAPT ? {} : { CALLGATE_RTC_ADAPT_TO_SUBSCRIBERS: 'false' },
    });
    t.diagnostic(await readyLine(server));

    const room = `uplink-${randomBytes(6).toString('hex')}`;
    const tokens = {};
    for (const identity of ['alice', 'bob']) {
      tokens[identity] = (await runCallgate(['token', '--dev', '--room', room, '--identity', identity])).trim();
    }
    const pages = {};
    for (const [identity, browser] of [['alice', browsers.a], ['bob', browsers.b]]) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on('console', (msg) => logs[identity].push(`[${msg.type()}] ${msg.text()}`));
      page.on('pageerror', (err) => logs[identity].push(`[pageerror] ${err.message}`));
      pages[identity] = page;
    }
    const openedAt = Date.now();
    await Promise.all(['alice', 'bob'].map((who) => pages[who].goto(`${ORIGIN}/?simulcast=0&token=${encodeURIComponent(tokens[who])}`)));
    // A's estimate from the pages opening to B's first frame (diagnostics: where it starts).
    const early = [];
    for (;;) {
      const [b, a] = await Promise.all([
        subscriberStats(pages.bob, 'alice').catch(() => null),
        publisherStats(pages.alice).catch(() => null),
      ]);
      if (a) {
        early.push({
          ms: a.at - openedAt,
          aob: a.pair?.availableOutgoingBitrate != null ? Math.round(a.pair.availableOutgoingBitrate / 1000) : null,
          tb: a.out.targetBitrate != null ? Math.round(a.out.targetBitrate / 1000) : null,
          rtt: a.pair?.currentRoundTripTime != null ? Math.round(1000 * a.pair.currentRoundTripTime) : null,
          sent: a.pair?.bytesSent ?? null,
        });
      }
      if (b && b.video.framesDecoded > 0) break;
      if (Date.now() - openedAt > CONNECT_LIMIT_MS) {
        const state = await pages.bob.evaluate(() => window.callgateStats?.()).catch((e) => e.message);
        throw new Error(`bob decoded no video from alice within ${CONNECT_LIMIT_MS} ms; bob's stats ${JSON.stringify(state)}`);
      }
      await sleep(250);
    }
    const connectMs = Date.now() - openedAt;

    const snapshot = async () => {
      const [b, a, q, m, cpu] = await Promise.all([
        subscriberStats(pages.bob, 'alice'),
        publisherStats(pages.alice),
        qdiscStats(nsA, 'a0'),
        serverMetrics(pages.bob),
        cpuSeconds(server.child.pid),
      ]);
      if (!b || !a) {
        throw new Error(`${!b ? "bob's page has no inbound video from alice" : "alice's page has no outbound video"} any more`);
      }
      return { b, a, q, m, cpu };
    };
    /** Samples every SAMPLE_MS for `ms`, each tagged with its time since `t0`. */
    const sampleFor = async (ms, t0) => {
      const out = [];
      const from = Date.now();
      for (let n = 1; n * SAMPLE_MS <= ms; n++) {
        await sleep(Math.max(0, from + n * SAMPLE_MS - Date.now()));
        const s = await snapshot();
        s.t = +((s.a.at - t0) / 1000).toFixed(1);
        out.push(s);
      }
      return out;
    };

    // --- the uncapped baseline, from B's first frame
    const start = await snapshot();
    start.t = 0;
    const baseline = await sampleFor(BASELINE_MS, start.a.at);
    // --- the cap: everything A's namespace sends (media, RTCP, the WebSocket)
    await tc(['-n', nsA, 'qdisc', 'add', 'dev', 'a0', 'root', 'tbf',
      'rate', `${CAP_KBIT}kbit`, 'burst', String(TBF_BURST_BYTES), 'latency', `${TBF_LATENCY_MS}ms`]);
    const cappedAt = Date.now();
    t.diagnostic(`cap on at t=${((cappedAt - start.a.at) / 1000).toFixed(1)} s: ${(await tc(['-n', nsA, 'qdisc', 'show', 'dev', 'a0'])).trim()}`);
    const warmup = await sampleFor(WARMUP_MS, start.a.at);
    const measured = await sampleFor(MEASURE_MS, start.a.at);

    const sdp = await publisherSdp(pages.alice);
    const pairs = await selectedCandidatePairs(pages.alice);
    const phases = [
      { name: 'uncapped', summary: summarize(baseline, start) },
      { name: 'capped warm-up', summary: summarize(warmup, baseline[baseline.length - 1]) },
      { name: 'capped window', summary: summarize(measured, warmup[warmup.length - 1]) },
    ];
    const all = [start, ...baseline, ...warmup, ...measured];
    // From when on (after the cap) the estimate stayed at or under the cap × margin.
    let settledAt = null;
    for (let i = all.length - 1; i >= 0 && all[i].a.at >= cappedAt; i--) {
      if ((all[i].a.pair?.availableOutgoingBitrate ?? Infinity) > CAP_KBIT * AOB_PEAK_MARGIN * 1000) break;
      settledAt = +((all[i].a.at - cappedAt) / 1000).toFixed(1);
    }
    // The estimate's back-offs once capped: a sample at least BACKOFF lower than the one before (the peak).
    const backoffs = [];
    for (let i = 1; i < all.length; i++) {
      const [p, c] = [all[i - 1], all[i]].map((s) => s.a.pair?.availableOutgoingBitrate ?? null);
      if (all[i].a.at > cappedAt && p != null && c != null && c <= (1 - BACKOFF) * p) {
        backoffs.push({ at: all[i].a.at, t: all[i].t, from: Math.round(p / 1000), to: Math.round(c / 1000) });
      }
    }
    const windowFrom = measured[0].a.at - SAMPLE_MS;
    const windowBackoffs = backoffs.filter((b) => b.at > windowFrom);
    const maxSinceFirstFrame = Math.max(...all.map((s) => Math.round((s.a.pair?.availableOutgoingBitrate ?? 0) / 1000)));
    const w = phases[2].summary;
    const base = phases[0].summary;

    console.log(
      `capped uplink (${CAP_KBIT} kbit/s tbf on alice's egress, burst ${TBF_BURST_BYTES} B, latency ${TBF_LATENCY_MS} ms; ` +
        `REMB to publishers ${ADAPT ? 'on' : 'off'}; baseline ${BASELINE_MS / 1000} s, warm-up ${WARMUP_MS / 1000} s, window ${MEASURE_MS / 1000} s; ` +
        `B's first frame ${connectMs} ms after opening; codec ${measured[0].a.codec}, encoder ${measured[0].a.out.encoderImplementation}; ` +
        `estimate <= cap x ${AOB_PEAK_MARGIN} for good from ${settledAt} s after the cap; its highest since B's first frame ${maxSinceFirstFrame} kbit/s; ` +
        `back-offs once capped (t: from → to kbit/s) ${backoffs.map((b) => `${b.t}: ${b.from} → ${b.to}`).join(', ')}):`,
    );
    console.log(table(phases));
    const onset = backoffs[0];
    console.log(
      `row: before cap ${base.aob.last} (max ${base.aob.max}); at the cap ${onset && onset.at - cappedAt < 3000 ? `${onset.from} → ${onset.to}` : 'no drop'}; ` +
        `window aob min/med/mean/max ${w.aob.min}/${w.aob.median}/${w.aobMean}/${w.aob.max}, tail max ${w.tailAobMax}; target tail max ${w.tailTargetMax} (window ${w.target.max}); ` +
        `back-offs ${windowBackoffs.length}; link ${w.linkKbps} kbit/s, drops ${w.linkDrops}/${w.linkPackets}; rtx ${w.retransmitted}, lost ${w.remoteLost}, RTT max ${w.rttMs?.max}; ` +
        `B ${w.decoded}/${w.captured}, freezes ${w.freezesS} s, stalled ${w.stalledS} s, width A ${w.widthLast} B ${w.bWidthLast}`,
    );
    t.diagnostic(`sdp ${JSON.stringify(sdp)}; pairs ${JSON.stringify(pairs)}`);
    const series = all.map((s) => ({
      t: s.t,
      aob: Math.round((s.a.pair?.availableOutgoingBitrate ?? 0) / 1000),
      tb: Math.round((s.a.out.targetBitrate ?? 0) / 1000),
      atb: s.a.audio?.targetBitrate != null ? Math.round(s.a.audio.targetBitrate / 1000) : null,
      sent: s.a.pair?.bytesSent,
      rtx: s.a.out.retransmittedPacketsSent,
      fl: s.a.remote?.fractionLost ?? null,
      lost: s.a.remote?.packetsLost ?? null,
      rtt: s.a.remote?.roundTripTime != null ? Math.round(1000 * s.a.remote.roundTripTime) : null,
      w: s.a.out.frameWidth,
      ql: s.a.out.qualityLimitationReason,
      fd: s.b.video.framesDecoded,
      fz: +(s.b.video.totalFreezesDuration ?? 0).toFixed(2),
      qb: s.q.bytes,
      qd: s.q.drops,
      bl: s.q.backlog,
    }));
    // the pair's bytesSent as kbit/s between samples
    for (let i = series.length - 1; i > 0; i--) {
      series[i].kbps = Math.round((8 * (series[i].sent - series[i - 1].sent)) / (all[i].a.at - all[i - 1].a.at));
    }
    for (const s of series) delete s.sent;
    series[0].kbps = null;
    t.diagnostic(`before B's first frame (ms after opening) ${JSON.stringify(early)}`);
    t.diagnostic(`samples ${JSON.stringify(series)}`);
    if (MEASURE_ONLY) return;

    // transport-cc negotiated on A's publisher: the feedback message and the header extension, both ways.
    for (const side of ['local', 'remote']) {
      for (const m of sdp[side].filter((x) => x.direction !== 'inactive')) {
        assert.ok(
          m.transportCcFb > 0 && m.twccExt,
          `alice's publisher ${side} description (${side === 'local' ? sdp.localType : 'the answer'}) negotiates transport-cc on ${m.kind} mid ${m.mid}: ${JSON.stringify(m)}`,
        );
      }
    }
    // A's media go over UDP to the server, so through the capped a0.
    assert.ok(
      pairs.publisher?.remote?.protocol === 'udp' && pairs.publisher.remote.address.startsWith(`${SERVER_IP}:`),
      `alice's publisher transport uses UDP to ${SERVER_IP}: ${JSON.stringify(pairs.publisher)}`,
    );
    // Nothing but transport-cc feedback told A of her link: no REMB...
    const rembs = phases.reduce((n, p) => n + p.summary.rembs, 0);
    if (!ADAPT) assert.equal(rembs, 0, `the server sent alice no REMB (${rembs})`);
    // The cap applied.
    assert.ok(w.linkKbps <= CAP_KBIT * 1.05, `the link from alice carried no more than the cap: ${w.linkKbps} kbit/s`);
    // Capped, the estimate and the encoder's target settle at or under the cap...
    assert.ok(
      w.aob.median <= CAP_KBIT * AOB_MEDIAN_MARGIN,
      `alice's availableOutgoingBitrate: median over the window ≤ cap × ${AOB_MEDIAN_MARGIN}: ${w.aob.median} kbit/s`,
    );
    assert.ok(
      w.tailAobMax <= CAP_KBIT * AOB_PEAK_MARGIN,
      `alice's availableOutgoingBitrate ≤ cap × ${AOB_PEAK_MARGIN} through the last ${TAIL_S} s: max ${w.tailAobMax} kbit/s`,
    );
    assert.ok(
      w.tailTargetMax <= CAP_KBIT * TARGET_MARGIN,
      `alice's video targetBitrate ≤ cap × ${TARGET_MARGIN} through the last ${TAIL_S} s: max ${w.tailTargetMax} kbit/s`,
    );
    // ...without collapsing (as it does when feedback stops coming): the estimate, and what the link carried, near the cap.
    assert.ok(w.aobMean >= CAP_KBIT * MIN_USE, `alice's availableOutgoingBitrate: mean over the window ≥ cap × ${MIN_USE}: ${w.aobMean} kbit/s`);
    assert.ok(w.linkKbps >= CAP_KBIT * MIN_USE, `the link from alice carried ≥ cap × ${MIN_USE}: ${w.linkKbps} kbit/s`);
    // ...and it is delay that the estimator reads (from transport-cc feedback): it backs off while the link drops next to nothing.
    assert.ok(
      windowBackoffs.length >= MIN_BACKOFFS && w.linkDrops <= MAX_DROP_SHARE * w.linkPackets,
      `alice's estimate backed off ≥ ${MIN_BACKOFFS} times in the window (${windowBackoffs.length}) while the link dropped ≤ ${100 * MAX_DROP_SHARE}% of its packets (${w.linkDrops} of ${w.linkPackets})`,
    );
    // B keeps decoding A's video.
    assert.ok(
      w.captured > 0 && w.decoded >= MIN_DECODED_SHARE * w.captured,
      `bob decoded ≥ ${100 * MIN_DECODED_SHARE}% of the frames alice captured in the window: ${w.decoded} of ${w.captured}`,
    );
    assert.ok(w.stalledS <= MAX_STALLED_S, `bob went ≤ ${MAX_STALLED_S} s of the window without a new frame: ${w.stalledS} s`);
    assert.ok(w.freezesS <= MAX_FREEZES_S, `bob's totalFreezesDuration grew ≤ ${MAX_FREEZES_S} s in the window: ${w.freezesS} s`);
  } catch (err) {
    if (server) console.error(`--- callgate log (tail):\n${server.log.slice(-6000)}`);
    for (const who of ['alice', 'bob']) console.error(`--- ${who}'s console:\n${logs[who].slice(-30).join('\n')}`);
    throw err;
  } finally {
    for (const browser of launched) await browser.close().catch(() => {});
    await stopServer(server);
    process.removeListener('exit', killOnExit);
    const errors = await lab.destroy();
    if (errors.length) console.error(`netns cleanup: ${errors.join('; ')}`);
    await rm(tmp, { recursive: true, force: true });
  }
});
