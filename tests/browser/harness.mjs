// What the browser tests share: the callgate binary as a child process,
// Chromium's flags for WebRTC on loopback, and waiting on a page's stats.
// Not a test file (node --test runs *.test.mjs only).

import { spawn, execFile } from 'node:child_process';
import { accessSync, appendFileSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CALLGATE_BIN = path.resolve(REPO_ROOT, process.env.TEST_CALLGATE_BIN || 'target/debug/callgate');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const HOST = '127.0.0.1';

export const CHROMIUM_ARGS = [
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
  // remote tiles play with sound; without a user gesture autoplay would be refused
  '--autoplay-policy=no-user-gesture-required',
];

/** A TCP port free on 127.0.0.1 right now. */
/** Fails the test at once, saying why, when the callgate binary is missing. */
export function requireCallgateBinary() {
  try {
    accessSync(CALLGATE_BIN, fsConstants.X_OK);
  } catch {
    throw new Error(`no callgate binary at ${CALLGATE_BIN} (build it, or set TEST_CALLGATE_BIN)`);
  }
}

export function freeTcpPort() {
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
export function runCallgate(args) {
  return new Promise((resolve, reject) => {
    execFile(CALLGATE_BIN, args, { cwd: REPO_ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`callgate ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * Starts `callgate serve`; the returned object collects its output and knows when it exits.
 * @param {string[]} args
 * @param {{wrap?: string[], env?: Record<string, string>}} [opts] `wrap`: a command the binary
 *   runs under (e.g. `['ip', 'netns', 'exec', ns]`, which execs it, so the child is callgate);
 *   `env`: more environment variables (e.g. CALLGATE_HTTP_BIND)
 *
 * The server logs at RUST_LOG (default `info`); with TEST_SERVER_LOG=<file> all of its
 * output is also appended to that file (the tests print only the tail on failure).
 */
export function startServer(args, { wrap = [], env = {} } = {}) {
  const [command, ...prefix] = wrap.length ? [...wrap, CALLGATE_BIN] : [CALLGATE_BIN];
  const child = spawn(command, [...prefix, ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...env },
  });
  const server = {
    child,
    log: '',
    /** @type {{code: number|null, signal: string|null, error?: Error}|null} */
    exit: null,
    exited: /** @type {Promise<void>} */ (null),
  };
  const logFile = process.env.TEST_SERVER_LOG;
  const append = (chunk) => {
    if (logFile) appendFileSync(logFile, chunk);
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

/** Polls /healthz until it answers 200 (bounded), failing early if the server died. */
export async function waitForHealthy(server, httpPort) {
  const url = `http://${HOST}:${httpPort}/healthz`;
  const tries = 150;
  let last = '';
  for (let i = 0; i < tries; i++) {
    if (server.exit) {
      throw new Error(`callgate exited before it was healthy (${JSON.stringify(server.exit)})`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err.cause?.code ?? err.message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not healthy after ${tries} tries (last: ${last})`);
}

/** Waits (bounded: 30 s) for callgate's `callgate ready …` line and returns it. */
export async function readyLine(server) {
  for (let i = 0; i < 150; i++) {
    if (server.exit) throw new Error(`callgate exited before it was ready (${JSON.stringify(server.exit)})\n${server.log}`);
    const line = server.log.split('\n').find((l) => l.startsWith('callgate ready '));
    if (line) return line;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no ready line from callgate:\n${server.log}`);
}

export async function stopServer(server) {
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
export function mediaFlowing(s) {
  const video = s.remote.some((r) => r.kind === 'video' && r.framesDecoded > 10);
  const audio = s.remote.some((r) => r.kind === 'audio' && (r.totalSamplesReceived > 0 || r.packetsReceived > 20));
  return s.joined && video && audio;
}

/**
 * Polls `window.callgateStats()` in the page until `done(stats)` holds, for at
 * most `timeoutMs` (page.waitForFunction does not await an async predicate).
 * Resolves with the stats; rejects with the last stats seen.
 */
export async function waitForStats(page, done, timeoutMs) {
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

/**
 * The selected candidate pair of each of the page's transports (`publisher`,
 * `subscriber`): for each end its candidate type, address (`ip:port`),
 * protocol, and for a relay candidate its relay protocol; null for a
 * transport with none (closed, or not connected yet).
 */
export function selectedCandidatePairs(page) {
  return page.evaluate(async () => {
    const end = (c) =>
      c
        ? {
            type: c.candidateType ?? null,
            address: `${c.address ?? c.ip}:${c.port}`,
            protocol: c.protocol ?? null,
            relayProtocol: c.relayProtocol ?? null,
          }
        : null;
    const out = {};
    const room = window.callgate.room;
    for (const [name, pc] of [['publisher', room.publisherPc], ['subscriber', room.subscriberPc]]) {
      if (!pc || pc.connectionState === 'closed') {
        out[name] = null;
        continue;
      }
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
        ? { local: end(report.get(pair.localCandidateId)), remote: end(report.get(pair.remoteCandidateId)) }
        : null;
    }
    return out;
  });
}

/** CPU seconds (user + system) process `pid` has used so far; null when it cannot be read. */
export async function cpuSeconds(pid) {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 a second on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

/**
 * A dev callgate on a free HTTP port and a headless Chromium, for `body`
 * ({base, httpPort, server, browser, openPage}), torn down after it
 * however it ends. `openPage(name)` opens a page whose console is kept;
 * on failure the pages' consoles, what `describePage` returns for each and
 * the server's log tail are printed before the error goes on.
 * @param {string} prefix of the data directory's name
 * @param {(ctx: any) => Promise<void>} body
 * @param {{describePage?: (page: import('playwright-core').Page) => Promise<unknown>,
 *   serverArgs?: string[]}} [options] `serverArgs` go after `serve --dev` and its ports.
 */
export async function withServerAndBrowser(prefix, body, { describePage, serverArgs = [] } = {}) {
  requireCallgateBinary();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `callgate-${prefix}-`));
  let server = null;
  let browser = null;
  const killOnExit = () => server?.child.kill('SIGKILL');
  process.once('exit', killOnExit);
  /** @type {Record<string, import('playwright-core').Page>} */
  const pages = {};
  /** @type {Record<string, string[]>} */
  const pageLogs = {};
  try {
    const httpPort = await freeTcpPort();
    server = startServer([
      'serve', '--dev', '--data-dir', dataDir, '--http-port', String(httpPort), '--udp-port', '0', '--tcp-port', '0',
      ...serverArgs,
    ]);
    await waitForHealthy(server, httpPort);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const openPage = async (name) => {
      const page = await (await browser.newContext()).newPage();
      const log = (pageLogs[name] = []);
      page.on('console', (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
      page.on('pageerror', (err) => log.push(`[pageerror] ${err.message}`));
      pages[name] = page;
      return page;
    };
    await body({ base: `http://${HOST}:${httpPort}`, httpPort, server, browser, openPage });
  } catch (err) {
    for (const [name, page] of Object.entries(pages)) {
      if (describePage && !page.isClosed()) {
        const state = await describePage(page).catch((e) => ({ error: e.message }));
        console.error(`--- ${name}'s page: ${JSON.stringify(state)}`);
      }
      console.error(`--- ${name}'s console:\n${(pageLogs[name] ?? []).slice(-50).join('\n')}`);
    }
    if (server) console.error(`--- callgate log (tail):\n${server.log.slice(-8000)}`);
    throw err;
  } finally {
    await browser?.close().catch(() => {});
    await stopServer(server);
    process.removeListener('exit', killOnExit);
    await rm(dataDir, { recursive: true, force: true });
  }
}
