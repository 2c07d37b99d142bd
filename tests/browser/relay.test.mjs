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
import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CALLGATE_BIN = path.resolve(REPO_ROOT, process.env.TEST_CALLGATE_BIN || 'target/debug/callgate');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const HOST = '127.0.0.1';

const MEDIA_TIMEOUT_MS = 40_000;

const CHROMIUM_ARGS = [
  '--allow-loopback-in-peer-connection',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--disable-background-networking',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

/** A TCP port free on 127.0.0.1 right now. */
function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/** Runs the callgate binary to completion; resolves with its stdout. */
function runCallgate(args) {
  return new Promise((resolve, reject) => {
    execFile(CALLGATE_BIN, args, { cwd: REPO_ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`callgate ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Starts `callgate serve`; the returned object collects its output and knows when it exits. */
function startServer(args) {
  const child = spawn(CALLGATE_BIN, args, {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  const server = { child, log: '', exit: null, exited: null };
  const append = (chunk) => {
    server.log += chunk;
    if (server.log.length > 200_000) server.log = server.log.slice(-150_000);
  };
  child.stdout.setEncoding('utf8').on('data', append);
  child.stderr.setEncoding('utf8').on('data', append);
  server.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      server.exit = { code, signal };
      resolve();
    });
    child.once('error', (error) => {
      server.exit = { code: null, signal: null, error };
      resolve();
    });
  });
  return server;
}

/** Waits (bounded) for the ready line; resolves with its fields. */
async function readyLine(server) {
  for (let i = 0; i < 150; i++) {
    if (server.exit) throw new Error(`callgate exited before it was ready (${JSON.stringify(server.exit)})`);
    const line = server.log.split('\n').find((l) => l.startsWith('callgate ready '));
    if (line) return Object.fromEntries(line.split(' ').slice(2).map((f) => f.split('=')));
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('no ready line from callgate');
}

async function stopServer(server) {
  if (!server || server.exit) return;
  server.child.kill('SIGTERM');
  const timer = new Promise((r) => setTimeout(r, 5000).unref());
  await Promise.race([server.exited, timer]);
  if (!server.exit) {
    server.child.kill('SIGKILL');
    await server.exited;
  }
}

/** True when the stats show decoded video and received audio from the other side. */
function mediaFlowing(s) {
  const video = s.remote.some((r) => r.kind === 'video' && r.framesDecoded > 10);
  const audio = s.remote.some((r) => r.kind === 'audio' && (r.totalSamplesReceived > 0 || r.packetsReceived > 20));
  return s.joined && video && audio;
}

/** Polls `window.callgateStats()` until `done(stats)` holds, for at most `timeoutMs`. */
async function waitForStats(page, done, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = null;
  for (;;) {
    last = await page.evaluate(() =>
      typeof window.callgateStats === 'function' ? window.callgateStats() : null,
    );
    if (last && done(last)) return last;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms; last stats: ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The local and remote candidate types of each transport's selected pair. */
function selectedPairs(page) {
  return page.evaluate(async () => {
    const out = {};
    const room = window.callgate.room;
    for (const [name, pc] of [['publisher', room.publisherPc], ['subscriber', room.subscriberPc]]) {
      const report = await pc.getStats();
      let pair = null;
      report.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
      });
      if (!pair) {
        report.forEach((s) => {
          if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
        });
      }
      out[name] = pair
        ? {
            local: report.get(pair.localCandidateId)?.candidateType ?? null,
            relayProtocol: report.get(pair.localCandidateId)?.relayProtocol ?? null,
            remote: report.get(pair.remoteCandidateId)?.candidateType ?? null,
          }
        : null;
    }
    return out;
  });
}

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
  try {
    accessSync(CALLGATE_BIN, fsConstants.X_OK);
  } catch {
    assert.fail(`no callgate binary at ${CALLGATE_BIN} (build it, or set TEST_CALLGATE_BIN)`);
  }

  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'callgate-browser-relay-'));
  let server = null;
  let browser = null;
  const killOnExit = () => server?.child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const pageLogs = {};
  const pages = {};

  try {
    const httpPort = await freeTcpPort();
    server = startServer([
      'serve', '--dev',
      '--data-dir', dataDir,
      '--http-port', String(httpPort),
      '--udp-port', '0',
      '--tcp-port', '0',
      // The relay is on in --dev; any free ports.
      '--turn-udp-port', '0',
      '--turn-tcp-port', '0',
      '--turn-tls-port', '0',
    ]);
    server.httpPort = httpPort;
    const ready = await readyLine(server);
    assert.ok(ready.turn_udp, `the ready line names the TURN relay: ${JSON.stringify(ready)}`);

    const room = `relay-${randomBytes(6).toString('hex')}`;
    const tokens = {};
    for (const identity of ['alice', 'bob']) {
      tokens[identity] = (await runCallgate(['token', '--dev', '--room', room, '--identity', identity])).trim();
    }

    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    for (const identity of ['alice', 'bob']) {
      const context = await browser.newContext();
      const page = await context.newPage();
      const log = (pageLogs[identity] = []);
      page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
      page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
      pages[identity] = page;
    }
    await Promise.all(
      Object.entries(pages).map(([identity, page]) =>
        page.goto(`http://${HOST}:${httpPort}/?relay=1&token=${encodeURIComponent(tokens[identity])}`),
      ),
    );

    // The server handed out TURN URLs, and the SDK uses relay candidates only.
    for (const page of Object.values(pages)) {
      await page.waitForFunction(() => window.callgate?.room?.state === 'joined', undefined, {
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
      const pairs = await selectedPairs(pages[me]);
      for (const [transport, pair] of Object.entries(pairs)) {
        assert.equal(pair?.local, 'relay', `${me}'s ${transport} goes through the relay: ${JSON.stringify(pairs)}`);
      }
      t.diagnostic(`${me}: ${JSON.stringify({ pairs, remote: stats.remote })}`);
    }

    const text = await (await fetch(`http://${HOST}:${httpPort}/metrics`)).text();
    const toPeer = metric(text, 'callgate_turn_packets_total', 'direction="to_peer"');
    const toClient = metric(text, 'callgate_turn_packets_total', 'direction="to_client"');
    assert.ok(toPeer > 100 && toClient > 100, `the relay carried the media: to_peer ${toPeer}, to_client ${toClient}`);
    assert.ok(metric(text, 'callgate_turn_allocations') >= 4, 'two transports per participant hold allocations');
    assert.equal(metric(text, 'callgate_turn_denied_peers_total'), 0);
  } catch (err) {
    for (const [identity, page] of Object.entries(pages)) {
      if (page.isClosed()) continue;
      const state = await page
        .evaluate(async () => ({
          status: document.getElementById('status')?.textContent,
          stats: typeof window.callgateStats === 'function' ? await window.callgateStats() : null,
        }))
        .catch((e) => ({ error: e.message }));
      console.error(`--- ${identity}'s page: ${JSON.stringify(state)}`);
    }
    for (const [identity, log] of Object.entries(pageLogs)) {
      console.error(`--- ${identity}'s console:\n${log.slice(-50).join('\n')}`);
    }
    if (server && !server.exit) {
      const url = `http://${HOST}:${server.httpPort}/metrics`;
      const text = await (await fetch(url).catch(() => null))?.text().catch(() => '');
      const lines = (text ?? '').split('\n').filter((l) => l.startsWith('callgate_'));
      console.error(`--- metrics:\n${lines.join('\n')}`);
    }
    if (server) console.error(`--- callgate log (tail):\n${server.log.slice(-8000)}`);
    throw err;
  } finally {
    await browser?.close().catch(() => {});
    await stopServer(server);
    process.removeListener('exit', killOnExit);
    await rm(dataDir, { recursive: true, force: true });
  }
});
