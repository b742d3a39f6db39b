/** The key store: identities (addresses with a preferred style) and their armored public keys, in SQL. */
import { readKey, type Key, type PublicKey } from 'openpgp';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/types.js';
import { errorMessage, KeyRejectedError } from '../errors.js';
import { checkKeyLimits, DEFAULT_KEY_LIMITS, fingerprintOf, readPublicKeys, UnusableKeyError, validateKey, type KeyLimits } from '../crypto/keys.js';
import { addressLocks } from './address-lock.js';
import { canonicalAddress, InvalidAddressError, normaliseAddress, unicodeDomainVariant } from './address.js';
import type { EncryptionStyle, KeyStatus } from './types.js';

export type KeysConfig = Config['keys'];

export interface KeyRow {
  id: string;
  email: string;
  style: EncryptionStyle;
  fingerprint: string;
  armored: string;
  status: KeyStatus;
  expiresAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface ImportOptions {
  /** Store the key for these addresses instead of the ones in its user IDs (like `--email`). */
  emails?: string[];
  status?: KeyStatus;
  /** Sets the identities' style; unset keeps an existing identity's style ('mime' for a new one). */
  style?: EncryptionStyle;
  now?: Date;
}

export type ImportOutcome =
  /** Stored (inserted, or an existing row with this fingerprint refreshed). */
  | { kind: 'imported'; fingerprint: string; emails: string[]; inserted: string[]; expiresAt: Date | null }
  /** The key is revoked/expired/cannot encrypt, and was already stored: the stored copy now carries that news. */
  | { kind: 'updated-unusable'; fingerprint: string; emails: string[]; reason: string }
  | { kind: 'refused'; fingerprint: string | null; reason: string };

const FINGERPRINT = /^(?:0x)?[0-9A-F]{40}(?:[0-9A-F]{24})?$/i;

const SELECT_ROWS = `
  select k.id::text as id, k.email, i.style, k.fingerprint, k.armored, k.status,
         k.expires_at, k.created_at, k.updated_at
    from lacre_keys k join lacre_identities i on i.email = k.email`;

/** A KeyRow as SELECT_ROWS returns it: the timestamps under their column names, not yet made Dates. */
type RawKeyRow = Omit<KeyRow, 'expiresAt' | 'createdAt' | 'updatedAt'> & {
  expires_at: Date | string | null;
  created_at: Date | string;
  updated_at: Date | string;
};

/** What the store needs of the keys section; max_key_bytes defaults to the schema's default. */
export type KeyStoreConfig = Pick<KeysConfig, 'local_part_case_sensitive'> & Partial<Pick<KeysConfig, 'max_key_bytes'>>;

export class KeyStore {
  /** What an import may bring in (keys.max_key_bytes, and at most MAX_USER_IDS user IDs per key). */
  readonly limits: KeyLimits;

  constructor(
    private readonly db: Database,
    private readonly config: KeyStoreConfig,
  ) {
    this.limits = { ...DEFAULT_KEY_LIMITS, ...(config.max_key_bytes === undefined ? {} : { maxKeyBytes: config.max_key_bytes }) };
  }

  /** Imports one public key, armored or binary. Throws KeyRejectedError when refused. */
  async importKey(armored: string | Uint8Array, options: ImportOptions = {}): Promise<Exclude<ImportOutcome, { kind: 'refused' }>> {
    const keys = await readPublicKeys(armored, this.limits);
    if (keys.length !== 1) throw new KeyRejectedError(`expected one public key, found ${keys.length}`);
    const outcome = await this.importParsedKey(keys[0]!, options);
    if (outcome.kind === 'refused') throw new KeyRejectedError(outcome.reason);
    return outcome;
  }

  /** Imports every key of the input (armor blocks or binary); each key gets its own outcome, refusals included. */
  async importKeys(armored: string | Uint8Array, options: ImportOptions = {}): Promise<ImportOutcome[]> {
    let keys: Key[];
    try {
      keys = await readPublicKeys(armored, this.limits);
    } catch (error) {
      if (error instanceof KeyRejectedError) return [{ kind: 'refused', fingerprint: null, reason: error.message }];
      throw error;
    }
    const outcomes: ImportOutcome[] = [];
    for (const key of keys) outcomes.push(await this.importParsedKey(key, options));
    return outcomes;
  }

