/**
 * The key service: uploads and deletions a user proves by mail. A key becomes an address's key only when a link
 * mailed encrypted to it is followed (proof of mailbox and key together); until then it is 'pending', which the key
 * directory never reads. Every change is one SQL statement (data-modifying CTEs), so that a crash or a racing
 * request never leaves half of one; a mail that cannot be sent undoes exactly what its request created.
 */
import { readKey, type PublicKey } from 'openpgp';
import { DEFAULT_KEY_LIMITS, fingerprintOf, readPublicKeys, usableEncryptionKey } from '../crypto/keys.js';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/types.js';
import { DatabaseUnavailableError } from '../errors.js';
import { addressLock } from '../keys/address-lock.js';
import type { Logger } from '../log/logger.js';
import { hashToken, issueToken } from '../util/secret-token.js';
import { WebError } from './errors.js';
import { catalogs } from './i18n.js';
import { MailNotSentError, type Mailer } from './mailer.js';
import { noticeMail, type NoticeKind } from './notices.js';
import { checkUpload, servedAddress, type AcceptedUpload, type UploadPolicy } from './upload-check.js';

export interface KeyServiceDeps {
  db: Database;
  config: Config;
  mailer: Mailer;
  logger: Logger;
  clock?: () => Date;
}

export interface KeyStatusView {
  email: string;
  status: 'confirmed' | 'pending' | 'none';
  fingerprint: string | null;
  created: string | null;
  expires: string | null;
}

export type RequestAction = 'publish' | 'delete';
type Style = 'mime' | 'inline';

export interface UploadInput {
  key: string | Uint8Array;
  email?: string;
  style?: Style;
  lang: string;
}

interface NewRequest {
  action: RequestAction;
  channel: 'web' | 'wks';
  email: string;
  fingerprint: string;
  style: Style | null;
  lang: string;
}

interface RequestRow {
  action: RequestAction;
  email: string;
  fingerprint: string;
  lang: string | null;
  used_at: Date | string | null;
  expires_at: Date | string;
}

interface KeyRowView {
  fingerprint: string;
  armored: string;
  status: 'pending' | 'confirmed' | 'disabled';
  created_at: Date | string;
  expires_at: Date | string | null;
}

const HOUR_MS = 3_600_000;

/** How long a WKS request stands for the submission that made it, against Postfix's retries of that mail. */
const WKS_RETRY_WINDOW_MS = 30 * 60 * 1000;

export interface PendingSubmission {
  readonly email: string;
  readonly fingerprint: string;
  /** The raw token: WKS's nonce. */
  readonly token: string;
}

export class KeyService {
  private readonly clock: () => Date;

  constructor(private readonly deps: KeyServiceDeps) {
    this.clock = deps.clock ?? (() => new Date());
  }

  /**
   * Stores the key as pending and mails a confirmation link encrypted to it; an already confirmed key is refreshed
   * instead, and the revocation of a stored key is taken at once.
   */
  async upload(input: UploadInput): Promise<{ status: 'pending' | 'confirmed' | 'revoked'; email: string; fingerprint: string }> {
    let accepted: AcceptedUpload;
    try {
      accepted = await checkUpload(input.key, input.email, this.policy(), this.clock());
    } catch (error) {
      const revoked = error instanceof WebError && error.code === 'revoked' ? await this.recordRevocation(input.key) : undefined;
      if (revoked) return revoked;
      throw error;
    }
    const email = await this.identityEmail(accepted.email);
    if (await this.refreshConfirmed(email, accepted)) return { status: 'confirmed', email, fingerprint: accepted.fingerprint };
    const created = await this.storePending(email, accepted, { action: 'publish', channel: 'web', email, fingerprint: accepted.fingerprint, style: input.style ?? null, lang: input.lang });
    await this.mailOrUndo(created, 'confirm-publish', accepted.key.armor(), { email, fingerprint: accepted.fingerprint, lang: input.lang });
    return { status: 'pending', email, fingerprint: accepted.fingerprint };
  }

