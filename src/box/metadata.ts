/** Blob metadata in lacre_blobs: the state machine, listings and the purge, each one SQL statement. */
import type { Database } from '../db/types.js';
import type { BlobKey } from './storage.js';

export const STATES = ['PENDING', 'PROCESSING', 'PROCESSED', 'FAILED'] as const;
export type BlobState = (typeof STATES)[number];
/** Every flag a client may name: the states, and PERMANENT beside FAILED. */
export const KNOWN_FLAGS: ReadonlySet<string> = new Set([...STATES, 'PERMANENT']);

export interface BlobRow {
  size: number;
  scheme: string;
  fileName: string;
  /** The stored bytes start with Soledad's framing (base64url(preamble) + " "). */
  framed: boolean;
}

export interface ListQuery {
  /** Only blobs in one of these states; undefined: every blob of the namespace. */
  states?: BlobState[];
  /** Only permanently failed blobs (filter_flag=PERMANENT). */
  permanentOnly: boolean;
  newestFirst: boolean;
  limit?: number;
  offset: number;
  sizeLimit?: number;
}

export interface ListedBlob {
  id: string;
  size: number;
  createdAt: Date;
  state: BlobState;
  permanent: boolean;
  scheme: string;
}

export type StoreOutcome = 'stored' | 'exists' | 'quota';

export interface ImportedBlob {
  scheme: string;
  state: Exclude<BlobState, 'PROCESSING'>;
  createdAt: Date;
  /** When a client marked it PROCESSED or FAILED: the purge's retention counts from here. */
  processedAt?: Date;
}

/**
 * Who may change a reserved blob's flags: the holder of the reservation token POST …/reserve handed out
 * (its hash), or the credential (its user token's hash) that reserved it with POST ["PROCESSING"].
 */
export type ReservationHolder = { reservationHash: string } | { credentialHash: string };
export type FlagChange = { state: 'PROCESSED' } | { state: 'PENDING' } | { state: 'FAILED'; permanent: boolean; version: string | null };

export interface UserPrecheck {
  known: boolean;
  exists: boolean;
  usedBytes: number;
}

/** The flags a blob shows: its state first, then PERMANENT for a permanent failure. */
export function flagsOf(state: BlobState, permanent: boolean): string[] {
  return state === 'FAILED' && permanent ? [state, 'PERMANENT'] : [state];
}

const PK = 'user_uuid = $1 AND namespace = $2 AND blob_id = $3';

export class BlobMetadata {
  /** @param thresholdSeconds how long a reservation holds (incoming_box.processing_threshold_seconds) */
  constructor(
    private readonly db: Database,
    private readonly thresholdSeconds: number,
  ) {}

  /** One round trip before a write: does the user exist, does the blob, and how much the user stores. */
  async precheck(key: BlobKey): Promise<UserPrecheck> {
    const [row] = await this.db.query<{ known: boolean; present: boolean; used: number | null }>(
      `SELECT (EXISTS (SELECT 1 FROM lacre_box_users WHERE user_uuid = $1)
               OR EXISTS (SELECT 1 FROM lacre_box_tokens WHERE user_uuid = $1)) AS known,
              EXISTS (SELECT 1 FROM lacre_blobs WHERE ${PK}) AS present,
              (SELECT used_bytes FROM lacre_box_usage WHERE user_uuid = $1) AS used`,
      [key.user, key.namespace, key.id],
    );
    return { known: row?.known === true, exists: row?.present === true, usedBytes: Number(row?.used ?? 0) };
  }

  /** Inserts the row for a stored object unless the id exists or the quota (limit, 0 = none) would be passed. */
  async store(key: BlobKey, object: { name: string; size: number; framed: boolean }, scheme: string, limit: number): Promise<StoreOutcome> {
    const [row] = await this.db.query<{ outcome: StoreOutcome }>('SELECT lacre_box_store_blob($1, $2, $3, $4, $5, $6, $7, $8) AS outcome', [
      key.user, key.namespace, key.id, object.size, scheme, object.name, limit, object.framed,
    ]);
    return row!.outcome;
  }

  /**
   * Records an object brought in from elsewhere (a Soledad server's blobs) with the state and times it had there;
   * no quota check. False when the id exists (the object is then not named by any row).
   */
  async insertImported(key: BlobKey, object: { name: string; size: number; framed: boolean }, imported: ImportedBlob): Promise<boolean> {
    const rows = await this.db.query(
      `INSERT INTO lacre_blobs (user_uuid, namespace, blob_id, size, scheme, file_name, framed, state, created_at, processed_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
       ON CONFLICT (user_uuid, namespace, blob_id) DO NOTHING
       RETURNING 1 AS inserted`,
      [key.user, key.namespace, key.id, object.size, imported.scheme, object.name, object.framed, imported.state, imported.createdAt, imported.processedAt ?? null],
    );
    return rows.length > 0;
  }

