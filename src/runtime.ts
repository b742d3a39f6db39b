import type { Logger } from 'pino';
import type { Config } from './config/schema.js';
import type { Database } from './db/types.js';
import { openReadyDatabase } from './db/ready.js';
import { createKeyDirectory, type CachedKeyDirectory } from './keys/directory.js';
import { availableParallelism } from 'node:os';
import { MessageFilter } from './filter/filter.js';
import { EncryptionPool } from './crypto/pool.js';
import type { Downstream } from './filter/ports.js';
import { Relay } from './delivery/reinject.js';
import { HttpBoxDownstream } from './delivery/incoming-box.js';
import { DeliveredCopies } from './delivery/ledger.js';
import { createBoxUserDirectory } from './box/users.js';
import type { LacreMetrics } from './metrics/metrics.js';
import { meteredBox, meteredRelay } from './delivery/metered.js';
import { cachedKeyCounts } from './metrics/key-counts.js';
import { HealthMonitor, readinessChecks } from './http/health.js';
import type { Mailer } from './web/mailer.js';

export interface Runtime {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Database;
  readonly keys: CachedKeyDirectory;
  readonly relay: Relay;
  /** Present when incoming_box.url is set. */
  readonly box: HttpBoxDownstream | undefined;
  /** The copies already delivered; absent when relay.delivered_retention_hours is 0. */
  readonly ledger: DeliveredCopies | undefined;
  /**
   * A filter writing to `downstream`, without the delivery ledger: what it produces (lacre encrypt's files) is no
   * delivery a Postfix retry could skip, and recording it would make that retry skip real ones.
   */
  filterTo(downstream: Downstream): MessageFilter;
  /** The filter that reinjects (lacre serve, lacre pipe), with the ledger when it is on. */
  readonly filter: MessageFilter;
  /** Readiness checks of this runtime's database, relay and box (GET /readyz, lacre_ready*). */
  readonly health: HealthMonitor;
  /** Present when asked for (RuntimeOptions.metrics). */
  readonly metrics: LacreMetrics | undefined;
  /** The mails Lacre sends itself (key service, WKS, expiry notices): present when web.sender is set. */
  readonly mailer: Mailer | undefined;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  /** Collect Prometheus metrics (lacre serve). */
  metrics?: boolean;
  /** Encrypt on worker threads (lacre serve; one-shot commands would pay for starting them). */
  encryptionWorkers?: boolean;
  /** May a new embedded database be created (default true: lacre serve)? */
  createDatabase?: boolean;
}

/** Opens the database ready for use (src/db/ready.ts), the key directory and the relay pool. */
export async function openRuntime(config: Config, logger: Logger, options: RuntimeOptions = {}): Promise<Runtime> {
  const db = await openReadyDatabase(config.database, logger, { create: options.createDatabase ?? true });
  const keys = await createKeyDirectory(db, config.keys, logger);
  const relay = new Relay(config.relay, config.smtp.hostname, logger);
  const box = config.incoming_box.url ? new HttpBoxDownstream(config.incoming_box) : undefined;
  const boxUsers = box ? createBoxUserDirectory(db, config.keys) : undefined;
  const ledger = config.relay.delivered_retention_hours > 0 ? new DeliveredCopies(db) : undefined;
  const health = new HealthMonitor(readinessChecks({ config, db, relay, box }));
  const metrics = options.metrics ? await createMetrics({ config, db, keys, relay, health }, logger) : undefined;
  // One core stays with the event loop (SMTP, relay, database): on 2 cores, 1 worker.
  const workers = options.encryptionWorkers ? (config.encryption.workers ?? availableParallelism() - 1) : 0;
  const encryptor = workers > 0 ? new EncryptionPool(workers, { logger }) : undefined;
  const mailer = config.web.sender === undefined ? undefined : await createMailer(config, relay, logger);
  const reinjection = mailer ? await answeringWks(config, db, mailer, relay, logger) : relay;
  const filterWith = (downstream: Downstream, ledger: DeliveredCopies | undefined) =>
    new MessageFilter({
      keys,
      downstreams: metrics ? { relay: meteredRelay(downstream, metrics), box: box && meteredBox(box, metrics), ledger } : { relay: downstream, box, ledger },
      config,
      boxUsers,
      observer: metrics,
      encryptor,
    });
  return {
    config,
    logger,
    db,
    keys,
    relay,
    box,
    ledger,
    filterTo: (downstream) => filterWith(downstream, undefined),
    filter: filterWith(reinjection, ledger),
    health,
    metrics,
    mailer,
    async close() {
      relay.close();
      box?.close();
      await encryptor?.close();
      await keys.close();
      await db.close();
    },
  };
}

interface MetricSources {
  config: Config;
  db: Database;
  keys: CachedKeyDirectory;
  relay: Relay;
  health: HealthMonitor;
}

/** Loaded on demand: prom-client takes ~0.2 s to import, too much for `lacre pipe` (one process per message). */
async function createMetrics(sources: MetricSources, logger: Logger): Promise<LacreMetrics> {
  const { LacreMetrics } = await import('./metrics/metrics.js');
  const metrics = new LacreMetrics();
  metrics.watchKeyCache(() => sources.keys.stats());
  metrics.watchRelayPool(() => sources.relay.poolState());
  metrics.watchReadiness(() => sources.health.recent());
  metrics.watchKeyCounts(cachedKeyCounts(sources.db, logger));
  return metrics;
}

/** Loaded on demand, as the metrics are: the key service's modules are not for `lacre pipe` without them. */
async function createMailer(config: Config, relay: Relay, logger: Logger): Promise<Mailer> {
  const { createMailer } = await import('./web/mailer.js');
  return createMailer(config, relay, logger);
}

/**
 * The relay, or, with web.wks_submission_address, the relay with mail to that address answered by Lacre itself
 * (the Web Key Service): every front end (SMTP, LMTP, `lacre pipe`) then answers it.
 */
async function answeringWks(config: Config, db: Database, mailer: Mailer, relay: Relay, logger: Logger): Promise<Downstream> {
  if (config.web.wks_submission_address === undefined) return relay;
  const [{ createWksIntake, interceptSubmissions }, { KeyService }, { catalogs }] = await Promise.all([
    import('./web/wks-intake.js'),
    import('./web/service.js'),
    import('./web/i18n.js'),
  ]);
  const intake = createWksIntake({ config, service: new KeyService({ db, config, mailer, logger }), mailer, catalogs: catalogs(), logger });
  return intake ? interceptSubmissions(relay, intake) : relay;
}
