import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { cachedKeyCounts, readKeyCounts } from '../../src/metrics/key-counts.js';
import { createLogger } from '../../src/log/logger.js';
import type { Database } from '../../src/db/types.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';

const DAY = 24 * 3600 * 1000;

/** Rows straight into the tables (the store validates real keys; counting only needs the columns). */
async function insertKey(db: Database, email: string, fingerprint: string, expiresInDays: number | null, status = 'confirmed'): Promise<void> {
  await db.query('insert into lacre_identities (email) values ($1) on conflict do nothing', [email]);
  const expiresAt = expiresInDays === null ? null : new Date(Date.now() + expiresInDays * DAY).toISOString();
  await db.query('insert into lacre_keys (email, fingerprint, armored, status, expires_at) values ($1, $2, $3, $4, $5)', [
    email,
    fingerprint,
    '-----BEGIN PGP PUBLIC KEY BLOCK-----',
    status,
    expiresAt,
  ]);
}

const fingerprint = (n: number) => n.toString(16).toUpperCase().padStart(40, '0');

for (const backend of await databaseBackends()) {
  describe(`key counts for the expiry alert (${backend.name})`, () => {
    it('counts distinct confirmed keys: all, expiring within 7 days, expired', () =>
      withDatabase(backend, async (db) => {
        await insertKey(db, 'never@example.test', fingerprint(1), null);
        await insertKey(db, 'later@example.test', fingerprint(2), 30);
        await insertKey(db, 'soon@example.test', fingerprint(3), 2);
        // The same key under a second address is one key.
        await insertKey(db, 'soon-alias@example.test', fingerprint(3), 2);
        await insertKey(db, 'edge@example.test', fingerprint(4), 6.9);
        await insertKey(db, 'gone@example.test', fingerprint(5), -1);
        await insertKey(db, 'pending@example.test', fingerprint(6), 1, 'pending');
        assert.deepEqual(await readKeyCounts(db), { confirmed: 5, expiringSoon: 2, expired: 1 });
      }));

    it('reuses an answer for maxAgeMs, and keeps the last one when the store cannot answer', () =>
      withDatabase(backend, async (db) => {
        await insertKey(db, 'soon@example.test', fingerprint(1), 1);
        const cached = cachedKeyCounts(db, createLogger('silent'), { maxAgeMs: 60_000 });
        assert.deepEqual(await cached(), { confirmed: 1, expiringSoon: 1, expired: 0 });
        await insertKey(db, 'soon2@example.test', fingerprint(2), 1);
        assert.deepEqual(await cached(), { confirmed: 1, expiringSoon: 1, expired: 0 }, 'cached');

        const fresh = cachedKeyCounts(db, createLogger('silent'), { maxAgeMs: 0 });
        assert.deepEqual(await fresh(), { confirmed: 2, expiringSoon: 2, expired: 0 });
        await db.close();
        assert.deepEqual(await fresh(), { confirmed: 2, expiringSoon: 2, expired: 0 }, 'the last answer while the store is gone');
      }));
  });
}
