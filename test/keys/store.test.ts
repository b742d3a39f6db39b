import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readKey } from 'openpgp';
import { KeyRejectedError } from '../../src/errors.js';
import { KeyStore } from '../../src/keys/store.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { createGpgHome, generateExpiredKey, generateKey, revokeKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { keyWithUserIds, withUserIdsOnly, type ManyUserIdKey } from '../helpers/many-user-ids.js';

const insensitive = { local_part_case_sensitive: false };
const sensitive = { local_part_case_sensitive: true };

let home: GpgHome;
let alice: GpgKey;
let aliceSecond: GpgKey;
let bob: GpgKey;
let carol: GpgKey;
let carolRevoked: string;
let signOnly: GpgKey;
let expired: GpgKey;
let noEmail: GpgKey;
let crowded: ManyUserIdKey;

before(async () => {
  home = await createGpgHome();
  alice = await generateKey(home, { email: 'Alice@Example.ORG' });
  aliceSecond = await generateKey(home, { email: 'alice@example.org', algo: 'rsa3072' });
  bob = await generateKey(home, { email: 'bob@example.org' });
  carol = await generateKey(home, { email: 'carol@example.org' });
  carolRevoked = await revokeKey(home, carol);
  signOnly = await generateKey(home, { email: 'signer@example.org', signOnly: true });
  expired = await generateExpiredKey(home, { email: 'old@example.org' });
  noEmail = await generateKey(home, { email: 'not-an-address' });
  crowded = await keyWithUserIds(120);
});
after(() => home.remove());

