// Network namespaces and veth pairs for the browser tests that move a
// client between networks: everything is created under one prefix and
// deleted by `destroy()`. Needs root and iproute2 (`ip netns`). Works the
// same inside the private network namespace scripts/test.sh runs the tests
// in: the namespaces made here are new ones of their own, linked only by the
// veth pairs made here, and every address is one made here.
// Not a test file (node --test runs *.test.mjs only).

import { execFile } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

import { CHROMIUM, CHROMIUM_ARGS, startServer } from './harness.mjs';

/**
 * Runs `ip` with `args`; rejects with its stderr.
 * @param {string[]} args
 * @returns {Promise<string>}
 */
export function ip(args) {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/** Why namespaces cannot be made here, or null when they can. */
export async function namespacesUnavailable() {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'not root';
  try {
    await ip(['netns', 'list']);
  } catch (err) {
    return `ip netns does not work: ${err.message}`;
  }
  return null;
}

export class NetLab {
  /** @param {string} prefix unique to this run (namespace names are global on the machine) */
  constructor(prefix) {
    this.prefix = prefix;
    /** @type {string[]} */
    this.namespaces = [];
  }

  /**
   * A new namespace with loopback up.
   * @param {string} name short name; the namespace is `<prefix>-<name>`
   * @returns {Promise<string>} its full name
   */
  async namespace(name) {
    const ns = `${this.prefix}-${name}`;
    await ip(['netns', 'add', ns]);
    this.namespaces.push(ns);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * Runs `ip -n ns ...args`.
   * @param {string} ns
   * @param {string[]} args
   */
  in(ns, args) {
    return ip(['-n', ns, ...args]);
  }

  /**
   * A veth pair between two namespaces, both ends up with their addresses.
   * @param {{ns: string, dev: string, addr: string}} a e.g. `{ns, dev: 'a0', addr: '10.9.1.2/24'}`
   * @param {{ns: string, dev: string, addr: string}} b
   */
  async veth(a, b) {
    await ip(['link', 'add', 'name', a.dev, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.ns]);
    for (const end of [a, b]) {
      await this.in(end.ns, ['addr', 'add', end.addr, 'dev', end.dev]);
      await this.in(end.ns, ['link', 'set', end.dev, 'up']);
    }
  }

  /**
   * An executable script that runs `program` with its arguments inside `ns`
   * (for playwright's `executablePath`: the browser and all its processes
   * live in that namespace).
   * @param {string} ns
   * @param {string} program
   * @param {string} dir where to write the script
   * @returns {Promise<string>} its path
   */
  async wrapper(ns, program, dir) {
    const file = path.join(dir, `in-${ns}.sh`);
    await writeFile(file, `#!/bin/sh\nexec ip netns exec '${ns}' '${program}' "$@"\n`);
    await chmod(file, 0o755);
    return file;
  }

  /** Deletes every namespace made (and so every veth in them); never throws. */
  async destroy() {
    const errors = [];
    for (const ns of this.namespaces.splice(0).reverse()) {
      await ip(['netns', 'del', ns]).catch((err) => errors.push(err.message));
    }
    return errors;
  }
}

/** Runs `tc` with `args`; resolves with its stdout. */
export function tc(args) {
  return new Promise((resolve, reject) => {
    execFile('tc', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`tc ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

/**
 * Headless Chromium in namespace `ns` of `lab`, taking `origin` (not
 * loopback) as secure, as getUserMedia needs.
 */
export async function chromiumIn(lab, ns, tmp, origin) {
  return chromium.launch({
    executablePath: await lab.wrapper(ns, CHROMIUM, tmp),
    headless: true,
    args: [...CHROMIUM_ARGS, `--unsafely-treat-insecure-origin-as-secure=${origin}`],
  });
}

/**
 * `callgate serve --dev --no-turn` in namespace `ns`, its HTTP and media
 * bound to `bindIp` there, media advertised at `nodeIp` (default `bindIp`).
 * @param {string} ns
 * @param {{bindIp: string, nodeIp?: string, httpPort: number, udpPort?: number,
 *   dataDir: string, args?: string[], env?: Record<string, string>}} options
 */
export function serverIn(ns, { bindIp, nodeIp = bindIp, httpPort, udpPort = 0, dataDir, args = [], env = {} }) {
  return startServer(
    [
      'serve', '--dev', '--no-turn',
      '--data-dir', dataDir,
      '--http-port', String(httpPort),
      '--udp-port', String(udpPort),
      '--tcp-port', '0',
      '--node-ip', nodeIp,
      ...args,
    ],
    {
      wrap: ['ip', 'netns', 'exec', ns],
      env: { CALLGATE_HTTP_BIND: bindIp, CALLGATE_RTC_BIND_IP: bindIp, ...env },
    },
  );
}
