// Calls through the demo page (web/index.html, "Call someone"; docs/calls.md):
// two headless Chromium pages, alice and host1, each online with a presence
// token and, standing in for the app's backend, an admin API token. alice
// calls host1 at a rate; host1's page rings; host1 accepts (media flows both
// ways, alice hangs up, the call is billed) or declines (nothing is billed).
// The pages' call history, the call API and alice's wallet must agree.
//
// Run from the repo root: node --test tests/browser/calls.test.mjs
// Env: TEST_CALLGATE_BIN (default target/debug/callgate, relative to the repo root),
//      CHROMIUM (default /usr/bin/chromium).
// Every address used is 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { mediaFlowing, runCallgate, waitForStats, withServerAndBrowser } from './harness.mjs';

const UI_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 30_000;
/** An ended call's coins come from its metering session, settled a moment after the call ends. */
const SETTLE_TIMEOUT_MS = 20_000;
const RATE = 15;
const CREDIT = 100;

/**
 * A callgate server (metering on, as with --dev), an admin token, a presence
 * token each for alice and host1, alice's wallet credited with CREDIT coins,
 * and a headless Chromium page each for alice and host1 on the demo page,
 * online. Runs `body`, then tears everything down; on failure prints what the
 * pages and the server were doing.
 */
async function withCallPages(t, body) {
  await withServerAndBrowser(
    'calls',
    async ({ base, openPage }) => {
      const admin = (await runCallgate(['token', '--dev', '--admin'])).trim();
      const presence = {};
      for (const identity of ['alice', 'host1']) {
        presence[identity] = (await runCallgate(presenceTokenArgs(identity))).trim();
        assert.match(presence[identity], /^[\w-]+\.[\w-]+\.[\w-]+$/, `callgate token printed no JWT for ${identity}`);
      }
      const api = async (method, p, json) => {
        const res = await fetch(`${base}${p}`, {
          method,
          headers: { authorization: `Bearer ${admin}`, ...(json ? { 'content-type': 'application/json' } : {}) },
          body: json ? JSON.stringify(json) : undefined,
        });
        return { status: res.status, body: await res.json().catch(() => null) };
      };
      const credited = await api('POST', '/v1/wallets/alice/credits', { coins: CREDIT, reference: 'calls-test-credit' });
      assert.equal(credited.status, 200, JSON.stringify(credited.body));
      assert.equal(credited.body.balance, CREDIT);

      /** @type {Record<string, import('playwright-core').Page>} */
      const pages = {};
      for (const identity of ['alice', 'host1']) {
        const page = await openPage(identity);
        pages[identity] = page;
        await page.goto(`${base}/`);
        await page.fill('#presence-token', presence[identity]);
        await page.fill('#admin-token', admin);
        await page.click('#presence-connect');
      }
      for (const [identity, page] of Object.entries(pages)) {
        await page.waitForSelector('#presence-status[data-state="connected"]', { timeout: UI_TIMEOUT_MS });
        assert.equal(await page.textContent('#presence-status'), `online as ${identity}`);
      }
      await body({ pages, api });
    },
    {
      describePage: (page) =>
        page.evaluate(async () => ({
          presence: document.getElementById('presence-status')?.textContent,
          call: document.getElementById('call-status')?.textContent,
          status: document.getElementById('status')?.textContent,
          history: document.getElementById('history-rows')?.innerText,
          events: window.callgate?.events?.slice(-30),
          stats: typeof window.callgateStats === 'function' ? await window.callgateStats() : null,
        })),
    },
  );
}

/**
 * `callgate token` arguments for a presence token of `identity`: a token
 * without a room, good for `connect` only.
 */
function presenceTokenArgs(identity) {
  return ['token', '--dev', '--identity', identity];
}

/** alice's page calls host1 (video, RATE coins a minute); resolves with the call id once it rings. */
async function aliceCallsHost1(pages) {
  const alice = pages.alice;
  await alice.fill('#call-to', 'host1');
  await alice.selectOption('#call-type', 'video');
  await alice.fill('#call-rate', String(RATE));
  await alice.click('#call-start');
  await alice.waitForSelector('#call-status[data-state="ringing"]', { timeout: UI_TIMEOUT_MS });
  const callId = await alice.getAttribute('#call-status', 'data-call-id');
  assert.match(callId, /^CA_/);
  assert.equal(await alice.isVisible('#call-cancel'), true, 'Cancel is offered while it rings');

  // host1's page rings with alice's name and the call's type.
  const host1 = pages.host1;
  await host1.waitForSelector('#incoming:not([hidden])', { timeout: UI_TIMEOUT_MS });
  assert.equal(await host1.getAttribute('#incoming', 'data-call-id'), callId);
  assert.equal(await host1.textContent('#incoming-caller'), 'alice');
  assert.equal(await host1.textContent('#incoming-type'), 'video call');
  return callId;
}

/** The history row of `callId` on `page` once `ready` (a selector suffix) holds for it. */
async function historyRow(page, callId, ready) {
  const row = await page.waitForSelector(`#history-rows tr[data-call-id="${callId}"]${ready}`, {
    timeout: SETTLE_TIMEOUT_MS,
  });
  return row.evaluate((tr) => ({ ...tr.dataset }));
}

