import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DatabaseUnavailableError, LacreError } from '../../src/errors.js';
import { EmbeddedDatabase } from '../../src/db/embedded.js';
import { assertMigrated, listMigrations, migrate, pendingMigrations } from '../../src/db/migrate.js';
import { openDatabase, type OpenedDatabase } from '../../src/db/open.js';
import { PostgresDatabase } from '../../src/db/postgres.js';
import { databaseBackends, openTestDatabase, withDatabase } from '../helpers/databases.js';

const backends = await databaseBackends();
const tempDirs: string[] = [];
after(() => { for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true }); });

function migrationsDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'lacre-migrations-'));
  tempDirs.push(dir);
  for (const [name, sql] of Object.entries(files)) writeFileSync(join(dir, name), sql);
  return dir;
}

function nextNotification(db: OpenedDatabase, channel: string, timeoutMs = 5000): Promise<{ payload: Promise<string>; unlisten: () => Promise<void> }> {
  return new Promise((resolveSubscribed, rejectSubscribed) => {
    let deliver: (payload: string) => void = () => undefined;
    const payload = new Promise<string>((resolve, reject) => {
      deliver = resolve;
      setTimeout(() => reject(new Error(`no notification on ${channel} within ${timeoutMs} ms`)), timeoutMs).unref();
    });
    db.listen(channel, (text) => deliver(text)).then((unlisten) => resolveSubscribed({ payload, unlisten }), rejectSubscribed);
  });
}

const noMigrations = { migrate: false } as const;

assert.ok(backends.some((b) => b.name === 'embedded'), 'the embedded backend is always tested');

