/**
 * The Incoming Box server (docs/incoming-box.md) on the shared HTTP stack (src/http/stack.ts): `lacre inbox
 * serve`, or in-process in `lacre serve` with incoming_box.serve = true.
 */
import type { Config } from '../config/schema.js';
import type { Database } from '../db/types.js';
import type { Logger } from '../log/logger.js';
import { FilesystemBlobStorage, type BlobStorage } from './storage.js';
import { BoxUserStore, isUserId } from './users.js';
import { TrustedTokens } from './auth.js';
import { addBoxRoutes, type BoxContext } from './handlers.js';
import { BlobMetadata } from './metadata.js';
import { INCOMING_NAMESPACE } from '../config/schema.js';
import { closeHttpStack, createHttpStack, listenOn, type HttpApp } from '../http/stack.js';

export type BoxConfig = Pick<Config, 'incoming_box'>;

export interface IncomingBoxServer {
  readonly port: number;
  /** host:port actually bound. */
  readonly address: string;
  /** One purge run now (the timer runs them every purge_interval_seconds); resolves to the blobs removed. */
  purge(): Promise<number>;
  /** Stops accepting, lets requests in flight finish (up to a grace period), stops the purge timer. */
  close(): Promise<void>;
}

const CLOSE_GRACE_MS = 10_000;
/** An upload may be slow; a connection silent this long is dropped. */
const IDLE_SOCKET_MS = 120_000;

/** Quota plus tolerance, or 0 for no quota. */
export function quotaLimit(box: Config['incoming_box']): number {
  return box.quota > 0 ? box.quota + box.quota_tolerance : 0;
}

export async function startIncomingBoxServer(config: BoxConfig, db: Database, logger: Logger): Promise<IncomingBoxServer> {
  const box = config.incoming_box;
  const log = logger.child({ component: 'incoming-box' });
  const storage = new FilesystemBlobStorage(box.blobs_path);
  const removedTemp = await storage.start();
  const metadata = new BlobMetadata(db, box.processing_threshold_seconds);
  let app: HttpApp | undefined;
  try {
    const moved = await moveLegacyNamespace(storage, metadata);
    if (moved > 0) log.info({ moved, from: LEGACY_NAMESPACE, to: INCOMING_NAMESPACE }, 'moved blobs to the namespace Soledad names MX');
    const orphans = await sweepOrphans(storage, metadata);
    if (removedTemp + orphans > 0) log.info({ temporaryFiles: removedTemp, orphans }, 'removed what an interrupted run left in the blob storage');
    if (box.trusted_tokens.length === 0) log.warn('incoming_box.trusted_tokens is empty: every delivery to /incoming is refused');
    const ctx: BoxContext = { metadata, users: new BoxUserStore(db), storage, trusted: new TrustedTokens(box.trusted_tokens), quotaLimit: quotaLimit(box), logger: log };
    app = createBoxApp(ctx);
    const address = await listenOn(app, box.listen, 'incoming_box.listen');
    const purger = new Purger(metadata, storage, box.retention_hours, log);
    const timer = setInterval(() => void purger.run(), box.purge_interval_seconds * 1000);
    timer.unref();
    void purger.run();
    log.info({ listen: `${address.address}:${address.port}`, blobsPath: storage.root }, 'incoming box is ready');
    const listening = app;
    return {
      port: address.port,
      address: `${address.address}:${address.port}`,
      purge: () => purger.run(),
      async close() {
        clearInterval(timer);
        await closeHttpStack(listening, CLOSE_GRACE_MS);
        await purger.idle();
        storage.close();
      },
    };
  } catch (error) {
    await app?.close();
    storage.close();
    throw error;
  }
}

/** An upload may take as long as it needs while bytes keep coming; refusals carry Soledad's bodies, or none. */
function createBoxApp(ctx: BoxContext): HttpApp {
  const app = createHttpStack({ logger: ctx.logger, headRoutes: false, timeouts: { requestMs: 0, headersMs: 60_000, idleMs: IDLE_SOCKET_MS } });
  addBoxRoutes(app, ctx);
  return app;
}

/** Lacre's name for Soledad's MX namespace before migration 003. */
const LEGACY_NAMESPACE = 'mx';

/**
 * Migration 003 moved the rows of namespace `mx` to `MX`; this moves their files after them. It runs at every
 * start before the orphan sweep (which would take a file left in `mx/` for an orphan), so a crash half-way is
 * finished at the next start. A file an `mx` row still names (its id existed in both) stays.
 */
async function moveLegacyNamespace(storage: BlobStorage, metadata: BlobMetadata): Promise<number> {
  let moved = 0;
  for await (const { user, namespace, names } of storage.listObjects()) {
    if (namespace !== LEGACY_NAMESPACE || !isUserId(user)) continue;
    const kept = await metadata.objectNames(user, LEGACY_NAMESPACE);
    for (const name of names) {
      if (kept.has(name) || name.startsWith('.')) continue;
      await storage.move({ user, namespace, id: name }, name, INCOMING_NAMESPACE);
      moved++;
    }
  }
  return moved;
}

/** Deletes objects no metadata row names (left by a crash between storing an object and recording it). */
async function sweepOrphans(storage: BlobStorage, metadata: BlobMetadata): Promise<number> {
  let removed = 0;
  for await (const { user, namespace, names } of storage.listObjects()) {
    if (!isUserId(user)) continue;
    const known = await metadata.objectNames(user, namespace);
    for (const name of names) {
      if (known.has(name) || name.startsWith('.')) continue; // never a blob (BLOB_ID): not ours to remove
      await storage.remove({ user, namespace, id: name }, name);
      removed++;
    }
  }
  return removed;
}

/** Runs purges one at a time; a run asked for while one is going joins it. */
class Purger {
  #running: Promise<number> | undefined;

  constructor(
    private readonly metadata: BlobMetadata,
    private readonly storage: BlobStorage,
    private readonly retentionHours: number,
    private readonly logger: Logger,
  ) {}

  run(): Promise<number> {
    this.#running ??= this.#purge().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async idle(): Promise<void> {
    await this.#running?.catch(() => undefined);
  }

  async #purge(): Promise<number> {
    try {
      const removed = await purgeBlobs(this.metadata, this.storage, this.retentionHours);
      if (removed > 0) this.logger.info({ removed }, 'purged processed and permanently failed blobs');
      return removed;
    } catch (error) {
      this.logger.error({ err: error }, 'purge failed');
      return 0;
    }
  }
}

function purgeBlobs(metadata: BlobMetadata, storage: BlobStorage, retentionHours: number): Promise<number> {
  return metadata.purge(retentionHours, (key, name) => storage.remove(key, name));
}

/** One purge run without a server (`lacre inbox purge`): safe beside a running box. */
export function purgeIncomingBox(config: BoxConfig, db: Database): Promise<number> {
  const box = config.incoming_box;
  return purgeBlobs(new BlobMetadata(db, box.processing_threshold_seconds), new FilesystemBlobStorage(box.blobs_path), box.retention_hours);
}
