import type { Command } from 'commander';
import { stringify as toToml } from 'smol-toml';
import { configAdvice, type ConfigAdvice } from '../config/advice.js';
import { maskSecrets } from '../config/load.js';
import { sizeSettings, type Config } from '../config/schema.js';
import { formatByteSize } from '../util/byte-size.js';
import { openDatabase, type OpenedDatabase } from '../db/open.js';
import { pendingMigrations } from '../db/migrate.js';
import { migratesItself } from '../db/ready.js';
import { HttpBoxDownstream } from '../delivery/incoming-box.js';
import { Relay } from '../delivery/reinject.js';
import type { Logger } from '../log/logger.js';
import { readinessChecks, runChecks, type ReadinessCheck, type ReadinessReport } from '../http/health.js';
import type { CliContext } from './context.js';
import { announceDatabase, createFrom } from './database.js';

/**
 * `lacre check`: for an admin setting Lacre up. Runs the readiness checks of GET /readyz (database, relay,
 * Incoming Box when configured) plus pending migrations, prints them and the configuration in effect with
 * secrets masked; exits 0 when every check passed, 1 otherwise (a configuration error also exits 1).
 */
export function registerCheckCommand(program: Command, context: CliContext): void {
  program
    .command('check')
    .description('check the database, the relay and the Incoming Box, and print the configuration (secrets masked)')
    .option('--json', 'print one JSON object instead of text')
    .action(async (options: { json?: boolean }, command: Command) => {
      const config = context.configFrom(command);
      const logger = context.createLogger('error', process.stderr);
      announceDatabase(config.database);
      const report = await checkEverything(config, logger, { createDatabase: createFrom(command) });
      const masked = maskSecrets(config);
      const advice = configAdvice(config);
      process.stdout.write(options.json ? `${JSON.stringify({ ...report, advice, config: masked }, null, 2)}\n` : formatText(report, advice, masked));
      process.exitCode = report.ready ? 0 : 1;
    });
}

/** `createDatabase` false: a missing embedded database fails the database check instead of being created. */
export async function checkEverything(config: Config, logger: Logger, { createDatabase = true } = {}): Promise<ReadinessReport> {
  const relay = new Relay(config.relay, config.smtp.hostname, logger);
  const db = await openDatabase(config.database, logger, { create: createDatabase }).catch((error: unknown) => error as Error);
  const box = config.incoming_box.url === undefined ? undefined : openBox(config);
  try {
    const checks = readinessChecks({
      config,
      db: db instanceof Error ? { query: () => Promise.reject(db) } : db,
      relay,
      box: box instanceof Error ? { reachable: () => Promise.reject(box) } : box,
    });
    if (!(db instanceof Error)) checks.push(migrationsCheck(db));
    return await runChecks(checks);
  } finally {
    relay.close();
    if (box && !(box instanceof Error)) box.close();
    if (!(db instanceof Error)) await db.close().catch(() => undefined);
  }
}

/** The box client refuses a configuration without a token: that is the box check's failure. */
function openBox(config: Config): HttpBoxDownstream | Error {
  try {
    return new HttpBoxDownstream(config.incoming_box);
  } catch (error) {
    return error as Error;
  }
}

function migrationsCheck(db: OpenedDatabase): ReadinessCheck {
  return {
    name: 'migrations',
    run: async () => {
      const pending = await pendingMigrations(db);
      if (pending.length > 0 && !migratesItself(db)) throw new Error(`pending: ${pending.join(', ')}; run lacre migrate`);
    },
  };
}

function formatText(report: ReadinessReport, advice: readonly ConfigAdvice[], masked: Config): string {
  const width = Math.max(...report.checks.map((check) => check.name.length));
  const lines = report.checks.map((check) => {
    const status = check.ok ? 'ok    ' : 'FAILED';
    const detail = check.error === undefined ? '' : `  ${check.error}`;
    return `${status}  ${check.name.padEnd(width)}  ${String(check.ms).padStart(5)} ms${detail}`;
  });
  const failed = report.checks.filter((check) => !check.ok).map((check) => check.name);
  const verdict = report.ready ? 'ready' : `NOT ready: ${failed.join(', ')} failed`;
  const toml = toToml(withReadableSizes(masked));
  const notes = advice.map((note) => `advice  ${note.setting}: ${note.message}\n`).join('');
  return `${lines.join('\n')}\n${verdict}\n${notes}\n# configuration in effect (secrets masked; optional keys that are unset are not shown)\n${toml}\n`;
}

/** Sizes as "200 MiB" rather than 209715200: still valid in the config file (--json keeps the numbers). */
function withReadableSizes(config: Config): Record<string, Record<string, unknown>> {
  const copy = structuredClone(config) as unknown as Record<string, Record<string, unknown>>;
  for (const setting of sizeSettings) {
    const [section, key] = setting.split('.') as [string, string];
    const value = copy[section]?.[key];
    if (typeof value === 'number') copy[section]![key] = formatByteSize(value);
  }
  return copy;
}
