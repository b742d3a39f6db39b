import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DatabaseUnavailableError } from '../../src/errors.js';
import { openDatabase } from '../../src/db/open.js';
import { createLogger } from '../../src/log/logger.js';
import { createKeyDirectory, type CachedKeyDirectory, type DirectoryDatabase } from '../../src/keys/directory.js';
import { KeyStore } from '../../src/keys/store.js';
import type { RecipientKeys } from '../../src/keys/types.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, revokeKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

const logger = createLogger('silent');
const keysConfig = { local_part_case_sensitive: false, recipient_delimiter: '+', cache_ttl_seconds: 3600 };
const DAY_MS = 24 * 3600 * 1000;

let home: GpgHome;
let alice: GpgKey;
let aliceShortLived: GpgKey;
let carol: GpgKey;
let carolRevoked: string;

before(async () => {
  home = await createGpgHome();
  alice = await generateKey(home, { email: 'alice@example.org' });
  aliceShortLived = await generateKey(home, { email: 'alice@example.org', expire: '2d' });
  carol = await generateKey(home, { email: 'carol@example.org', algo: 'rsa3072' });
  carolRevoked = await revokeKey(home, carol);
});
after(() => home.remove());

async function withDirectory(
  db: DirectoryDatabase,
  use: (directory: CachedKeyDirectory) => Promise<void>,
  options: { config?: Partial<typeof keysConfig>; clock?: () => Date } = {},
): Promise<void> {
  const directory = await createKeyDirectory(db, { ...keysConfig, ...options.config }, logger, options.clock ? { clock: options.clock } : {});
  try {
    await use(directory);
  } finally {
    await directory.close();
  }
}

/** NOTIFY arrives asynchronously after the commit: poll briefly (far below the one-hour TTL). */
async function eventually(lookup: () => Promise<RecipientKeys>, kind: RecipientKeys['kind']): Promise<RecipientKeys> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const result = await lookup();
    if (result.kind === kind || Date.now() > deadline) return result;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function fingerprints(result: RecipientKeys): string[] {
  return result.kind === 'usable' ? result.keys.map((key) => key.getFingerprint().toUpperCase()) : [];
}