  /** What a token would do, for the confirmation page; changes nothing. */
  async describeRequest(token: string): Promise<{ action: RequestAction; email: string; fingerprint: string; lang: string | null }> {
    const request = await this.liveRequest(token);
    return { action: request.action, email: request.email, fingerprint: request.fingerprint, lang: request.lang };
  }

  /** Carries out a request: publish (the pending key becomes the address's key) or delete (the address goes). */
  async confirm(token: string): Promise<{ action: RequestAction; email: string; fingerprint: string }> {
    const request = await this.liveRequest(token);
    const done = request.action === 'publish' ? await this.publish(token, request.email) : await this.deleteAddress(token, request.email);
    if (!done) throw await this.whyNot(token);
    if (request.action === 'publish') await this.mailPublished(request);
    return { action: request.action, email: request.email, fingerprint: request.fingerprint };
  }

  async status(address: string): Promise<KeyStatusView> {
    const email = await this.identityEmail(servedAddress(address, this.deps.config.keys));
    const rows = await this.keyRows(email);
    const shown = rows.find((row) => row.status === 'confirmed') ?? rows.find((row) => row.status === 'pending');
    if (!shown) return { email, status: 'none', fingerprint: null, created: null, expires: null };
    return {
      email,
      status: shown.status === 'confirmed' ? 'confirmed' : 'pending',
      fingerprint: shown.fingerprint,
      created: new Date(shown.created_at).toISOString(),
      expires: shown.expires_at === null ? null : new Date(shown.expires_at).toISOString(),
    };
  }

  /** Mails a deletion link encrypted to the address's confirmed key. */
  async requestDelete(address: string, lang: string): Promise<{ status: 'pending'; email: string; fingerprint: string }> {
    const email = await this.identityEmail(servedAddress(address, this.deps.config.keys));
    const current = (await this.keyRows(email)).find((row) => row.status === 'confirmed');
    if (!current) throw new WebError(404, 'no-key', 'There is no published key for {email}.', { email });
    const created = await this.storeRequest({ action: 'delete', channel: 'web', email, fingerprint: current.fingerprint, style: null, lang });
    await this.mailOrUndo(created, 'confirm-delete', current.armored, { email, fingerprint: current.fingerprint, lang });
    return { status: 'pending', email, fingerprint: current.fingerprint };
  }

  /**
   * For WKS: stores the key as pending with a request whose token is the nonce, then `send`s the confirmation request
   * (WKS has its own layout). When it is not sent, what this submission created is undone and the MailNotSentError
   * goes on (the mail to the submission address is retried by Postfix): never a half-created state.
   */
  async submitPending(input: { key: string | Uint8Array; email: string; lang: string; channel: 'wks' }, send: (pending: PendingSubmission) => Promise<void>): Promise<PendingSubmission> {
    const accepted = await checkUpload(input.key, input.email, this.policy(), this.clock());
    const email = await this.identityEmail(accepted.email);
    const created = await this.storePending(email, accepted, { action: 'publish', channel: input.channel, email, fingerprint: accepted.fingerprint, style: null, lang: input.lang });
    const pending = { email, fingerprint: accepted.fingerprint, token: created.token };
    try {
      await send(pending);
    } catch (error) {
      await this.undo(created);
      throw error;
    }
    return pending;
  }

  /**
   * Whether this key was asked to confirm for this address by WKS in the last WKS_RETRY_WINDOW_MS, its request still
   * open: a submission Postfix retries then does not send a second confirmation request.
   */
  async recentWksRequest(email: string, key: string): Promise<boolean> {
    const [parsed] = await readPublicKeys(key, { ...DEFAULT_KEY_LIMITS, maxKeyBytes: this.deps.config.keys.max_key_bytes }).catch(() => []);
    if (!parsed) return false;
    const rows = await this.query(
      `select 1 from lacre_key_requests
        where ${this.emailMatch('email')} and fingerprint = $2 and channel = 'wks' and action = 'publish'
          and used_at is null and expires_at > $3::timestamptz and created_at > $3::timestamptz - make_interval(secs => $4)`,
      [email, fingerprintOf(parsed), this.clock().toISOString(), WKS_RETRY_WINDOW_MS / 1000],
    );
    return rows.length > 0;
  }

