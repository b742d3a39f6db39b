/** The one database surface the rest of Lacre sees; PostgreSQL (pg) and embedded PGlite both implement it. */
export interface Database {
  readonly kind: 'postgres' | 'embedded';
  query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]>;
  /** Runs several statements (a migration file) in one transaction. */
  execTransaction(sql: string): Promise<void>;
  /**
   * Runs statements with parameters in order, in one transaction (all or none), within the query timeout; resolves
   * to the last one's rows. For a lock taken by a first statement that the next one's snapshot must come after.
   */
  queryInTransaction<Row = Record<string, unknown>>(statements: readonly Statement[]): Promise<Row[]>;
  /** Subscribes to NOTIFY on a channel; resolves to an unsubscribe function. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface Statement {
  readonly sql: string;
  readonly params?: unknown[];
}