  async get(key: BlobKey): Promise<BlobRow | undefined> {
    const [row] = await this.db.query<{ size: number; scheme: string; file_name: string; framed: boolean }>(
      `SELECT size, scheme, file_name, framed FROM lacre_blobs WHERE ${PK}`,
      [key.user, key.namespace, key.id],
    );
    return row && { size: Number(row.size), scheme: row.scheme, fileName: row.file_name, framed: row.framed };
  }

  /** The blob's flags, an expired reservation showing as PENDING; undefined when absent. */
  async flags(key: BlobKey): Promise<string[] | undefined> {
    const [row] = await this.db.query<{ state: BlobState; failed_permanent: boolean }>(
      `SELECT CASE WHEN state = 'PROCESSING' AND reserved_at < now() - make_interval(secs => $4::double precision) THEN 'PENDING' ELSE state END AS state,
              failed_permanent
         FROM lacre_blobs WHERE ${PK}`,
      [key.user, key.namespace, key.id, this.thresholdSeconds],
    );
    return row && flagsOf(row.state, row.failed_permanent);
  }

  /**
   * Moves a PENDING blob, or a PROCESSING one whose reservation expired, to PROCESSING under a new reservation.
   * Returns when it expires, or 'busy' / 'absent'.
   */
  async reserve(key: BlobKey, reservationHash: string): Promise<{ expiresAt: Date } | 'busy' | 'absent'> {
    const [row] = await this.db.query<{ expires_at: Date }>(
      `UPDATE lacre_blobs
          SET state = 'PROCESSING', reserved_at = now(), reservation_hash = $4, reserved_by = NULL
        WHERE ${PK}
          AND (state = 'PENDING' OR (state = 'PROCESSING' AND reserved_at < now() - make_interval(secs => $5::double precision)))
        RETURNING reserved_at + make_interval(secs => $5::double precision) AS expires_at`,
      [key.user, key.namespace, key.id, reservationHash, this.thresholdSeconds],
    );
    if (row) return { expiresAt: new Date(row.expires_at) };
    return (await this.get(key)) ? 'busy' : 'absent';
  }

  /**
   * Soledad's client reserving with POST ["PROCESSING"]: a PENDING blob, a PROCESSING one whose reservation
   * expired, or one this same credential holds already (its reservation starts again) becomes PROCESSING for
   * `credentialHash`. One statement, so of two credentials asking at once exactly one gets it.
   */
  async reserveFor(key: BlobKey, credentialHash: string): Promise<'done' | 'busy' | 'absent'> {
    const rows = await this.db.query(
      `UPDATE lacre_blobs
          SET state = 'PROCESSING', reserved_at = now(), reservation_hash = NULL, reserved_by = $4
        WHERE ${PK}
          AND (state = 'PENDING'
               OR (state = 'PROCESSING' AND (reserved_at < now() - make_interval(secs => $5::double precision) OR reserved_by = $4)))
          -- A token revoked since this request passed ownerOnly reserves nothing (lacre inbox token revoke); held
          -- FOR SHARE, so a revoke racing this statement waits for it, then releases what it reserved.
          AND EXISTS (SELECT 1 FROM lacre_box_tokens WHERE token_hash = $4 FOR SHARE)
        RETURNING 1 AS reserved`,
      [key.user, key.namespace, key.id, credentialHash, this.thresholdSeconds],
    );
    if (rows.length > 0) return 'done';
    return (await this.get(key)) ? 'busy' : 'absent';
  }

  /** Applies a state change under the current (unexpired) reservation; 'stale' when `holder` does not hold it. */
  async change(key: BlobKey, holder: ReservationHolder, change: FlagChange): Promise<'done' | 'stale' | 'absent'> {
    const finished = change.state !== 'PENDING';
    const permanent = change.state === 'FAILED' && change.permanent;
    const version = change.state === 'FAILED' ? change.version : null;
    const [column, hash] = 'reservationHash' in holder ? ['reservation_hash', holder.reservationHash] : ['reserved_by', holder.credentialHash];
    const rows = await this.db.query(
      `UPDATE lacre_blobs
          SET state = $6, reservation_hash = NULL, reserved_by = NULL,
              reserved_at = CASE WHEN $6 = 'PENDING' THEN NULL ELSE reserved_at END,
              processed_at = CASE WHEN $7 THEN now() ELSE NULL END,
              failed_permanent = $8, failed_version = $9
        WHERE ${PK} AND state = 'PROCESSING' AND ${column} = $4
          AND reserved_at >= now() - make_interval(secs => $5::double precision)
        RETURNING 1 AS changed`,
      [key.user, key.namespace, key.id, hash, this.thresholdSeconds, change.state, finished, permanent, version],
    );
    if (rows.length > 0) return 'done';
    return (await this.get(key)) ? 'stale' : 'absent';
  }

