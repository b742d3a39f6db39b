/**
 * Migration 003 renames Lacre's namespace `mx` to Soledad's `MX` in the database; the box moves the files after
 * the rows when it starts, before its orphan sweep, so nothing is swept in between, and a start interrupted
 * half-way is finished by the next.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { configSchema } from '../../src/config/schema.js';
import { migrate } from '../../src/db/migrate.js';
import { createLogger } from '../../src/log/logger.js';
import { startIncomingBoxServer } from '../../src/box/server.js';
import { BoxUserStore } from '../../src/box/users.js';
import { tagOf } from '../../src/soledad/preamble.js';
import { findPackageRoot } from '../../src/util/package-root.js';
import { databaseBackends, openTestDatabase } from '../helpers/databases.js';
import { tokenHeader, TRUSTED } from './server-box.js';

/** The migrations a box had before this version: 001 and 002. */
function migrationsBefore003(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lacre-migrations-'));
  for (const name of ['001_keys.sql', '002_incoming_box.sql']) copyFileSync(join(findPackageRoot(), 'migrations', name), join(dir, name));
  return dir;
}

for (const backend of await databaseBackends()) {
  describe(`Moving Lacre's mx namespace to Soledad's MX (${backend.name})`, () => {
    it('moves rows in the migration and files at start; an orphan is still swept, a clashing id stays in mx', async () => {
      const oldMigrations = migrationsBefore003();
      const blobsPath = mkdtempSync(join(tmpdir(), 'lacre-box-mx-'));
      const { db, cleanup } = await openTestDatabase(backend, { migrationsDir: oldMigrations });
      try {
        const users = new BoxUserStore(db);
        const { user } = await users.add('alice@example.org');
        const { token } = await users.createToken(user);
        const auth = tokenHeader(user, token);
        const blob = async (namespace: string, id: string, fileName: string, bytes: string) => {
          mkdirSync(join(blobsPath, user, namespace), { recursive: true });
          writeFileSync(join(blobsPath, user, namespace, fileName), bytes);
          await db.query(`INSERT INTO lacre_blobs (user_uuid, namespace, blob_id, size, scheme, file_name) VALUES ($1, $2, $3, $4, 'openpgp', $5)`, [
            user, namespace, id, bytes.length, fileName,
          ]);
        };
        // As a box before this version left them: blobs in mx, one id also in MX, an orphan in mx.
        await blob('mx', 'a', 'a.111111', '-----BEGIN PGP MESSAGE-----\nstored bare before framing\n');
        await blob('mx', 'b', 'b.222222', 'b in mx');
        await blob('MX', 'b', 'b.333333', 'b in MX');
        await blob('mx', 'c', 'c.444444', 'c, whose file a crashed start had already moved');
        writeFileSync(join(blobsPath, user, 'mx', 'orphan.999999'), 'stored, never recorded');
        writeFileSync(join(blobsPath, user, 'mx', '.keep'), 'not a blob');

        assert.equal((await migrate(db))[0], '003_soledad_clients');
        const rows = await db.query<{ namespace: string; blob_id: string; framed: boolean }>('SELECT namespace, blob_id, framed FROM lacre_blobs ORDER BY blob_id, namespace');
        assert.deepEqual(rows.map((r) => `${r.namespace}/${r.blob_id}${r.framed ? ' framed' : ''}`), ['MX/a', 'MX/b', 'mx/b', 'MX/c']);
        mkdirSync(join(blobsPath, user, 'MX'), { recursive: true });
        writeFileSync(join(blobsPath, user, 'MX', 'c.444444'), 'c, whose file a crashed start had already moved');
        rmSync(join(blobsPath, user, 'mx', 'c.444444'));

        const config = configSchema.parse({ incoming_box: { listen: '127.0.0.1:0', blobs_path: blobsPath, trusted_tokens: [TRUSTED] } });
        for (const start of ['first', 'second'] as const) {
          const server = await startIncomingBoxServer(config, db, createLogger('silent'));
          try {
            const base = `http://127.0.0.1:${server.port}/blobs/${user}`;
            const get = (path: string) => fetch(`${base}/${path}`, { headers: { authorization: auth } });
            assert.deepEqual(await (await get('?namespace=MX')).json(), ['a', 'b', 'c'], `${start} start`);
            const a = await get('a?namespace=MX');
            assert.equal(a.status, 200);
            assert.equal(a.headers.get('x-incoming-framing'), null, 'stored before framing: served bare');
            assert.equal(a.headers.get('tag'), tagOf(Buffer.from('\nstored bare before framing\n').subarray(-16)));
            assert.equal(await a.text(), '-----BEGIN PGP MESSAGE-----\nstored bare before framing\n');
            assert.equal(await (await get('b?namespace=MX')).text(), 'b in MX');
            assert.equal(await (await get('b?namespace=mx')).text(), 'b in mx', 'the clashing id is still served from mx');
            assert.equal(await (await get('c?namespace=MX')).text(), 'c, whose file a crashed start had already moved');
          } finally {
            await server.close();
          }
          assert.deepEqual(readdirSync(join(blobsPath, user, 'MX')).sort(), ['a.111111', 'b.333333', 'c.444444'], 'the orphan moved, then was swept');
          assert.deepEqual(readdirSync(join(blobsPath, user, 'mx')).sort(), ['.keep', 'b.222222']);
        }
      } finally {
        await cleanup();
        rmSync(blobsPath, { recursive: true, force: true });
        rmSync(oldMigrations, { recursive: true, force: true });
      }
    });
  });
}
