/** Placeholder until the lead lands the real Mailer (CONTRACT.md "Mailer"): the port's types only. */
import { LacreError } from '../errors.js';

export class MailNotSentError extends LacreError {}

export interface OutgoingMail {
  readonly to: string;
  readonly key: string;
  readonly subject: string;
  readonly lang: string;
  readonly body: { readonly text: string } | { readonly entity: Buffer };
  readonly headers?: Readonly<Record<string, string>>;
}

export interface Mailer {
  send(mail: OutgoingMail): Promise<void>;
}