  /** Deletes the row; returns the object name to remove, or undefined when there was none. */
  async delete(key: BlobKey): Promise<string | undefined> {
    const [row] = await this.db.query<{ file_name: string }>(`DELETE FROM lacre_blobs WHERE ${PK} RETURNING file_name`, [key.user, key.namespace, key.id]);
    return row?.file_name;
  }

  /** Reservations older than the threshold go back to PENDING (run before a listing, so it shows them). */
  async expireReservations(user: string, namespace: string): Promise<void> {
    await this.db.query(
      `UPDATE lacre_blobs SET state = 'PENDING', reserved_at = NULL, reservation_hash = NULL, reserved_by = NULL
        WHERE user_uuid = $1 AND namespace = $2 AND state = 'PROCESSING' AND reserved_at < now() - make_interval(secs => $3::double precision)`,
      [user, namespace, this.thresholdSeconds],
    );
  }

  async list(user: string, namespace: string, query: ListQuery, details: boolean): Promise<ListedBlob[]> {
    const { where, params } = listConditions(user, namespace, query);
    const direction = query.newestFirst ? 'DESC' : 'ASC';
    params.push(query.limit ?? null, query.offset);
    const columns = details ? 'blob_id, size, created_at, state, failed_permanent, scheme' : 'blob_id';
    const rows = await this.db.query<{ blob_id: string; size?: number; created_at?: Date; state?: BlobState; failed_permanent?: boolean; scheme?: string }>(
      `SELECT ${columns} FROM lacre_blobs WHERE ${where}
        ORDER BY created_at ${direction}, blob_id ${direction}
        LIMIT $${params.length - 1} OFFSET $${params.length}`,
      params,
    );
    return rows.map((row) => ({
      id: row.blob_id,
      size: Number(row.size ?? 0),
      createdAt: row.created_at === undefined ? new Date(0) : new Date(row.created_at),
      state: row.state ?? 'PENDING',
      permanent: row.failed_permanent ?? false,
      scheme: row.scheme ?? 'raw',
    }));
  }

  async count(user: string, namespace: string, query: ListQuery): Promise<number> {
    const { where, params } = listConditions(user, namespace, query);
    // Pagination is not a filter: the count is of every matching blob.
    const [row] = await this.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM lacre_blobs WHERE ${where}`, params);
    return row?.n ?? 0;
  }

  /**
   * Deletes PROCESSED and permanently FAILED blobs finished more than `retentionHours` ago, in batches;
   * `removeObject` runs for each after its row is gone (a crash in between leaves an unnamed object, swept at start).
   */
  async purge(retentionHours: number, removeObject: (key: BlobKey, name: string) => Promise<void>, batchSize = 1000): Promise<number> {
    let total = 0;
    for (;;) {
      const rows = await this.db.query<{ user_uuid: string; namespace: string; blob_id: string; file_name: string }>(
        `DELETE FROM lacre_blobs
          WHERE (user_uuid, namespace, blob_id) IN (
            SELECT user_uuid, namespace, blob_id FROM lacre_blobs
             WHERE (state = 'PROCESSED' OR (state = 'FAILED' AND failed_permanent))
               AND processed_at < now() - make_interval(secs => $1::double precision * 3600)
             LIMIT $2)
          RETURNING user_uuid, namespace, blob_id, file_name`,
        [retentionHours, batchSize],
      );
      for (const row of rows) await removeObject({ user: row.user_uuid, namespace: row.namespace, id: row.blob_id }, row.file_name);
      total += rows.length;
      if (rows.length < batchSize) return total;
    }
  }

  /** Names of the objects the rows of one user and namespace refer to. */
  async objectNames(user: string, namespace: string): Promise<Set<string>> {
    const rows = await this.db.query<{ file_name: string }>('SELECT file_name FROM lacre_blobs WHERE user_uuid = $1 AND namespace = $2', [user, namespace]);
    return new Set(rows.map((row) => row.file_name));
  }
}

function listConditions(user: string, namespace: string, query: ListQuery): { where: string; params: unknown[] } {
  const params: unknown[] = [user, namespace];
  const conditions = ['user_uuid = $1', 'namespace = $2'];
  if (query.states?.length === 1) {
    params.push(query.states[0]);
    conditions.push(`state = $${params.length}`);
  } else if (query.states !== undefined) {
    params.push(query.states);
    conditions.push(`state = ANY($${params.length}::text[])`);
  }
  if (query.permanentOnly) conditions.push('failed_permanent');
  if (query.sizeLimit !== undefined) {
    params.push(query.sizeLimit);
    conditions.push(`size <= $${params.length}`);
  }
  return { where: conditions.join(' AND '), params };
}