for (const backend of await databaseBackends()) {
  describe(`KeyStore (${backend.name})`, () => {
    it('imports, lists, shows and deletes keys', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        const first = await store.importKey(alice.publicArmored);
        assert.ok(first.kind === 'imported');
        assert.equal(first.fingerprint, alice.fingerprint);
        assert.deepEqual(first.emails, ['Alice@example.org'], 'domain lower-cased, local part as in the user ID');
        assert.deepEqual(first.inserted, ['Alice@example.org']);
        assert.ok(first.expiresAt && first.expiresAt > new Date());

        const again = await store.importKey(alice.publicArmored);
        assert.equal(again.kind, 'imported');
        assert.deepEqual(again.kind === 'imported' && again.inserted, [], 'a re-import updates, it does not insert');

        await store.importKey(bob.publicArmored, { emails: ['Team@Example.org', 'ops@example.org'], style: 'inline' });
        const rows = await store.list();
        assert.deepEqual(
          rows.map((row) => [row.email, row.fingerprint, row.status, row.style]),
          [
            ['Alice@example.org', alice.fingerprint, 'confirmed', 'mime'],
            ['ops@example.org', bob.fingerprint, 'confirmed', 'inline'],
            ['Team@example.org', bob.fingerprint, 'confirmed', 'inline'],
          ],
        );
        const stored = await readKey({ armoredKey: rows[0]!.armored });
        assert.equal(stored.getFingerprint().toUpperCase(), alice.fingerprint);
        assert.equal(stored.isPrivate(), false);

        assert.deepEqual((await store.show('<ALICE@example.org>')).map((row) => row.fingerprint), [alice.fingerprint]);
        assert.deepEqual(await store.show('bob@example.org'), [], 'bob\u2019s key was stored for other addresses only');

        assert.equal(await store.delete(bob.fingerprint.toLowerCase()), 2);
        assert.deepEqual((await store.list()).map((row) => row.email), ['Alice@example.org']);
        const identities = await db.query<{ email: string }>('select email from lacre_identities order by email');
        assert.deepEqual(identities.map((row) => row.email), ['Alice@example.org'], 'identities left without keys are removed');

        assert.equal(await store.delete('alice@EXAMPLE.org'), 1);
        assert.equal(await store.delete('alice@example.org'), 0);
        assert.deepEqual(await store.list(), []);
      }));

    it('looks addresses up case-insensitively, and joins "ALICE@" to an existing "alice@"', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        await store.importKey(aliceSecond.publicArmored);
        await store.importKey(alice.publicArmored);
        const rows = await store.confirmedKeysFor('ALICE@example.org');
        assert.deepEqual(rows.map((row) => [row.email, row.fingerprint]), [
          ['alice@example.org', aliceSecond.fingerprint],
          ['alice@example.org', alice.fingerprint],
        ]);
      }));

    it('compares local parts exactly when keys.local_part_case_sensitive is set (domains never)', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, sensitive);
        await store.importKey(alice.publicArmored);
        await store.importKey(aliceSecond.publicArmored);
        assert.deepEqual((await store.show('Alice@example.org')).map((row) => row.fingerprint), [alice.fingerprint]);
        assert.deepEqual((await store.show('Alice@EXAMPLE.org')).map((row) => row.fingerprint), [alice.fingerprint]);
        assert.deepEqual((await store.show('alice@example.org')).map((row) => row.fingerprint), [aliceSecond.fingerprint]);
        assert.deepEqual(await store.show('ALICE@example.org'), []);
      }));

    it('refuses unusable keys and bad addresses, storing nothing', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        await assert.rejects(store.importKey(alice.secretArmored), /secret \(private\) key/);
        await assert.rejects(store.importKey(expired.publicArmored), /expired/);
        await assert.rejects(store.importKey(signOnly.publicArmored), /no usable encryption/);
        await assert.rejects(store.importKey(carolRevoked), /revoked/);
        await assert.rejects(store.importKey(alice.publicArmored, { emails: [] }), /no address given/);
        await assert.rejects(store.importKey(noEmail.publicArmored), /no user ID with a valid email address/);
        await assert.rejects(store.importKey(alice.publicArmored, { emails: ['not an address'] }), KeyRejectedError);
        await assert.rejects(store.importKey('garbage'), KeyRejectedError);
        assert.deepEqual(await store.list(), []);
      }));

    it('takes a revocation in for a stored key, and a later stale upload cannot undo it', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        await store.importKey(carol.publicArmored);
        const revoked = await store.importKey(carolRevoked);
        assert.equal(revoked.kind, 'updated-unusable');
        assert.match(revoked.kind === 'updated-unusable' ? revoked.reason : '', /revoked/);
        const isStoredRevoked = async () => (await readKey({ armoredKey: (await store.show('carol@example.org'))[0]!.armored })).isRevoked();
        assert.equal(await isStoredRevoked(), true);

        const stale = await store.importKey(carol.publicArmored);
        assert.equal(stale.kind, 'updated-unusable', 'the stored revocation is merged into the re-upload');
        assert.equal(await isStoredRevoked(), true);
      }));

    it('imports every key of a block, reporting each refusal', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        const outcomes = await store.importKeys(bob.publicArmored + signOnly.publicArmored + expired.publicArmored);
        assert.deepEqual(outcomes.map((outcome) => [outcome.kind, outcome.fingerprint]), [
          ['imported', bob.fingerprint],
          ['refused', signOnly.fingerprint],
          ['refused', expired.fingerprint],
        ]);
        const unreadable = await store.importKeys('not armor at all');
        assert.equal(unreadable.length, 1);
        assert.equal(unreadable[0]!.kind, 'refused');
        assert.match(unreadable[0]!.kind === 'refused' ? unreadable[0]!.reason : '', /not a readable OpenPGP public key/);
        assert.deepEqual((await store.list()).map((row) => row.fingerprint), [bob.fingerprint]);
      }));

    it('refuses keys over the limits: more than 100 user IDs, more than keys.max_key_bytes', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        await assert.rejects(store.importKey(await withUserIdsOnly(crowded, 0, 101)), new RegExp(`key ${crowded.fingerprint} has more than 100 user IDs`));
        const outcomes = await store.importKeys(await withUserIdsOnly(crowded, 0, 101));
        assert.deepEqual(outcomes.map((outcome) => outcome.kind), ['refused']);
        const small = new KeyStore(db, { ...insensitive, max_key_bytes: 300 });
        await assert.rejects(small.importKey(bob.publicArmored), /larger than keys\.max_key_bytes \(300 bytes\)/);
        assert.deepEqual(await store.list(), []);
      }));

    it('refuses a re-upload whose user IDs, merged with the stored copy, pass the limit', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        const first = await store.importKey(await withUserIdsOnly(crowded, 0, 60));
        assert.equal(first.emails.length, 60);
        await assert.rejects(store.importKey(await withUserIdsOnly(crowded, 60, 120)), new RegExp(`key ${crowded.fingerprint} has more than 100 user IDs`));
        const stored = await readKey({ armoredKey: (await store.show('user0@example.org'))[0]!.armored });
        assert.equal(stored.users.length, 60, 'the stored copy is unchanged');
        assert.deepEqual(await store.show('user60@example.org'), []);
      }));

    it('counts only confirmed keys for sending, and re-import can change status', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        await store.importKey(bob.publicArmored, { status: 'pending' });
        assert.deepEqual(await store.confirmedKeysFor('bob@example.org'), []);
        assert.equal((await store.show('bob@example.org'))[0]?.status, 'pending');
        await store.importKey(bob.publicArmored, { status: 'confirmed' });
        assert.deepEqual((await store.confirmedKeysFor('bob@example.org')).map((row) => row.fingerprint), [bob.fingerprint]);
      }));
  });
}
