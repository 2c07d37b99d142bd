// Voice room in headless Chromium through the demo page (docs/protocol.md,
// "Moderation" and "Data messages"): a host's page and a listener's page
// join one room with role tokens; the listener raises its hand, the host
// invites it to speak, the listener starts speaking, and the host's page
// receives its audio. A chat message reaches the other page.
//
// Run from the repo root: node --test tests/browser/
// Env: TEST_CALLGATE_BIN, CHROMIUM (see harness.mjs). Every address used is 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { runCallgate, waitForStats, withServerAndBrowser } from './harness.mjs';

const WAIT_MS = 30_000;

test('a host promotes a listener, whose audio then reaches the host; chat and a raised hand reach the other page', { timeout: 180_000 }, async (t) => {
  await withServerAndBrowser('voice', async ({ base, openPage }) => {
    const room = `voice-${randomBytes(6).toString('hex')}`;
    /** @type {Record<string, import('playwright-core').Page>} */
    const pages = {};
    for (const [identity, role] of [['host', 'host'], ['fan', 'listener']]) {
      const token = (await runCallgate(['token', '--dev', '--room', room, '--identity', identity, '--role', role])).trim();
      pages[identity] = await openPage(identity);
      await pages[identity].goto(`${base}/?token=${encodeURIComponent(token)}`);
    }
    const fanSid = await (
      await pages.fan.waitForFunction(() => window.callgate?.room?.localParticipant?.sid, undefined, { timeout: WAIT_MS })
    ).jsonValue();
    // Both pages list the fan among the listeners; only the host's has controls.
    await pages.host.locator('#listeners li[data-identity="fan"]').waitFor({ timeout: WAIT_MS });
    assert.equal(await pages.fan.locator('#listeners li[data-identity="fan"] button').count(), 0);
    assert.equal(await pages.fan.locator('#speak').isHidden(), true, 'a listener has nothing to speak with');

    // The fan raises its hand; the host sees it.
    await pages.fan.click('#raise-hand');
    await pages.host.locator('#listeners li[data-identity="fan"]', { hasText: '✋' }).waitFor({ timeout: WAIT_MS });

    // The host invites the fan to speak.
    await pages.host.click('#listeners li[data-identity="fan"] button.invite');
    await pages.fan.locator('#speak').waitFor({ state: 'visible', timeout: WAIT_MS });
    await pages.host.locator('#speakers li[data-identity="fan"]').waitFor({ timeout: WAIT_MS });
    assert.doesNotMatch(await pages.host.locator('#speakers li[data-identity="fan"]').innerText(), /✋/, 'the hand is lowered');

    // The fan starts speaking; the host's page receives its audio.
    await pages.fan.click('#speak');
    const stats = await waitForStats(
      pages.host,
      (s) => s.remote.some((r) => r.participantSid === fanSid && r.kind === 'audio' && r.packetsReceived > 20),
      WAIT_MS,
    );
    const heard = stats.remote.find((r) => r.participantSid === fanSid && r.kind === 'audio');
    assert.equal(heard.identity, 'fan');
    t.diagnostic(`the host hears the promoted fan: ${JSON.stringify(heard)}`);

    // A chat line from the host reaches the fan's page.
    await pages.host.fill('#chat-input', 'welcome up');
    await pages.host.click('#chat-send');
    await pages.fan.locator('#chat-log li', { hasText: 'host: welcome up' }).waitFor({ timeout: WAIT_MS });
  });
});
