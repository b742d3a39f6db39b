import type { Database } from '../db/types.js';
import type { Logger } from '../log/logger.js';
import type { KeyCounts } from './metrics.js';
import { withTimeout } from './timeout.js';

/** One pass over lacre_keys (no index needed: it runs every few minutes, not per message). */
const KEY_COUNTS_SQL = `
  select count(distinct fingerprint)::int as confirmed,
         count(distinct fingerprint) filter (where expires_at > now() and expires_at <= now() + interval '7 days')::int as expiring_soon,
         count(distinct fingerprint) filter (where expires_at <= now())::int as expired
    from lacre_keys
   where status = 'confirmed'`;

export interface KeyCountsOptions {
  /** How long an answer is reused (default 5 minutes). */
  maxAgeMs?: number;
  /** A query slower than this is abandoned and the previous answer kept (default 5 s). */
  timeoutMs?: number;
}

/**
 * Counts of confirmed keys (all, expiring within 7 days, expired) for the key-expiry alert, read from the
 * store at most once per maxAgeMs. When the store cannot answer, the last answer stays (undefined before
 * the first): the database check reports the outage.
 */
export function cachedKeyCounts(db: Database, logger: Logger, options: KeyCountsOptions = {}): () => Promise<KeyCounts | undefined> {
  const maxAgeMs = options.maxAgeMs ?? 5 * 60_000;
  const timeoutMs = options.timeoutMs ?? 5_000;
  let last: { counts: KeyCounts; atMs: number } | undefined;
  let pending: Promise<KeyCounts | undefined> | undefined;
  const refresh = async (): Promise<KeyCounts | undefined> => {
    try {
      const counts = await withTimeout(readKeyCounts(db), timeoutMs);
      last = { counts, atMs: Date.now() };
      return counts;
    } catch (error) {
      logger.debug({ err: error }, 'key counts for metrics not read');
      return last?.counts;
    }
  };
  return () => {
    if (last && Date.now() - last.atMs < maxAgeMs) return Promise.resolve(last.counts);
    pending ??= refresh().finally(() => (pending = undefined));
    return pending;
  };
}

export async function readKeyCounts(db: Database): Promise<KeyCounts> {
  const [row] = await db.query<{ confirmed: number; expiring_soon: number; expired: number }>(KEY_COUNTS_SQL);
  return { confirmed: row?.confirmed ?? 0, expiringSoon: row?.expiring_soon ?? 0, expired: row?.expired ?? 0 };
}
