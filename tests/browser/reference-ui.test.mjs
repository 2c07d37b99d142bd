// The demo page (web/index.html) as a reference paid-call UI: alice calls
// host1 from the "Call someone" view at 600 coins a minute, per second
// (increments 1/1), with a small wallet. Both pages show a countdown that
// ticks between the server's `balance` messages and a low-balance alert;
// alice's "Add coins" (the dev-only POST /v1/dev/credits) extends the call;
// at the cut both pages show a summary worded for their side, with the coins
// the ledger moved.
//
// Run from the repo root: node --test tests/browser/reference-ui.test.mjs
// Env: TEST_CALLGATE_BIN (default target/debug/callgate, relative to the repo root),
//      CHROMIUM (default /usr/bin/chromium).
// Every address used is 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';

import { runCallgate, withServerAndBrowser } from './harness.mjs';

const UI_TIMEOUT_MS = 20_000;
const MEDIA_TIMEOUT_MS = 30_000;
/** 10 coins a second. */
const RATE = 600;
/** 20 s of call. */
const CREDIT = 200;
/** 10 s more. */
const ADDED = 100;

/** What #balance says now: seconds left and how many server messages it has seen. */
function balanceState(page) {
  return page.evaluate(() => {
    const el = document.getElementById('balance');
    return {
      hidden: el.hidden,
      secondsLeft: Number(el.dataset.secondsLeft),
      messages: Number(el.dataset.messages),
      text: el.textContent,
    };
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('a paid call from the demo page with a small wallet: the countdown ticks between balance messages, low balance shows, "Add coins" extends the call, and after the cut both pages sum it up with the coins the ledger moved', { timeout: 180_000 }, async (t) => {
  await withServerAndBrowser(
    'reference-ui',
    async ({ base, openPage }) => {
      const admin = (await runCallgate(['token', '--dev', '--admin'])).trim();
      const api = async (method, p, json) => {
        const res = await fetch(`${base}${p}`, {
          method,
          headers: { authorization: `Bearer ${admin}`, ...(json ? { 'content-type': 'application/json' } : {}) },
          body: json ? JSON.stringify(json) : undefined,
        });
        return { status: res.status, body: await res.json().catch(() => null) };
      };
      const credited = await api('POST', '/v1/wallets/alice/credits', { coins: CREDIT, reference: 'reference-ui-credit' });
      assert.equal(credited.status, 200, JSON.stringify(credited.body));

      const pages = {};
      for (const identity of ['alice', 'host1']) {
        const page = await openPage(identity);
        pages[identity] = page;
        await page.goto(`${base}/`);
        await page.fill('#presence-token', (await runCallgate(['token', '--dev', '--identity', identity])).trim());
        await page.fill('#admin-token', admin);
        await page.click('#presence-connect');
        await page.waitForSelector('#presence-status[data-state="connected"]', { timeout: UI_TIMEOUT_MS });
      }
      const { alice, host1 } = pages;

      await alice.fill('#call-to', 'host1');
      await alice.fill('#call-rate', String(RATE));
      await alice.fill('#call-increments', '1/1');
      await alice.click('#call-start');
      await host1.waitForSelector('#incoming:not([hidden])', { timeout: UI_TIMEOUT_MS });
      await host1.click('#accept');
      for (const page of [alice, host1]) {
        await page.waitForSelector('#conn[data-state="connected"]', { timeout: UI_TIMEOUT_MS });
        // Billing starts once both have media: the first `balance`.
        await page.waitForSelector('#balance:not([hidden])', { timeout: MEDIA_TIMEOUT_MS });
      }

      // The countdown goes down between two server messages (no new one in between).
      for (const [name, page] of Object.entries(pages)) {
        let ticked = null;
        for (let attempt = 0; attempt < 5 && !ticked; attempt++) {
          const a = await balanceState(page);
          await sleep(1200);
          const b = await balanceState(page);
          if (a.messages === b.messages && b.secondsLeft < a.secondsLeft) ticked = [a, b];
        }
        assert.ok(ticked, `${name}'s countdown ticks down between server messages`);
        t.diagnostic(`${name}: ${JSON.stringify(ticked)}`);
        assert.match(ticked[1].text, /^\d+:\d\d /, `${name}'s countdown reads m:ss`);
      }
      // Under a minute left: both pages warn, each in its own words.
      assert.equal(await alice.isVisible('#low-balance'), true);
      assert.match(await alice.textContent('#low-balance'), /unless you add coins/);
      assert.equal(await host1.isVisible('#low-balance'), true);
      assert.match(await host1.textContent('#low-balance'), /alice's balance is running low/);
      assert.doesNotMatch(await host1.textContent('#low-balance'), /recharge|you add/i);
      // Only the payer can add coins.
      assert.equal(await alice.isVisible('#add-coins'), true);
      assert.equal(await host1.isVisible('#add-coins'), false);

      // "Add coins": the server's next balance moves the cut later.
      const before = await balanceState(alice);
      const cutBefore = Date.now() + before.secondsLeft * 1000;
      await alice.fill('#add-coins-amount', String(ADDED));
      await alice.click('#add-coins');
      await alice.waitForFunction(
        ({ messages, secondsLeft }) => {
          const el = document.getElementById('balance');
          return Number(el.dataset.messages) > messages && Number(el.dataset.secondsLeft) >= secondsLeft + 5;
        },
        { messages: before.messages, secondsLeft: before.secondsLeft },
        { timeout: UI_TIMEOUT_MS },
      );
      assert.match(await alice.textContent('#recharge-status'), new RegExp(`^added ${ADDED} coins`));
      const after = await balanceState(alice);
      t.diagnostic(`before the credit ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);

      // The cut: both pages sum the call up with the call log's figures.
      for (const page of [alice, host1]) {
        await page.waitForSelector('#summary[data-coins]', { timeout: 60_000 });
      }
      assert.ok(Date.now() > cutBefore + 3000, 'the call went on past the cut it had before the credit');
      const callId = await host1.evaluate(() => window.callgate.calls.ended.id);
      const { status, body } = await api('GET', `/v1/calls/${callId}`);
      assert.equal(status, 200, JSON.stringify(body));
      const call = body.call;
      t.diagnostic(`the call: ${JSON.stringify(call)}`);
      assert.equal(call.end_reason, 'insufficient_balance');
      const payer = (await api('GET', '/v1/wallets/alice')).body;
      const payee = (await api('GET', '/v1/accounts/earnings:host1')).body;
      assert.equal(payer.held, 0);
      assert.equal(call.coins, CREDIT + ADDED - payer.balance, 'the call cost what left alice\'s wallet');
      assert.equal(payee.balance, call.coins, `host1 earned the call's coins (no commission): ${JSON.stringify(payee)}`);
      assert.ok(call.coins > CREDIT, `the added coins were spent too: ${call.coins}`);

      const mmss = (s) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
      const summary = (page) => page.evaluate(() => {
        const el = document.getElementById('summary');
        return { hidden: el.hidden, role: el.dataset.role, coins: el.dataset.coins, reason: el.dataset.reason, text: el.innerText };
      });
      const a = await summary(alice);
      const h = await summary(host1);
      assert.deepEqual({ ...a, text: undefined }, { hidden: false, role: 'payer', coins: String(call.coins), reason: 'insufficient_balance', text: undefined });
      assert.deepEqual({ ...h, text: undefined }, { hidden: false, role: 'payee', coins: String(call.coins), reason: 'insufficient_balance', text: undefined });
      assert.match(a.text, new RegExp(`You spent ${call.coins} coins for ${mmss(call.duration_s)}; the call ended because your balance ran out\\.`));
      assert.match(h.text, new RegExp(`alice paid ${call.coins} coins for ${mmss(call.duration_s)}; the call ended because alice's balance ran out\\.`));
      // Neither page is left with only an error, and host1 is not told to recharge.
      assert.equal(await alice.isVisible('#refusal'), false);
      assert.equal(await host1.isVisible('#refusal'), false);
      assert.doesNotMatch(await host1.textContent('#status'), /recharge|your balance/i);
      assert.equal(await host1.getAttribute('#conn', 'data-state'), 'disconnected');
    },
    {
      describePage: (page) =>
        page.evaluate(() => ({
          status: document.getElementById('status')?.textContent,
          call: document.getElementById('call-status')?.textContent,
          balance: document.getElementById('balance')?.outerHTML,
          summary: document.getElementById('summary')?.outerHTML,
          events: window.callgate?.events?.slice(-30),
        })),
    },
  );
});

test('a refused join shows its reason on the page: a billing_invalid token\'s message', { timeout: 60_000 }, async () => {
  await withServerAndBrowser('reference-ui-refusal', async ({ base, openPage }) => {
    const page = await openPage('bob');
    // payer = payee: the meter refuses the terms (4007 billing_invalid, with a
    // message). `callgate token` will not mint that, so sign it here with the dev key.
    const good = (await runCallgate([
      'token', '--dev', '--room', 'r1', '--identity', 'bob', '--payer', 'bob', '--payee', 'carol', '--rate', '10',
    ])).trim();
    const [header, payload] = good.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    claims.billing.payee = 'bob';
    const body = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    const bad = `${body}.${createHmac('sha256', 'secret').update(body).digest('base64url')}`;
    await page.goto(`${base}/?token=${encodeURIComponent(bad)}`);
    await page.waitForSelector('#refusal:not([hidden])', { timeout: UI_TIMEOUT_MS });
    assert.equal(await page.getAttribute('#refusal', 'data-reason'), 'billing_invalid');
    const text = await page.textContent('#refusal');
    assert.match(text, /^The call's billing terms were refused: .+\.$/);
    assert.equal(await page.textContent('#status'), text);
  });
});