for (const backend of backends) {
  describe(`database (${backend.name})`, () => {
    test('query passes parameters and returns rows with the same value types on both backends', () =>
      withDatabase(backend, async (db) => {
        assert.equal(db.kind, backend.name);
        const rows = await db.query<{ n: number; text: string; big: number; bytes: Buffer; when: Date; missing: null }>(
          `SELECT $1::int + 1 AS n, $2::text AS text, count(*) AS big, '\\x0102'::bytea AS bytes, now() AS when, NULL AS missing
             FROM generate_series(1, 3)`,
          [41, 'ünïcode'],
        );
        assert.deepEqual(rows.map(({ when: _when, ...rest }) => rest), [{ n: 42, text: 'ünïcode', big: 3, bytes: Buffer.from([1, 2]), missing: null }]);
        assert.ok(rows[0]!.when instanceof Date);
        assert.deepEqual(await db.query('SELECT 1 AS a WHERE false'), []);
      }, noMigrations));

    test('SQL errors keep their SQLSTATE and are not "unavailable"', () =>
      withDatabase(backend, async (db) => {
        const error = await db.query('SELECT * FROM no_such_table').then(() => undefined, (e: unknown) => e);
        assert.ok(error instanceof Error);
        assert.equal((error as { code?: string }).code, '42P01');
        assert.ok(!(error instanceof DatabaseUnavailableError));
      }, noMigrations));

    test('execTransaction commits all statements, or none when one fails', () =>
      withDatabase(backend, async (db) => {
        await db.execTransaction('CREATE TABLE t (v int); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);');
        assert.deepEqual(await db.query('SELECT v FROM t ORDER BY v'), [{ v: 1 }, { v: 2 }]);

        await assert.rejects(
          db.execTransaction('INSERT INTO t VALUES (3); CREATE TABLE u (v int); SELECT 1/0;'),
          (error: Error & { code?: string }) => error.code === '22012' && !(error instanceof DatabaseUnavailableError),
        );
        assert.deepEqual(await db.query('SELECT v FROM t ORDER BY v'), [{ v: 1 }, { v: 2 }]);
        assert.deepEqual(await db.query(`SELECT to_regclass('u') IS NULL AS absent`), [{ absent: true }]);
        // The connection is usable afterwards (not left inside an aborted transaction).
        assert.deepEqual(await db.query('SELECT 7 AS seven'), [{ seven: 7 }]);
      }, noMigrations));

    test('queryInTransaction runs statements with parameters in order, all or none, and answers the last one\u2019s rows', () =>
      withDatabase(backend, async (db) => {
        await db.query('CREATE TABLE q (v int)');
        const rows = await db.queryInTransaction<{ n: number }>([
          { sql: 'SELECT pg_advisory_xact_lock($1)', params: [42] },
          { sql: 'INSERT INTO q VALUES ($1), ($2)', params: [1, 2] },
          { sql: 'SELECT count(*)::int AS n FROM q' },
        ]);
        assert.deepEqual(rows, [{ n: 2 }]);
        await assert.rejects(
          db.queryInTransaction([{ sql: 'INSERT INTO q VALUES ($1)', params: [3] }, { sql: 'SELECT 1/0' }]),
          (error: Error & { code?: string }) => error.code === '22012',
        );
        assert.deepEqual(await db.query('SELECT v FROM q ORDER BY v'), [{ v: 1 }, { v: 2 }]);
        assert.deepEqual(await db.query('SELECT 7 AS seven'), [{ seven: 7 }]);
      }, noMigrations));

    test('listen receives NOTIFY payloads, per channel and case-sensitively, until unlistened', () =>
      withDatabase(backend, async (db) => {
        const lower = await nextNotification(db, 'lacre_keys');
        const mixed = await nextNotification(db, 'Lacre Keys');
        await db.query(`SELECT pg_notify('Lacre Keys', 'mixed')`);
        await db.query('SELECT pg_notify($1, $2)', ['lacre_keys', 'alice@example.org']);
        assert.equal(await lower.payload, 'alice@example.org');
        assert.equal(await mixed.payload, 'mixed');

        const received: string[] = [];
        const unlisten = await db.listen('lacre_keys', (payload) => received.push(payload));
        await db.execTransaction(`NOTIFY lacre_keys, 'one'`);
        await waitFor(() => received.length === 1);
        await unlisten();
        await lower.unlisten();
        await mixed.unlisten();
        await db.query(`SELECT pg_notify('lacre_keys', 'two')`);
        await delay(300);
        assert.deepEqual(received, ['one']);
      }, noMigrations));

    test('migrate applies pending migrations in order, once, and records them', () =>
      withDatabase(backend, async (db) => {
        const dir = migrationsDir({
          '002_second.sql': `INSERT INTO things (label) VALUES ('from 002');`,
          '001_first.sql': `CREATE TABLE things (id serial PRIMARY KEY, label text NOT NULL);\n-- a trailing comment without newline`,
          'README.md': 'not a migration',
        });
        assert.deepEqual(await pendingMigrations(db, { dir }), ['001_first', '002_second']);
        await assert.rejects(assertMigrated(db, { dir }), (error: Error) =>
          error instanceof LacreError && error.message === 'database is not migrated: run `lacre migrate` (pending: 001_first, 002_second)');

        assert.deepEqual(await migrate(db, { dir }), ['001_first', '002_second']);
        assert.deepEqual(await migrate(db, { dir }), []);
        assert.deepEqual(await db.query('SELECT label FROM things'), [{ label: 'from 002' }]);
        const recorded = await db.query<{ version: number; name: string; applied_at: Date }>('SELECT * FROM lacre_migrations ORDER BY version');
        assert.deepEqual(recorded.map((r) => [r.version, r.name]), [[1, '001_first'], [2, '002_second']]);
        assert.ok(recorded[0]!.applied_at instanceof Date);
        assert.deepEqual(await pendingMigrations(db, { dir }), []);
        await assertMigrated(db, { dir });

        writeFileSync(join(dir, '003_third.sql'), `ALTER TABLE things ADD COLUMN extra text;`);
        assert.deepEqual(await pendingMigrations(db, { dir }), ['003_third']);
        await assert.rejects(assertMigrated(db, { dir }), /\(pending: 003_third\)/);
        assert.deepEqual(await migrate(db, { dir }), ['003_third']);
      }, noMigrations));

    test('a failing migration leaves nothing behind and names itself; earlier ones stay applied', () =>
      withDatabase(backend, async (db) => {
        const dir = migrationsDir({
          '001_ok.sql': 'CREATE TABLE a (v int);',
          '002_broken.sql': 'CREATE TABLE b (v int); INSERT INTO b VALUES (1); SELEC oops;',
        });
        await assert.rejects(migrate(db, { dir }), (error: Error) => error instanceof LacreError && /migration 002_broken failed/.test(error.message));
        assert.deepEqual(await pendingMigrations(db, { dir }), ['002_broken']);
        assert.deepEqual(await db.query(`SELECT to_regclass('a') IS NOT NULL AS a, to_regclass('b') IS NULL AS no_b`), [{ a: true, no_b: true }]);
      }, noMigrations));

    test('openTestDatabase gives a database with the repository migrations applied', async () => {
      const { db, config, cleanup } = await openTestDatabase(backend);
      try {
        assert.deepEqual(await pendingMigrations(db), []);
        assert.equal(config.url !== undefined, backend.name === 'postgres');
      } finally {
        await cleanup();
      }
    });

    test('a closed database fails with DatabaseUnavailableError', async () => {
      const { db, cleanup } = await openTestDatabase(backend, noMigrations);
      await cleanup();
      await assert.rejects(db.query('SELECT 1'), DatabaseUnavailableError);
      await assert.rejects(db.execTransaction('SELECT 1'), DatabaseUnavailableError);
      await db.close();
    });
  });
}

