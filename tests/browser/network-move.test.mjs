// Network move: alice's browser changes networks in the middle of a call,
// as a phone going from Wi-Fi to 4G does, and bob must not notice more than
// a short freeze (docs/protocol.md, "Staying connected").
//
// Topology (network namespaces and veth pairs of this test's own, see
// netns.mjs; every address is one made here):
//
//   <p>-a  (alice's Chromium)  a0 10.9.1.2/24 ── s-a0 10.9.1.1/24 ┐
//                              a1 10.9.2.2/24 ── s-a1 10.9.2.1/24 ┤ <p>-srv: callgate on 10.9.0.1 (lo)
//   <p>-b  (bob's Chromium)    b0 10.9.3.2/24 ── s-b0 10.9.3.1/24 ┘
//
// The server listens and advertises media on 10.9.0.1, an address on its
// loopback that stays when alice's link goes: the clients route to it
// through their veth. Mid-call alice gets a second link (a1, new subnet),
// her default route moves to it and her first link (a0, with her address
// 10.9.1.2) is deleted: her WebSocket and her ICE pairs die; the SDK must
// resume on the new network. Asserted: bob decodes new video frames from
// alice within 5 s of her new link coming up, and bob never sees alice
// leave (`participantLeft`). The recovery time is printed.
//
// Camera video is one encoding here (`?simulcast=0`; the SDK's default is
// simulcast): this test's subject is the reconnection, and with simulcast
// the layers' restart adds to it (15 new frames 4.0–4.8 s after the move
// in four runs, docs/media.md, "When a publisher's stream stops and comes
// back"), too close to the 5 s limit to tell one from the other.
//
// Run from the repo root (as root): node --test tests/browser/  (scripts/test.sh runs it
// inside a private network namespace). Env: TEST_CALLGATE_BIN, CHROMIUM.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import {
  runCallgate, readyLine, stopServer, mediaFlowing, waitForStats, selectedCandidatePairs, requireCallgateBinary
} from './harness.mjs';
import { NetLab, chromiumIn, namespacesUnavailable, serverIn } from './netns.mjs';

const SERVER_IP = '10.9.0.1';
const HTTP_PORT = 7880; // alone in its namespace
const ORIGIN = `http://${SERVER_IP}:${HTTP_PORT}`;
const MEDIA_TIMEOUT_MS = 40_000;
/** What the issue asks: new frames at bob within this long of alice's new link. */
const RECOVERY_LIMIT_MS = 5_000;
/** How long to keep watching after the limit, to print the recovery time even when late. */
const OBSERVE_MS = 30_000;
/**
 * Frames bob must decode from alice beyond the count when her old link went
 * away, so they cannot be frames that were already on their way (0.5 s of
 * the 30 fps fake camera; a jitter buffer on a LAN holds far less).
 */
const NEW_FRAMES = 15;

/** The local address of each transport's selected pair. */
function localAddresses(pairs) {
  return Object.fromEntries(Object.entries(pairs).map(([t, p]) => [t, p?.local?.address ?? null]));
}

/** Frames bob's page decoded from participant `sid`'s video (0 when none yet). */
async function framesFrom(page, sid) {
  const stats = await page.evaluate(() => window.callgateStats());
  return stats.remote
    .filter((r) => r.kind === 'video' && r.participantSid === sid)
    .reduce((n, r) => Math.max(n, r.framesDecoded), 0);
}

