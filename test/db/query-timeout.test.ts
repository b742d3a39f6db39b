/**
 * database.query_timeout_seconds: a PostgreSQL server that is reachable but does not answer (a stalled
 * connection, a query waiting on a lock) fails the query as DatabaseUnavailableError instead of hanging,
 * and the connection it hung on is not used again.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pg from 'pg';
import { DatabaseUnavailableError } from '../../src/errors.js';
import { PostgresDatabase } from '../../src/db/postgres.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

const postgres = (await databaseBackends()).find((backend) => backend.name === 'postgres');
const QUERY_TIMEOUT_MS = 500;
/** Without a timeout these tests would hang: node:test ends them here and reports the failure. */
const hangGuard = { timeout: 30_000 };

function timedOut(error: unknown): boolean {
  return error instanceof DatabaseUnavailableError && /did not answer.*database\.query_timeout_seconds/.test(error.message);
}

async function viaProxy(url: string): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(url);
  const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
  await proxy.start();
  const proxied = new URL(url);
  proxied.port = String(proxy.port);
  return { proxy, url: proxied.toString() };
}

describe('PostgreSQL query timeout', { skip: postgres ? false : 'no PostgreSQL server (set TEST_DATABASE_URL)' }, () => {
  test('a server that stops answering fails the query; the hung connection is dropped, not reused', hangGuard, () =>
    withDatabase(postgres!, async (_db, config) => {
      const { proxy, url } = await viaProxy(config.url!);
      const db = new PostgresDatabase({ url, poolSize: 1, queryTimeoutMs: QUERY_TIMEOUT_MS });
      try {
        assert.deepEqual(await db.query('SELECT 1 AS one'), [{ one: 1 }]);
        proxy.stall();
        await assert.rejects(db.query('SELECT 2 AS two'), timedOut);
        proxy.resume();
        // One connection in the pool: had the stalled one gone back, this would hang on it too.
        assert.deepEqual(await db.query('SELECT 3 AS three'), [{ three: 3 }]);
      } finally {
        await db.close();
        await proxy.stop();
      }
    }, { migrate: false }));

  test('a query waiting on a lock fails; its connection is closed and the server ends its session', hangGuard, () =>
    withDatabase(postgres!, async (_db, config) => {
      const db = new PostgresDatabase({ url: config.url!, poolSize: 1, queryTimeoutMs: QUERY_TIMEOUT_MS });
      const holder = new pg.Client({ connectionString: config.url! });
      await holder.connect();
      try {
        await db.query('CREATE TABLE locked (id int)');
        const [before] = await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        await holder.query('BEGIN');
        await holder.query('LOCK TABLE locked IN ACCESS EXCLUSIVE MODE');
        await assert.rejects(db.query('SELECT count(*) FROM locked'), timedOut);
        await holder.query('ROLLBACK');
        const [after] = await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        assert.notEqual(after!.pid, before!.pid, 'the timed-out connection was replaced');
        await waitFor(async () => (await holder.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [before!.pid])).rowCount === 0);
      } finally {
        await holder.end();
        await db.close();
      }
    }, { migrate: false }));

  test('the LISTEN connection: a LISTEN that gets no answer fails, and the connection comes back with its channels', hangGuard, () =>
    withDatabase(postgres!, async (_db, config) => {
      const { proxy, url } = await viaProxy(config.url!);
      const db = new PostgresDatabase({ url, poolSize: 1, queryTimeoutMs: QUERY_TIMEOUT_MS, reconnect: { initialMs: 50, maxMs: 200 } });
      const direct = new PostgresDatabase({ url: config.url!, poolSize: 1 });
      try {
        const received: string[] = [];
        let reconnects = 0;
        db.onReconnect(() => { reconnects++; });
        await db.listen('before_stall', (payload) => received.push(payload));
        proxy.stall();
        await assert.rejects(db.listen('during_stall', () => undefined), timedOut);
        proxy.resume();
        await waitFor(() => reconnects === 1);
        await direct.query(`SELECT pg_notify('before_stall', 'still heard')`);
        await waitFor(() => received.length === 1);
        assert.deepEqual(received, ['still heard']);
      } finally {
        await db.close();
        await direct.close();
        await proxy.stop();
      }
    }, { migrate: false }));
});

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
