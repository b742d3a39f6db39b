import { resolve } from 'node:path';
import type { Command } from 'commander';
import { maskUrlPassword } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { DatabaseConfig, OpenedDatabase } from '../db/open.js';
import { openReadyDatabase } from '../db/ready.js';
import type { Logger } from '../log/logger.js';
import type { CliContext } from './context.js';

/** What a command that works on the database opens; the command closes `db` when it is done. */
export interface CommandDatabase {
  config: Config;
  db: OpenedDatabase;
  logger: Logger;
}

/** "embedded database /abs/data" or "PostgreSQL database <url, password masked>". */
export function describeDatabase(config: DatabaseConfig): string {
  return config.url !== undefined ? `PostgreSQL database ${maskUrlPassword(config.url)}` : `embedded database ${resolve(config.data_dir)}`;
}

/**
 * Says on stderr which database a command uses: a key imported into the wrong one is otherwise silently
 * lost to the service. Never stdout, which carries the command's data (`lacre encrypt` writes a message there).
 */
export function announceDatabase(config: DatabaseConfig): void {
  process.stderr.write(`using ${describeDatabase(config)}\n`);
}

/** The global --create flag: may a command other than serve and migrate create a new embedded database? */
export function createFrom(command: Command): boolean {
  return command.optsWithGlobals<{ create?: boolean }>().create === true;
}

/**
 * The configuration and logger of `command`, and its database opened ready for use (src/db/ready.ts), named on
 * stderr first. A new embedded database is created only when `create` (by default the global --create) says so.
 */
export async function openCommandDatabase(
  context: CliContext,
  command: Command,
  logTo: 'stdout' | 'stderr',
  { create = createFrom(command) } = {},
): Promise<CommandDatabase> {
  const config = context.configFrom(command);
  const logger = context.createConfiguredLogger(config.log, logTo);
  announceDatabase(config.database);
  const db = await openReadyDatabase(config.database, logger, { create });
  return { config, db, logger };
}
