/**
 * Expiry notices: each user whose confirmed key expires within web.expiry_notice_days gets one mail, encrypted to
 * that key, and one more once it has expired. The notice row is claimed before the mail goes out, so two
 * instances on one database never both send; a mail that could not be sent gives its row back for the next run.
 * The same run forgets what the key service no longer needs: requests long dead and the pending keys nobody confirmed.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { Database } from '../db/types.js';
import { readStoredKey } from '../crypto/keys.js';
import { errorMessage } from '../errors.js';
import { catalogs } from './i18n.js';
import type { Mailer } from './mailer.js';
import { noticeMail } from './notices.js';
import { runPeriodically, type PeriodicJob } from '../util/periodic.js';

const DAY_MS = 24 * 3600 * 1000;
/** Dead requests are kept this long after they expired (a late click still gets "expired", not "unknown"). */
const DEAD_REQUEST_KEEP_MS = 7 * DAY_MS;
export const EXPIRY_RUN_INTERVAL_MS = 3600 * 1000;

export interface ExpiryNoticeDeps {
  readonly db: Database;
  readonly config: Config;
  readonly mailer: Mailer;
  readonly logger: Logger;
}

interface ExpiringKey {
  email: string;
  fingerprint: string;
  armored: string;
  expires_at: Date | string;
  lang: string | null;
}

export interface ExpiryRunReport {
  readonly sent: number;
  readonly failed: number;
  readonly purgedPending: number;
}

/** One pass: notices due at `now`, then the purge. */
export async function runExpiryNotices(deps: ExpiryNoticeDeps, now = new Date()): Promise<ExpiryRunReport> {
  const days = deps.config.web.expiry_notice_days;
  let sent = 0;
  let failed = 0;
  if (days > 0) {
    for (const key of await dueKeys(deps.db, now, days)) {
      const kind = new Date(key.expires_at) <= now ? 'expired' : 'expiring';
      // A key revoked (or otherwise unusable) before its date cannot be encrypted to: no "expiring" notice, and no
      // retry every hour.
      if (kind === 'expiring' && !(await readStoredKey(key.armored, now)).usability.usable) continue;
      if (!(await claim(deps.db, key, kind))) continue;
      try {
        await sendNotice(deps, key, kind);
        sent += 1;
      } catch (error) {
        failed += 1;
        await deps.db.query('delete from lacre_key_notices where email = $1 and fingerprint = $2 and kind = $3', [key.email, key.fingerprint, kind]);
        deps.logger.warn({ to: key.email, fingerprint: key.fingerprint, notice: kind, error: errorMessage(error) }, 'expiry notice not sent; the next run tries again');
      }
    }
  }
  const purgedPending = await purgeStale(deps.db, now);
  if (sent + failed + purgedPending > 0) deps.logger.info({ sent, failed, purgedPending }, 'expiry notices run');
  return { sent, failed, purgedPending };
}

/**
 * Confirmed keys expiring within `days` without an "expiring" notice, and keys expired within the last `days`
 * without an "expired" one (a key that expired long before Lacre first looked gets no mail: old news).
 */
async function dueKeys(db: Database, now: Date, days: number): Promise<ExpiringKey[]> {
  return db.query<ExpiringKey>(
    `select k.email, k.fingerprint, k.armored, k.expires_at, i.lang
       from lacre_keys k join lacre_identities i on i.email = k.email
      where k.status = 'confirmed' and k.expires_at is not null
        and k.expires_at > $1::timestamptz - make_interval(days => $2::int)
        and k.expires_at <= $1::timestamptz + make_interval(days => $2::int)
        and not exists (select 1 from lacre_key_notices n
                         where n.email = k.email and n.fingerprint = k.fingerprint
                           and n.kind = case when k.expires_at <= $1::timestamptz then 'expired' else 'expiring' end)
      order by k.expires_at, k.email`,
    [now.toISOString(), days],
  );
}

async function claim(db: Database, key: ExpiringKey, kind: 'expiring' | 'expired'): Promise<boolean> {
  const rows = await db.query('insert into lacre_key_notices (email, fingerprint, kind) values ($1, $2, $3) on conflict do nothing returning 1', [
    key.email,
    key.fingerprint,
    kind,
  ]);
  return rows.length === 1;
}

async function sendNotice(deps: ExpiryNoticeDeps, key: ExpiringKey, kind: 'expiring' | 'expired'): Promise<void> {
  const lang = key.lang ?? deps.config.web.default_language;
  const t = catalogs().translator(lang);
  const link = `${deps.config.web.public_url?.replace(/\/+$/, '') ?? ''}/?lang=${encodeURIComponent(lang)}`;
  const notice = noticeMail(kind, t, { email: key.email, fingerprint: key.fingerprint, link, expires: new Date(key.expires_at) });
  await deps.mailer.send({
    to: key.email,
    // An expired key can no longer be encrypted to; the notice holds nothing but the fingerprint and a link.
    key: kind === 'expired' ? null : key.armored,
    subject: notice.subject,
    lang,
    body: { text: notice.text },
  });
}

/**
 * Pending keys uploaded through the key service (they have a publish request) whose every request is dead, then
 * the requests dead for a week. Pending keys an admin stored (no request) stay.
 */
async function purgeStale(db: Database, now: Date): Promise<number> {
  const rows = await db.query<{ purged: number | string }>(
    `with dead as (
       delete from lacre_keys k
        where k.status = 'pending'
          and exists (select 1 from lacre_key_requests r where r.email = k.email and r.fingerprint = k.fingerprint and r.action = 'publish')
          and not exists (select 1 from lacre_key_requests r
                           where r.email = k.email and r.fingerprint = k.fingerprint and r.action = 'publish'
                             and r.used_at is null and r.expires_at > $1::timestamptz)
       returning 1)
     select count(*)::int as purged from dead`,
    [now.toISOString()],
  );
  await db.query('delete from lacre_key_requests where expires_at < $1::timestamptz', [new Date(now.getTime() - DEAD_REQUEST_KEEP_MS).toISOString()]);
  return Number(rows[0]?.purged ?? 0);
}

/** Runs now and then every hour until stopped (never two runs at once); a failing run is logged and the next one tries again. */
export function startExpiryNotices(deps: ExpiryNoticeDeps, intervalMs = EXPIRY_RUN_INTERVAL_MS): PeriodicJob {
  return runPeriodically(
    async () => void (await runExpiryNotices(deps)),
    intervalMs,
    (error) => deps.logger.warn({ error: errorMessage(error) }, 'expiry notices run failed; the next run tries again'),
  );
}
