import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as openpgp from 'openpgp';
import { KeyRejectedError } from '../../src/errors.js';
import { readPublicKeys, usableEncryptionKey, validatePublicKey, validatePublicKeys } from '../../src/crypto/keys.js';
import {
  createGpgHome,
  decrypt,
  gpgOk,
  generateExpiredKey,
  generateKey,
  listPacketsKeyIds,
  revokeKey,
  type GpgHome,
  type GpgKey,
} from '../helpers/gpg.js';
import { keyWithUserIds } from '../helpers/many-user-ids.js';

const DAY_MS = 24 * 3600 * 1000;

describe('validatePublicKey', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let bob: GpgKey;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'Alice@Example.org', name: 'Alice Liddell' });
    bob = await generateKey(home, { email: 'bob@example.org', algo: 'rsa3072', expire: '2y' });
  });
  after(() => home.remove());

  it('accepts a gpg-made curve25519 key and reports its identity', async () => {
    const validated = await validatePublicKey(alice.publicArmored);
    assert.equal(validated.fingerprint, alice.fingerprint);
    assert.equal(validated.keyId, alice.fingerprint.slice(-16));
    assert.deepEqual(validated.emails, ['Alice@Example.org']);
    assert.ok(validated.expiresAt);
    const daysLeft = (validated.expiresAt.getTime() - Date.now()) / DAY_MS;
    assert.ok(daysLeft > 360 && daysLeft < 367, `expires in ${daysLeft} days`);
    assert.equal(validated.key.isPrivate(), false);
  });

  it('accepts a gpg-made RSA-3072 key', async () => {
    const validated = await validatePublicKey(bob.publicArmored);
    assert.equal(validated.fingerprint, bob.fingerprint);
    assert.deepEqual(validated.emails, ['bob@example.org']);
    assert.equal(validated.key.getAlgorithmInfo().algorithm, 'rsaEncryptSign');
  });

  it('refuses input that is not a key', async () => {
    await assert.rejects(validatePublicKey('hello, I am not a key'), isRejection(/not a readable OpenPGP public key/));
    await assert.rejects(validatePublicKey(''), KeyRejectedError);
  });

  it('refuses a secret key', async () => {
    await assert.rejects(validatePublicKey(alice.secretArmored), isRejection(/secret \(private\) key/));
  });

  it('refuses a revoked key', async () => {
    const scratch = await createGpgHome();
    try {
      const carol = await generateKey(scratch, { email: 'carol@example.org' });
      await validatePublicKey(carol.publicArmored);
      await assert.rejects(validatePublicKey(await revokeKey(scratch, carol)), isRejection(/is revoked/));
    } finally {
      await scratch.remove();
    }
  });

  it('refuses an expired key', async () => {
    const old = await generateExpiredKey(home, { email: 'old@example.org' });
    await assert.rejects(validatePublicKey(old.publicArmored), isRejection(/expired on 2020-01-02/));
  });

  it('refuses a key without an encryption subkey', async () => {
    const signer = await generateKey(home, { email: 'signer@example.org', signOnly: true });
    await assert.rejects(validatePublicKey(signer.publicArmored), isRejection(/no usable encryption \(sub\)key/));
  });

  it('refuses a v6 key, explaining that GnuPG 2.2 could not read the mail', async () => {
    const { publicKey } = await openpgp.generateKey({ userIDs: [{ email: 'v6@example.org' }], config: { v6Keys: true } });
    await assert.rejects(validatePublicKey(publicKey), isRejection(/v6 key.*SEIPDv2.*GnuPG 2\.2/));
  });

  it('refuses a block holding several keys, and validatePublicKeys judges each one', async () => {
    const signer = await generateKey(home, { email: 'signer2@example.org', signOnly: true });
    const block = alice.publicArmored + bob.publicArmored + signer.publicArmored;
    await assert.rejects(validatePublicKey(block), isRejection(/found 3/));
    const results = await validatePublicKeys(block);
    assert.deepEqual(
      results.map((result) => [result.ok, result.ok ? result.key.fingerprint : result.fingerprint]),
      [
        [true, alice.fingerprint],
        [true, bob.fingerprint],
        [false, signer.fingerprint],
      ],
    );
  });

  it('refuses a key with more than 100 user IDs, naming it and the limit; accepts one with 100', async () => {
    const crowded = await keyWithUserIds(101);
    await assert.rejects(validatePublicKey(crowded.publicArmored), isRejection(new RegExp(`key ${crowded.fingerprint} has more than 100 user IDs`)));
    const full = await keyWithUserIds(100);
    const validated = await validatePublicKey(full.publicArmored);
    assert.equal(validated.fingerprint, full.fingerprint);
    assert.equal(validated.emails.length, 100);
  });

  it('refuses input larger than the limit before reading it, naming keys.max_key_bytes', async () => {
    await assert.rejects(validatePublicKey('A'.repeat(1024 * 1024 + 1)), isRejection(/larger than keys\.max_key_bytes \(1 MiB\)/));
    await assert.rejects(readPublicKeys(alice.publicArmored, { maxKeyBytes: 200, maxUserIds: 100 }), isRejection(/keys\.max_key_bytes \(200 bytes\)/));
  });

  it('says so when the input is empty, instead of passing on openpgp.js internals', async () => {
    for (const empty of ['', ' \n\n', Buffer.alloc(0)]) {
      await assert.rejects(validatePublicKey(empty), (error: unknown) => {
        assert.ok(error instanceof KeyRejectedError);
        assert.match(error.message, /the input is empty/);
        assert.doesNotMatch(error.message, /options object|armoredKeys/);
        return true;
      });
    }
  });

  it('accepts a binary key as gpg --export writes it without --armor', async () => {
    const binary = await gpgOk(home, ['--export', alice.fingerprint]);
    assert.equal(binary[0]! & 0x80, 0x80, 'gpg wrote binary packets');
    const validated = await validatePublicKey(binary);
    assert.equal(validated.fingerprint, alice.fingerprint);
    assert.deepEqual(validated.emails, ['Alice@Example.org']);
  });

  it('names binary data and armor blocks that are not keys', async () => {
    const message = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'hi' }), passwords: 'x', format: 'binary' });
    await assert.rejects(validatePublicKey(message as Uint8Array), isRejection(/binary OpenPGP data that does not start with a key \(its first packet has tag 3\)/));
    const armored = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'hi' }), passwords: 'x' });
    await assert.rejects(validatePublicKey(armored), isRejection(/the armor block is a message, not a key/));
  });

  it('judges usability at the time given: a valid key is unusable once its expiry passes', async () => {
    const shortLived = await generateKey(home, { email: 'short@example.org', expire: '1d' });
    const { key, expiresAt } = await validatePublicKey(shortLived.publicArmored);
    assert.ok(expiresAt);
    assert.deepEqual(await usableEncryptionKey(key, new Date(expiresAt.getTime() - 1000)), { usable: true, expiresAt });
    const later = await usableEncryptionKey(key, new Date(expiresAt.getTime() + 1000));
    assert.equal(later.usable, false);
    assert.match(later.usable ? '' : later.reason, /expired/);
    await assert.rejects(validatePublicKey(shortLived.publicArmored, new Date(Date.now() + 2 * DAY_MS)), KeyRejectedError);
  });
});

