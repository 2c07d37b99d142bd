// Relay-only browser test: alice and bob, each in a headless Chromium page
// that may use relay candidates only (`?relay=1`: iceTransportPolicy
// "relay"), must decode each other's video and receive each other's audio
// through callgate's embedded TURN relay and the SFU. Both pages' selected
// candidate pairs must be relayed, and the relay's metrics must count the
// media both ways.
//
// Run from the repo root: node --test tests/browser/
// Env: TEST_CALLGATE_BIN (default target/debug/callgate, relative to the repo root),
//      CHROMIUM (default /usr/bin/chromium).
// Every address used is 127.0.0.1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import {
  HOST, runCallgate, readyLine, mediaFlowing, waitForStats, selectedCandidatePairs, withServerAndBrowser,
} from './harness.mjs';

const MEDIA_TIMEOUT_MS = 40_000;

/** The sum of a Prometheus series over label sets containing `labels`. */
function metric(text, name, labels = '') {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    const key = line.slice(0, at);
    if (key !== name && !(key.startsWith(`${name}{`) && key.includes(labels))) continue;
    sum += Number(line.slice(at + 1));
  }
  return sum;
}

test('alice and bob see and hear each other through the TURN relay only', { timeout: 180_000 }, async (t) => {
  await withServerAndBrowser('browser-relay', async ({ base, server, openPage }) => {
    const ready = Object.fromEntries((await readyLine(server)).split(' ').slice(2).map((f) => f.split('=')));
    assert.ok(ready.turn_udp, `the ready line names the TURN relay: ${JSON.stringify(ready)}`);

    const room = `relay-${randomBytes(6).toString('hex')}`;
    const tokens = {};
    for (const identity of ['alice', 'bob']) {
      tokens[identity] = (await runCallgate(['token', '--dev', '--room', room, '--identity', identity])).trim();
    }

    const pages = {};
    for (const identity of ['alice', 'bob']) pages[identity] = await openPage(identity);
    await Promise.all(
      Object.entries(pages).map(([identity, page]) =>
        page.goto(`${base}/?relay=1&token=${encodeURIComponent(tokens[identity])}`),
      ),
    );

    // The server handed out TURN URLs, and the SDK uses relay candidates only.
    for (const page of Object.values(pages)) {
      await page.waitForFunction(() => window.callgate?.room?.state === 'connected', undefined, {
        timeout: MEDIA_TIMEOUT_MS,
      });
      const servers = await page.evaluate(() => window.callgate.room.iceServers);
      const urls = servers.flatMap((s) => s.urls);
      assert.ok(urls.some((u) => u.startsWith(`turn:${HOST}:${ready.turn_udp.split(':')[1]}`)), JSON.stringify(urls));
      assert.equal(
        await page.evaluate(() => window.callgate.room.publisherPc.getConfiguration().iceTransportPolicy),
        'relay',
      );
    }

    const [aliceStats, bobStats] = await Promise.all(
      ['alice', 'bob'].map((identity) => waitForStats(pages[identity], mediaFlowing, MEDIA_TIMEOUT_MS)),
    );
    for (const [me, stats] of [['alice', aliceStats], ['bob', bobStats]]) {
      assert.ok(
        stats.remote.some((r) => r.kind === 'video' && r.framesDecoded > 10),
        `${me} decodes video over the relay: ${JSON.stringify(stats.remote)}`,
      );
      const pairs = await selectedCandidatePairs(pages[me]);
      for (const [transport, pair] of Object.entries(pairs)) {
        assert.equal(pair?.local?.type, 'relay', `${me}'s ${transport} goes through the relay: ${JSON.stringify(pairs)}`);
      }
      t.diagnostic(`${me}: ${JSON.stringify({ pairs, remote: stats.remote })}`);
    }

    const text = await (await fetch(`${base}/metrics`)).text();
    const toPeer = metric(text, 'callgate_turn_packets_total', 'direction="to_peer"');
    const toClient = metric(text, 'callgate_turn_packets_total', 'direction="to_client"');
    assert.ok(toPeer > 100 && toClient > 100, `the relay carried the media: to_peer ${toPeer}, to_client ${toClient}`);
    assert.ok(metric(text, 'callgate_turn_allocations') >= 4, 'two transports per participant hold allocations');
    assert.equal(metric(text, 'callgate_turn_denied_peers_total'), 0);
  }, {
    // The relay is on in --dev; any free ports.
    serverArgs: ['--turn-udp-port', '0', '--turn-tcp-port', '0', '--turn-tls-port', '0'],
    describePage: (page) =>
      page.evaluate(async () => ({
        status: document.getElementById('status')?.textContent,
        stats: typeof window.callgateStats === 'function' ? await window.callgateStats() : null,
      })),
  });
});
