import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { DatabaseUnavailableError, LacreError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { parseInt8, quoteIdentifier } from './postgres.js';
import type { Database, Statement } from './types.js';
import { tryPidLock, type PidLock } from '../util/pid-lock.js';
import { ensurePrivateDirectory, restrictToOwner, UnsafeDirectoryError } from '../util/private-dir.js';

export interface EmbeddedOptions {
  /**
   * Directory holding the database (created 0700 if missing; refused when other users can write in it);
   * undefined = in memory, gone at close.
   */
  dataDir?: string;
  logger?: Logger;
}

const INT8_OID = 20;
const BYTEA_OID = 17;
const LOCK_FILE = 'lacre.lock';

/** Same value types as the pg backend: bigint as number, bytea as Buffer. */
const parsers = {
  [INT8_OID]: (text: string) => parseInt8(text),
  [BYTEA_OID]: (text: string) => Buffer.from(text.startsWith('\\x') ? text.slice(2) : text, 'hex'),
};

/** PGlite's SQL errors carry a SQLSTATE `code`; anything else (closed, wasm abort, I/O) means the store is unusable. */
function toEmbeddedError(error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return error;
  if (error instanceof LacreError) return error;
  return new DatabaseUnavailableError(`embedded database unavailable: ${(error as Error)?.message ?? String(error)}`, { cause: error });
}

/**
 * Embedded PostgreSQL (PGlite) in `dataDir`. One process at a time may open a data directory
 * (PGlite itself does not prevent a second one, which would corrupt it): a lacre.lock file holding
 * the owner's pid guards it, and a lock left by a dead process is taken over.
 */
export class EmbeddedDatabase implements Database {
  readonly kind = 'embedded' as const;
  #closed = false;

  private constructor(
    private readonly pglite: PGlite,
    private readonly releaseLock: () => void,
  ) {}

  static async open(options: EmbeddedOptions = {}): Promise<EmbeddedDatabase> {
    let releaseLock = (): void => undefined;
    let dataDir: string | undefined;
    if (options.dataDir !== undefined) {
      try {
        dataDir = ensurePrivateDirectory(options.dataDir, 'database.data_dir');
      } catch (error) {
        if (error instanceof UnsafeDirectoryError) throw error;
        throw new DatabaseUnavailableError(`cannot create database.data_dir ${options.dataDir}: ${(error as Error).message}`, { cause: error });
      }
      releaseLock = lockDataDir(dataDir);
    }
    try {
      const started = Date.now();
      const pglite = await PGlite.create({ ...(dataDir === undefined ? {} : { dataDir }), parsers });
      // PGlite unpacks a new database's ~1 000 files mode 0666 whatever the umask (and WAL segments are
      // recycled with the mode they had); the files PostgreSQL creates later are 0600. So: tighten after each open.
      const tightened = dataDir === undefined ? 0 : restrictToOwner(dataDir);
      if (tightened > 0) options.logger?.debug({ dataDir, tightened }, 'embedded database files made private to their owner');
      options.logger?.debug({ dataDir: dataDir ?? 'memory', ms: Date.now() - started }, 'embedded database opened');
      return new EmbeddedDatabase(pglite, releaseLock);
    } catch (error) {
      releaseLock();
      throw new DatabaseUnavailableError(`cannot open embedded database in ${dataDir ?? 'memory'}: ${(error as Error).message}`, { cause: error });
    }
  }

  async query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]> {
    this.#assertOpen();
    try {
      return (await this.pglite.query<Row>(sql, params)).rows;
    } catch (error) {
      throw toEmbeddedError(error);
    }
  }

  async queryInTransaction<Row = Record<string, unknown>>(statements: readonly Statement[]): Promise<Row[]> {
    this.#assertOpen();
    try {
      return await this.pglite.transaction(async (tx) => {
        let rows: Row[] = [];
        for (const statement of statements) rows = (await tx.query<Row>(statement.sql, statement.params)).rows;
        return rows;
      });
    } catch (error) {
      throw toEmbeddedError(error);
    }
  }

  async execTransaction(sql: string): Promise<void> {
    this.#assertOpen();
    try {
      await this.pglite.transaction(async (tx) => { await tx.exec(sql); });
    } catch (error) {
      throw toEmbeddedError(error);
    }
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    this.#assertOpen();
    // PGlite puts the name into LISTEN as written: quote it so case and odd characters match pg_notify's channel.
    const quoted = quoteIdentifier(channel);
    try {
      const unlisten = await this.pglite.listen(quoted, onNotify);
      return async () => {
        if (!this.#closed) await unlisten();
      };
    } catch (error) {
      throw toEmbeddedError(error);
    }
  }

  /** For parity with PostgresDatabase: the embedded connection is never lost, so this never fires. */
  onReconnect(_callback: () => void): () => void {
    return () => undefined;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.pglite.close();
    } finally {
      this.releaseLock();
    }
  }

  #assertOpen(): void {
    if (this.#closed) throw new DatabaseUnavailableError('embedded database is closed');
  }
}

const lockedInThisProcess = new Set<string>();

/** Takes `<dataDir>/lacre.lock`; returns its release function. */
function lockDataDir(dataDir: string): () => void {
  const lockPath = join(dataDir, LOCK_FILE);
  if (lockedInThisProcess.has(lockPath)) throw inUse(dataDir, process.pid);
  let lock: PidLock;
  try {
    lock = tryPidLock(lockPath);
  } catch (error) {
    throw new DatabaseUnavailableError(`cannot lock ${lockPath}: ${(error as Error).message}`, { cause: error });
  }
  if (!lock.acquired) throw inUse(dataDir, lock.owner);
  lockedInThisProcess.add(lockPath);
  return () => {
    if (!lockedInThisProcess.delete(lockPath)) return;
    lock.release();
  };
}

function inUse(dataDir: string, pid: number | undefined): DatabaseUnavailableError {
  return new DatabaseUnavailableError(
    `embedded database ${dataDir} is in use by process ${pid ?? '(unknown)'}: the embedded database allows one process at a time ` +
      `(stop it, or use PostgreSQL via database.url; if no such process runs, delete ${join(dataDir, LOCK_FILE)})`,
  );
}
