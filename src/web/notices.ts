/** Placeholder until the lead lands the real mail texts (CONTRACT.md "Mailer"). */
import type { Translate } from './i18n.js';

export type NoticeKind = 'confirm-publish' | 'confirm-delete' | 'published' | 'expiring' | 'expired';

export function noticeMail(
  kind: NoticeKind,
  t: Translate,
  values: { email: string; fingerprint: string; link?: string; expires?: Date },
): { subject: string; text: string } {
  return { subject: t(kind), text: `${values.email} ${values.fingerprint} ${values.link ?? ''}\n` };
}