  async list(): Promise<KeyRow[]> {
    const rows = await this.db.query<RawKeyRow>(`${SELECT_ROWS} order by lower(k.email) collate "C", k.email collate "C", k.created_at, k.id`);
    return rows.map(toKeyRow);
  }

  /** All keys (any status) of an address, compared case-insensitively per configuration. */
  async show(address: string): Promise<KeyRow[]> {
    const rows = await this.db.query<RawKeyRow>(`${SELECT_ROWS} where ${this.emailMatch('k.email')} order by k.created_at, k.id`, this.storedForms(address));
    return rows.map(toKeyRow);
  }

  /** Confirmed keys of an address: the ones mail may be encrypted to. */
  async confirmedKeysFor(address: string): Promise<KeyRow[]> {
    const rows = await this.db.query<RawKeyRow>(
      `${SELECT_ROWS} where ${this.emailMatch('k.email')} and k.status = 'confirmed' order by k.created_at, k.id`,
      this.storedForms(address),
    );
    return rows.map(toKeyRow);
  }

  /**
   * Deletes by fingerprint (that key, for every address; addresses left without keys go too) or by address (the
   * identity and all its keys). Resolves to the number of key rows deleted.
   */
  async delete(addressOrFingerprint: string): Promise<number> {
    const compact = addressOrFingerprint.replace(/\s+/g, '');
    if (FINGERPRINT.test(compact)) return this.deleteFingerprint(compact.replace(/^0x/i, '').toUpperCase());
    const rows = await this.db.query<{ keys: number | string }>(
      `with gone as (delete from lacre_identities where ${this.emailMatch('email')} returning email)
       select count(*)::int as keys from lacre_keys where email in (select email from gone)`,
      this.storedForms(addressOrFingerprint),
    );
    return Number(rows[0]?.keys ?? 0);
  }

  // ---- Administration (the admin socket and `lacre keys`): disable, restore, the pending list ----

  /**
   * Disables by fingerprint (that key, for every address) or by address (all its keys): confirmed and pending
   * rows become 'disabled', kept for restore(). Resolves to the number of key rows changed.
   */
  async disable(addressOrFingerprint: string): Promise<number> {
    const fingerprint = asFingerprint(addressOrFingerprint);
    const [where, params] =
      fingerprint === undefined ? [this.emailMatch('email'), this.storedForms(addressOrFingerprint)] : ['fingerprint = $1', [fingerprint]];
    // The open confirmation links of a key the admin disables die with it: an earlier upload's link must not
    // bring it back (lacre_key_requests, the key service's).
    const rows = await this.db.query<{ email: string }>(
      `with disabled as (update lacre_keys set status = 'disabled', updated_at = now()
                          where ${where} and status in ('confirmed', 'pending') returning email, fingerprint),
            closed as (update lacre_key_requests r set expires_at = least(r.expires_at, now())
                        from disabled d
                        where r.email = d.email and r.fingerprint = d.fingerprint and r.action = 'publish' and r.used_at is null
                       returning 1)
       select email from disabled`,
      params,
    );
    return rows.length;
  }

  /**
   * Makes a disabled key confirmed again, for `address` only or for every address it is stored for. It becomes
   * the address's key, as a confirmed upload does: the address's other confirmed keys become 'disabled' (one
   * statement, so mail never sees both or neither), under the lock of each address concerned, as the key service's
   * confirmations take it (keys/address-lock.ts): a confirmation racing this restore comes wholly before or after it,
   * so the address never ends with two confirmed keys. Resolves to the fingerprint as stored, the addresses restored
   * and the number of keys so disabled.
   */
  async restore(fingerprint: string, address?: string): Promise<{ fingerprint: string; emails: string[]; disabled: number }> {
    const wanted = asFingerprint(fingerprint);
    if (wanted === undefined) throw new KeyRejectedError(`not a fingerprint: ${fingerprint}`);
    const [byAddress, params] = address === undefined ? ['', [wanted]] : [` and ${this.emailMatch('email')}`, [...this.storedForms(address), wanted]];
    const fingerprintParam = `$${params.length}`;
    const targets = `select id, email from lacre_keys where fingerprint = ${fingerprintParam} and status = 'disabled'${byAddress}`;
    const locked = (await this.db.query<{ email: string }>(`select distinct email from (${targets}) target`, params)).map((row) => row.email);
    if (locked.length === 0) return { fingerprint: wanted, emails: [], disabled: 0 };
    // Only the addresses locked: a row of another address that became disabled since is left as it is.
    const rows = await this.db.queryInTransaction<{ email: string; disabled: number | string }>([
      ...addressLocks(locked),
      {
        sql: `with target as (${targets} and email in (select jsonb_array_elements_text($${params.length + 1}::jsonb))),
                   displaced as (update lacre_keys set status = 'disabled', updated_at = now()
                                  where email in (select email from target) and status = 'confirmed' returning 1),
                   restored as (update lacre_keys set status = 'confirmed', updated_at = now()
                                 where id in (select id from target) returning email)
              select email, (select count(*) from displaced)::int as disabled from restored order by lower(email) collate "C", email collate "C"`,
        params: [...params, JSON.stringify(locked)],
      },
    ]);
    return { fingerprint: wanted, emails: rows.map((row) => row.email), disabled: Number(rows[0]?.disabled ?? 0) };
  }

