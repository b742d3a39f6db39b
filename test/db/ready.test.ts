import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, test } from 'node:test';
import pg from 'pg';
import { LacreError } from '../../src/errors.js';
import { DatabaseNotMigratedError, listMigrations, migrate, pendingMigrations } from '../../src/db/migrate.js';
import type { DatabaseConfig } from '../../src/db/open.js';
import { openReadyDatabase } from '../../src/db/ready.js';
import { createLogger } from '../../src/log/logger.js';
import { databaseBackends, openTestDatabase, type TestBackend } from '../helpers/databases.js';

const backends = await databaseBackends();
const allMigrations = listMigrations().map((migration) => migration.name);

/** A logger whose lines (parsed) land in `lines`. */
function capturingLogger(): { logger: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger('info', sink), lines };
}

/** Sessions other than the asking one on the server database of `config` (PostgreSQL only). */
async function otherSessions(backend: TestBackend, config: DatabaseConfig): Promise<number> {
  const client = new pg.Client({ connectionString: backend.adminUrl });
  await client.connect();
  try {
    const name = new URL(config.url!).pathname.slice(1);
    const { rows } = await client.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1', [name]);
    return Number(rows[0]!.n);
  } finally {
    await client.end();
  }
}

async function eventually(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let tries = 0; tries < 40; tries++) {
    if (await check()) return;
    await delay(50);
  }
  assert.fail(what);
}

describe('openReadyDatabase (embedded)', () => {
  test('migrates a new database itself, logging each migration and the whole, and says nothing the next time', async () => {
    const { db: template, config, cleanup } = await openTestDatabase({ name: 'embedded' }, { migrate: false });
    await template.close();
    try {
      const first = capturingLogger();
      const db = await openReadyDatabase(config, first.logger);
      assert.deepEqual(await pendingMigrations(db), []);
      await db.close();
      assert.deepEqual(first.lines.filter((line) => line.msg === 'migration applied').map((line) => line.migration), allMigrations);
      assert.deepEqual(first.lines.filter((line) => line.msg === 'embedded database migrated').map((line) => line.applied), [allMigrations]);

      const second = capturingLogger();
      await (await openReadyDatabase(config, second.logger)).close();
      assert.deepEqual(second.lines.filter((line) => /migrat/.test(String(line.msg))), []);
    } finally {
      await cleanup();
    }
  });
});

for (const backend of backends.filter((candidate) => candidate.name === 'postgres')) {
  describe('openReadyDatabase (postgres)', () => {
    test('refuses a server database that lacks migrations, naming `lacre migrate`, and leaves no session open', async () => {
      const { db: admin, config, cleanup } = await openTestDatabase(backend, { migrate: false });
      await admin.close();
      try {
        const { logger } = capturingLogger();
        await assert.rejects(
          openReadyDatabase(config, logger),
          (error: unknown) =>
            error instanceof DatabaseNotMigratedError &&
            error instanceof LacreError &&
            /run `lacre migrate`/.test(error.message) &&
            error.pending.join() === allMigrations.join(),
        );
        await eventually(async () => (await otherSessions(backend, config)) === 0, 'the refused database was not closed');
      } finally {
        await cleanup();
      }
    });

    test('opens a migrated server database without migrating it', async () => {
      const { db: admin, config, cleanup } = await openTestDatabase(backend, { migrate: false });
      try {
        await migrate(admin);
        const { logger, lines } = capturingLogger();
        const db = await openReadyDatabase(config, logger);
        assert.deepEqual(await pendingMigrations(db), []);
        await db.close();
        assert.deepEqual(lines.filter((line) => /migrat/.test(String(line.msg))), []);
      } finally {
        await cleanup();
      }
    });
  });
}