test('bob decodes new video from alice within 5 s of her new network and never sees her leave when her network changes mid-call', { timeout: 240_000 }, async (t) => {
  requireCallgateBinary();
  const unavailable = await namespacesUnavailable();
  assert.equal(unavailable, null, `this test makes network namespaces (root, ip netns): ${unavailable}`);

  const tmp = await mkdtemp(path.join(os.tmpdir(), 'callgate-move-'));
  const lab = new NetLab(`cgmv${process.pid}`);
  let server = null;
  /** @type {import('playwright-core').Browser[]} */
  const browsers = [];
  const killOnExit = () => server?.child.kill('SIGKILL');
  process.once('exit', killOnExit);
  /** @type {Record<string, string[]>} */
  const pageLogs = {};
  /** @type {Record<string, import('playwright-core').Page>} */
  const pages = {};

  try {
    // --- the networks
    const srv = await lab.namespace('srv');
    const nsA = await lab.namespace('a');
    const nsB = await lab.namespace('b');
    await lab.in(srv, ['addr', 'add', `${SERVER_IP}/32`, 'dev', 'lo']);
    await lab.veth({ ns: nsA, dev: 'a0', addr: '10.9.1.2/24' }, { ns: srv, dev: 's-a0', addr: '10.9.1.1/24' });
    await lab.in(nsA, ['route', 'add', 'default', 'via', '10.9.1.1', 'dev', 'a0']);
    await lab.veth({ ns: nsB, dev: 'b0', addr: '10.9.3.2/24' }, { ns: srv, dev: 's-b0', addr: '10.9.3.1/24' });
    await lab.in(nsB, ['route', 'add', 'default', 'via', '10.9.3.1', 'dev', 'b0']);

    // --- the server, in its namespace, on 10.9.0.1
    server = serverIn(srv, {
      bindIp: SERVER_IP,
      httpPort: HTTP_PORT,
      dataDir: path.join(tmp, 'data'),
    });
    t.diagnostic(await readyLine(server));

    const room = `move-${randomBytes(6).toString('hex')}`;
    const tokens = {};
    for (const identity of ['alice', 'bob']) {
      tokens[identity] = (await runCallgate(['token', '--dev', '--room', room, '--identity', identity])).trim();
    }

    // --- one Chromium per client namespace
    for (const [identity, ns] of [['alice', nsA], ['bob', nsB]]) {
      const browser = await chromiumIn(lab, ns, tmp, ORIGIN);
      browsers.push(browser);
      const page = await (await browser.newContext()).newPage();
      const log = (pageLogs[identity] = []);
      page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
      page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
      pages[identity] = page;
    }
    await Promise.all(
      Object.entries(pages).map(([identity, page]) => page.goto(`${ORIGIN}/?simulcast=0&token=${encodeURIComponent(tokens[identity])}`)),
    );
    const sids = {};
    for (const [identity, page] of Object.entries(pages)) {
      const handle = await page.waitForFunction(() => window.callgate?.room?.localParticipant?.sid, undefined, {
        timeout: MEDIA_TIMEOUT_MS,
      });
      sids[identity] = await handle.jsonValue();
    }
    await Promise.all(['alice', 'bob'].map((who) => waitForStats(pages[who], mediaFlowing, MEDIA_TIMEOUT_MS)));
    const before = localAddresses(await selectedCandidatePairs(pages.alice));
    t.diagnostic(`in call; alice's transports use ${JSON.stringify(before)}`);

    // Bob's page notes the wall-clock time of every frame of alice's video it presents.
    await pages.bob.evaluate((sid) => {
      window.__aliceFrames = [];
      const video = document.querySelector(`figure[data-participant-sid="${sid}"] video`);
      const onFrame = () => {
        window.__aliceFrames.push(Date.now());
        video.requestVideoFrameCallback(onFrame);
      };
      video.requestVideoFrameCallback(onFrame);
    }, sids.alice);

    // --- the move: a new link on a new subnet, the route onto it, the old link gone
    await lab.veth({ ns: nsA, dev: 'a1', addr: '10.9.2.2/24' }, { ns: srv, dev: 's-a1', addr: '10.9.2.1/24' });
    const newLinkUp = Date.now();
    await lab.in(nsA, ['route', 'replace', 'default', 'via', '10.9.2.1', 'dev', 'a1']);
    await lab.in(nsA, ['link', 'del', 'a0']);
    const oldLinkGone = Date.now();
    const framesAtMove = await framesFrom(pages.bob, sids.alice);
    t.diagnostic(`moved alice: new link up at +0 ms, old link deleted at +${oldLinkGone - newLinkUp} ms; bob had decoded ${framesAtMove} frames from her`);

    // --- bob's frames from alice, polled until new ones arrive (or long past the limit)
    let recoveredAt = null;
    let frames = framesAtMove;
    while (Date.now() < newLinkUp + RECOVERY_LIMIT_MS + OBSERVE_MS) {
      frames = await framesFrom(pages.bob, sids.alice);
      if (frames >= framesAtMove + NEW_FRAMES) {
        recoveredAt = Date.now();
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const presented = await pages.bob.evaluate(() => window.__aliceFrames);
    const afterGone = presented.filter((at) => at > oldLinkGone);
    // The first frame bob presented after the freeze (a gap of over 300 ms), if any.
    let firstAfterFreeze = null;
    let longestGap = 0;
    for (let i = 1; i < presented.length; i++) {
      if (presented[i] <= oldLinkGone) continue;
      const gap = presented[i] - presented[i - 1];
      if (gap > longestGap) longestGap = gap;
      if (gap > 300 && firstAfterFreeze === null) firstAfterFreeze = presented[i];
    }

    const aliceEvents = await pages.alice.evaluate(() => window.callgate.events);
    const bobEvents = await pages.bob.evaluate(() => window.callgate.events);
    const aliceLeftAtBob = bobEvents.filter((e) => e.name === 'participantLeft' && e.participantSid === sids.alice);
    const after = await selectedCandidatePairs(pages.alice)
      .then(localAddresses)
      .catch((err) => ({ error: err.message }));
    const rel = (at) => (at === null ? null : at - newLinkUp);
    const summary = {
      recovery_ms: rel(recoveredAt),
      first_frame_after_freeze_ms: rel(firstAfterFreeze),
      longest_freeze_ms: longestGap,
      frames_presented_after_move: afterGone.length,
      frames_decoded: { at_move: framesAtMove, last: frames },
      alice_transports_after: after,
      alice_events: aliceEvents.filter((e) => e.at >= newLinkUp - 1000).map((e) => ({ ...e, at: rel(e.at) })),
      bob_events: bobEvents.filter((e) => e.at >= newLinkUp - 1000).map((e) => ({ ...e, at: rel(e.at) })),
    };
    t.diagnostic(`network move: ${JSON.stringify(summary)}`);
    console.log(`network move: recovery ${recoveredAt === null ? `none within ${RECOVERY_LIMIT_MS + OBSERVE_MS} ms` : `${rel(recoveredAt)} ms`} after alice's new link came up`);

    assert.deepEqual(aliceLeftAtBob, [], `bob never sees alice leave: ${JSON.stringify(summary.bob_events)}`);
    assert.ok(
      recoveredAt !== null && recoveredAt - newLinkUp <= RECOVERY_LIMIT_MS,
      `bob decodes ${NEW_FRAMES} new frames from alice within ${RECOVERY_LIMIT_MS} ms of her new link: ${JSON.stringify(summary)}`,
    );
  } catch (err) {
    for (const [identity, page] of Object.entries(pages)) {
      if (page.isClosed()) continue;
      const state = await page
        .evaluate(async () => ({
          conn: document.getElementById('conn')?.textContent,
          status: document.getElementById('status')?.textContent,
          stats: typeof window.callgateStats === 'function' ? await window.callgateStats() : null,
        }))
        .catch((e) => ({ error: e.message }));
      console.error(`--- ${identity}'s page: ${JSON.stringify(state)}`);
    }
    for (const [identity, log] of Object.entries(pageLogs)) {
      console.error(`--- ${identity}'s console:\n${log.slice(-40).join('\n')}`);
    }
    if (server) console.error(`--- callgate log (tail):\n${server.log.slice(-6000)}`);
    throw err;
  } finally {
    for (const browser of browsers) await browser.close().catch(() => {});
    await stopServer(server);
    process.removeListener('exit', killOnExit);
    const errors = await lab.destroy();
    if (errors.length) console.error(`netns cleanup: ${errors.join('; ')}`);
    await rm(tmp, { recursive: true, force: true });
  }
});