  /** Keys waiting for their owner's confirmation (never used for mail), oldest first. */
  async pendingList(): Promise<KeyRow[]> {
    const rows = await this.db.query<RawKeyRow>(`${SELECT_ROWS} where k.status = 'pending' order by k.created_at, k.id`);
    return rows.map(toKeyRow);
  }

  // ---- end of administration ----

  /** The form an address is compared in (throws InvalidAddressError). */
  lookupKey(address: string): string {
    return normaliseAddress(address, { localPartCaseSensitive: this.config.local_part_case_sensitive });
  }

  /**
   * The two spellings a stored row of this address may have, for emailMatch's $1 and $2: the canonical one (an
   * A-label domain), and the Unicode one that rows stored before addresses were canonicalised may carry. Matching
   * both at lookup keeps those rows working without rewriting them (no migration: SQL has no IDNA).
   */
  private storedForms(address: string): [string, string] {
    const canonical = this.lookupKey(address);
    return [canonical, unicodeDomainVariant(canonical) ?? canonical];
  }

  private async deleteFingerprint(fingerprint: string): Promise<number> {
    // Both statements see the rows as they were before this statement: hence "no other fingerprint" below.
    const rows = await this.db.query<{ keys: number | string }>(
      `with deleted as (delete from lacre_keys where fingerprint = $1 returning email),
            orphans as (delete from lacre_identities i
                         where i.email in (select email from deleted)
                           and not exists (select 1 from lacre_keys k where k.email = i.email and k.fingerprint <> $1)
                        returning 1)
       select (select count(*) from deleted)::int as keys, (select count(*) from orphans)::int as orphans`,
      [fingerprint],
    );
    return Number(rows[0]?.keys ?? 0);
  }

  private async importParsedKey(parsed: Key, options: ImportOptions): Promise<ImportOutcome> {
    const now = options.now ?? new Date();
    const fingerprint = fingerprintOf(parsed);
    let key: Key;
    try {
      key = await this.mergeWithStored(parsed, now);
    } catch (error) {
      return refused(fingerprint, `cannot be merged with the stored copy: ${errorMessage(error)}`);
    }
    try {
      checkKeyLimits(key, this.limits);
      const validated = await validateKey(key, now);
      const emails = options.emails ? this.explicitAddresses(options.emails, fingerprint) : this.userIdAddresses(validated.emails, fingerprint);
      const inserted = await this.upsert(emails, fingerprint, validated.key.armor(), validated.expiresAt, options);
      return { kind: 'imported', fingerprint, emails, inserted, expiresAt: validated.expiresAt };
    } catch (error) {
      if (error instanceof UnusableKeyError) return this.recordUnusable(key, error);
      if (error instanceof KeyRejectedError || error instanceof InvalidAddressError) return refused(fingerprint, error.message);
      throw error;
    }
  }

  /** Merges a re-uploaded key into the stored copy, so that signatures (revocations above all) are never dropped. */
  private async mergeWithStored(key: Key, now: Date): Promise<Key> {
    const rows = await this.db.query<{ armored: string }>('select armored from lacre_keys where fingerprint = $1 order by updated_at desc limit 1', [
      fingerprintOf(key),
    ]);
    if (rows.length === 0) return key;
    const stored = await readKey({ armoredKey: rows[0]!.armored });
    return stored.update(key as PublicKey, now);
  }

