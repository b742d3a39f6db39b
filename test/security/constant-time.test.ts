/**
 * Secrets are compared in constant time: every check of a presented token goes through crypto.timingSafeEqual on
 * SHA-256 digests (src/util/secret-token.ts), never through === on the secret. The test counts the calls by
 * wrapping node:crypto's own function, which the modules' named imports see after syncBuiltinESMExports.
 */
import { describe, it, mock } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import { TrustedTokens } from '../../src/box/auth.js';
import { BoxUserStore } from '../../src/box/users.js';
import { databaseBackends, openTestDatabase } from '../helpers/databases.js';
import { hashToken, tokenMatches } from '../../src/util/secret-token.js';

/** Runs `check` with timingSafeEqual counted (until it settles, when it is a promise); returns its result and the buffers compared. */
function counted<T>(check: () => T): { result: T; compared: Buffer[][] } {
  const compared: Buffer[][] = [];
  const original = crypto.timingSafeEqual;
  const spy = mock.method(crypto, 'timingSafeEqual', (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
    compared.push([Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)]);
    return original(a, b);
  });
  syncBuiltinESMExports();
  const restore = () => {
    spy.mock.restore();
    syncBuiltinESMExports();
  };
  let result: T;
  try {
    result = check();
  } catch (error) {
    restore();
    throw error;
  }
  if (result instanceof Promise) return { result: result.finally(restore) as T, compared };
  restore();
  return { result, compared };
}

/** Each comparison is of two SHA-256 digests: a stored hash (every one, once) against the candidate's digest. */
function assertDigestsCompared(compared: Buffer[][], candidate: string, storedHashes: readonly string[]): void {
  assert.equal(compared.length, storedHashes.length, 'every stored hash is compared');
  for (const [a, b] of compared) {
    assert.equal(a!.length, 32, 'a digest, not the token');
    assert.equal(b!.length, 32, 'a digest, not the token');
    assert.deepEqual(b, Buffer.from(hashToken(candidate), 'hex'), "the candidate's digest");
  }
  assert.deepEqual(compared.map(([a]) => a!.toString('hex')).sort(), [...storedHashes].sort(), 'each stored hash once');
}

const backends = await databaseBackends();

describe('secrets are compared in constant time', () => {
  it('tokenMatches compares SHA-256 digests with timingSafeEqual, against every stored hash', () => {
    const stored = [hashToken('first'), hashToken('second'), hashToken('third')];
    for (const candidate of ['first', 'third', 'none']) {
      const { result, compared } = counted(() => tokenMatches(candidate, stored));
      assert.equal(result, candidate !== 'none');
      assert.equal(compared.length, 3, `${candidate}: every stored hash is compared, the match does not stop the loop`);
      for (const [a, b] of compared) {
        assert.equal(a!.length, 32, 'a digest, not the token');
        assert.deepEqual(b, Buffer.from(hashToken(candidate), 'hex'));
      }
    }
  });

  it("the box's trusted tokens go through it too", () => {
    const trusted = new TrustedTokens(['lacre-mx:one', 'other:two']);
    const { result, compared } = counted(() => trusted.accepts({ name: 'lacre-mx', secret: 'one' }));
    assert.equal(result, true);
    assert.equal(compared.length, 2);
    const storedHashes = ['lacre-mx:one', 'other:two'].map(hashToken);
    assertDigestsCompared(compared, 'lacre-mx:one', storedHashes);
    const rejected = counted(() => trusted.accepts({ name: 'lacre-mx', secret: 'two' }));
    assert.equal(rejected.result, false);
    assertDigestsCompared(rejected.compared, 'lacre-mx:two', storedHashes);
  });

  for (const backend of backends) {
    it(`box user tokens go through it too, against every token of the user (${backend.name})`, async () => {
      const database = await openTestDatabase(backend);
      try {
        const users = new BoxUserStore(database.db);
        const { user, token } = await users.createToken((await users.add('alice@example.org')).user);
        const second = await users.createToken(user);
        for (const [candidate, expected] of [[token, true], [`${token}x`, false]] as const) {
          const { result, compared } = counted(() => users.verifyToken(user, candidate));
          assert.equal(await result, expected);
          assert.equal(compared.length, 2, 'both of the user\'s tokens compared');
          assertDigestsCompared(compared, candidate, [hashToken(token), hashToken(second.token)]);
        }
      } finally {
        await database.cleanup();
      }
    });
  }
});
