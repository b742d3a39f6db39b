/**
 * Who brings a database's schema up to date. The embedded database belongs to this Lacre alone: it migrates
 * itself when opened. A PostgreSQL server is shared and administered: only `lacre migrate` changes its schema,
 * and any other command that finds it behind stops with DatabaseNotMigratedError, which names that command.
 */
import type { Logger } from '../log/logger.js';
import { assertMigrated, migrate } from './migrate.js';
import { openDatabase, type DatabaseConfig, type OpenDatabaseOptions, type OpenedDatabase } from './open.js';
import type { Database } from './types.js';

export function migratesItself(db: Pick<Database, 'kind'>): boolean {
  return db.kind === 'embedded';
}

/** Opens the database of `config` ready for use: migrated (embedded) or found migrated (PostgreSQL), else closed again. */
export async function openReadyDatabase(config: DatabaseConfig, logger: Logger, options: OpenDatabaseOptions = {}): Promise<OpenedDatabase> {
  const db = await openDatabase(config, logger, options);
  try {
    await makeReady(db, logger);
  } catch (error) {
    await db.close();
    throw error;
  }
  return db;
}

async function makeReady(db: Database, logger: Logger): Promise<void> {
  if (!migratesItself(db)) return assertMigrated(db);
  const applied = await migrate(db, { logger });
  if (applied.length > 0) logger.info({ applied }, 'embedded database migrated');
}
