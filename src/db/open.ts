import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import { DatabaseUnavailableError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { PostgresDatabase } from './postgres.js';
import type { Database } from './types.js';

export type DatabaseConfig = Config['database'];

/**
 * A Database that also tells when its NOTIFY connection came back after a loss (notifications sent
 * meanwhile were missed, so caches fed by them must be flushed). The embedded one never loses it.
 */
export interface OpenedDatabase extends Database {
  onReconnect(callback: () => void): () => void;
}

export interface OpenDatabaseOptions {
  /** May a new embedded database be created (default true)? False: one must exist in data_dir already. */
  create?: boolean;
}

/** PostgreSQL when database.url is set, else the embedded PGlite in database.data_dir. */
export async function openDatabase(config: DatabaseConfig, logger?: Logger, options: OpenDatabaseOptions = {}): Promise<OpenedDatabase> {
  if (config.url !== undefined) {
    return new PostgresDatabase({
      url: config.url,
      poolSize: config.pool_size,
      queryTimeoutMs: config.query_timeout_seconds * 1000,
      ...(logger ? { logger } : {}),
    });
  }
  // query_timeout_seconds does not apply: PGlite runs its queries in this thread, so no server can go quiet
  // on us, and a timer could not fire while one runs anyway.
  if (options.create === false && !embeddedDatabaseExists(config.data_dir)) throw noEmbeddedDatabase(config.data_dir);
  // Loaded only when used: PGlite's module alone is ~3 MB of resident memory a PostgreSQL setup never needs.
  const { EmbeddedDatabase } = await import('./embedded.js');
  return EmbeddedDatabase.open({ dataDir: config.data_dir, ...(logger ? { logger } : {}) });
}

/** PGlite writes PG_VERSION first thing into a new data directory; an empty or missing one has none. */
export function embeddedDatabaseExists(dataDir: string): boolean {
  return existsSync(join(dataDir, 'PG_VERSION'));
}

function noEmbeddedDatabase(dataDir: string): DatabaseUnavailableError {
  return new DatabaseUnavailableError(
    `no embedded database in ${resolve(dataDir)} (database.data_dir), and this command creates none: ` +
      'point --config (or LACRE_CONFIG) at the configuration the service uses, or pass --create to start a new database there',
  );
}