  /** For WKD: the address's confirmed key, armored. */
  async confirmedKey(address: string): Promise<{ email: string; fingerprint: string; armored: string } | undefined> {
    const email = servedAddress(address, this.deps.config.keys);
    const row = (await this.keyRows(email)).find((candidate) => candidate.status === 'confirmed');
    return row && { email: await this.identityEmail(email), fingerprint: row.fingerprint, armored: row.armored };
  }

  /** For WKD: every confirmed key of one address (compared as keys.local_part_case_sensitive says). */
  async confirmedKeysOfAddress(address: string): Promise<{ email: string; fingerprint: string; armored: string }[]> {
    const email = servedAddress(address, this.deps.config.keys);
    const rows = await this.query<{ email: string; fingerprint: string; armored: string }>(
      `select email, fingerprint, armored from lacre_keys where ${this.emailMatch('email')} and status = 'confirmed' order by email, created_at desc`,
      [email],
    );
    return rows;
  }

  /** For WKD: every confirmed key of one domain (the caller hashes the local parts). */
  async confirmedKeysOfDomain(domain: string): Promise<{ email: string; fingerprint: string; armored: string }[]> {
    return this.query<{ email: string; fingerprint: string; armored: string }>(
      `select email, fingerprint, armored from lacre_keys
        where status = 'confirmed' and lower(split_part(email, '@', 2)) = lower($1)
        order by email, created_at desc`,
      [domain],
    );
  }

  private policy(): UploadPolicy {
    const keys = this.deps.config.keys;
    return { domains: keys.domains, maxKeyBytes: keys.max_key_bytes, localPartCaseSensitive: keys.local_part_case_sensitive };
  }

  /** The spelling of the address's existing identity ("Alice@x" when "alice@x" is asked), else the address itself. */
  private async identityEmail(email: string): Promise<string> {
    const rows = await this.query<{ email: string }>(
      `select email from lacre_identities where ${this.emailMatch('email')} order by (email = $1) desc, created_at limit 1`,
      [email],
    );
    return rows[0]?.email ?? email;
  }

  /** Newest first. */
  private keyRows(email: string): Promise<KeyRowView[]> {
    return this.query<KeyRowView>(
      `select fingerprint, armored, status, created_at, expires_at from lacre_keys where ${this.emailMatch('email')} order by updated_at desc, id desc`,
      [email],
    );
  }

  /** Two columns naming one address, as keys.local_part_case_sensitive compares them (two spellings may be stored). */
  private sameAddress(left: string, right: string): string {
    return this.deps.config.keys.local_part_case_sensitive ? `${left} = ${right}` : `lower(${left}) = lower(${right})`;
  }

  private emailMatch(column: string): string {
    return this.deps.config.keys.local_part_case_sensitive ? `${column} = $1` : `lower(${column}) = lower($1)`;
  }

  /**
   * A revoked key whose fingerprint is stored (any status, any address): the revocation is merged into every stored
   * copy, without confirmation, since only the key's owner can make one and mail must stop going to that key now.
   * undefined when the key is not stored (the upload is then refused as revoked).
   */
  private async recordRevocation(input: string | Uint8Array): Promise<{ status: 'revoked'; email: string; fingerprint: string } | undefined> {
    const keys = await readPublicKeys(input, { ...DEFAULT_KEY_LIMITS, maxKeyBytes: this.deps.config.keys.max_key_bytes });
    if (keys.length !== 1) return undefined;
    const fingerprint = fingerprintOf(keys[0]!);
    const rows = await this.query<{ id: string; email: string; armored: string }>('select id::text as id, email, armored from lacre_keys where fingerprint = $1 order by id', [fingerprint]);
    const revokedCopies: [string, string][] = [];
    for (const row of rows) {
      const merged = await ((await readKey({ armoredKey: row.armored })) as PublicKey).update(keys[0] as PublicKey, this.clock());
      if (!(await merged.isRevoked(undefined, undefined, this.clock()))) return undefined;
      revokedCopies.push([row.id, merged.armor()]);
    }
    for (const [id, armored] of revokedCopies) await this.query('update lacre_keys set armored = $2, updated_at = now() where id = $1::bigint', [id, armored]);
    return rows[0] && { status: 'revoked', email: rows[0].email, fingerprint };
  }