test('migration files must be named NNN_name.sql and have distinct versions', () => {
  assert.throws(() => listMigrations(migrationsDir({ 'keys.sql': '' })), /keys\.sql is not named NNN_name\.sql/);
  assert.throws(() => listMigrations(migrationsDir({ '001_a.sql': '', '1_b.sql': '' })), /001_a and 1_b share version 1/);
  assert.throws(() => listMigrations(join(tmpdir(), 'lacre-no-such-folder')), /cannot read migrations folder/);
});

describe('embedded database', () => {
  test('persists in data_dir across reopen, and one process at a time may open it', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'lacre-embedded-'));
    tempDirs.push(parent);
    const dataDir = join(parent, 'nested', 'data');
    const first = await openDatabase({ data_dir: dataDir, pool_size: 1, query_timeout_seconds: 10 });
    assert.equal(first.kind, 'embedded');
    await first.execTransaction('CREATE TABLE kept (v text); INSERT INTO kept VALUES ($$still here$$);');
    await assert.rejects(EmbeddedDatabase.open({ dataDir }), (error: Error) =>
      error instanceof DatabaseUnavailableError && error.message.includes(`in use by process ${process.pid}`));
    await first.close();

    const second = await EmbeddedDatabase.open({ dataDir });
    try {
      assert.deepEqual(await second.query('SELECT v FROM kept'), [{ v: 'still here' }]);
    } finally {
      await second.close();
    }
  });

  test('a lock left by a dead process is taken over', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'lacre-embedded-'));
    tempDirs.push(dataDir);
    writeFileSync(join(dataDir, 'lacre.lock'), '2147483646\n');
    const db = await EmbeddedDatabase.open({ dataDir });
    await db.close();
  });
});

const postgres = backends.find((b) => b.name === 'postgres');

