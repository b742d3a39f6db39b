/**
 * The mails Lacre itself sends (confirmation links, notices, WKS requests): composed here, PGP/MIME-encrypted to
 * the key concerned by the filter's own pipeline, and handed to the relay exactly like reinjected mail.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import libmime from 'libmime';
import libqp from 'libqp';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { readStoredKey } from '../crypto/keys.js';
import { LacreError } from '../errors.js';
import { MessageFilter } from '../filter/filter.js';
import type { Downstream } from '../filter/ports.js';
import { parseAddress } from '../keys/address.js';
import type { KeyDirectory, RecipientKeys } from '../keys/types.js';

/** The relay did not take the mail (or it could not be encrypted): the user is told to try again (503). */
export class MailNotSentError extends LacreError {}

export interface OutgoingMail {
  readonly to: string;
  /**
   * The armored public key the mail is encrypted to (PGP/MIME), pending or confirmed. null: the mail goes as
   * composed, for content that carries its own encryption (WKS's confirmation request: its application/vnd.gnupg.wks
   * part is encrypted to the key, the draft's layout that gpg-wks-client expects) or nothing secret under a key that
   * can no longer be encrypted to (the "your key has expired" notice).
   */
  readonly key: string | null;
  readonly subject: string;
  /** Content-Language. */
  readonly lang: string;
  /** text/plain in UTF-8, or a whole MIME entity (its header fields, an empty line, its body) such as WKS's. */
  readonly body: { readonly text: string } | { readonly entity: Buffer };
  /** Extra header fields of the message (outside the encryption). */
  readonly headers?: Readonly<Record<string, string>>;
}

export interface Mailer {
  /** Resolves once the relay accepted the mail; throws MailNotSentError otherwise. */
  send(mail: OutgoingMail): Promise<void>;
}

export interface ComposeOptions {
  readonly from: string;
  readonly date?: Date;
  readonly messageId?: string;
}

/** A mail ready for the filter: CRLF line ends, every line under 78 octets, header fields ASCII (RFC 2047 words). */
export function composeMail(mail: OutgoingMail, options: ComposeOptions): Buffer {
  const fields: [string, string][] = [
    ['From', options.from],
    ['To', mail.to],
    ['Subject', libmime.encodeWords(mail.subject, 'Q', 52)],
    ['Date', (options.date ?? new Date()).toUTCString().replace(/GMT$/, '+0000')],
    ['Message-ID', options.messageId ?? newMessageId(options.from)],
    ['MIME-Version', '1.0'],
    ['Auto-Submitted', 'auto-generated'],
    ['Content-Language', mail.lang],
    ...Object.entries(mail.headers ?? {}),
  ];
  const header = fields.map(([name, value]) => `${name}: ${value}\r\n`).join('');
  if ('entity' in mail.body) return Buffer.concat([Buffer.from(header), mail.body.entity]);
  const text = mail.body.text.replace(/\r?\n/g, '\r\n');
  const body = libqp.wrap(libqp.encode(Buffer.from(text, 'utf8')), 76).replace(/\r?\n/g, '\r\n');
  return Buffer.from(
    `${header}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${body}${body.endsWith('\r\n') ? '' : '\r\n'}`,
  );
}

function newMessageId(from: string): string {
  let domain = 'localhost';
  try {
    domain = parseAddress(from).domain;
  } catch {
    // web.sender is checked at start; a bare name still gets a Message-ID.
  }
  return `<lacre.${randomBytes(12).toString('hex')}@${domain}>`;
}

export function createMailer(config: Config, relay: Downstream, logger: Logger): Mailer {
  const from = config.web.sender;
  if (from === undefined) throw new LacreError('web.sender is not set: Lacre has no address to send its mails from');
  return {
    async send(mail) {
      const recipient = await recipientOf(mail);
      const filter = new MessageFilter({ keys: fixedDirectory(recipient), downstreams: { relay }, config });
      const outcome = await filter.process({
        from,
        recipients: [{ address: mail.to, lookup: recipient }],
        body: Readable.from([composeMail(mail, { from })]),
        use8BitMime: false,
        perRecipientReplies: false,
        log: logger.child({ mail: 'lacre' }),
      });
      if (outcome.reply.code >= 400) {
        throw new MailNotSentError(`mail to ${mail.to} not accepted: ${outcome.reply.code} ${outcome.reply.enhanced} ${outcome.reply.text}`);
      }
    },
  };
}

/** The recipient as the filter sees it: the mail's own key, whatever the store holds for the address. */
async function recipientOf(mail: OutgoingMail): Promise<RecipientKeys> {
  if (mail.key === null) return { kind: 'none', address: mail.to };
  const { key, usability } = await readStoredKey(mail.key);
  if (key === null || !usability.usable) {
    throw new MailNotSentError(`cannot encrypt to the key for ${mail.to}: ${usability.usable ? 'unreadable' : usability.reason}`);
  }
  return { kind: 'usable', address: mail.to, style: 'mime', keys: [key] };
}

/** The filter asks its directory only at RCPT time, which this mail skips; present for the type's sake. */
function fixedDirectory(recipient: RecipientKeys): KeyDirectory {
  return { lookup: async () => recipient, close: async () => {} };
}
