import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WebError } from '../../src/web/errors.js';
import { checkUpload, type UploadPolicy } from '../../src/web/upload-check.js';
import { createGpgHome, generateExpiredKey, generateKey, revokeKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { gpgKeyOf, keyWithAddresses, v6Key } from './keys.js';

const policy: UploadPolicy = { domains: ['Example.org', 'exämple.net'], maxKeyBytes: 1024 * 1024, localPartCaseSensitive: false };
// Read at each check: a key made after a fixed `now` would not be valid yet at it.
const clock = (): Date => new Date();

let home: GpgHome;
let alice: GpgKey;
let other: GpgKey;

before(async () => {
  home = await createGpgHome();
  alice = await generateKey(home, { email: 'Alice@Example.ORG' });
  other = await generateKey(home, { email: 'bob@elsewhere.org' });
});
after(() => home.remove());

async function refusal(promise: Promise<unknown>): Promise<{ code: string; status: number }> {
  const error = await promise.then(
    () => assert.fail('expected a refusal'),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof WebError, `expected a WebError, got ${String(error)}`);
  return { code: error.code, status: error.status };
}

describe('checkUpload', () => {
  it('accepts a good key for its address, matched case-insensitively, spelled as in the key', async () => {
    const accepted = await checkUpload(alice.publicArmored, 'alice@example.org', policy, clock());
    assert.equal(accepted.email, 'Alice@example.org');
    assert.equal(accepted.fingerprint, alice.fingerprint);
    assert.ok(accepted.expiresAt && accepted.expiresAt > clock());
  });

  it('takes the address from the key when there is one of a served domain', async () => {
    assert.equal((await checkUpload(alice.publicArmored, undefined, policy, clock())).email, 'Alice@example.org');
  });

  it('asks for "email" when the key has several served addresses', async () => {
    const armored = await keyWithAddresses(['one@example.org', 'two@example.org', 'x@elsewhere.org']);
    assert.deepEqual(await refusal(checkUpload(armored, undefined, policy, clock())), { code: 'invalid-request', status: 400 });
    assert.equal((await checkUpload(armored, 'TWO@example.org', policy, clock())).email, 'two@example.org');
  });

  it('serves a Unicode domain named by its A-label too', async () => {
    const armored = await keyWithAddresses(['dave@xn--exmple-cua.net']);
    assert.equal((await checkUpload(armored, 'dave@exämple.net', policy, clock())).email, 'dave@xn--exmple-cua.net');
  });

  const cases: [string, () => Promise<unknown>, string, number][] = [
    ['text that is no key', () => checkUpload('hello', undefined, policy, clock()), 'not-a-key', 400],
    ['two keys at once', () => checkUpload(alice.publicArmored + other.publicArmored, 'alice@example.org', policy, clock()), 'not-a-key', 400],
    ['a version 6 key', async () => checkUpload(await v6Key('v6@example.org'), undefined, policy, clock()), 'not-a-key', 400],
    ['a secret key', () => checkUpload(alice.secretArmored, 'alice@example.org', policy, clock()), 'secret-key', 400],
    ['an expired key', async () => checkUpload((await generateExpiredKey(home, { email: 'old@example.org' })).publicArmored, undefined, policy, clock()), 'expired', 400],
    ['a revoked key', async () => checkUpload(await revokeKey(home, await generateKey(home, { email: 'carol@example.org' })), undefined, policy, clock()), 'revoked', 400],
    ['a sign-only key', async () => checkUpload((await generateKey(home, { email: 'signer@example.org', signOnly: true })).publicArmored, undefined, policy, clock()), 'no-encryption-subkey', 400],
    ['an RSA-1024 key', async () => checkUpload((await gpgKeyOf(home, 'weak@example.org', 'rsa1024', 'rsa1024')).publicArmored, undefined, policy, clock()), 'weak-algorithm', 400],
    ['a DSA/ElGamal key', async () => checkUpload((await gpgKeyOf(home, 'dsa@example.org', 'dsa2048', 'elg2048')).publicArmored, undefined, policy, clock()), 'weak-algorithm', 400],
    ['an address the key does not name', () => checkUpload(alice.publicArmored, 'mallory@example.org', policy, clock()), 'address-not-in-key', 400],
    ['a key of an unserved domain', () => checkUpload(other.publicArmored, undefined, policy, clock()), 'domain-not-served', 400],
    ['an address of an unserved domain', () => checkUpload(other.publicArmored, 'bob@elsewhere.org', policy, clock()), 'domain-not-served', 400],
    ['an invalid address', () => checkUpload(alice.publicArmored, 'not an address', policy, clock()), 'invalid-address', 400],
    ['a key over keys.max_key_bytes', () => checkUpload(alice.publicArmored, undefined, { ...policy, maxKeyBytes: 100 }, clock()), 'too-large', 413],
  ];
  for (const [what, attempt, code, status] of cases) {
    it(`refuses ${what}: ${code}`, async () => assert.deepEqual(await refusal(attempt()), { code, status }));
  }

  it('refuses a key that expired by the time it is checked (the clock given)', async () => {
    const later = new Date(Date.now() + 2 * 365 * 86_400_000);
    assert.deepEqual(await refusal(checkUpload(alice.publicArmored, undefined, policy, later)), { code: 'expired', status: 400 });
  });
});
