/** The one database surface the rest of Lacre sees; PostgreSQL (pg) and embedded PGlite both implement it. */
export interface Database {
  readonly kind: 'postgres' | 'embedded';
  query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]>;
  /** Runs several statements (a migration file) in one transaction. */
  execTransaction(sql: string): Promise<void>;
  /** Subscribes to NOTIFY on a channel; resolves to an unsubscribe function. */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
