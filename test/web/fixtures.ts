/** What the key service tests share: a web configuration, and a Mailer that keeps what it is given. */
import assert from 'node:assert/strict';
import { configSchema, type Config, type ConfigInput } from '../../src/config/schema.js';
import type { DatabaseConfig } from '../../src/db/open.js';
import { createLogger } from '../../src/log/logger.js';
import { WebError } from '../../src/web/errors.js';
import { simpleParser } from 'mailparser';
import { Relay } from '../../src/delivery/reinject.js';
import { createMailer, type Mailer, type OutgoingMail } from '../../src/web/mailer.js';
import { decrypt, listPacketsKeyIds, type GpgHome } from '../helpers/gpg.js';
import type { SmtpSink } from '../helpers/smtp-sink.js';

export const silentLogger = createLogger('silent');

export function webConfig(database: DatabaseConfig, web: NonNullable<ConfigInput['web']> = {}, keys: NonNullable<ConfigInput['keys']> = {}): Config {
  return configSchema.parse({
    database,
    keys: { domains: ['example.org'], ...keys },
    web: { listen: '127.0.0.1:0', public_url: 'https://keys.example.org/', sender: 'keys@example.org', ...web },
  });
}

/**
 * The real Mailer (encrypting through the filter, sending through a Relay) aimed at a local SMTP sink, and what the
 * sink caught, read as its recipients would: decrypted with their gpg home. With `failing` set, mails go to a relay
 * port where nothing listens, as when Postfix is down.
 */
export class SinkMailbox implements Mailer {
  failing = false;
  private readonly up: Mailer;
  private readonly down: Mailer;
  private readonly relays: Relay[];

  constructor(
    private readonly sink: SmtpSink,
    private readonly home: GpgHome,
    config: Config,
    closedPort: number,
  ) {
    const relayTo = (port: number): Relay => new Relay({ ...config.relay, port }, undefined, silentLogger);
    this.relays = [relayTo(sink.port), relayTo(closedPort)];
    this.up = createMailer(config, this.relays[0]!, silentLogger);
    this.down = createMailer(config, this.relays[1]!, silentLogger);
  }

  send(mail: OutgoingMail): Promise<void> {
    return (this.failing ? this.down : this.up).send(mail);
  }

  /** How many mails the sink holds. */
  get count(): number {
    return this.sink.messages.length;
  }

  /** The newest mail to `to`: who it is encrypted to, and its text decrypted. */
  last(to: string): Promise<{ keyIds: string[]; text: string }> {
    return lastMailTo(this.sink, this.home, to);
  }

  /** The tokens of every link mailed to `to`, oldest first. */
  async tokens(to: string): Promise<string[]> {
    const mails = this.sink.messages.filter((candidate) => candidate.to.includes(to));
    return Promise.all(mails.map(async (mail) => tokenIn((await simpleParser(await decrypt(this.home, mail.data))).text ?? '')));
  }

  /** The token of the newest link mailed to `to`. */
  async lastToken(to: string): Promise<string> {
    return tokenIn((await this.last(to)).text);
  }

  close(): void {
    for (const relay of this.relays) relay.close();
  }
}

/** The newest mail the sink caught for `to`, read as its owner would: who it is encrypted to, and its text decrypted. */
export async function lastMailTo(sink: SmtpSink, home: GpgHome, to: string): Promise<{ keyIds: string[]; text: string }> {
  const mail = [...sink.messages].reverse().find((candidate) => candidate.to.includes(to));
  if (!mail) throw new Error(`no mail to ${to}`);
  const inner = await simpleParser(await decrypt(home, mail.data));
  return { keyIds: await listPacketsKeyIds(home, mail.data), text: inner.text ?? '' };
}

export function tokenIn(text: string): string {
  const match = /\/confirm\/([A-Za-z0-9_-]{20,})/.exec(text);
  if (!match) throw new Error('no confirmation link in the mail');
  return match[1]!;
}

/** The WebError a promise rejects with (fails the test when it resolves, or rejects with anything else). */
export async function refusal(promise: Promise<unknown>): Promise<WebError> {
  const error = await promise.then(
    () => assert.fail('expected a refusal'),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof WebError, `expected a WebError, got ${String(error)}`);
  return error;
}