describe('gpg helper sanity', () => {
  let home: GpgHome;
  before(async () => {
    home = await createGpgHome();
  });
  after(() => home.remove());

  for (const algo of ['cv25519', 'rsa3072'] as const) {
    it(`openpgp.js encrypts to a gpg-made ${algo} key and gpg decrypts the exact bytes`, async () => {
      const recipient = await generateKey(home, { email: `${algo}@example.org`, algo });
      const plaintext = Buffer.concat([Buffer.from('Subject: x\r\n\r\nbody with NUL \0 and 8-bit \xe9\n', 'latin1'), Buffer.alloc(70_000, 0xa5)]);
      const { key } = await validatePublicKey(recipient.publicArmored);
      const encrypted = await openpgp.encrypt({
        message: await openpgp.createMessage({ binary: plaintext }),
        encryptionKeys: key,
        format: 'armored',
      });
      assert.deepEqual(await listPacketsKeyIds(home, encrypted), [recipient.encryptionKeyId]);
      const decrypted = await decrypt(home, encrypted);
      assert.ok(decrypted.equals(plaintext), 'decrypted bytes differ from the plaintext');
    });
  }

  it('decrypt rejects with gpg\u2019s complaint when there is no secret key', async () => {
    const other = await createGpgHome();
    try {
      const stranger = await generateKey(other, { email: 'stranger@example.org' });
      const { key } = await validatePublicKey(stranger.publicArmored);
      const encrypted = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'secret' }), encryptionKeys: key });
      await assert.rejects(decrypt(home, encrypted), /No secret key|decryption failed/);
    } finally {
      await other.remove();
    }
  });
});

function isRejection(pattern: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof KeyRejectedError, `expected KeyRejectedError, got ${String(error)}`);
    assert.match(error.message, pattern);
    return true;
  };
}
