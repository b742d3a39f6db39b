import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { enums } from 'openpgp';
import { HASH, PUBLIC_KEY, SYMMETRIC } from '../../src/crypto/algorithm-ids.js';

describe('OpenPGP algorithm ids kept apart from openpgp.js', () => {
  it("are openpgp.js's own numbers", () => {
    for (const [name, id] of Object.entries(SYMMETRIC)) assert.equal(id, enums.symmetric[name as keyof typeof SYMMETRIC], name);
    for (const [name, id] of Object.entries(PUBLIC_KEY)) assert.equal(id, enums.publicKey[name as keyof typeof PUBLIC_KEY], name);
    for (const [name, id] of Object.entries(HASH)) assert.equal(id, enums.hash[name as keyof typeof HASH], name);
  });
});
