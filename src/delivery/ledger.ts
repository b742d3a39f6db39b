/**
 * The delivery ledger in the database (migrations/005_delivered_copies.sql): every copy a downstream accepted,
 * by Postfix queue id, recipient and header digest, kept relay.delivered_retention_hours (docs/exactly-once.md).
 */
import type { Logger } from 'pino';
import type { Database } from '../db/types.js';
import { errorMessage } from '../errors.js';
import type { DeliveryLedger } from '../filter/ports.js';
import { runPeriodically, type PeriodicJob } from '../util/periodic.js';

export const LEDGER_PURGE_INTERVAL_MS = 3600 * 1000;

export class DeliveredCopies implements DeliveryLedger {
  constructor(private readonly db: Database) {}

  /** One indexed read per message: the rows of this queue id and digest are the few copies of one message. */
  async delivered(queueId: string, digest: string, recipients: readonly string[]): Promise<ReadonlySet<string>> {
    const rows = await this.db.query<{ recipient: string }>('select recipient from lacre_delivered_copies where queue_id = $1 and digest = $2', [queueId, digest]);
    const wanted = new Set(recipients);
    return new Set(rows.map((row) => row.recipient).filter((recipient) => wanted.has(recipient)));
  }

  /**
   * One statement per accepted copy, whatever its number of recipients. On PostgreSQL it commits without waiting for
   * the WAL flush (synchronous_commit off, for this statement's transaction only): that wait cost ~6 ms per message
   * at one session, and the row only saves a duplicate, so losing the last ones to a crash of the database server
   * (not of Lacre: the server has them) costs at most a duplicate. Not on the embedded database: it runs inside
   * Lacre's own process with no WAL writer, so an unsynced commit would die with a kill -9 of Lacre itself.
   */
  async record(queueId: string, digest: string, recipients: readonly string[]): Promise<void> {
    const unsynced = this.db.kind === 'postgres';
    await this.db.query(
      `${unsynced ? "with unsynced as (select set_config('synchronous_commit', 'off', true))" : ''}
       insert into lacre_delivered_copies (queue_id, recipient, digest)
       select $1, recipient, $3 from ${unsynced ? 'unsynced, ' : ''}unnest($2::text[]) as recipient
       on conflict do nothing`,
      [queueId, [...recipients], digest],
    );
  }

  /** Forgets copies delivered more than `hours` ago; resolves to how many. */
  async purge(hours: number): Promise<number> {
    const rows = await this.db.query<{ purged: number | string }>(
      `with gone as (delete from lacre_delivered_copies where delivered_at < now() - $1::double precision * interval '1 hour' returning 1)
       select count(*)::int as purged from gone`,
      [hours],
    );
    return Number(rows[0]?.purged ?? 0);
  }
}

/** Purges now, then every interval, one run at a time; a failed run is logged and the next one tries again. */
export function startLedgerPurge(ledger: DeliveredCopies, hours: number, logger: Logger, intervalMs = LEDGER_PURGE_INTERVAL_MS): PeriodicJob {
  return runPeriodically(
    async () => {
      const purged = await ledger.purge(hours);
      if (purged > 0) logger.info({ purged, retentionHours: hours }, 'delivery ledger purged');
    },
    intervalMs,
    (error) => logger.warn({ error: errorMessage(error) }, 'delivery ledger purge failed, trying again later'),
  );
}
