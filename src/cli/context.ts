import type { Command } from 'commander';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';

/** What every subcommand gets from the main program. */
export interface CliContext {
  configFrom(command: Command): Config;
  createLogger(level: string, destination?: NodeJS.WritableStream): Logger;
  createConfiguredLogger(config: Config['log'], fallback: 'stdout' | 'stderr' | 'none'): Logger;
}
