/**
 * Incoming Box users: addresses (and aliases) mapped to a user UUID (lacre_box_users), and per-user tokens
 * stored as SHA-256 hashes (lacre_box_tokens). A user exists while some address maps to it or it has a token.
 */
import { randomUUID } from 'node:crypto';
import type { Database } from '../db/types.js';
import { LacreError } from '../errors.js';
import { canonicalAddress, normaliseAddress, unicodeDomainVariant } from '../keys/address.js';
import { hashToken, issueToken, tokenMatches } from '../util/secret-token.js';

export interface BoxUserOptions {
  /** Same meaning as keys.local_part_case_sensitive; domains are always case-insensitive. */
  local_part_case_sensitive?: boolean;
}

export interface BoxUserEntry {
  email: string;
  user: string;
  createdAt: Date;
}

export class BoxUserError extends LacreError {}

/** How many hex digits of a token's SHA-256 name it: safe to show (the hash is not the secret), short to type. */
export const TOKEN_ID_LENGTH = 12;

/** A token as the box shows it: never the token, only the start of its hash. */
export interface BoxTokenEntry {
  id: string;
  createdAt: Date;
}

/** Which tokens to revoke: every one of the user's, or one named by its id (a hash prefix) or by the token itself. */
export type TokenSelector = { all: true } | { reference: string };

export interface RevokedTokens {
  user: string;
  tokens: BoxTokenEntry[];
  /** Blobs the revoked tokens held reserved with POST ["PROCESSING"], now PENDING again. */
  releasedBlobs: number;
}

/** A token id as `list` shows it, or a longer prefix of the hash: 12 to 64 hex digits. */
const TOKEN_ID = new RegExp(`^[0-9a-fA-F]{${TOKEN_ID_LENGTH},64}$`);

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** LEAP's spelling of the same id: Soledad's users are `uuid4().hex`, 32 lower-case hex digits without dashes. */
const UNDASHED_UUID = /^[0-9a-f]{32}$/;

/** A user id as the box names it: a lower-case canonical UUID. */
export function isUserId(value: string): boolean {
  return UUID.test(value);
}

/**
 * The box's id for a user named either way: the canonical UUID itself, or LEAP's 32-digit spelling of it (as
 * Soledad clients and a Soledad server's blob directory name users); undefined for anything else.
 */
export function canonicalUserId(value: string): string | undefined {
  if (UUID.test(value)) return value;
  if (!UNDASHED_UUID.test(value)) return undefined;
  return `${value.slice(0, 8)}-${value.slice(8, 12)}-${value.slice(12, 16)}-${value.slice(16, 20)}-${value.slice(20)}`;
}

/** Address → user lookup for the filter (which recipients go to which box). */
export function createBoxUserDirectory(db: Database, options: BoxUserOptions = {}): { userFor(address: string): Promise<string | undefined> } {
  const users = new BoxUserStore(db, options);
  return { userFor: (address) => users.userFor(address) };
}

export class BoxUserStore {
  readonly #caseSensitive: boolean;

  constructor(
    private readonly db: Database,
    options: BoxUserOptions = {},
  ) {
    this.#caseSensitive = options.local_part_case_sensitive ?? false;
  }

