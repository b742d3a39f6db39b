/**
 * The key directory the filter asks for each recipient: confirmed keys from the store, parsed once and cached per
 * normalised address (found and not found alike), dropped wholesale on NOTIFY lacre_keys_changed or after
 * keys.cache_ttl_seconds. Usability is re-checked at every lookup, because a cached key can expire while cached.
 */
import type { PublicKey } from 'openpgp';
import type { OpenedDatabase } from '../db/open.js';
import type { Database } from '../db/types.js';
import type { Logger } from '../log/logger.js';
import { DatabaseUnavailableError, errorMessage } from '../errors.js';
import { readStoredKey, usableEncryptionKey } from '../crypto/keys.js';
import { InvalidAddressError, withoutExtension } from './address.js';
import { KeyStore, type KeyRow, type KeysConfig } from './store.js';
import type { EncryptionStyle, KeyDirectory, RecipientKeys } from './types.js';

export const KEYS_CHANGED_CHANNEL = 'lacre_keys_changed';

export interface KeyDirectoryStats {
  /** Addresses currently cached. */
  size: number;
  hits: number;
  misses: number;
  /** Whole-cache drops (NOTIFY, notification connection re-established, explicit). */
  invalidations: number;
}

export interface CachedKeyDirectory extends KeyDirectory {
  stats(): KeyDirectoryStats;
  /** Drops every cached entry. */
  invalidate(): void;
}

export interface KeyDirectoryOptions {
  /** The clock usability is judged by; tests move it forward. */
  clock?: () => Date;
  /** Most addresses kept (the oldest go first), so that mail to endless distinct addresses cannot grow memory. */
  maxEntries?: number;
}

const DEFAULT_MAX_ENTRIES = 50_000;

interface CachedKey {
  fingerprint: string;
  key: PublicKey | null;
  /** null while usable: the moment it stops being usable (null = never); when unusable: why. */
  usableUntil: Date | null;
  unusableReason: string | null;
}

interface CacheEntry {
  expiresAtMs: number;
  style: EncryptionStyle;
  /** Confirmed keys only; empty means the address has none. */
  keys: CachedKey[];
}

/** Any Database; one that reports NOTIFY-connection loss (OpenedDatabase) also gets the cache dropped then. */
export type DirectoryDatabase = Database & Partial<Pick<OpenedDatabase, 'onReconnect'>>;

/** The keys section without what only imports and the key service use. */
export type KeyDirectoryConfig = Omit<KeysConfig, 'max_key_bytes' | 'domains'>;

export async function createKeyDirectory(
  db: DirectoryDatabase,
  config: KeyDirectoryConfig,
  logger: Logger,
  options: KeyDirectoryOptions = {},
): Promise<CachedKeyDirectory> {
  const directory = new CachingKeyDirectory(db, config, logger, options.clock ?? (() => new Date()), options.maxEntries ?? DEFAULT_MAX_ENTRIES);
  await directory.start();
  return directory;
}

class CachingKeyDirectory implements CachedKeyDirectory {
  private readonly store: KeyStore;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inFlight = new Map<string, Promise<CacheEntry>>();
  private generation = 0;
  private hits = 0;
  private misses = 0;
  private invalidations = 0;
  private unlisten: (() => Promise<void>) | null = null;
  private stopReconnectWatch: (() => void) | null = null;
  private closed = false;

  constructor(
    private readonly db: DirectoryDatabase,
    private readonly config: KeyDirectoryConfig,
    private readonly logger: Logger,
    private readonly clock: () => Date,
    private readonly maxEntries: number,
  ) {
    this.store = new KeyStore(db, config);
  }

  async start(): Promise<void> {
    this.stopReconnectWatch =
      this.db.onReconnect?.(() => {
        this.logger.info('key-change notifications were interrupted; dropping key cache');
        this.invalidate();
      }) ?? null;
    try {
      this.unlisten = await this.db.listen(KEYS_CHANGED_CHANNEL, (address) => {
        this.logger.debug({ address }, 'keys changed; dropping key cache');
        this.invalidate();
      });
    } catch (error) {
      this.stopReconnectWatch?.();
      // Without notifications the cache would serve stale answers (a new key ignored): refuse to run that way.
      throw new DatabaseUnavailableError(`cannot listen for key changes: ${errorMessage(error)}`, { cause: error });
    }
  }

  /** The full address's keys; when it has none, those of the address without its extension (alice+tag@ → alice@). */
  async lookup(address: string): Promise<RecipientKeys> {
    if (this.closed) throw new DatabaseUnavailableError('key directory is closed');
    const lookupKeys = this.lookupKeysOf(address);
    if (lookupKeys.length === 0) return { kind: 'none', address };
    let entry = await this.entryFor(lookupKeys[0]!);
    if (entry.keys.length === 0 && lookupKeys[1] !== undefined) entry = await this.entryFor(lookupKeys[1]);
    return this.evaluate(address, entry, this.clock());
  }

