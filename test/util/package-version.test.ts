import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { packageVersion } from '../../src/util/package-version.js';

describe('packageVersion', () => {
  it("is the version in the repository's package.json", () => {
    const manifest = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { name: string; version: string };
    assert.equal(manifest.name, 'lacre');
    assert.equal(packageVersion(), manifest.version);
  });
});
