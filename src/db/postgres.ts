import pg from 'pg';
import { DatabaseUnavailableError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { Database, Statement } from './types.js';

export interface PostgresOptions {
  url: string;
  poolSize?: number;
  logger?: Logger;
  /** How long to wait for a connection before giving up (the server is down or unreachable). */
  connectTimeoutMs?: number;
  /** How long a query may take, from asking the pool for a connection to the last row (database.query_timeout_seconds). */
  queryTimeoutMs?: number;
  /** Backoff for re-opening the LISTEN connection: starts at initialMs, doubles up to maxMs. */
  reconnect?: { initialMs: number; maxMs: number };
}

const DEFAULT_CONNECT_TIMEOUT_MS = 3000;
const DEFAULT_QUERY_TIMEOUT_MS = 10_000;
const DEFAULT_RECONNECT = { initialMs: 250, maxMs: 30_000 };
const INT8_OID = 20;

/** SQLSTATE classes/codes and socket errors that mean "the server cannot be reached now", not "your SQL is wrong". */
const UNAVAILABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '53000', '58000', '58030']);
const UNAVAILABLE_SOCKET_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ENOENT',
]);
const UNAVAILABLE_MESSAGES = /connection terminated|timeout expired|timeout exceeded when trying to connect|connection timeout|server closed the connection|cannot use a pool after calling end|client has encountered a connection error|not queryable|connection ended/i;

export function isUnavailableError(error: unknown): boolean {
  if (error instanceof DatabaseUnavailableError) return true;
  if (error instanceof AggregateError) return error.errors.some(isUnavailableError);
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATES.has(code) || code.startsWith('08') || UNAVAILABLE_SOCKET_CODES.has(code))) return true;
  return UNAVAILABLE_MESSAGES.test(error.message);
}

/** Unreachable-server failures become DatabaseUnavailableError; SQL errors keep their pg error (and SQLSTATE code). */
export function toDatabaseError(error: unknown): unknown {
  if (error instanceof DatabaseUnavailableError || !isUnavailableError(error)) return error;
  const detail = error instanceof AggregateError ? error.errors.map((e: Error) => e.message).join('; ') : (error as Error).message;
  return new DatabaseUnavailableError(`database unavailable: ${detail || (error as Error).name}`, { cause: error });
}

function queryTimeoutError(timeoutMs: number): DatabaseUnavailableError {
  return new DatabaseUnavailableError(`database did not answer within ${timeoutMs / 1000} s (database.query_timeout_seconds)`);
}

/** `work`, or a rejection with queryTimeoutError once `timeoutMs` has passed (after running `onTimeout`). */
async function withinTimeout<T>(work: Promise<T>, timeoutMs: number, onTimeout: (error: DatabaseUnavailableError) => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = queryTimeoutError(timeoutMs);
      onTimeout(error);
      reject(error);
    }, timeoutMs);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
    // What the abandoned work ends with is of no interest any more.
    work.catch(() => undefined);
  }
}

/** bigint as a JS number when exact (both backends agree: count(*) is 5, not "5"), else a BigInt. */
export function parseInt8(text: string): number | bigint {
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : BigInt(text);
}

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

const typeParsers = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary' ? parseInt8 : pg.types.getTypeParser(oid, format ?? 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * PostgreSQL through a pg Pool. Queries fail fast with DatabaseUnavailableError when the server is down,
 * and after queryTimeoutMs when it is reachable but does not answer (a connection that timed out is
 * discarded, never handed to the next query). Migrations (execTransaction) are not bounded: they may
 * legitimately run long, and only `lacre migrate` or a start-up runs them.
 * NOTIFY subscriptions use one dedicated connection that is re-opened with backoff when it drops;
 * `onReconnect` callbacks run after each re-open, because notifications sent meanwhile were missed
 * (flush caches there).
 */
export class PostgresDatabase implements Database {
  readonly kind = 'postgres' as const;
  readonly #pool: pg.Pool;
  readonly #notifications: NotificationConnection;
  readonly #queryTimeoutMs: number;
  #closed = false;

