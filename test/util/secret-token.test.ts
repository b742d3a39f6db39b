import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hashToken, issueToken, tokenMatches } from '../../src/util/secret-token.js';

describe('secret tokens', () => {
  it('issues 32 random bytes as base64url by default, with the hash to store', () => {
    const tokens = Array.from({ length: 50 }, () => issueToken());
    for (const { token, hash } of tokens) {
      assert.match(token, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(Buffer.from(token, 'base64url').length, 32);
      assert.equal(hash, hashToken(token));
    }
    assert.equal(new Set(tokens.map((t) => t.token)).size, tokens.length, 'no two alike');
    assert.equal(Buffer.from(issueToken(16).token, 'base64url').length, 16);
  });

  it('stores the hex SHA-256 of the token text, never the token', () => {
    // FIPS 180-2 test vector.
    assert.equal(hashToken('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    assert.equal(hashToken('lacre-mx:trusted-secret').length, 64);
    const { token, hash } = issueToken();
    assert.ok(!hash.includes(token));
  });

  it('matches a candidate against one stored hash or any of several, and nothing else', () => {
    const [a, b, c] = [issueToken(), issueToken(), issueToken()];
    assert.equal(tokenMatches(a.token, a.hash), true);
    assert.equal(tokenMatches(a.token, b.hash), false);
    assert.equal(tokenMatches(b.token, [a.hash, b.hash, c.hash]), true, 'in the middle of the list');
    assert.equal(tokenMatches(c.token, [a.hash, b.hash, c.hash]), true, 'last');
    assert.equal(tokenMatches(c.token, [a.hash, b.hash]), false);
    assert.equal(tokenMatches(a.token, []), false, 'no stored hash matches nothing');
    assert.equal(tokenMatches(`${a.token}x`, a.hash), false);
    assert.equal(tokenMatches(a.token.slice(0, -1), a.hash), false);
    assert.equal(tokenMatches('', hashToken('')), true, 'the empty string is a token like any other');
  });

  it('treats a malformed stored hash as no match rather than failing', () => {
    const { token, hash } = issueToken();
    for (const stored of ['', 'not hex at all', hash.slice(0, 32), `${hash}00`, hash.toUpperCase().replace(/[0-9A-F]/, 'Z')]) {
      assert.equal(tokenMatches(token, stored), false, JSON.stringify(stored));
    }
    assert.equal(tokenMatches(token, ['zz', hash.slice(1), hash]), true, 'the good hash after broken ones still matches');
    assert.equal(tokenMatches(token, hash.toUpperCase()), true, 'hex is case-insensitive');
  });
});
