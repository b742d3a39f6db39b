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

interface PendingRecord {
  readonly queueId: string;
  readonly digest: string;
  readonly recipients: readonly string[];
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class DeliveredCopies implements DeliveryLedger {
  /** Records waiting for the statement in flight to end; they all go in the next one. */
  private waiting: PendingRecord[] = [];
  private writing = false;

  constructor(private readonly db: Database) {}

  /** One indexed read per message: the rows of this queue id and digest are the few copies of one message. */
  async delivered(queueId: string, digest: string, recipients: readonly string[]): Promise<ReadonlySet<string>> {
    const rows = await this.db.query<{ recipient: string }>('select recipient from lacre_delivered_copies where queue_id = $1 and digest = $2', [queueId, digest]);
    const wanted = new Set(recipients);
    return new Set(rows.map((row) => row.recipient).filter((recipient) => wanted.has(recipient)));
  }

  /**
   * Resolves once the copy is in the database. Records that arrive while a statement is in flight (other copies,
   * other messages) are written together by the next one: one statement per round trip instead of one per copy,
   * and no record waits longer than one statement before its own starts.
   */
  record(queueId: string, digest: string, recipients: readonly string[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ queueId, digest, recipients, resolve, reject });
      if (!this.writing) void this.writeWaiting();
    });
  }

  private async writeWaiting(): Promise<void> {
    this.writing = true;
    while (this.waiting.length > 0) {
      const batch = this.waiting;
      this.waiting = [];
      try {
        await this.insert(batch);
        for (const record of batch) record.resolve();
      } catch (error) {
        for (const record of batch) record.reject(error);
      }
    }
    this.writing = false;
  }

  /**
   * One statement for the batch. On PostgreSQL it commits without waiting for the WAL flush (synchronous_commit
   * off, for this statement's transaction only): that wait cost ~6 ms per message at one session, and a row only
   * saves a duplicate, so losing the last ones to a crash of the database server (not of Lacre: the server has
   * them) costs at most a duplicate. Not on the embedded database: it runs inside Lacre's own process with no WAL
   * writer, so an unsynced commit would die with a kill -9 of Lacre itself.
   */
  private async insert(batch: readonly PendingRecord[]): Promise<void> {
    const rows = batch.flatMap((record) => record.recipients.map((recipient) => [record.queueId, recipient, record.digest] as const));
    if (rows.length === 0) return;
    const unsynced = this.db.kind === 'postgres';
    await this.db.query(
      `${unsynced ? "with unsynced as (select set_config('synchronous_commit', 'off', true))" : ''}
       insert into lacre_delivered_copies (queue_id, recipient, digest)
       select distinct r.queue_id, r.recipient, r.digest
         from ${unsynced ? 'unsynced, ' : ''}unnest($1::text[], $2::text[], $3::text[]) as r(queue_id, recipient, digest)
       on conflict do nothing`,
      [rows.map((row) => row[0]), rows.map((row) => row[1]), rows.map((row) => row[2])],
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