for (const backend of await databaseBackends()) {
  describe(`key directory (${backend.name})`, () => {
    it('caches answers, and sees an import or a delete at once through NOTIFY', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, keysConfig);
        await withDirectory(db, async (directory) => {
          assert.deepEqual(await directory.lookup('alice@example.org'), { kind: 'none', address: 'alice@example.org' });
          assert.equal((await directory.lookup('alice@example.org')).kind, 'none');
          assert.deepEqual(directory.stats(), { size: 1, hits: 1, misses: 1, invalidations: 0 }, 'the negative answer is cached');

          await store.importKey(alice.publicArmored);
          const found = await eventually(() => directory.lookup('Alice@Example.ORG'), 'usable');
          assert.equal(found.kind, 'usable');
          assert.equal(found.address, 'Alice@Example.ORG');
          assert.deepEqual(fingerprints(found), [alice.fingerprint]);
          assert.ok(directory.stats().invalidations >= 1);

          const before = directory.stats();
          await directory.lookup('alice@example.org');
          assert.equal(directory.stats().hits, before.hits + 1, 'positive answers are cached too');

          await store.delete('alice@example.org');
          assert.equal((await eventually(() => directory.lookup('alice@example.org'), 'none')).kind, 'none');
        });
      }));

    it('returns the style and only the usable keys; revoked-only is "unusable"; pending keys do not count', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, keysConfig);
        await store.importKey(carol.publicArmored, { style: 'inline' });
        await store.importKey(alice.publicArmored, { emails: ['carol@example.org'] });
        await store.importKey(carolRevoked);
        await store.importKey(alice.publicArmored, { emails: ['pending@example.org'], status: 'pending' });
        await withDirectory(db, async (directory) => {
          const mixed = await directory.lookup('carol@example.org');
          assert.equal(mixed.kind, 'usable');
          assert.equal(mixed.kind === 'usable' && mixed.style, 'inline');
          assert.deepEqual(fingerprints(mixed), [alice.fingerprint]);

          assert.equal((await directory.lookup('pending@example.org')).kind, 'none');
          assert.equal((await directory.lookup('not an address')).kind, 'none');

          await store.delete(alice.fingerprint);
          const revokedOnly = await eventually(() => directory.lookup('carol@example.org'), 'unusable');
          assert.equal(revokedOnly.kind, 'unusable');
          assert.match(revokedOnly.kind === 'unusable' ? revokedOnly.reason : '', new RegExp(`key ${carol.fingerprint} is revoked`));
        });
      }));

    it('stops using a cached key once it expires, without asking the database', () =>
      withDatabase(backend, async (db) => {
        await new KeyStore(db, keysConfig).importKey(aliceShortLived.publicArmored);
        let now = new Date();
        await withDirectory(
          db,
          async (directory) => {
            assert.deepEqual(fingerprints(await directory.lookup('alice@example.org')), [aliceShortLived.fingerprint]);
            now = new Date(now.getTime() + 3 * DAY_MS);
            const later = await directory.lookup('alice@example.org');
            assert.equal(later.kind, 'unusable');
            assert.match(later.kind === 'unusable' ? later.reason : '', /expired/);
            assert.deepEqual(directory.stats(), { size: 1, hits: 1, misses: 1, invalidations: 0 });
          },
          { clock: () => now },
        );
      }));

    it('keeps at most maxEntries addresses, evicting the least recently stored', () =>
      withDatabase(backend, async (db) => {
        const directory = await createKeyDirectory(db, keysConfig, logger, { maxEntries: 2 });
        try {
          for (const address of ['a@example.org', 'b@example.org', 'c@example.org']) await directory.lookup(address);
          assert.equal(directory.stats().size, 2);
          await directory.lookup('c@example.org');
          await directory.lookup('a@example.org');
          assert.deepEqual(directory.stats(), { size: 2, hits: 1, misses: 4, invalidations: 0 });
        } finally {
          await directory.close();
        }
      }));

    it('honours keys.local_part_case_sensitive', () =>
      withDatabase(backend, async (db) => {
        const config = { local_part_case_sensitive: true };
        await new KeyStore(db, config).importKey(alice.publicArmored, { emails: ['Alice@example.org'] });
        await withDirectory(
          db,
          async (directory) => {
            assert.equal((await directory.lookup('Alice@EXAMPLE.org')).kind, 'usable');
            assert.equal((await directory.lookup('alice@example.org')).kind, 'none');
          },
          { config },
        );
      }));

    it('finds alice@’s keys for alice+tag@ (keys.recipient_delimiter), a key of the full address first', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, keysConfig);
        await store.importKey(alice.publicArmored);
        await store.importKey(carol.publicArmored, { emails: ['alice+work@example.org'] });
        await withDirectory(db, async (directory) => {
          const tagged = await directory.lookup('Alice+news@example.org');
          assert.equal(tagged.address, 'Alice+news@example.org', 'the address stays as it was asked for');
          assert.deepEqual(fingerprints(tagged), [alice.fingerprint]);
          assert.deepEqual(fingerprints(await directory.lookup('alice+work@example.org')), [carol.fingerprint], 'the full address has its own key');
          assert.equal((await directory.lookup('alice-news@example.org')).kind, 'none', '"-" is not a delimiter by default');
        });
        await withDirectory(db, async (directory) => assert.equal((await directory.lookup('alice+news@example.org')).kind, 'none'), {
          config: { recipient_delimiter: '' },
        });
        await withDirectory(db, async (directory) => assert.deepEqual(fingerprints(await directory.lookup('alice-news@example.org')), [alice.fingerprint]), {
          config: { recipient_delimiter: '+-' },
        });
      }));

    it('matches international domains in either form: A-label and Unicode, stored or asked for', () =>
      withDatabase(backend, async (db) => {
        const store = new KeyStore(db, keysConfig);
        await store.importKey(alice.publicArmored, { emails: ['dave@xn--exmple-cua.org'] });
        await store.importKey(carol.publicArmored, { emails: ['erin@bücher.example'] });
        assert.deepEqual(
          (await store.list()).map((row) => row.email),
          ['dave@xn--exmple-cua.org', 'erin@xn--bcher-kva.example'],
          'stored as A-labels',
        );
        // A row stored before domains were stored as A-labels (Unicode, as given): it must keep matching.
        await db.query(`insert into lacre_identities (email) values ('frank@exämple.org')`);
        await db.query(`insert into lacre_keys (email, fingerprint, armored) values ('frank@exämple.org', $1, $2)`, [alice.fingerprint, alice.publicArmored]);
        await withDirectory(db, async (directory) => {
          for (const address of ['dave@xn--exmple-cua.org', 'dave@exämple.org', 'DAVE@EXÄMPLE.ORG', 'frank@xn--exmple-cua.org', 'frank@exämple.org']) {
            assert.deepEqual(fingerprints(await directory.lookup(address)), [alice.fingerprint], address);
          }
          assert.deepEqual(fingerprints(await directory.lookup('erin@xn--bcher-kva.example')), [carol.fingerprint]);
        });
        // Re-importing for the old row's address joins it rather than making a second identity.
        await store.importKey(alice.publicArmored, { emails: ['frank@xn--exmple-cua.org'] });
        assert.deepEqual((await store.show('frank@xn--exmple-cua.org')).map((row) => row.email), ['frank@exämple.org']);
        assert.equal(await store.delete('frank@XN--EXMPLE-CUA.org'), 1);
      }));

    it('throws DatabaseUnavailableError, never "none", when the store cannot be read', () =>
      withDatabase(backend, async (db) => {
        await withDirectory(db, async (directory) => {
          await db.query('alter table lacre_keys rename to lacre_keys_moved');
          await assert.rejects(directory.lookup('alice@example.org'), DatabaseUnavailableError);
          await db.query('alter table lacre_keys_moved rename to lacre_keys');
          assert.equal((await directory.lookup('alice@example.org')).kind, 'none');
          await db.close();
          await assert.rejects(directory.lookup('bob@example.org'), DatabaseUnavailableError);
        });
      }));

    if (backend.name === 'postgres') {
      it('throws DatabaseUnavailableError while the server is unreachable, and drops the cache on reconnect', () =>
        withDatabase(backend, async (direct, config) => {
          const url = new URL(config.url!);
          const proxy = new TcpProxy(url.hostname, Number(url.port || 5432));
          await proxy.start();
          url.port = String(proxy.port);
          const proxied = await openDatabase({ ...config, url: url.toString() });
          try {
            await withDirectory(proxied, async (directory) => {
              assert.equal((await directory.lookup('alice@example.org')).kind, 'none');
              await proxy.stop();
              await assert.rejects(directory.lookup('bob@example.org'), DatabaseUnavailableError);
              // Imported over another connection while the directory's is cut: its NOTIFY never reaches the directory.
              await new KeyStore(direct, keysConfig).importKey(alice.publicArmored);
              await proxy.start();
              const deadline = Date.now() + 10_000;
              let result = await directory.lookup('alice@example.org');
              while (result.kind !== 'usable' && Date.now() < deadline) {
                await new Promise((resolve) => setTimeout(resolve, 100));
                result = await directory.lookup('alice@example.org');
              }
              assert.equal(result.kind, 'usable', 'the cached "none" must go once notifications are back');
            });
          } finally {
            await proxied.close();
            await proxy.stop();
          }
        }));
    }
  });
}
