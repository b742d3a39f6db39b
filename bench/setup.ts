import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { migrate } from '../src/db/migrate.js';
import { openDatabase, type OpenedDatabase } from '../src/db/open.js';
import { KeyStore } from '../src/keys/store.js';
import { createGpgHome, exportPublicKey, gpgOk, type GpgHome, type GpgKeyAlgo } from '../test/helpers/gpg.js';

export const SERVER_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** Where the bench's `lacre` processes keep their keys, plus a scratch folder; remove() deletes both. */
export interface BenchDatabase {
  kind: 'postgres' | 'embedded';
  /** The server database's URL; undefined for the embedded one. */
  url: string | undefined;
  /** LACRE_* variables that point a `lacre` process at this database and a private spool. */
  env: Record<string, string>;
  scratch: string;
  remove(): Promise<void>;
}

/**
 * A fresh PostgreSQL database on 127.0.0.1:5432 when the server answers, else an embedded PGlite data dir in a
 * temp folder. Either way migrated, here in-process, with Lacre's own migration runner.
 */
export async function createBenchDatabase(options: { embedded?: boolean } = {}): Promise<BenchDatabase> {
  const scratch = await mkdtemp(join(tmpdir(), 'lacre-bench-'));
  const common = { LACRE_ENCRYPTION_SPOOL_DIR: join(scratch, 'spool') };
  let database: BenchDatabase;
  if (options.embedded || !(await serverAnswers())) {
    database = {
      kind: 'embedded',
      url: undefined,
      env: { ...common, LACRE_DATABASE_DATA_DIR: join(scratch, 'data') },
      scratch,
      remove: () => rm(scratch, { recursive: true, force: true }),
    };
  } else {
    const name = `lacre_bench_${randomBytes(6).toString('hex')}`;
    await adminQuery(`CREATE DATABASE ${name}`);
    const url = new URL(SERVER_URL);
    url.pathname = `/${name}`;
    database = {
      kind: 'postgres',
      url: url.toString(),
      env: { ...common, LACRE_DATABASE_URL: url.toString() },
      scratch,
      async remove() {
        await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await rm(scratch, { recursive: true, force: true });
      },
    };
  }
  try {
    await withDatabase(database, (db) => migrate(db));
  } catch (error) {
    await database.remove();
    throw error;
  }
  return database;
}

/** Opens the bench database in this process (never while a `lacre` process holds the embedded one). */
export async function withDatabase<T>(database: BenchDatabase, use: (db: OpenedDatabase) => Promise<T>): Promise<T> {
  const db = await openDatabase({ url: database.url, data_dir: database.env.LACRE_DATABASE_DATA_DIR ?? join(database.scratch, 'data'), pool_size: 4, query_timeout_seconds: 10 });
  try {
    return await use(db);
  } finally {
    await db.close();
  }
}

export interface KeySpec {
  email: string;
  algo: GpgKeyAlgo;
}

export interface BenchKey extends KeySpec {
  fingerprint: string;
  publicArmored: string;
}

/**
 * Real keys made by gpg, one per spec: each algorithm's keys in one `gpg --batch --generate-key` run (one
 * process for twenty keys instead of six processes per key), the two algorithms in parallel homes.
 */
export async function makeKeys(specs: readonly KeySpec[]): Promise<BenchKey[]> {
  const algos = [...new Set(specs.map((spec) => spec.algo))];
  const made = await Promise.all(algos.map((algo) => generateBatch(specs.filter((spec) => spec.algo === algo))));
  const byEmail = new Map(made.flat().map((key) => [key.email, key]));
  return specs.map((spec) => byEmail.get(spec.email)!);
}

const BATCH_KEY_TYPE: Record<GpgKeyAlgo, string> = {
  cv25519: 'Key-Type: EDDSA\nKey-Curve: ed25519\nKey-Usage: sign\nSubkey-Type: ECDH\nSubkey-Curve: cv25519\nSubkey-Usage: encrypt\n',
  rsa3072: 'Key-Type: RSA\nKey-Length: 3072\nKey-Usage: sign\nSubkey-Type: RSA\nSubkey-Length: 3072\nSubkey-Usage: encrypt\n',
  nistp256: 'Key-Type: ECDSA\nKey-Curve: nistp256\nKey-Usage: sign\nSubkey-Type: ECDH\nSubkey-Curve: nistp256\nSubkey-Usage: encrypt\n',
  nistp521: 'Key-Type: ECDSA\nKey-Curve: nistp521\nKey-Usage: sign\nSubkey-Type: ECDH\nSubkey-Curve: nistp521\nSubkey-Usage: encrypt\n',
};