  constructor(options: PostgresOptions) {
    const connectionTimeoutMillis = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#queryTimeoutMs = options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS;
    this.#pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis,
      idleTimeoutMillis: 30_000,
      types: typeParsers,
    });
    // An idle client losing its connection is reported here; without a listener it would crash the process.
    this.#pool.on('error', (error) => options.logger?.warn({ err: error }, 'idle database connection lost'));
    this.#notifications = new NotificationConnection(
      { connectionString: options.url, connectionTimeoutMillis, keepAlive: true, types: typeParsers },
      options.reconnect ?? DEFAULT_RECONNECT,
      this.#queryTimeoutMs,
      options.logger,
    );
  }

  async query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]> {
    this.#assertOpen();
    const result = (await this.#withConnection((client) => client.query(sql, params))) as pg.QueryResult | pg.QueryResult[];
    // Several statements without parameters come back as one result each; the last one is the answer.
    const last = Array.isArray(result) ? result[result.length - 1] : result;
    return (last?.rows ?? []) as Row[];
  }

  /**
   * Runs `use` on a pooled connection, waiting for one included, within the query timeout. A connection
   * whose work failed or timed out goes back as broken, so the pool closes it (pg destroys the socket of a
   * client with a query still running) instead of queueing the next query behind an answer that may never come.
   * Not pg's own `query_timeout`: it bounds the query alone (the wait for a connection comes on top), and set on
   * the pool it cannot be lifted for the migrations, which may legitimately run long.
   */
  async #withConnection<T>(use: (client: pg.PoolClient) => Promise<T>, { bounded } = { bounded: true }): Promise<T> {
    let client: pg.PoolClient | undefined;
    let released = false;
    let expired = false;
    // A checked-out client's 'error' event (connection lost mid-query) has no pool listener: without this one it would end the process.
    const onError = (error: Error): void => release(error);
    const release = (error?: Error): void => {
      if (!client || released) return;
      released = true;
      client.removeListener('error', onError);
      client.release(error);
    };
    const work = (async () => {
      client = await this.#pool.connect();
      client.on('error', onError);
      if (expired) {
        // Arrived after the deadline: never used, so as good as it was. The caller has its answer already.
        release();
        throw queryTimeoutError(this.#queryTimeoutMs);
      }
      try {
        const value = await use(client);
        release();
        return value;
      } catch (error) {
        release(error instanceof Error ? error : new Error(String(error)));
        throw error;
      }
    })();
    try {
      if (!bounded) return await work;
      return await withinTimeout(work, this.#queryTimeoutMs, (error) => {
        expired = true;
        release(error);
      });
    } catch (error) {
      throw toDatabaseError(error);
    }
  }

  async queryInTransaction<Row = Record<string, unknown>>(statements: readonly Statement[]): Promise<Row[]> {
    this.#assertOpen();
    return this.#withConnection(async (client) => {
      await client.query('BEGIN');
      try {
        let rows: Row[] = [];
        for (const statement of statements) rows = (await client.query(statement.sql, statement.params)).rows as Row[];
        await client.query('COMMIT');
        return rows;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    });
  }

  async execTransaction(sql: string): Promise<void> {
    this.#assertOpen();
    await this.#withConnection(async (client) => {
      await client.query('BEGIN');
      try {
        await client.query(sql);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    }, { bounded: false });
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    this.#assertOpen();
    return this.#notifications.subscribe(channel, onNotify);
  }

  /** Registers a callback run each time the LISTEN connection comes back after a loss; returns an unregister function. */
  onReconnect(callback: () => void): () => void {
    return this.#notifications.onReconnect(callback);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#notifications.close();
    await this.#pool.end();
  }

  #assertOpen(): void {
    if (this.#closed) throw new DatabaseUnavailableError('database connection is closed');
  }
}

type NotifyCallback = (payload: string) => void;

/** The one connection that holds LISTEN subscriptions, re-opened with backoff whenever it is lost. */
class NotificationConnection {
  readonly #channels = new Map<string, Set<NotifyCallback>>();
  readonly #reconnectCallbacks = new Set<() => void>();
  #client: pg.Client | undefined;
  #connecting: Promise<pg.Client> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #retryDelayMs: number;
  #lost = false;
  #closed = false;

  constructor(
    private readonly clientConfig: pg.ClientConfig,
    private readonly backoff: { initialMs: number; maxMs: number },
    private readonly queryTimeoutMs: number,
    private readonly logger: Logger | undefined,
  ) {
    this.#retryDelayMs = backoff.initialMs;
  }

