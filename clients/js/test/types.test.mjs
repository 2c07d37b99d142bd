// The package's type declarations (callgate.d.ts) are generated from the
// SDK's JSDoc by TypeScript and checked in; this fails when they no longer
// match callgate.js, so they cannot drift. Regenerate: `npm run types`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('callgate.d.ts is what TypeScript makes of callgate.js now', () => {
  const out = mkdtempSync(path.join(tmpdir(), 'callgate-types-'));
  try {
    const tsc = spawnSync(
      process.execPath,
      [path.join(here, 'node_modules/typescript/bin/tsc'), '-p', path.join(here, 'tsconfig.json'), '--outDir', out],
      { encoding: 'utf8' },
    );
    assert.equal(tsc.status, 0, `${tsc.stdout}${tsc.stderr}`);
    const fresh = readFileSync(path.join(out, 'callgate.d.ts'), 'utf8');
    const checkedIn = readFileSync(path.join(here, 'callgate.d.ts'), 'utf8');
    assert.ok(fresh.includes('export class Room'), 'the declarations name Room');
    assert.equal(checkedIn, fresh, 'callgate.d.ts is stale: run `npm run types` in clients/js');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
