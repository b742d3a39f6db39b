#!/usr/bin/env node
import { Command } from 'commander';
import { DEFAULT_CONFIG_FILE, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { LacreError } from '../errors.js';
import { createConfiguredLogger, createLogger } from '../log/logger.js';
import { registerKeysCommands } from './keys.js';
import { registerMessageCommands } from './message.js';
import { registerServeCommands } from './serve.js';
import { registerCheckCommand } from './check.js';
import { registerInboxCommands } from './inbox.js';
import { registerInboxFetchCommand } from './inbox-fetch.js';
import { registerWksCommands } from './wks.js';
import { openCommandDatabase } from './database.js';
import type { CliContext } from './context.js';
import { packageVersion } from '../util/package-version.js';

// Every file Lacre creates is for the service user alone: keys, blobs, spooled ciphertext, Maildirs, logs.
// PGlite creates the embedded database's files (new ones as it runs, too) with the default mode 0666,
// which only the umask narrows: 077 here is what makes them 0600 under a 022 umask. Lacre's own
// directories and files also carry explicit modes.
process.umask(0o077);

const program = new Command('lacre')
  .description('Encrypting mail gateway: a Postfix content filter that OpenPGP-encrypts mail to recipients with keys')
  .version(packageVersion())
  .option('-c, --config <file>', `TOML configuration file (default: $LACRE_CONFIG, else ${DEFAULT_CONFIG_FILE} if it exists, else built-in defaults)`)
  .option('--create', 'let this command create a new embedded database (serve and migrate always may)')
  .showHelpAfterError();

/** Loads the configuration named by the global --config option (or LACRE_CONFIG, or /etc/lacre/lacre.toml, or defaults). */
export function configFrom(command: Command): Config {
  const file = command.optsWithGlobals<{ config?: string }>().config;
  return loadConfig({ file, env: process.env, defaultFile: DEFAULT_CONFIG_FILE });
}

const context: CliContext = { configFrom, createLogger, createConfiguredLogger };
registerServeCommands(program, context);
registerMessageCommands(program, context);
registerCheckCommand(program, context);
registerKeysCommands(program, { configFrom, openDatabase: (command) => openCommandDatabase(context, command, 'stderr') });
registerInboxFetchCommand(registerInboxCommands(program, context), context);
registerWksCommands(program, context);

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof LacreError) {
    process.stderr.write(`lacre: ${error.message}\n`);
  } else {
    process.stderr.write(`lacre: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  }
  process.exitCode = process.exitCode || 1;
});
