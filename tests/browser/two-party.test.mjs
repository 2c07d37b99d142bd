// Two-party browser test: alice and bob, each in a headless Chromium page
// served by callgate, publish fake camera + microphone and must receive each
// other's audio and video through the SFU. Then bob's page closes and alice
// must see him leave.
//
// Run from the repo root: node --test tests/browser/   (or tests/browser/run.sh)
// Env: TEST_CALLGATE_BIN (default target/debug/callgate, relative to the repo root),
//      CHROMIUM (default /usr/bin/chromium).
// Every address used is 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { mediaFlowing, runCallgate, waitForStats, withServerAndBrowser } from './harness.mjs';

const MEDIA_TIMEOUT_MS = 30_000;
const LEAVE_TIMEOUT_MS = 20_000;

test('alice and bob see and hear each other through callgate', { timeout: 180_000 }, async (t) => {
  const describePage = (page) =>
    page.evaluate(async () => ({
      status: document.getElementById('status')?.textContent,
      stats: typeof window.callgateStats === 'function' ? await window.callgateStats() : null,
    }));
  await withServerAndBrowser('browser', async ({ base, openPage }) => {
    const room = `browser-${randomBytes(6).toString('hex')}`;
    const tokens = {};
    for (const identity of ['alice', 'bob']) {
      const out = await runCallgate(['token', '--dev', '--room', room, '--identity', identity]);
      tokens[identity] = out.trim();
      assert.match(tokens[identity], /^[\w-]+\.[\w-]+\.[\w-]+$/, `callgate token printed no JWT for ${identity}`);
    }

    /** @type {Record<string, import('playwright-core').Page>} */
    const pages = {};
    for (const identity of ['alice', 'bob']) pages[identity] = await openPage(identity);
    await Promise.all(
      Object.entries(pages).map(([identity, page]) => page.goto(`${base}/?token=${encodeURIComponent(tokens[identity])}`)),
    );

    // Each page's own participant sid, once joined.
    const sids = {};
    for (const [identity, page] of Object.entries(pages)) {
      const handle = await page.waitForFunction(() => window.callgate?.room?.localParticipant?.sid, undefined, {
        timeout: MEDIA_TIMEOUT_MS,
      });
      sids[identity] = await handle.jsonValue();
    }

    // 1. media flows both ways
    {
      const [aliceStats, bobStats] = await Promise.all(
        ['alice', 'bob'].map((identity) => waitForStats(pages[identity], mediaFlowing, MEDIA_TIMEOUT_MS)),
      );
      for (const [me, other, stats] of [
        ['alice', 'bob', aliceStats],
        ['bob', 'alice', bobStats],
      ]) {
        assert.equal(stats.joined, true, `${me} joined`);
        assert.equal(stats.identity, me);
        const video = stats.remote.find((r) => r.kind === 'video' && r.framesDecoded > 10);
        const audio = stats.remote.find(
          (r) => r.kind === 'audio' && (r.totalSamplesReceived > 0 || r.packetsReceived > 20),
        );
        assert.ok(video, `${me} decodes video: ${JSON.stringify(stats.remote)}`);
        assert.ok(audio, `${me} receives audio: ${JSON.stringify(stats.remote)}`);
        for (const track of [video, audio]) {
          assert.equal(track.participantSid, sids[other], `${me}'s ${track.kind} comes from ${other}'s sid`);
          assert.equal(track.identity, other, `${me}'s ${track.kind} comes from ${other}`);
        }
        for (const kind of ['audio', 'video']) {
          assert.ok(
            stats.published.some((p) => p.kind === kind && p.packetsSent > 0),
            `${me} sends ${kind}: ${JSON.stringify(stats.published)}`,
          );
        }
      }
      // alice's page shows a tile for bob, labelled with his identity
      const bobTile = pages.alice.locator(`figure[data-participant-sid="${sids.bob}"]`);
      assert.match(await bobTile.locator('figcaption').innerText(), /bob/);
      t.diagnostic(`media flows both ways: ${JSON.stringify({ alice: aliceStats.remote, bob: bobStats.remote })}`);
    }

    // 2. alice sees bob leave when his page closes
    {
      await pages.alice.evaluate(() => {
        window.__cgLeft = [];
        window.callgate.room.on('participantLeft', (e) =>
          window.__cgLeft.push({ participantSid: e.participantSid, identity: e.identity, reason: e.reason }),
        );
      });
      await pages.bob.close();
      const handle = await pages.alice.waitForFunction(
        (sid) => window.__cgLeft.find((e) => e.participantSid === sid) ?? false,
        sids.bob,
        { timeout: LEAVE_TIMEOUT_MS, polling: 250 },
      );
      const left = await handle.jsonValue();
      assert.equal(left.identity, 'bob');
      assert.equal(await pages.alice.evaluate((sid) => window.callgate.room.participants.has(sid), sids.bob), false);
      assert.equal(await pages.alice.locator(`figure[data-participant-sid="${sids.bob}"]`).count(), 0);
      t.diagnostic(`alice saw bob leave: ${JSON.stringify(left)}`);
    }
  }, { describePage });
});
