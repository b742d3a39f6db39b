/**
 * The database backends every database-touching test runs against: the embedded PGlite always, and a
 * real PostgreSQL when TEST_DATABASE_URL is set (then it must work) or when 127.0.0.1:5432 answers.
 *
 *   for (const backend of await databaseBackends()) {
 *     describe(backend.name, () => {
 *       test('...', () => withDatabase(backend, async (db, config) => { ... }));
 *     });
 *   }
 *
 * Each use gets its own fresh database: a temp data_dir (copied from a cached, freshly initialised
 * template, ~1 s instead of ~5 s) or a new `lacre_test_<random>` database on the server, dropped after.
 * To run `lacre serve` as a child against it, pass `databaseEnv(config)` in the child's environment;
 * for the embedded backend close `db` first (one process at a time may open a data_dir).
 */
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { EmbeddedDatabase } from '../../src/db/embedded.js';
import { migrate } from '../../src/db/migrate.js';
import { findPackageRoot } from '../../src/util/package-root.js';
import { openDatabase, type DatabaseConfig, type OpenedDatabase } from '../../src/db/open.js';

export interface TestBackend {
  readonly name: 'embedded' | 'postgres';
  /** For postgres: the server database used to create and drop the per-test databases. */
  readonly adminUrl?: string;
}

export interface TestDatabase {
  db: OpenedDatabase;
  /** Config that opens this same database (in this process or a child). */
  config: DatabaseConfig;
  /** Closes `db` (if still open) and deletes the database. Safe to call twice. */
  cleanup(): Promise<void>;
}

export interface TestDatabaseOptions {
  /** Apply the migrations (default true). */
  migrate?: boolean;
  /** Migrations folder (default: the repo's migrations/). */
  migrationsDir?: string;
}

const DEFAULT_SERVER_URL = 'postgres://postgres@127.0.0.1:5432/test';

let backendsPromise: Promise<TestBackend[]> | undefined;

export function databaseBackends(): Promise<TestBackend[]> {
  backendsPromise ??= findBackends();
  return backendsPromise;
}

async function findBackends(): Promise<TestBackend[]> {
  const backends: TestBackend[] = [{ name: 'embedded' }];
  const configured = process.env.TEST_DATABASE_URL;
  if (configured) backends.push({ name: 'postgres', adminUrl: configured });
  else if (await serverAnswers(DEFAULT_SERVER_URL)) backends.push({ name: 'postgres', adminUrl: DEFAULT_SERVER_URL });
  return backends;
}

async function serverAnswers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function openTestDatabase(backend: TestBackend, options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const opened = backend.name === 'embedded' ? await openEmbedded() : await openServerDatabase(backend);
  if (options.migrate ?? true) {
    try {
      await migrate(opened.db, options.migrationsDir === undefined ? {} : { dir: options.migrationsDir });
    } catch (error) {
      await opened.cleanup();
      throw error;
    }
  }
  return opened;
}

export async function withDatabase<T>(
  backend: TestBackend,
  use: (db: OpenedDatabase, config: DatabaseConfig) => Promise<T>,
  options: TestDatabaseOptions = {},
): Promise<T> {
  const { db, config, cleanup } = await openTestDatabase(backend, options);
  try {
    return await use(db, config);
  } finally {
    await cleanup();
  }
}

/** Environment for a child `lacre` process that must use this database. */
export function databaseEnv(config: DatabaseConfig): Record<string, string> {
  return config.url !== undefined ? { LACRE_DATABASE_URL: config.url } : { LACRE_DATABASE_DATA_DIR: config.data_dir };
}

// ---- embedded ----

async function openEmbedded(): Promise<TestDatabase> {
  const parent = mkdtempSync(join(tmpdir(), 'lacre-test-db-'));
  const dataDir = join(parent, 'data');
  cpSync(await embeddedTemplate(), dataDir, { recursive: true });
  const config: DatabaseConfig = { data_dir: dataDir, pool_size: 10, query_timeout_seconds: 10 };
  const db = await openDatabase(config);
  return {
    db,
    config,
    async cleanup() {
      await db.close();
      rmSync(parent, { recursive: true, force: true });
    },
  };
}

let templatePromise: Promise<string> | undefined;

/** A freshly initialised, never-written-to PGlite data dir, built once per machine and PGlite version. */
function embeddedTemplate(): Promise<string> {
  templatePromise ??= prepareTemplate();
  return templatePromise;
}

async function prepareTemplate(): Promise<string> {
  const packageJson = join(findPackageRoot(), 'node_modules/@electric-sql/pglite/package.json');
  const version = (JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string }).version;
  const target = join(tmpdir(), `lacre-pglite-template-${version}`);
  if (existsSync(join(target, 'PG_VERSION'))) return target;
  // Built in a private folder, then renamed into place: atomic, and a concurrent builder's copy wins.
  const building = mkdtempSync(`${target}-building-`);
  const db = await EmbeddedDatabase.open({ dataDir: building });
  await db.close();
  try {
    renameSync(building, target);
  } catch {
    rmSync(building, { recursive: true, force: true });
  }
  return target;
}

// ---- PostgreSQL server ----

async function openServerDatabase(backend: TestBackend): Promise<TestDatabase> {
  const adminUrl = backend.adminUrl ?? DEFAULT_SERVER_URL;
  const name = `lacre_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(adminUrl, `CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const config: DatabaseConfig = { url: url.toString(), data_dir: './data', pool_size: 5, query_timeout_seconds: 10 };
  const db = await openDatabase(config);
  let dropped = false;
  return {
    db,
    config,
    async cleanup() {
      await db.close();
      if (dropped) return;
      dropped = true;
      await adminQuery(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

async function adminQuery(adminUrl: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}
