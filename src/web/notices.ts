/** The words of the mails Lacre sends to users, in their language (msgids are the English text). */
import type { Translate } from './i18n.js';

export type NoticeKind = 'confirm-publish' | 'confirm-delete' | 'published' | 'expiring' | 'expired';

export interface NoticeValues {
  readonly email: string;
  readonly fingerprint: string;
  /** The confirmation link (confirm-publish, confirm-delete); the key service's page otherwise. */
  readonly link?: string;
  readonly expires?: Date;
}

export interface NoticeText {
  readonly subject: string;
  readonly text: string;
}

export function noticeMail(kind: NoticeKind, t: Translate, values: NoticeValues): NoticeText {
  const v = {
    email: values.email,
    fingerprint: groupedFingerprint(values.fingerprint),
    link: values.link ?? '',
    date: values.expires ? values.expires.toISOString().slice(0, 10) : '',
  };
  const ignore = t('If you did not ask for this, ignore this mail: nothing changes.');
  const signature = t('This mail was sent automatically by the encryption gateway of your mail server.');
  switch (kind) {
    case 'confirm-publish':
      return {
        subject: t('Confirm your OpenPGP key for {email}', v),
        text: lines(
          t('Someone asked to use this OpenPGP key for mail to {email}:', v),
          `    ${v.fingerprint}`,
          t('This mail was encrypted to that key, so reading it proves you hold it. To confirm, open this link and press the button on the page:'),
          `    ${v.link}`,
          t('Until you confirm, mail to you is not encrypted to this key.'),
          ignore,
          signature,
        ),
      };
    case 'confirm-delete':
      return {
        subject: t('Confirm the removal of your OpenPGP key for {email}', v),
        text: lines(
          t('Someone asked to remove the OpenPGP key of {email}:', v),
          `    ${v.fingerprint}`,
          t('Once removed, mail to you is no longer encrypted by the gateway. To confirm, open this link and press the button on the page:'),
          `    ${v.link}`,
          ignore,
          signature,
        ),
      };
    case 'published':
      return {
        subject: t('Your OpenPGP key for {email} is now in use', v),
        text: lines(
          t('From now on, mail to {email} is encrypted to this key:', v),
          `    ${v.fingerprint}`,
          t('Any key used before for this address is no longer used.'),
          signature,
        ),
      };
    case 'expiring':
      return {
        subject: t('Your OpenPGP key for {email} expires on {date}', v),
        text: lines(
          t('The OpenPGP key that mail to {email} is encrypted to expires on {date}:', v),
          `    ${v.fingerprint}`,
          t('Extend its expiry date (gpg --quick-set-expire) and upload it again, or upload a new key, before that day:'),
          `    ${v.link}`,
          signature,
        ),
      };
    case 'expired':
      return {
        subject: t('Your OpenPGP key for {email} has expired', v),
        text: lines(
          t('The OpenPGP key that mail to {email} was encrypted to has expired:', v),
          `    ${v.fingerprint}`,
          t('The gateway can no longer encrypt to it. Extend its expiry date and upload it again, or upload a new key:'),
          `    ${v.link}`,
          signature,
        ),
      };
  }
}

/** "ABCD EF01 ..." as gpg prints it. */
function groupedFingerprint(fingerprint: string): string {
  return fingerprint.replace(/(.{4})(?!$)/g, '$1 ');
}

function lines(...paragraphs: string[]): string {
  return `${paragraphs.join('\n\n')}\n`;
}
