import type { Command } from 'commander';
import { openDatabase } from '../db/open.js';
import { migrate, pendingMigrations } from '../db/migrate.js';
import { openRuntime } from '../runtime.js';
import { createSmtpListener } from '../smtp/listener.js';
import { cleanStaleSpool } from '../filter/spool.js';
import { startIncomingBoxServer } from '../incoming/server/index.js';
import type { CliContext } from './context.js';

export function registerServeCommands(program: Command, context: CliContext): void {
  program
    .command('serve')
    .description('run the SMTP/LMTP content filter (and the other services the configuration enables)')
    .action(async (_options, command: Command) => {
      const config = context.configFrom(command);
      const logger = context.createConfiguredLogger(config.log, 'stdout');
      const runtime = await openRuntime(config, logger);
      await cleanStaleSpool(config.encryption.spool_dir, logger);
      // The box shares the filter's database; it starts first so that copies for it find it listening.
      const box = config.incoming_box.serve ? await startIncomingBoxServer(config, runtime.db, logger) : undefined;
      const listener = createSmtpListener(config, runtime.filter, logger);
      const address = await listener.listen();
      logger.info(
        { listen: `${address.address}:${address.port}`, lmtp: config.smtp.lmtp, relay: `${config.relay.host}:${config.relay.port}`, database: runtime.db.kind },
        'lacre is ready',
      );
      await waitForSignal(['SIGTERM', 'SIGINT']);
      logger.info('shutting down: no new connections, finishing messages in flight');
      await listener.close();
      await box?.close();
      await runtime.close();
    });

  program
    .command('migrate')
    .description('apply pending database migrations')
    .option('--status', 'only list the pending migrations')
    .action(async (options: { status?: boolean }, command: Command) => {
      const config = context.configFrom(command);
      const logger = context.createLogger(config.log.level);
      const db = await openDatabase(config.database, logger);
      try {
        if (options.status) {
          const pending = await pendingMigrations(db);
          process.stdout.write(pending.length ? `pending: ${pending.join(', ')}\n` : 'up to date\n');
          return;
        }
        const applied = await migrate(db);
        process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'up to date\n');
      } finally {
        await db.close();
      }
    });
}

function waitForSignal(signals: NodeJS.Signals[]): Promise<void> {
  return new Promise((resolve) => {
    for (const signal of signals) process.once(signal, () => resolve());
  });
}
