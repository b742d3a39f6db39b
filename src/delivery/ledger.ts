/**
 * The delivery ledger in the database (migrations/005_delivered_copies.sql): every copy a downstream accepted,
 * by Postfix queue id, recipient and header digest, kept relay.delivered_retention_hours (docs/exactly-once.md).
 */
import type { Logger } from 'pino';
import type { Database } from '../db/types.js';
import { errorMessage } from '../errors.js';
import type { DeliveryLedger } from '../filter/ports.js';
import { Grouped } from '../util/grouped.js';
import { runPeriodically, type PeriodicJob } from '../util/periodic.js';

export const LEDGER_PURGE_INTERVAL_MS = 3600 * 1000;

interface CopyKey {
  readonly queueId: string;
  readonly digest: string;
  readonly recipients: readonly string[];
}

export class DeliveredCopies implements DeliveryLedger {
  /** Reads and writes each go in groups (util/grouped.ts): one statement per round trip, whatever the load. */
  private readonly reads = new Grouped<CopyKey, ReadonlySet<string>>((keys) => this.select(keys));
  private readonly writes = new Grouped<CopyKey, void>((records) => this.insert(records));

  /** @param purgeBatch rows deleted per purge statement: one statement never holds the table (or, embedded, Lacre's thread) for long */
  constructor(
    private readonly db: Database,
    private readonly purgeBatch = 5000,
  ) {}

  /** The recipients of this message (queue id and header digest) whose copies a downstream already accepted. */
  delivered(queueId: string, digest: string, recipients: readonly string[]): Promise<ReadonlySet<string>> {
    return this.reads.submit({ queueId, digest, recipients });
  }

  /** Resolves once the copy's record is in the database (written with the records that arrived meanwhile). */
  record(queueId: string, digest: string, recipients: readonly string[]): Promise<void> {
    return this.writes.submit({ queueId, digest, recipients });
  }

  /**
   * One indexed read for the group: the rows of its queue ids, digests and recipients, matched to each message here.
   * Matching (queue id, digest) pairs in SQL through unnest cost three times as much per statement, for the same
   * index scan; the recipients bound the rows read to this transaction's (Postfix splits a message to many
   * recipients into transactions of 50, and each would otherwise read every row its predecessors wrote).
   */
  private async select(keys: readonly CopyKey[]): Promise<ReadonlySet<string>[]> {
    const distinct = (values: string[]) => [...new Set(values)];
    const rows = await this.db.query<{ queue_id: string; digest: string; recipient: string }>(
      `select queue_id, digest, recipient from lacre_delivered_copies
        where queue_id = any($1::text[]) and recipient = any($2::text[]) and digest = any($3::text[])`,
      [distinct(keys.map((key) => key.queueId)), distinct(keys.flatMap((key) => [...key.recipients])), distinct(keys.map((key) => key.digest))],
    );
    return keys.map((key) => {
      const wanted = new Set(key.recipients);
      return new Set(rows.filter((row) => row.queue_id === key.queueId && row.digest === key.digest && wanted.has(row.recipient)).map((row) => row.recipient));
    });
  }

  /**
   * One statement for the group. On PostgreSQL it commits without waiting for the WAL flush (synchronous_commit
   * off, for this statement's transaction only): that wait cost ~6 ms per message at one session, and a row only
   * saves a duplicate, so losing the last ones to a crash of the database server (not of Lacre: the server has
   * them) costs at most a duplicate. Not on the embedded database: it runs inside Lacre's own process with no WAL
   * writer, so an unsynced commit would die with a kill -9 of Lacre itself.
   */
  private async insert(records: readonly CopyKey[]): Promise<void[]> {
    const rows = records.flatMap((record) => record.recipients.map((recipient) => [record.queueId, recipient, record.digest] as const));
    if (rows.length > 0) {
      const unsynced = this.db.kind === 'postgres';
      await this.db.query(
        `${unsynced ? "with unsynced as (select set_config('synchronous_commit', 'off', true))" : ''}
         insert into lacre_delivered_copies (queue_id, recipient, digest)
         select r.queue_id, r.recipient, r.digest
           from ${unsynced ? 'unsynced, ' : ''}unnest($1::text[], $2::text[], $3::text[]) as r(queue_id, recipient, digest)
         on conflict do nothing`,
        [rows.map((row) => row[0]), rows.map((row) => row[1]), rows.map((row) => row[2])],
      );
    }
    return records.map(() => undefined);
  }

  /**
   * Forgets copies delivered more than `hours` ago, `purgeBatch` rows per statement, letting other work in between
   * (a backlog after a long stop would otherwise be one long DELETE); resolves to how many.
   */
  async purge(hours: number): Promise<number> {
    let purged = 0;
    for (;;) {
      const batch = await this.purgeSome(hours, this.purgeBatch);
      purged += batch;
      if (batch < this.purgeBatch) return purged;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Forgets at most `limit` of the copies delivered more than `hours` ago, in one statement; resolves to how many. */
  async purgeSome(hours: number, limit: number): Promise<number> {
    const rows = await this.db.query<{ purged: number | string }>(
      `with gone as (delete from lacre_delivered_copies where ctid in (
         select ctid from lacre_delivered_copies where delivered_at < now() - $1::double precision * interval '1 hour' limit $2)
       returning 1)
       select count(*)::int as purged from gone`,
      [hours, limit],
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