describe('PostgreSQL server', { skip: postgres ? false : 'no PostgreSQL server (set TEST_DATABASE_URL)' }, () => {
  test('an unreachable server fails fast with DatabaseUnavailableError', async () => {
    const db = await openDatabase({ url: 'postgres://postgres@127.0.0.1:1/test', data_dir: './data', pool_size: 2, query_timeout_seconds: 10 });
    try {
      for (const attempt of [() => db.query('SELECT 1'), () => db.execTransaction('SELECT 1'), () => db.listen('x', () => undefined)]) {
        const started = Date.now();
        await assert.rejects(attempt(), (error: Error) => error instanceof DatabaseUnavailableError && /ECONNREFUSED|refused/i.test(error.message));
        assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
      }
    } finally {
      await db.close();
    }
  });

  test('two processes migrating at once apply each migration exactly once', () =>
    withDatabase(postgres!, async (db, config) => {
      const dir = migrationsDir({
        '001_table.sql': 'CREATE TABLE runs (id serial PRIMARY KEY); SELECT pg_sleep(0.2);',
        '002_row.sql': 'INSERT INTO runs DEFAULT VALUES;',
      });
      const others = [1, 2, 3].map(() => new PostgresDatabase({ url: config.url!, poolSize: 2 }));
      try {
        const results = await Promise.all([db, ...others].map((each) => migrate(each, { dir })));
        assert.deepEqual(results.flat().sort(), ['001_table', '002_row']);
        assert.deepEqual(await db.query('SELECT count(*) AS n FROM runs'), [{ n: 1 }]);
      } finally {
        await Promise.all(others.map((each) => each.close()));
      }
    }, noMigrations));

  test('the LISTEN connection comes back after the server drops it, and says so', () =>
    withDatabase(postgres!, async (_db, config) => {
      const db = new PostgresDatabase({ url: config.url!, poolSize: 2, reconnect: { initialMs: 50, maxMs: 200 } });
      try {
        const received: string[] = [];
        let reconnects = 0;
        db.onReconnect(() => { reconnects++; });
        await db.listen('lacre_keys', (payload) => received.push(payload));
        const terminated = await db.query<{ done: boolean }>(
          `SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'`,
        );
        assert.deepEqual(terminated, [{ done: true }]);
        await waitFor(() => reconnects === 1);
        await db.query(`SELECT pg_notify('lacre_keys', 'after reconnect')`);
        await waitFor(() => received.length === 1);
        assert.deepEqual(received, ['after reconnect']);
      } finally {
        await db.close();
      }
    }, noMigrations));

  test('while the server is unreachable queries fail fast, and everything recovers after', () =>
    withDatabase(postgres!, async (_db, config) => {
      const target = new URL(config.url!);
      const proxy = await TcpProxy.start(Number(target.port || 5432));
      const viaProxy = new URL(config.url!);
      viaProxy.port = String(proxy.port);
      const db = new PostgresDatabase({ url: viaProxy.toString(), poolSize: 2, reconnect: { initialMs: 50, maxMs: 200 } });
      try {
        let reconnects = 0;
        db.onReconnect(() => { reconnects++; });
        const received: string[] = [];
        await db.listen('lacre_keys', (payload) => received.push(payload));
        assert.deepEqual(await db.query('SELECT 1 AS one'), [{ one: 1 }]);

        await proxy.down();
        for (let i = 0; i < 3; i++) {
          const started = Date.now();
          await assert.rejects(db.query('SELECT 1'), DatabaseUnavailableError);
          assert.ok(Date.now() - started < 1500, `took ${Date.now() - started} ms`);
        }
        await delay(400); // several reconnect attempts fail meanwhile
        assert.equal(reconnects, 0);

        await proxy.up();
        await waitFor(() => reconnects === 1);
        assert.deepEqual(await db.query('SELECT 2 AS two'), [{ two: 2 }]);
        await db.query(`SELECT pg_notify('lacre_keys', 'back')`);
        await waitFor(() => received.length === 1);
        assert.deepEqual(received, ['back']);
      } finally {
        await db.close();
        await proxy.down();
      }
    }, noMigrations));
});

/** A loopback TCP forwarder that can be switched off (connections cut, new ones refused) and on again. */
class TcpProxy {
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;

  private constructor(readonly targetPort: number, public port: number) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetPort, 0);
    await proxy.up();
    return proxy;
  }

  up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = createConnection({ host: '127.0.0.1', port: this.targetPort });
      for (const socket of [client, upstream]) {
        this.#sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => { this.#sockets.delete(socket); client.destroy(); upstream.destroy(); });
      }
      client.pipe(upstream).pipe(client);
    });
    this.#server = server;
    return new Promise((resolve) => server.listen(this.port, '127.0.0.1', () => {
      this.port = (server.address() as { port: number }).port;
      resolve();
    }));
  }

  async down(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const socket of this.#sockets) socket.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await delay(20);
  }
}