  /** A stored key that just became unusable (typically a revocation arriving): keep it, with the news. */
  private async recordUnusable(key: Key, error: UnusableKeyError): Promise<ImportOutcome> {
    const rows = await this.db.query<{ email: string }>(
      `update lacre_keys set armored = $2, updated_at = now() where fingerprint = $1 returning email`,
      [error.fingerprint, key.armor()],
    );
    if (rows.length === 0) return refused(error.fingerprint, error.message);
    return { kind: 'updated-unusable', fingerprint: error.fingerprint, emails: rows.map((row) => row.email), reason: error.message };
  }

  private explicitAddresses(emails: string[], fingerprint: string): string[] {
    if (emails.length === 0) throw new KeyRejectedError(`no address given for key ${fingerprint}`);
    return [...new Set(emails.map(canonicalAddress))];
  }

  /** User-ID addresses that are addresses at all (a junk user ID does not sink the key). */
  private userIdAddresses(emails: string[], fingerprint: string): string[] {
    const addresses = new Set<string>();
    for (const email of emails) {
      try {
        addresses.add(canonicalAddress(email));
      } catch (error) {
        if (!(error instanceof InvalidAddressError)) throw error;
      }
    }
    if (addresses.size === 0) {
      throw new KeyRejectedError(`key ${fingerprint} has no user ID with a valid email address; give the address explicitly (--email)`);
    }
    return [...addresses];
  }

  /** Upserts identities and key rows in one statement (atomic); returns the addresses that got a new key row. */
  private async upsert(emails: string[], fingerprint: string, armored: string, expiresAt: Date | null, options: ImportOptions): Promise<string[]> {
    const targets = await this.resolveExistingIdentities(emails);
    const rows = await this.db.query<{ email: string; inserted: boolean }>(
      `with wanted as (select jsonb_array_elements_text($1::jsonb) as email),
            identity as (
              insert into lacre_identities (email, style)
              select email, coalesce($2::text, 'mime') from wanted
              on conflict (email) do update
                 set style = coalesce($2::text, lacre_identities.style),
                     updated_at = case when coalesce($2::text, lacre_identities.style) = lacre_identities.style
                                       then lacre_identities.updated_at else now() end
              returning email)
       insert into lacre_keys (email, fingerprint, armored, status, expires_at)
       select email, $3, $4, $5, $6::timestamptz from identity
       on conflict (email, fingerprint) do update
          set armored = excluded.armored, status = excluded.status, expires_at = excluded.expires_at, updated_at = now()
       returning email, (xmax = 0) as inserted`,
      [JSON.stringify(targets), options.style ?? null, fingerprint, armored, options.status ?? 'confirmed', expiresAt?.toISOString() ?? null],
    );
    return rows.filter((row) => row.inserted).map((row) => row.email);
  }

  /**
   * An address joins the identity already stored for it instead of becoming a second one: "Alice@x" an existing
   * "alice@x" (case-insensitive local parts), "dave@xn--exmple-cua.org" an "dave@exämple.org" stored before domains
   * were stored as A-labels.
   */
  private async resolveExistingIdentities(emails: string[]): Promise<string[]> {
    const resolved: string[] = [];
    for (const email of emails) {
      const [canonical, unicode] = this.storedForms(email);
      const rows = await this.db.query<{ email: string }>(
        `select email from lacre_identities where ${this.emailMatch('email')} order by (email = $3) desc, created_at limit 1`,
        [canonical, unicode, email],
      );
      const target = rows[0]?.email ?? email;
      if (!resolved.includes(target)) resolved.push(target);
    }
    return resolved;
  }

  /** Matches `column` against the storedForms() given as $1 and $2. */
  private emailMatch(column: string): string {
    return this.config.local_part_case_sensitive ? `${column} in ($1, $2)` : `lower(${column}) in (lower($1), lower($2))`;
  }
}

/** The fingerprint `text` names (spaces and 0x allowed), upper case; undefined when it is not one. */
function asFingerprint(text: string): string | undefined {
  const compact = text.replace(/\s+/g, '');
  return FINGERPRINT.test(compact) ? compact.replace(/^0x/i, '').toUpperCase() : undefined;
}

function refused(fingerprint: string | null, reason: string): ImportOutcome {
  return { kind: 'refused', fingerprint, reason };
}

function toKeyRow(row: RawKeyRow): KeyRow {
  return {
    id: String(row.id),
    email: row.email,
    style: row.style,
    fingerprint: row.fingerprint,
    armored: row.armored,
    status: row.status,
    expiresAt: row.expires_at === null ? null : new Date(row.expires_at),
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}