  async subscribe(channel: string, callback: NotifyCallback): Promise<() => Promise<void>> {
    const existing = this.#channels.get(channel);
    if (existing) {
      existing.add(callback);
    } else if (this.#lost) {
      // Reconnecting: the reconnect LISTENs to every channel in the map.
      this.#channels.set(channel, new Set([callback]));
    } else {
      const client = await this.#connected();
      await this.#command(client, `LISTEN ${quoteIdentifier(channel)}`).catch((error: unknown) => { throw toDatabaseError(error); });
      const callbacks = this.#channels.get(channel) ?? new Set();
      callbacks.add(callback);
      this.#channels.set(channel, callbacks);
    }
    return () => this.#unsubscribe(channel, callback);
  }

  onReconnect(callback: () => void): () => void {
    this.#reconnectCallbacks.add(callback);
    return () => { this.#reconnectCallbacks.delete(callback); };
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    const client = this.#client ?? (await this.#connecting?.catch(() => undefined));
    this.#client = undefined;
    await client?.end().catch(() => undefined);
  }

  async #unsubscribe(channel: string, callback: NotifyCallback): Promise<void> {
    const callbacks = this.#channels.get(channel);
    if (!callbacks?.delete(callback) || callbacks.size > 0) return;
    this.#channels.delete(channel);
    const client = this.#client;
    if (client) await this.#command(client, `UNLISTEN ${quoteIdentifier(channel)}`).catch(() => undefined);
  }

  /**
   * LISTEN/UNLISTEN within the query timeout. A connection that does not answer is ended: its 'end' event
   * counts as a loss (reconnect with backoff), unless a failing reconnect has already let go of it.
   */
  async #command(client: pg.Client, sql: string): Promise<void> {
    await withinTimeout(client.query(sql), this.queryTimeoutMs, () => void client.end().catch(() => undefined));
  }

  #connected(): Promise<pg.Client> {
    if (this.#client) return Promise.resolve(this.#client);
    this.#connecting ??= this.#open().finally(() => { this.#connecting = undefined; });
    return this.#connecting;
  }

  async #open(): Promise<pg.Client> {
    const client = new pg.Client(this.clientConfig);
    client.on('notification', (message) => this.#deliver(message.channel, message.payload ?? ''));
    client.on('error', (error) => this.#handleLoss(client, error));
    client.on('end', () => this.#handleLoss(client, undefined));
    try {
      await client.connect();
    } catch (error) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw toDatabaseError(error);
    }
    if (this.#closed) {
      await client.end().catch(() => undefined);
      throw new DatabaseUnavailableError('database connection is closed');
    }
    this.#client = client;
    return client;
  }

  #deliver(channel: string, payload: string): void {
    for (const callback of this.#channels.get(channel) ?? []) {
      try {
        callback(payload);
      } catch (error) {
        this.logger?.error({ err: error, channel }, 'notification handler failed');
      }
    }
  }

  #handleLoss(client: pg.Client, error: Error | undefined): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    client.removeAllListeners('notification');
    client.end().catch(() => undefined);
    if (this.#closed) return;
    this.#lost = true;
    this.logger?.warn({ err: error }, 'database notification connection lost; reconnecting');
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    const delay = this.#retryDelayMs;
    this.#retryDelayMs = Math.min(this.#retryDelayMs * 2, this.backoff.maxMs);
    this.#retryTimer = setTimeout(() => void this.#reconnect(), delay);
    this.#retryTimer.unref();
  }

  async #reconnect(): Promise<void> {
    if (this.#closed) return;
    try {
      const client = await this.#connected();
      for (const channel of this.#channels.keys()) await this.#command(client, `LISTEN ${quoteIdentifier(channel)}`);
    } catch (error) {
      this.logger?.warn({ err: error, retryInMs: this.#retryDelayMs }, 'database notification connection still down');
      // A client that connected but failed to LISTEN is dropped; the next attempt starts clean.
      const client = this.#client;
      this.#client = undefined;
      await client?.end().catch(() => undefined);
      if (!this.#closed) this.#scheduleReconnect();
      return;
    }
    this.#lost = false;
    this.#retryDelayMs = this.backoff.initialMs;
    this.logger?.info('database notification connection restored');
    for (const callback of this.#reconnectCallbacks) {
      try {
        callback();
      } catch (error) {
        this.logger?.error({ err: error }, 'reconnect handler failed');
      }
    }
  }
}
