import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createGpgHome, generateKey, type GpgKeyAlgo } from '../test/helpers/gpg.js';
import { runLacre } from '../test/helpers/lacre.js';

const SERVER_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** Where the bench's `lacre` processes keep their keys, plus a scratch folder; remove() deletes both. */
export interface BenchDatabase {
  kind: 'postgres' | 'embedded';
  /** LACRE_* variables that point a `lacre` process at this database and a private spool. */
  env: Record<string, string>;
  scratch: string;
  remove(): Promise<void>;
}

/**
 * A fresh PostgreSQL database on 127.0.0.1:5432 (migrated with `lacre migrate`) when the server answers,
 * else an embedded PGlite data dir in a temp folder (which `lacre` migrates itself).
 */
export async function createBenchDatabase(options: { embedded?: boolean } = {}): Promise<BenchDatabase> {
  const scratch = await mkdtemp(join(tmpdir(), 'lacre-bench-'));
  const common = { LACRE_ENCRYPTION_SPOOL_DIR: join(scratch, 'spool') };
  if (options.embedded || !(await serverAnswers())) {
    return {
      kind: 'embedded',
      env: { ...common, LACRE_DATABASE_DATA_DIR: join(scratch, 'data') },
      scratch,
      remove: () => rm(scratch, { recursive: true, force: true }),
    };
  }
  const name = `lacre_bench_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE DATABASE ${name}`);
  const url = new URL(SERVER_URL);
  url.pathname = `/${name}`;
  const database: BenchDatabase = {
    kind: 'postgres',
    env: { ...common, LACRE_DATABASE_URL: url.toString() },
    scratch,
    async remove() {
      await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await rm(scratch, { recursive: true, force: true });
    },
  };
  try {
    await lacreOk(['migrate'], database.env);
  } catch (error) {
    await database.remove();
    throw error;
  }
  return database;
}

/** Makes a key with real gpg and imports its public half with `lacre keys import`. */
export async function addRecipient(database: BenchDatabase, email: string, algo: GpgKeyAlgo): Promise<void> {
  const home = await createGpgHome();
  try {
    const key = await generateKey(home, { email, algo });
    const file = join(database.scratch, `${email}.asc`);
    await writeFile(file, key.publicArmored);
    await lacreOk(['keys', 'import', file], database.env);
  } finally {
    await home.remove();
  }
}

async function lacreOk(args: string[], env: Record<string, string>): Promise<void> {
  const result = await runLacre(args, { ...env, LACRE_LOG_LEVEL: 'warn' });
  if (result.code !== 0) throw new Error(`lacre ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()}`);
}

async function serverAnswers(): Promise<boolean> {
  return adminQuery('SELECT 1').then(
    () => true,
    () => false,
  );
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: SERVER_URL, connectionTimeoutMillis: 2000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query(sql);
  } finally {
    await client.end().catch(() => undefined);
  }
}