  /** Re-upload of the confirmed key: its new signatures are merged in, it stays confirmed, and no mail goes out. */
  private async refreshConfirmed(email: string, accepted: AcceptedUpload): Promise<boolean> {
    const rows = await this.query<{ armored: string }>(`select armored from lacre_keys where email = $1 and fingerprint = $2 and status = 'confirmed'`, [
      email,
      accepted.fingerprint,
    ]);
    if (rows.length === 0) return false;
    const stored = (await readKey({ armoredKey: rows[0]!.armored })) as PublicKey;
    const merged = await stored.update(accepted.key, this.clock());
    // The merged copy's expiry: an older copy uploaded again must not bring an earlier date back.
    const usability = await usableEncryptionKey(merged, this.clock());
    const expiresAt = usability.usable ? usability.expiresAt : accepted.expiresAt;
    await this.query(`update lacre_keys set armored = $3, expires_at = $4, updated_at = now() where email = $1 and fingerprint = $2 and status = 'confirmed'`, [
      email,
      accepted.fingerprint,
      merged.armor(),
      expiresAt?.toISOString() ?? null,
    ]);
    return true;
  }

  /**
   * One statement: the identity (if new), the pending key row (if new; a pending or disabled row of this key gets the
   * new copy and keeps its status; a confirmed one is never touched) and the request — all or nothing, and nothing
   * when the address had its share of mails this hour.
   */
  private async storePending(email: string, accepted: AcceptedUpload, request: NewRequest): Promise<CreatedRequest> {
    return this.insertRequest(request, {
      ctes: `
        identity as (insert into lacre_identities (email, style) select $3, 'mime' from allowed where ok
                     on conflict (email) do nothing returning email),
        pending as (insert into lacre_keys (email, fingerprint, armored, status, expires_at)
                    select $3, $4, $11, 'pending', $12::timestamptz from allowed where ok
                    on conflict (email, fingerprint) do update set armored = excluded.armored, expires_at = excluded.expires_at, updated_at = now()
                       where lacre_keys.status <> 'confirmed'
                    returning (xmax = 0) as inserted),`,
      params: [accepted.key.armor(), accepted.expiresAt?.toISOString() ?? null],
      insertedKey: `coalesce((select inserted from pending), false)`,
      insertedIdentity: `exists (select 1 from identity)`,
    });
  }

  private storeRequest(request: NewRequest): Promise<CreatedRequest> {
    return this.insertRequest(request, { ctes: '', params: [], insertedKey: 'false', insertedIdentity: 'false' });
  }

  private async insertRequest(
    request: NewRequest,
    extra: { ctes: string; params: unknown[]; insertedKey: string; insertedIdentity: string },
  ): Promise<CreatedRequest> {
    const now = this.clock();
    const issued = issueToken();
    const web = this.deps.config.web;
    const rows = await this.lockedQuery<{ id: string | null; oldest: Date | string | null; inserted_key: boolean; inserted_identity: boolean }>(
      request.email,
      `with recent as (select created_at from lacre_key_requests
                        where lower(email) = lower($3) and created_at > $2::timestamptz - interval '1 hour'),
            allowed as (select count(*) < $1 as ok, min(created_at) as oldest from recent),
            ${extra.ctes}
            request as (insert into lacre_key_requests (token_hash, action, channel, email, fingerprint, style, lang, created_at, expires_at)
                        select $5, $6, $7, $3, $4, $8, $9, $2::timestamptz, $2::timestamptz + make_interval(secs => $10)
                          from allowed where ok
                        returning id::text)
       select (select id from request) as id, (select oldest from allowed) as oldest,
              ${extra.insertedKey} as inserted_key, ${extra.insertedIdentity} as inserted_identity`,
      [
        web.mails_per_address_per_hour,
        now.toISOString(),
        request.email,
        request.fingerprint,
        issued.hash,
        request.action,
        request.channel,
        request.style,
        request.lang,
        web.token_ttl_hours * 3600,
        ...extra.params,
      ],
    );
    const row = rows[0]!;
    if (row.id === null) throw tooManyMails(row.oldest === null ? now : new Date(row.oldest), now);
    return { id: row.id, token: issued.token, email: request.email, fingerprint: request.fingerprint, insertedKey: row.inserted_key, insertedIdentity: row.inserted_identity };
  }