async function generateBatch(specs: readonly KeySpec[]): Promise<BenchKey[]> {
  const home = await createGpgHome();
  try {
    const parameters = specs
      .map((spec) => `${BATCH_KEY_TYPE[spec.algo]}Name-Real: ${spec.email.split('@')[0]}\nName-Email: ${spec.email}\nExpire-Date: 1y\n%commit\n`)
      .join('');
    await gpgOk(home, ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--generate-key'], `%no-protection\n${parameters}`);
    const fingerprints = await fingerprintsByEmail(home);
    return await Promise.all(
      specs.map(async (spec) => {
        const fingerprint = fingerprints.get(spec.email);
        if (!fingerprint) throw new Error(`gpg made no key for ${spec.email}`);
        return { ...spec, fingerprint, publicArmored: await exportPublicKey(home, fingerprint) };
      }),
    );
  } finally {
    await home.remove();
  }
}

/** Primary-key fingerprint of each user ID's address, from `--list-keys --with-colons`. */
async function fingerprintsByEmail(home: GpgHome): Promise<Map<string, string>> {
  const listing = (await gpgOk(home, ['--batch', '--with-colons', '--list-keys'])).toString('utf8');
  const fingerprints = new Map<string, string>();
  let primary: string | undefined;
  let expectPrimaryFingerprint = false;
  for (const fields of listing.split('\n').map((line) => line.split(':'))) {
    if (fields[0] === 'pub') expectPrimaryFingerprint = true;
    else if (fields[0] === 'fpr' && expectPrimaryFingerprint) {
      primary = fields[9];
      expectPrimaryFingerprint = false;
    } else if (fields[0] === 'uid' && primary) {
      const email = /<([^>]+)>/.exec(fields[9] ?? '')?.[1];
      if (email) fingerprints.set(email, primary);
    }
  }
  return fingerprints;
}

/** Imports each key for its own address through Lacre's key store (validation included), as `lacre keys import` does. */
export async function importKeys(db: OpenedDatabase, keys: readonly BenchKey[]): Promise<void> {
  const store = new KeyStore(db, { local_part_case_sensitive: false });
  for (const key of keys) await store.importKey(key.publicArmored, { emails: [key.email] });
}

/** The address the bulk fill stores under index `n` (0-based), spread over 100 domains. */
export function bulkAddress(n: number): string {
  return `user${n}@d${n % 100}.bulk.example`;
}

/**
 * Stores the keys already imported under `count` more addresses (bulkAddress(0 … count-1)), round-robin, straight
 * through SQL: what 100 000 real users would look like to a lookup, without generating 100 000 keys. The
 * change-notification triggers are skipped (session_replication_role = replica): nobody listens yet, and
 * 200 000 NOTIFY payloads in one transaction would only slow the fill.
 */
export async function fillKeyStore(db: OpenedDatabase, count: number): Promise<void> {
  if (!Number.isInteger(count) || count < 0) throw new Error(`bad key store size ${count}`);
  const address = `'user' || n || '@d' || (n % 100) || '.bulk.example'`;
  await db.execTransaction(`
    SET LOCAL session_replication_role = replica;
    INSERT INTO lacre_identities (email) SELECT ${address} FROM generate_series(0, ${count - 1}) AS n;
    WITH imported AS (
      SELECT row_number() OVER (ORDER BY fingerprint) - 1 AS i, fingerprint, armored, expires_at
        FROM (SELECT DISTINCT ON (fingerprint) fingerprint, armored, expires_at FROM lacre_keys WHERE status = 'confirmed' ORDER BY fingerprint, id) AS k
    )
    INSERT INTO lacre_keys (email, fingerprint, armored, expires_at)
      SELECT ${address}, imported.fingerprint, imported.armored, imported.expires_at
        FROM generate_series(0, ${count - 1}) AS n JOIN imported ON imported.i = n % (SELECT count(*) FROM imported);
    ANALYZE lacre_identities;
    ANALYZE lacre_keys;
  `);
  const rows = await db.query<{ keys: number | string }>(`SELECT count(*)::int AS keys FROM lacre_keys WHERE email LIKE '%@%.bulk.example'`);
  if (Number(rows[0]?.keys) !== count) throw new Error(`key store fill: expected ${count} keys, found ${rows[0]?.keys}`);
}

export async function serverAnswers(): Promise<boolean> {
  return adminQuery('SELECT 1').then(
    () => true,
    () => false,
  );
}

export async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: SERVER_URL, connectionTimeoutMillis: 2000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query(sql);
  } finally {
    await client.end().catch(() => undefined);
  }
}