test('alice calls host1 at 15 coins/min from the demo page; host1 accepts; media flows both ways; alice\'s watch list shows host1 online, busy in the call, online after; alice hangs up; both histories show completed with the coins GET /v1/calls/{id} says, and alice\'s wallet paid exactly them', { timeout: 240_000 }, async (t) => {
  await withCallPages(t, async ({ pages, api }) => {
    // alice watches host1: online before the call, busy in it, online after.
    await pages.alice.fill('#watch-identity', 'host1');
    await pages.alice.click('#watch-add');
    const host1Is = (status) =>
      pages.alice.waitForSelector(`#watch-list li[data-identity="host1"][data-status="${status}"]`, { timeout: UI_TIMEOUT_MS });
    await host1Is('online');

    const callId = await aliceCallsHost1(pages);
    await pages.host1.click('#accept');
    for (const page of Object.values(pages)) {
      await page.waitForSelector('#call-status[data-state="accepted"]', { timeout: UI_TIMEOUT_MS });
    }
    assert.equal(await pages.alice.textContent('#call-status'), 'in a call with host1');
    assert.equal(await pages.host1.textContent('#call-status'), 'in a call with alice');
    assert.equal(await pages.host1.isHidden('#incoming'), true, 'host1 stops ringing once it answered');

    // Media flows both ways in the call's room, each from the other.
    const stats = {};
    for (const identity of ['alice', 'host1']) {
      stats[identity] = await waitForStats(pages[identity], mediaFlowing, MEDIA_TIMEOUT_MS);
    }
    for (const [me, other] of [['alice', 'host1'], ['host1', 'alice']]) {
      const s = stats[me];
      assert.equal(s.identity, me);
      const video = s.remote.find((r) => r.kind === 'video' && r.framesDecoded > 10);
      const audio = s.remote.find((r) => r.kind === 'audio' && (r.totalSamplesReceived > 0 || r.packetsReceived > 20));
      assert.ok(video, `${me} decodes video: ${JSON.stringify(s.remote)}`);
      assert.ok(audio, `${me} receives audio: ${JSON.stringify(s.remote)}`);
      assert.equal(video.identity, other, `${me}'s video comes from ${other}`);
      assert.equal(audio.identity, other, `${me}'s audio comes from ${other}`);
    }
    const roomName = await pages.alice.evaluate(() => window.callgate.room.roomInfo.name);
    assert.equal(roomName, `call-${callId}`);
    await host1Is('busy');

    // alice hangs up: the call ends for both.
    assert.equal(await pages.alice.isVisible('#hangup'), true);
    await pages.alice.click('#hangup');
    for (const page of Object.values(pages)) {
      await page.waitForSelector('#call-status[data-state="ended"]', { timeout: UI_TIMEOUT_MS });
    }

    // Both histories settle on the call's outcome and coins; the API says the same.
    const rows = {};
    for (const identity of ['alice', 'host1']) {
      rows[identity] = await historyRow(pages[identity], callId, ':not([data-coins="null"])');
    }
    const { status, body } = await api('GET', `/v1/calls/${callId}`);
    assert.equal(status, 200, JSON.stringify(body));
    const call = body.call;
    t.diagnostic(`the call: ${JSON.stringify(call)}`);
    assert.equal(call.state, 'ended');
    assert.equal(call.outcome, 'completed');
    assert.equal(call.ended_by, 'alice');
    assert.equal(call.end_reason, 'hung_up');
    assert.deepEqual(call.callees, [{ identity: 'host1', ring: 'accepted' }]);
    // Under a minute at 15 coins a minute, in the default 60/60 s increments: one minute billed.
    assert.ok(call.duration_s < 60, `the call lasted ${call.duration_s} s`);
    assert.equal(call.billed_seconds, 60);
    assert.equal(call.coins, RATE);
    for (const identity of ['alice', 'host1']) {
      assert.deepEqual(rows[identity], {
        callId,
        outcome: 'completed',
        durationS: String(call.duration_s),
        coins: String(call.coins),
      }, `${identity}'s history row`);
    }

    const wallet = await api('GET', '/v1/wallets/alice');
    assert.equal(wallet.status, 200, JSON.stringify(wallet.body));
    assert.equal(wallet.body.balance, CREDIT - call.coins);
    assert.equal(wallet.body.held, 0);
    await host1Is('online');
  });
});

test('host1 declines alice\'s paid call from the demo page: alice sees rejected, both histories show rejected with coins null, alice\'s wallet keeps its 100 coins with nothing held', { timeout: 120_000 }, async (t) => {
  await withCallPages(t, async ({ pages, api }) => {
    const callId = await aliceCallsHost1(pages);
    await pages.host1.click('#decline');
    await pages.alice.waitForSelector('#call-status[data-state="rejected"]', { timeout: UI_TIMEOUT_MS });
    assert.equal(await pages.alice.textContent('#call-status'), 'call rejected (declined)');
    assert.equal(await pages.alice.isHidden('#call-cancel'), true);
    assert.equal(await pages.host1.getAttribute('#call-status', 'data-state'), 'declined');
    assert.equal(await pages.host1.isHidden('#incoming'), true);

    const rows = {};
    for (const identity of ['alice', 'host1']) {
      rows[identity] = await historyRow(pages[identity], callId, '[data-outcome="rejected"]');
      assert.deepEqual(rows[identity], { callId, outcome: 'rejected', durationS: 'null', coins: 'null' }, `${identity}'s history row`);
    }
    const { status, body } = await api('GET', `/v1/calls/${callId}`);
    assert.equal(status, 200, JSON.stringify(body));
    t.diagnostic(`the call: ${JSON.stringify(body.call)}`);
    assert.equal(body.call.outcome, 'rejected');
    assert.equal(body.call.ended_by, 'host1');
    assert.equal(body.call.end_reason, 'declined');
    assert.equal(body.call.coins, null);
    assert.deepEqual(body.call.callees, [{ identity: 'host1', ring: 'rejected' }]);

    const wallet = await api('GET', '/v1/wallets/alice');
    assert.equal(wallet.status, 200, JSON.stringify(wallet.body));
    assert.equal(wallet.body.balance, CREDIT);
    assert.equal(wallet.body.held, 0);
  });
});
