/** What the key service tests share: a web configuration, and a Mailer that keeps what it is given. */
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import type { DatabaseConfig } from '../../src/db/open.js';
import { createLogger } from '../../src/log/logger.js';
import { MailNotSentError, type Mailer, type OutgoingMail } from '../../src/web/mailer.js';

export const silentLogger = createLogger('silent');

export function webConfig(database: DatabaseConfig, web: NonNullable<ConfigInput['web']> = {}, keys: NonNullable<ConfigInput['keys']> = {}): Config {
  return configSchema.parse({
    database,
    keys: { domains: ['example.org'], ...keys },
    web: { listen: '127.0.0.1:0', public_url: 'https://keys.example.org/', sender: 'keys@example.org', ...web },
  });
}

/**
 * A test double of the Mailer port, used only until the real mailer (src/web/mailer.ts, the lead's) lands: records
 * each mail, or refuses it as an unreachable relay would when `failing` is set.
 */
export class RecordingMailer implements Mailer {
  readonly sent: OutgoingMail[] = [];
  failing = false;

  async send(mail: OutgoingMail): Promise<void> {
    if (this.failing) throw new MailNotSentError('relay down (test)');
    this.sent.push(mail);
  }

  /** The token of the last link mailed to `to`. */
  lastToken(to: string): string {
    const mail = [...this.sent].reverse().find((candidate) => candidate.to === to);
    if (!mail) throw new Error(`no mail to ${to}`);
    return tokenIn('text' in mail.body ? mail.body.text : mail.body.entity.toString('utf8'));
  }
}

export function tokenIn(text: string): string {
  const match = /\/confirm\/([A-Za-z0-9_-]{20,})/.exec(text);
  if (!match) throw new Error('no confirmation link in the mail');
  return match[1]!;
}
