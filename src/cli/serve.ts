import type { AddressInfo } from 'node:net';
import type { Command } from 'commander';
import { openDatabase } from '../db/open.js';
import { migrate, pendingMigrations } from '../db/migrate.js';
import { openRuntime, type Runtime } from '../runtime.js';
import { createSmtpListener } from '../smtp/listener.js';
import { prepareSpool } from '../filter/spool.js';
import { configAdvice } from '../config/advice.js';
import { startLedgerPurge } from '../delivery/ledger.js';
import type { HttpListener } from '../http/server.js';
import { LogLevelControl } from '../http/log-level.js';
import type { Logger } from '../log/logger.js';
import type { CliContext } from './context.js';
import { announceDatabase, describeDatabase } from './database.js';
import { waitForSignal } from './signal.js';

export function registerServeCommands(program: Command, context: CliContext): void {
  program
    .command('serve')
    .description('run the SMTP/LMTP content filter (and the other services the configuration enables)')
    .action(async (_options, command: Command) => {
      const config = context.configFrom(command);
      const logger = context.createConfiguredLogger(config.log, 'stdout');
      const runtime = await openRuntime(config, logger, { metrics: config.http.enabled, encryptionWorkers: true });
      await prepareSpool(config.encryption.spool_dir, logger);
      // The listeners (and fastify under them) load here, not at the top: other lacre commands, `lacre pipe` first, start without them.
      const { startIncomingBoxServer } = await import('../box/server.js');
      const { startAdminSocket } = await import('../admin/server.js');
      const services = new StartedServices(runtime);
      // Key changes while serving (`lacre keys`, scripts) come in here: the embedded database opens in one process only.
      // First, while nothing else runs: binding sets the process's umask for a moment (the socket is born 0600).
      const admin = await services.start(startAdminSocket(config, runtime.db, logger));
      // The box shares the filter's database; it starts before the SMTP listener so that copies for it find it listening.
      const box = await services.start(config.incoming_box.serve ? startIncomingBoxServer(config, runtime.db, logger) : undefined);
      const logLevel = new LogLevelControl(logger, config.log.level);
      const http = await services.start(startOperatorHttp(runtime, logLevel, logger));
      const web = await services.start(startKeyService(runtime, logger));
      await services.start(purgeDeliveredCopies(runtime, logger));
      const listener = createSmtpListener(config, runtime.filter, logger);
      runtime.metrics?.watchSessions(() => listener.sessions());
      const address = await services.attempt(listener.listen());
      const stopToggling = logLevel.toggleOnSignal('SIGUSR2');
      await warnIfUnready(runtime, logger);
      for (const advice of configAdvice(config)) logger.warn({ setting: advice.setting }, advice.message);
      logger.info(
        {
          listen: `${address.address}:${address.port}`,
          lmtp: config.smtp.lmtp,
          relay: `${config.relay.host}:${config.relay.port}`,
          database: runtime.db.kind,
          databaseLocation: describeDatabase(config.database),
          http: http ? `${http.address.address}:${http.address.port}` : undefined,
          web: web ? `${web.address.address}:${web.address.port}` : undefined,
          admin: admin?.path,
        },
        'lacre is ready',
      );
      await waitForSignal(['SIGTERM', 'SIGINT']);
      logger.info('shutting down: no new connections, finishing messages in flight');
      stopToggling();
      await listener.close();
      await services.closeAll();
    });

  program
    .command('migrate')
    .description('apply pending database migrations')
    .option('--status', 'only list the pending migrations')
    .action(async (options: { status?: boolean }, command: Command) => {
      const config = context.configFrom(command);
      const logger = context.createLogger(config.log.level);
      announceDatabase(config.database);
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

/** Metrics, health and the log-level endpoint, when http.enabled. */
async function startOperatorHttp(runtime: Runtime, logLevel: LogLevelControl, logger: Logger): Promise<HttpListener | undefined> {
  const { http } = runtime.config;
  if (!http.enabled) return undefined;
  const { startHttpListener } = await import('../http/server.js');
  return startHttpListener({ listen: http.listen, logger, health: runtime.health, logLevel, metrics: runtime.metrics });
}

interface Closable {
  close(): Promise<void>;
}

/** What serve started, closed in reverse order (the runtime last), also when a later one fails to start. */
class StartedServices {
  private readonly started: Closable[] = [];

  constructor(private readonly runtime: Runtime) {}

  async start<Service extends Closable>(starting: Promise<Service | undefined> | undefined): Promise<Service | undefined> {
    const service = await this.attempt(Promise.resolve(starting));
    if (service) this.started.push(service);
    return service;
  }

  /** A step that must succeed for serve to run (the SMTP listener binding): when it fails, all closes. */
  async attempt<T>(step: Promise<T>): Promise<T> {
    try {
      return await step;
    } catch (error) {
      await this.closeAll();
      throw error;
    }
  }

  async closeAll(): Promise<void> {
    for (const service of this.started.splice(0).reverse()) await service.close();
    await this.runtime.close();
  }
}

interface KeyServiceListener {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

/** The key service for users and its expiry notices, when web.listen is set. */
async function startKeyService(runtime: Runtime, logger: Logger): Promise<KeyServiceListener | undefined> {
  const { config, db, mailer } = runtime;
  if (config.web.listen === undefined || mailer === undefined) return undefined;
  const [{ startWebServer }, { startExpiryNotices }] = await Promise.all([import('../web/server.js'), import('../web/expiry.js')]);
  const server = await startWebServer({ config, db, mailer, logger });
  const notices = startExpiryNotices({ db, config, mailer, logger });
  return {
    address: server.address,
    async close() {
      await notices.close();
      await server.close();
    },
  };
}

/** Forgets delivered copies older than relay.delivered_retention_hours, hourly, when the ledger is on. */
async function purgeDeliveredCopies(runtime: Runtime, logger: Logger): Promise<Closable | undefined> {
  if (!runtime.ledger) return undefined;
  return startLedgerPurge(runtime.ledger, runtime.config.relay.delivered_retention_hours, logger);
}

/**
 * What GET /readyz would answer 503 for, said at start as well. Lacre serves anyway: while the relay (or the
 * Incoming Box) does not answer, the messages that need it get a 4xx, and Postfix retries them.
 */
async function warnIfUnready(runtime: Runtime, logger: Logger): Promise<void> {
  const report = await runtime.health.check();
  for (const check of report.checks.filter((result) => !result.ok)) {
    if (check.name === 'relay') {
      const relay = `${runtime.config.relay.host}:${runtime.config.relay.port}`;
      logger.warn({ relay, error: check.error }, `relay ${relay} is unreachable: serving anyway, messages get 451 4.4.1 until it answers (Postfix retries them)`);
    } else {
      logger.warn({ check: check.name, error: check.error }, `${check.name} is not ready: serving anyway, messages that need it get a 4xx until it is (Postfix retries them)`);
    }
  }
}