  private async mailOrUndo(created: CreatedRequest, kind: NoticeKind, armoredKey: string, values: { email: string; fingerprint: string; lang: string }): Promise<void> {
    const link = `${this.publicUrl()}/confirm/${created.token}`;
    try {
      await this.sendNotice(kind, armoredKey, { ...values, link });
    } catch (error) {
      if (!(error instanceof MailNotSentError)) throw error;
      await this.undo(created);
      this.deps.logger.warn({ err: error, action: kind }, 'confirmation mail not sent; the request was undone');
      throw new WebError(503, 'mail-not-sent', 'The confirmation mail could not be sent. Please try again later.', {}, { 'Retry-After': '60' });
    }
  }

  private publicUrl(): string {
    return this.deps.config.web.public_url?.replace(/\/+$/, '') ?? '';
  }

  /** Removes what one request created: its row, the key row and identity it inserted (nothing another request uses). */
  private async undo(created: CreatedRequest): Promise<void> {
    await this.query(
      `with request as (delete from lacre_key_requests where id = $1::bigint returning id),
            pending as (delete from lacre_keys where $2::boolean and email = $4 and fingerprint = $5 and status = 'pending' returning 1)
       delete from lacre_identities i where $3::boolean and i.email = $4
          and not exists (select 1 from lacre_keys k where k.email = i.email and k.fingerprint <> $5)`,
      [created.id, created.insertedKey, created.insertedIdentity, created.email, created.fingerprint],
    );
  }

  private async sendNotice(kind: NoticeKind, armoredKey: string, values: { email: string; fingerprint: string; lang: string; link?: string }): Promise<void> {
    const t = catalogs().translator(values.lang);
    const { subject, text } = noticeMail(kind, t, values);
    await this.deps.mailer.send({ to: values.email, key: armoredKey, subject, lang: values.lang, body: { text } });
  }

  /** "Your key was published": best effort, the key is published whether or not this mail goes out. */
  private async mailPublished(request: RequestRow): Promise<void> {
    try {
      const row = (await this.keyRows(request.email)).find((candidate) => candidate.status === 'confirmed');
      if (!row) return;
      const lang = request.lang ?? this.deps.config.web.default_language;
      await this.sendNotice('published', row.armored, { email: request.email, fingerprint: request.fingerprint, lang, link: this.publicUrl() });
    } catch (error) {
      this.deps.logger.warn({ err: error }, 'the "key published" mail was not sent');
    }
  }

  /** The request of a token, refused when unknown, used or expired. */
  private async liveRequest(token: string): Promise<RequestRow> {
    const request = await this.requestOf(token);
    const refusal = this.refusalOf(request);
    if (refusal) throw refusal;
    return request!;
  }

  private async requestOf(token: string): Promise<RequestRow | undefined> {
    const rows = await this.query<RequestRow>(
      `select action, email, fingerprint, lang, used_at, expires_at from lacre_key_requests where token_hash = $1`,
      [hashToken(token)],
    );
    return rows[0];
  }

  private refusalOf(request: RequestRow | undefined): WebError | undefined {
    if (!request) return new WebError(404, 'token-unknown', 'This confirmation link is not valid.');
    if (request.used_at !== null) return new WebError(410, 'token-used', 'This confirmation link has already been used.');
    if (new Date(request.expires_at) <= this.clock()) return new WebError(410, 'token-expired', 'This confirmation link has expired; please start again.');
    return undefined;
  }

  /** Why a confirmation changed nothing: a racing confirmation, the clock, or the key gone meanwhile. */
  private async whyNot(token: string): Promise<WebError> {
    return this.refusalOf(await this.requestOf(token)) ?? new WebError(404, 'no-key', 'The key of this request is no longer stored.');
  }