  /** The address's lookup key, then its base address's when it has an extension; none for what is not an address. */
  private lookupKeysOf(address: string): string[] {
    try {
      const full = this.store.lookupKey(address);
      const base = withoutExtension(address, this.config.recipient_delimiter);
      const baseKey = base === undefined ? undefined : this.store.lookupKey(base);
      return baseKey === undefined || baseKey === full ? [full] : [full, baseKey];
    } catch (error) {
      // No key can be stored under something that is not an address.
      if (error instanceof InvalidAddressError) return [];
      throw error;
    }
  }

  stats(): KeyDirectoryStats {
    return { size: this.cache.size, hits: this.hits, misses: this.misses, invalidations: this.invalidations };
  }

  invalidate(): void {
    this.generation += 1;
    this.invalidations += 1;
    this.cache.clear();
    this.inFlight.clear();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    this.stopReconnectWatch?.();
    const unlisten = this.unlisten;
    this.unlisten = null;
    if (unlisten) await unlisten().catch((error: unknown) => this.logger.warn({ err: error }, 'stopping key-change listener failed'));
  }

  private async entryFor(lookupKey: string): Promise<CacheEntry> {
    const cached = this.cache.get(lookupKey);
    if (cached && cached.expiresAtMs > Date.now()) {
      this.hits += 1;
      return cached;
    }
    this.misses += 1;
    const pending = this.inFlight.get(lookupKey);
    if (pending) return pending;
    const generation = this.generation;
    const loading = this.load(lookupKey)
      .then((entry) => {
        // A change notified while we were reading may not be in what we read: use it once, do not keep it.
        if (generation === this.generation && this.config.cache_ttl_seconds > 0) this.remember(lookupKey, entry);
        return entry;
      })
      .finally(() => {
        if (this.inFlight.get(lookupKey) === loading) this.inFlight.delete(lookupKey);
      });
    this.inFlight.set(lookupKey, loading);
    return loading;
  }

  private remember(lookupKey: string, entry: CacheEntry): void {
    this.cache.delete(lookupKey); // re-inserted last: Map order is the eviction order
    this.cache.set(lookupKey, entry);
    while (this.cache.size > this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
  }

  private async load(lookupKey: string): Promise<CacheEntry> {
    let rows: KeyRow[];
    try {
      rows = await this.store.confirmedKeysFor(lookupKey);
    } catch (error) {
      // Never "no key": that would send plaintext to someone who has one. Cached answers stay (see onReconnect).
      if (error instanceof DatabaseUnavailableError) throw error;
      throw new DatabaseUnavailableError(`key lookup failed: ${errorMessage(error)}`, { cause: error });
    }
    const now = this.clock();
    return {
      expiresAtMs: Date.now() + this.config.cache_ttl_seconds * 1000,
      style: styleFor(rows, lookupKey),
      keys: await Promise.all(rows.map((row) => parseStoredKey(row, now))),
    };
  }

  private async evaluate(address: string, entry: CacheEntry, now: Date): Promise<RecipientKeys> {
    if (entry.keys.length === 0) return { kind: 'none', address };
    const usable: PublicKey[] = [];
    const reasons: string[] = [];
    for (const cached of entry.keys) {
      await refreshIfExpired(cached, now);
      if (cached.key && cached.unusableReason === null) usable.push(cached.key);
      else reasons.push(`key ${cached.fingerprint} ${cached.unusableReason ?? 'cannot be read'}`);
    }
    if (usable.length > 0) return { kind: 'usable', address, style: entry.style, keys: usable };
    return { kind: 'unusable', address, reason: reasons.join('; ') };
  }
}

async function parseStoredKey(row: KeyRow, now: Date): Promise<CachedKey> {
  const { key, usability } = await readStoredKey(row.armored, now);
  return usability.usable
    ? { fingerprint: row.fingerprint, key, usableUntil: usability.expiresAt, unusableReason: null }
    : { fingerprint: row.fingerprint, key, usableUntil: null, unusableReason: usability.reason };
}

/** Cheap check on the cached expiry; the full check only once that moment has passed (another subkey may remain). */
async function refreshIfExpired(cached: CachedKey, now: Date): Promise<void> {
  if (!cached.key || cached.unusableReason !== null || cached.usableUntil === null || now < cached.usableUntil) return;
  const usability = await usableEncryptionKey(cached.key, now);
  if (usability.usable) cached.usableUntil = usability.expiresAt;
  else cached.unusableReason = usability.reason;
}

/** Style of the identity spelled exactly like the lookup key, else of the first one found. */
function styleFor(rows: KeyRow[], lookupKey: string): EncryptionStyle {
  return (rows.find((row) => row.email === lookupKey) ?? rows[0])?.style ?? 'mime';
}