  /** The user an address maps to (an invalid address maps to none). */
  async userFor(address: string): Promise<string | undefined> {
    let canonical: string;
    try {
      canonical = canonicalAddress(address);
    } catch {
      return undefined;
    }
    return (await this.#matching(canonical))?.user_uuid;
  }

  /**
   * Maps an address to `user` (a new UUID when not given). An address already mapped to that same user is
   * left alone; one mapped to another user is an error. Returns the user and whether a row was added.
   */
  async add(address: string, user?: string): Promise<{ user: string; added: boolean }> {
    const canonical = canonicalAddress(address);
    const named = user === undefined ? undefined : canonicalUserId(user);
    if (user !== undefined && named === undefined) throw new BoxUserError(`"${user}" is not a user id (a lower-case UUID, with or without dashes)`);
    user = named;
    const existing = await this.#matching(canonical);
    if (existing) {
      if (user === undefined || existing.user_uuid === user) return { user: existing.user_uuid, added: false };
      throw new BoxUserError(`${existing.email} already belongs to user ${existing.user_uuid}`);
    }
    const target = user ?? randomUUID();
    await this.db.query('INSERT INTO lacre_box_users (email, user_uuid) VALUES ($1, $2)', [canonical, target]);
    return { user: target, added: true };
  }

  async list(): Promise<BoxUserEntry[]> {
    const rows = await this.db.query<{ email: string; user_uuid: string; created_at: Date }>(
      'SELECT email, user_uuid, created_at FROM lacre_box_users ORDER BY user_uuid, email',
    );
    return rows.map((row) => ({ email: row.email, user: row.user_uuid, createdAt: new Date(row.created_at) }));
  }

  /** Removes an address mapping (the user's blobs and tokens stay); returns how many rows went. */
  async delete(address: string): Promise<number> {
    const existing = await this.#matching(canonicalAddress(address));
    if (!existing) return 0;
    const rows = await this.db.query('DELETE FROM lacre_box_users WHERE email = $1 RETURNING email', [existing.email]);
    return rows.length;
  }

  /** A user exists while an address maps to it or it has a token. */
  async exists(user: string): Promise<boolean> {
    if (!isUserId(user)) return false;
    const [row] = await this.db.query<{ known: boolean }>(
      `SELECT EXISTS (SELECT 1 FROM lacre_box_users WHERE user_uuid = $1)
           OR EXISTS (SELECT 1 FROM lacre_box_tokens WHERE user_uuid = $1) AS known`,
      [user],
    );
    return row?.known === true;
  }

  /** Creates a token for an existing user (named by UUID or by one of its addresses); the token is returned once. */
  async createToken(userOrAddress: string): Promise<{ user: string; token: string }> {
    const user = await this.#existingUser(userOrAddress, ': add an address first (lacre inbox user add ADDR)');
    const { token, hash } = issueToken();
    await this.db.query('INSERT INTO lacre_box_tokens (token_hash, user_uuid) VALUES ($1, $2)', [hash, user]);
    return { user, token };
  }

  /** The tokens of an existing user (by UUID or address), oldest first, by id. */
  async listTokens(userOrAddress: string): Promise<{ user: string; tokens: BoxTokenEntry[] }> {
    const user = await this.#existingUser(userOrAddress);
    return { user, tokens: [...tokenEntries(await this.#tokenRows(user)).values()] };
  }

  /**
   * Deletes the selected tokens of an existing user. The box reads the tokens at every request, so the next
   * request with a revoked one is 401. Blobs a revoked token had reserved with POST ["PROCESSING"] are PENDING
   * again in the same statement: nobody can finish them under that credential any more.
   */
  async revokeTokens(userOrAddress: string, selector: TokenSelector): Promise<RevokedTokens> {
    const user = await this.#existingUser(userOrAddress);
    const known = tokenEntries(await this.#tokenRows(user));
    const hash = 'all' in selector ? null : selectedHash(user, [...known.keys()], selector.reference);
    const rows = await this.db.query<TokenRow>(
      `DELETE FROM lacre_box_tokens WHERE user_uuid = $1 AND ($2::text IS NULL OR token_hash = $2)
       RETURNING token_hash, created_at`,
      [user, hash],
    );
    // Revoked meanwhile by another command: as unknown as if it had never been there.
    if (hash !== null && rows.length === 0) throw new BoxUserError(`user ${user} has no token ${known.get(hash)?.id} (any more)`);
    // Named as `list` named them (one created meanwhile and taken by --all: by its first 12 digits).
    const tokens = rows.map((row) => known.get(row.token_hash) ?? tokenEntries([row]).get(row.token_hash)!).sort(byCreation);
    // A statement of its own, after the DELETE committed: a reservation that held the token FOR SHARE (reserveFor)
    // made the DELETE wait for it, and is seen here.
    const [released] = await this.db.query<{ released: number }>(
      `WITH released AS (
         UPDATE lacre_blobs SET state = 'PENDING', reserved_at = NULL, reserved_by = NULL
          WHERE user_uuid = $1 AND state = 'PROCESSING' AND reserved_by = ANY($2::text[])
          RETURNING 1
       )
       SELECT count(*)::int AS released FROM released`,
      [user, rows.map((row) => row.token_hash)],
    );
    return { user, tokens, releasedBlobs: Number(released?.released ?? 0) };
  }

  /** True when `token` is one of the user's tokens; hashes are compared in constant time. */
  async verifyToken(user: string, token: string): Promise<boolean> {
    if (!isUserId(user)) return false;
    const rows = await this.db.query<{ token_hash: string }>('SELECT token_hash FROM lacre_box_tokens WHERE user_uuid = $1', [user]);
    return tokenMatches(token, rows.map((row) => row.token_hash));
  }

  /** The user named by UUID (either spelling) or by one of its addresses, when it exists. */
  async #existingUser(userOrAddress: string, hint = ''): Promise<string> {
    const user = userOrAddress.includes('@') ? await this.userFor(userOrAddress) : (canonicalUserId(userOrAddress.toLowerCase()) ?? userOrAddress);
    if (user === undefined || !(await this.exists(user))) throw new BoxUserError(`no box user ${nameable(userOrAddress)}${hint}`);
    return user;
  }

  async #tokenRows(user: string): Promise<TokenRow[]> {
    return this.db.query<TokenRow>('SELECT token_hash, created_at FROM lacre_box_tokens WHERE user_uuid = $1 ORDER BY created_at, token_hash', [user]);
  }

  /**
   * The stored row an address matches: the exact one first, then (case-insensitive local part) any case variant.
   * A row stored with a Unicode domain, before domains were stored as A-labels, matches too.
   */
  async #matching(canonical: string): Promise<{ email: string; user_uuid: string } | undefined> {
    const compared = this.#caseSensitive ? canonical : normaliseAddress(canonical, { localPartCaseSensitive: false });
    const forms = [compared, unicodeDomainVariant(compared) ?? compared];
    const column = this.#caseSensitive ? 'email' : 'lower(email)';
    const [row] = await this.db.query<{ email: string; user_uuid: string }>(
      `SELECT email, user_uuid FROM lacre_box_users WHERE ${column} IN ($1, $2) ORDER BY (email = $3) DESC, email LIMIT 1`,
      [...forms, canonical],
    );
    return row;
  }
}

/** What an error may repeat of a user argument: an address or a user id, never what may be a token given in its place. */
function nameable(userOrAddress: string): string {
  return userOrAddress.includes('@') || isUserId(canonicalUserId(userOrAddress.toLowerCase()) ?? userOrAddress) ? userOrAddress : '(not an address or a user id)';
}

function byCreation(a: BoxTokenEntry, b: BoxTokenEntry): number {
  return a.createdAt.getTime() - b.createdAt.getTime();
}

interface TokenRow {
  token_hash: string;
  created_at: Date;
}

/**
 * Each token (by hash, in the rows' order) named by the first 12 hex digits of its hash, or as many more as tell
 * it from the user's other tokens (as git shortens commit ids), so every id shown can be given back to `revoke`.
 */
function tokenEntries(rows: readonly TokenRow[]): Map<string, BoxTokenEntry> {
  const entries = new Map<string, BoxTokenEntry>();
  for (const row of rows) {
    const shared = Math.max(0, ...rows.filter((other) => other !== row).map((other) => commonPrefixLength(row.token_hash, other.token_hash)));
    entries.set(row.token_hash, { id: row.token_hash.slice(0, Math.max(TOKEN_ID_LENGTH, shared + 1)), createdAt: new Date(row.created_at) });
  }
  return entries;
}

/**
 * The one hash of `hashes` that `reference` names: the token itself (hashed), or an id (a hash prefix of 12 to
 * 64 hex digits) that begins exactly one of them. A reference that is not an id may be a secret: errors never
 * repeat it.
 */
function selectedHash(user: string, hashes: readonly string[], reference: string): string {
  const asToken = hashToken(reference);
  if (hashes.includes(asToken)) return asToken;
  if (!TOKEN_ID.test(reference)) throw new BoxUserError(`the token given is not one of user ${user}'s tokens (nor a token id: ${TOKEN_ID_LENGTH} to 64 hex digits)`);
  const prefix = reference.toLowerCase();
  const matching = hashes.filter((hash) => hash.startsWith(prefix));
  if (matching.length === 1) return matching[0]!;
  if (matching.length === 0) throw new BoxUserError(`user ${user} has no token ${prefix}`);
  throw new BoxUserError(`token id ${prefix} is ambiguous: ${matching.length} tokens of user ${user} begin with it; give more hex digits of the hash`);
}

function commonPrefixLength(a: string, b: string): number {
  let length = 0;
  while (length < a.length && a[length] === b[length]) length++;
  return length;
}
