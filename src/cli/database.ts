import { resolve } from 'node:path';
import type { Command } from 'commander';
import { maskUrlPassword } from '../config/load.js';
import type { DatabaseConfig } from '../db/open.js';

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
