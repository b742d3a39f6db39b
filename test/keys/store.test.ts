import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { readKey } from 'openpgp';
import pg from 'pg';
import { KeyRejectedError } from '../../src/errors.js';
import { addressLock, addressLocks, ADDRESS_LOCK_SQL } from '../../src/keys/address-lock.js';
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

    it('restores a disabled key as the address\'s key: its other confirmed keys become disabled', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        await store.importKey(alice.publicArmored);
        await store.importKey(aliceSecond.publicArmored, { status: 'disabled' });
        assert.deepEqual(await store.restore(aliceSecond.fingerprint, 'ALICE@example.org'), {
          fingerprint: aliceSecond.fingerprint,
          emails: ['Alice@example.org'],
          disabled: 1,
        });
        assert.deepEqual(statuses(await store.show('alice@example.org')), { [alice.fingerprint]: 'disabled', [aliceSecond.fingerprint]: 'confirmed' });
        assert.deepEqual(await store.restore(aliceSecond.fingerprint), { fingerprint: aliceSecond.fingerprint, emails: [], disabled: 0 }, 'a confirmed key is not restored again');
      }));

    it('restores by fingerprint for every address the key is stored for, and only ADDRESS\'s when one is given', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, insensitive);
        await store.importKey(bob.publicArmored, { emails: ['Team@example.org', 'ops@example.org', 'bob@example.org'], status: 'disabled' });
        await store.importKey(carol.publicArmored, { emails: ['ops@example.org'] });
        assert.deepEqual(await store.restore(bob.fingerprint, 'team@example.org'), { fingerprint: bob.fingerprint, emails: ['Team@example.org'], disabled: 0 });
        assert.deepEqual(await store.restore(` 0x${bob.fingerprint.toLowerCase()} `), {
          fingerprint: bob.fingerprint,
          emails: ['bob@example.org', 'ops@example.org'],
          disabled: 1,
        });
        assert.deepEqual(statuses(await store.show('ops@example.org')), { [bob.fingerprint]: 'confirmed', [carol.fingerprint]: 'disabled' });
        await assert.rejects(store.restore('alice@example.org'), KeyRejectedError);
      }));
  });
}

describe('addressLocks', () => {
  it('locks each address once, as compared case-insensitively, in one order whatever the order given', () => {
    const params = (emails: string[]): unknown[] => addressLocks(emails).map((statement) => statement.params?.[0]);
    assert.deepEqual(params(['ops@example.org', 'Bob@example.org', 'OPS@example.org']), ['bob@example.org', 'ops@example.org']);
    assert.deepEqual(params(['bob@example.org', 'ops@example.org']), ['bob@example.org', 'ops@example.org']);
    assert.ok(addressLocks(['a@example.org']).every((statement) => statement.sql === ADDRESS_LOCK_SQL));
  });

  it('locks a Unicode domain as its A-label: a row stored before addresses were canonicalised shares the lock', () => {
    assert.deepEqual(addressLocks(['dave@exämple.org', 'DAVE@xn--exmple-cua.org']).map((statement) => statement.params), [['dave@xn--exmple-cua.org']]);
    assert.deepEqual(addressLock('Dave@Exämple.org').params, ['dave@xn--exmple-cua.org']);
  });
});

const postgres = (await databaseBackends()).find((backend) => backend.name === 'postgres');

describe('KeyStore.restore under the per-address lock (postgres)', { skip: postgres === undefined && 'no PostgreSQL server' }, () => {
  it('waits for a transaction holding the lock of an address it restores for, and changes nothing meanwhile', () =>
    withDatabase(postgres!, async (db, config) => {
      const store = new KeyStore(db, insensitive);
      await store.importKey(alice.publicArmored);
      await store.importKey(aliceSecond.publicArmored, { status: 'disabled' });
      await store.importKey(bob.publicArmored, { emails: ['bob@example.org', 'alice@example.org'] });
      const holder = new pg.Client({ connectionString: config.url! });
      await holder.connect();
      try {
        await holder.query('BEGIN');
        // The key service's confirmation for this address, as it holds the lock (another spelling: same lock).
        const lock = addressLock('ALICE@EXAMPLE.ORG');
        await holder.query(lock.sql, lock.params);
        let settled = false;
        const restoring = store.restore(aliceSecond.fingerprint).finally(() => { settled = true; });
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.equal(settled, false, 'restore waits for the address lock');
        const { rows } = await holder.query<{ fingerprint: string; status: string }>(
          `select fingerprint, status from lacre_keys where lower(email) = 'alice@example.org'`,
        );
        assert.deepEqual(statuses(rows), { [alice.fingerprint]: 'confirmed', [aliceSecond.fingerprint]: 'disabled', [bob.fingerprint]: 'confirmed' }, 'nothing changed yet');
        await holder.query('COMMIT');
        assert.deepEqual(await restoring, { fingerprint: aliceSecond.fingerprint, emails: ['Alice@example.org'], disabled: 2 });
        assert.deepEqual((await store.confirmedKeysFor('alice@example.org')).map((row) => row.fingerprint), [aliceSecond.fingerprint]);
      } finally {
        await holder.query('ROLLBACK').catch(() => undefined);
        await holder.end();
      }
    }));
});

/** Each key's status, by fingerprint. */
function statuses(rows: { fingerprint: string; status: string }[]): Record<string, string> {
  return Object.fromEntries(rows.map((row) => [row.fingerprint, row.status]));
}
