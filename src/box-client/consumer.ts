/**
 * The processing loop of an Incoming Box consumer (the spec's "Client side Processing"): list the PENDING blobs
 * oldest first, reserve each (the box marks it PROCESSING for us alone), stream it to a handler with bounded
 * concurrency, then confirm PROCESSED or mark FAILED with our version. The loop never buffers a blob: the
 * handler gets the download as a stream.
 */
import type { Readable } from 'node:stream';
import { LacreError } from '../errors.js';
import { IncomingBoxHttpError, type IncomingBoxClient } from './client.js';
import { InvalidFramingError } from './framing.js';
import { packageVersion } from '../util/package-version.js';

export interface IncomingMeta {
  id: string;
  /** Bytes in the stream. */
  size: number;
  /** X-Incoming-Scheme of the blob. */
  scheme: string;
  reservation: string;
  /** When the box may hand the blob to another client if we have not confirmed it. */
  expiresAt: Date;
  /** The run's signal, for handlers that can stop early. */
  signal?: AbortSignal;
}

/**
 * Consumes `stream` completely and resolves once the message is safely stored; throws to mark the blob FAILED
 * (for good with a PermanentProcessingError), or throws a DeferProcessingError to release it for a later run.
 */
export type IncomingHandler = (id: string, stream: Readable, meta: IncomingMeta) => Promise<void>;

/** A failure no later client version will fix: the blob is marked FAILED + PERMANENT (and may be purged). */
export class PermanentProcessingError extends LacreError {
  readonly permanent = true;
}

/**
 * The handler could not store the blob now for a reason of its own (disk full, permissions, a store down):
 * nothing is wrong with the blob, so it is released for a later run, never marked FAILED.
 */
export class DeferProcessingError extends LacreError {
  readonly defer = true;
}

export type BlobOutcome =
  | { id: string; outcome: 'processed' }
  | { id: string; outcome: 'failed'; permanent: boolean; error: unknown }
  /** Another client holds it, or it vanished: not ours. */
  | { id: string; outcome: 'skipped'; reason: 'already-reserved' | 'not-found' }
  /** Left for a later run (box or download trouble, or the run was stopped); released or left to expire. */
  | { id: string; outcome: 'deferred'; error: unknown };

export interface ProcessSummary {
  processed: number;
  failed: number;
  skipped: number;
  deferred: number;
}

export interface ProcessOptions {
  /** Handlers running at once (default 4). */
  concurrency?: number;
  /** At most this many blobs in this run (default: until the box has no unseen PENDING blob). */
  limit?: number;
  /** Leave blobs bigger than this for another run (the spec's quick first pass): stored bytes, framing included. */
  sizeLimit?: number;
  /** Stops taking new blobs; blobs whose handler fails after the abort are released, not marked FAILED. */
  signal?: AbortSignal;
  /** Recorded with FAILED marks (default: lacre/<package version>). */
  clientVersion?: string;
  /** Ids asked for per listing (default 100). */
  pageSize?: number;
  /** Called once per blob with what happened to it. */
  onOutcome?: (outcome: BlobOutcome) => void;
}

/** This client's version, as recorded with FAILED marks: `lacre/<package.json version>`. */
export function clientVersion(): string {
  return `lacre/${packageVersion()}`;
}

/**
 * Drains the box: lists PENDING blobs oldest first, page by page, until a listing brings no blob this run has not
 * already seen (so a blob that stays PENDING, e.g. one released after trouble, cannot loop forever). A failing
 * listing rejects; outcomes so far were already reported through `onOutcome`.
 */
export async function processIncoming(client: IncomingBoxClient, handler: IncomingHandler, options: ProcessOptions = {}): Promise<ProcessSummary> {
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const pageSize = Math.max(1, options.pageSize ?? 100);
  const summary: ProcessSummary = { processed: 0, failed: 0, skipped: 0, deferred: 0 };
  const seen = new Set<string>();
  let remaining = options.limit ?? Infinity;

  while (remaining > 0 && !options.signal?.aborted) {
    const limit = Math.min(pageSize, remaining);
    const ids = await client.list({ filterFlag: 'PENDING', orderBy: 'date', limit, sizeLimit: options.sizeLimit });
    const fresh = ids.filter((id) => !seen.has(id));
    if (fresh.length === 0) break;
    for (const id of fresh) seen.add(id);
    remaining -= fresh.length;
    await runPool(fresh, concurrency, async (id) => {
      if (options.signal?.aborted) return;
      const outcome = await processOne(client, handler, id, options);
      summary[outcome.outcome] += 1;
      options.onOutcome?.(outcome);
    });
  }
  return summary;
}

async function processOne(client: IncomingBoxClient, handler: IncomingHandler, id: string, options: ProcessOptions): Promise<BlobOutcome> {
  let reserved;
  try {
    reserved = await client.reserve(id);
  } catch (error) {
    return { id, outcome: 'deferred', error };
  }
  if (!reserved.reserved) return { id, outcome: 'skipped', reason: reserved.reason };
  const { reservation, expiresAt } = reserved;

  let blob;
  try {
    blob = await client.fetch(id);
  } catch (error) {
    if (error instanceof IncomingBoxHttpError && error.status === 404) return { id, outcome: 'skipped', reason: 'not-found' };
    // The blob itself is unreadable, not the box unwell: FAILED (for now: a later version may read it).
    if (error instanceof InvalidFramingError) return markFailed(client, id, reservation, error, options.clientVersion ?? clientVersion());
    return release(client, id, reservation, error);
  }

  // A download that breaks is the box's trouble, and a deferral the handler's, not the message's: either is
  // released, never marked FAILED.
  let downloadError: unknown;
  blob.stream.once('error', (error) => (downloadError = error));
  try {
    await handler(id, blob.stream, { id, size: blob.size, scheme: blob.scheme, reservation, expiresAt, signal: options.signal });
  } catch (error) {
    blob.stream.destroy();
    if (downloadError !== undefined || options.signal?.aborted || error instanceof DeferProcessingError) return release(client, id, reservation, downloadError ?? error);
    return markFailed(client, id, reservation, error, options.clientVersion ?? clientVersion());
  }

  try {
    await client.markProcessed(id, reservation);
  } catch (error) {
    // The handler stored the message; unconfirmed, the blob returns to PENDING after the box's threshold and a later
    // run may store it again: at least once, never lost.
    return { id, outcome: 'deferred', error };
  }
  return { id, outcome: 'processed' };
}

async function release(client: IncomingBoxClient, id: string, reservation: string, error: unknown): Promise<BlobOutcome> {
  // If even the release fails, the reservation expires by itself after the box's processing threshold.
  await client.release(id, reservation).catch(() => undefined);
  return { id, outcome: 'deferred', error };
}

async function markFailed(client: IncomingBoxClient, id: string, reservation: string, error: unknown, version: string): Promise<BlobOutcome> {
  const permanent = error instanceof PermanentProcessingError;
  try {
    await client.markFailed(id, reservation, { version, permanent });
  } catch (markError) {
    return { id, outcome: 'deferred', error: markError };
  }
  return { id, outcome: 'failed', permanent, error };
}

/** Runs `work` over `items`, at most `concurrency` at a time, starting them in order. */
async function runPool<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
