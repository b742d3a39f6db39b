import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseUnavailableError, LacreError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { findPackageRoot } from '../util/package-root.js';
import type { Database } from './types.js';

export interface MigrationOptions {
  /** Folder of NNN_name.sql files; defaults to <repo>/migrations. */
  dir?: string;
  logger?: Logger;
}

export interface Migration {
  version: number;
  /** File name without .sql, e.g. "001_keys". */
  name: string;
  path: string;
}

/** Arbitrary constant ("lacr") shared by every Lacre process so that only one migrates at a time. */
const MIGRATION_LOCK_KEY = 0x6c616372;
const FILE_PATTERN = /^(\d+)_([A-Za-z0-9_]+)\.sql$/;

export function defaultMigrationsDir(): string {
  return join(findPackageRoot(), 'migrations');
}

/**
 * The migrations in `dir`, by version. A .sql file that does not follow NNN_name.sql, or two files
 * with one version, is an error rather than silently skipped. Files must not contain BEGIN/COMMIT:
 * each runs inside its own transaction.
 */
export function listMigrations(dir: string = defaultMigrationsDir()): Migration[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((file) => file.endsWith('.sql'));
  } catch (error) {
    throw new LacreError(`cannot read migrations folder ${dir}: ${(error as Error).message}`, { cause: error });
  }
  const migrations = files.map((file) => {
    const match = FILE_PATTERN.exec(file);
    if (!match) throw new LacreError(`migration file ${join(dir, file)} is not named NNN_name.sql`);
    return { version: Number(match[1]), name: file.slice(0, -'.sql'.length), path: join(dir, file) };
  });
  migrations.sort((a, b) => a.version - b.version);
  for (let i = 1; i < migrations.length; i++) {
    if (migrations[i]!.version === migrations[i - 1]!.version) {
      throw new LacreError(`migrations ${migrations[i - 1]!.name} and ${migrations[i]!.name} share version ${migrations[i]!.version}`);
    }
  }
  return migrations;
}

async function appliedVersions(db: Database): Promise<Set<number>> {
  const [table] = await db.query<{ present: boolean }>(`SELECT to_regclass('lacre_migrations') IS NOT NULL AS present`);
  if (!table?.present) return new Set();
  const rows = await db.query<{ version: number }>('SELECT version FROM lacre_migrations');
  return new Set(rows.map((row) => Number(row.version)));
}

/** Names of the migrations in the folder that the database has not applied yet, in order. Reads only. */
export async function pendingMigrations(db: Database, options: MigrationOptions = {}): Promise<string[]> {
  const applied = await appliedVersions(db);
  return listMigrations(options.dir).filter((m) => !applied.has(m.version)).map((m) => m.name);
}

/** The database lacks migrations that only `lacre migrate` may apply (a PostgreSQL server: src/db/ready.ts). */
export class DatabaseNotMigratedError extends LacreError {
  constructor(readonly pending: readonly string[]) {
    super(`database is not migrated: run \`lacre migrate\` (pending: ${pending.join(', ')})`);
  }
}

/** Throws DatabaseNotMigratedError unless every migration in the folder has been applied. */
export async function assertMigrated(db: Database, options: MigrationOptions = {}): Promise<void> {
  const pending = await pendingMigrations(db, options);
  if (pending.length > 0) throw new DatabaseNotMigratedError(pending);
}

function lockStatement(db: Database): string {
  // Serialises concurrent migrators on a real server; PGlite has a single connection anyway.
  return db.kind === 'postgres' ? `SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY});\n` : '';
}

/**
 * Applies pending migrations in order, each in its own transaction together with its lacre_migrations
 * row. The row is inserted first, so a second process migrating at the same moment waits on the lock,
 * then fails that insert on the primary key; that case is recognised and the migration skipped.
 * Returns the names applied by this call.
 */
export async function migrate(db: Database, options: MigrationOptions = {}): Promise<string[]> {
  const migrations = listMigrations(options.dir);
  await db.execTransaction(
    `${lockStatement(db)}CREATE TABLE IF NOT EXISTS lacre_migrations (
       version int PRIMARY KEY,
       name text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now()
     );`,
  );
  const applied = await appliedVersions(db);
  const done: string[] = [];
  for (const migration of migrations.filter((m) => !applied.has(m.version))) {
    if (await applyOne(db, migration, options.logger)) done.push(migration.name);
  }
  return done;
}

async function applyOne(db: Database, migration: Migration, logger: Logger | undefined): Promise<boolean> {
  const body = readFileSync(migration.path, 'utf8');
  const record = `INSERT INTO lacre_migrations (version, name) VALUES (${migration.version}, '${migration.name.replace(/'/g, "''")}');\n`;
  const started = Date.now();
  try {
    await db.execTransaction(`${lockStatement(db)}${record}${body}\n`);
  } catch (error) {
    if (isDuplicateRecord(error) && (await appliedVersions(db)).has(migration.version)) {
      logger?.info({ migration: migration.name }, 'migration already applied by another process');
      return false;
    }
    if (error instanceof DatabaseUnavailableError) throw error;
    throw new LacreError(`migration ${migration.name} failed (nothing of it was applied): ${(error as Error).message}`, { cause: error });
  }
  logger?.info({ migration: migration.name, ms: Date.now() - started }, 'migration applied');
  return true;
}

function isDuplicateRecord(error: unknown): boolean {
  const { code, constraint, message } = error as { code?: string; constraint?: string; message?: string };
  return code === '23505' && (constraint === 'lacre_migrations_pkey' || /lacre_migrations/.test(message ?? ''));
}