  /**
   * One statement: the request is claimed (unused, unexpired, its key row still there), the address's other
   * confirmed keys become disabled, this key confirmed, and the identity takes the style and language asked for.
   */
  private async publish(token: string, email: string): Promise<boolean> {
    const rows = await this.lockedQuery<{ claimed: boolean }>(
      email,
      `with claimed as (update lacre_key_requests r set used_at = $2::timestamptz
                         where r.token_hash = $1 and r.action = 'publish' and r.used_at is null and r.expires_at > $2::timestamptz
                           and exists (select 1 from lacre_keys k where k.email = r.email and k.fingerprint = r.fingerprint)
                        returning r.email, r.fingerprint, r.style, r.lang),
            disabled as (update lacre_keys k set status = 'disabled', updated_at = now() from claimed c
                          where ${this.sameAddress('k.email', 'c.email')} and k.fingerprint <> c.fingerprint and k.status = 'confirmed' returning 1),
            confirmed as (update lacre_keys k set status = 'confirmed', updated_at = now() from claimed c
                           where k.email = c.email and k.fingerprint = c.fingerprint returning 1),
            identity as (update lacre_identities i set style = coalesce(c.style, i.style), lang = coalesce(c.lang, i.lang), updated_at = now()
                           from claimed c where i.email = c.email returning 1)
       select exists (select 1 from claimed) as claimed`,
      [hashToken(token), this.clock().toISOString()],
    );
    return rows[0]!.claimed;
  }

  /**
   * One statement: the request is claimed, while the key its link was mailed to is still the address's confirmed key
   * (an old link does not remove a newer key), and the address goes with every key it has (any status).
   */
  private async deleteAddress(token: string, email: string): Promise<boolean> {
    const rows = await this.lockedQuery<{ claimed: boolean }>(
      email,
      `with claimed as (update lacre_key_requests r set used_at = $2::timestamptz
                         where r.token_hash = $1 and r.action = 'delete' and r.used_at is null and r.expires_at > $2::timestamptz
                           and exists (select 1 from lacre_keys k where k.email = r.email and k.fingerprint = r.fingerprint and k.status = 'confirmed')
                        returning r.email),
            gone as (delete from lacre_identities i using claimed c where i.email = c.email returning 1)
       select exists (select 1 from claimed) as claimed`,
      [hashToken(token), this.clock().toISOString()],
    );
    return rows[0]!.claimed;
  }

  /** A database that cannot answer is a 503 the client may retry, never a 500. */
  private query<Row>(sql: string, params: unknown[]): Promise<Row[]> {
    return this.answering(() => this.deps.db.query<Row>(sql, params));
  }

  /**
   * `sql` in a transaction that first takes the address's lock: the statement's snapshot then comes after any other
   * confirmation or request for that address has committed (PostgreSQL reads each statement as of its start), so
   * two confirmations cannot both stay confirmed and parallel uploads cannot overrun the mails of the hour.
   */
  private lockedQuery<Row>(email: string, sql: string, params: unknown[]): Promise<Row[]> {
    return this.answering(() => this.deps.db.queryInTransaction<Row>([addressLock(email), { sql, params }]));
  }

  private async answering<Row>(run: () => Promise<Row[]>): Promise<Row[]> {
    try {
      return await run();
    } catch (error) {
      if (error instanceof DatabaseUnavailableError) {
        throw new WebError(503, 'unavailable', 'The key service is unavailable right now. Please try again later.', {}, { 'Retry-After': '60' });
      }
      throw error;
    }
  }
}

interface CreatedRequest {
  id: string;
  token: string;
  email: string;
  fingerprint: string;
  insertedKey: boolean;
  insertedIdentity: boolean;
}

function tooManyMails(oldest: Date, now: Date): WebError {
  const seconds = Math.max(1, Math.ceil((oldest.getTime() + HOUR_MS - now.getTime()) / 1000));
  return new WebError(429, 'too-many-requests', 'Too many requests for this address; try again in {seconds} seconds.', { seconds }, { 'Retry-After': String(seconds) });
}
