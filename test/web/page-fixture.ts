/**
 * What the page's tests share: a configuration whose relay is a local SMTP sink, and the confirmation link read
 * from a caught mail the way its owner reads it — decrypted with real gpg.
 */
import { simpleParser } from 'mailparser';
import { loadConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import type { Database } from '../../src/db/types.js';
import { Relay } from '../../src/delivery/reinject.js';
import { createLogger, type Logger } from '../../src/log/logger.js';
import { createMailer } from '../../src/web/mailer.js';
import { startWebServer } from '../../src/web/server.js';
import { decrypt, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { freePort } from '../helpers/ports.js';
import type { SmtpSink } from '../helpers/smtp-sink.js';

export const DOMAIN = 'example.org';
export const SENDER = `keys@${DOMAIN}`;

/** The key service's settings for a test: mail through `sinkPort`, links under `publicUrl`. */
export function pageTestConfig(sinkPort: number, publicUrl: string, env: Record<string, string> = {}): Config {
  return loadConfig({
    env: {
      LACRE_WEB_LISTEN: new URL(publicUrl).host,
      LACRE_WEB_PUBLIC_URL: publicUrl,
      LACRE_WEB_SENDER: SENDER,
      LACRE_KEYS_DOMAINS: DOMAIN,
      LACRE_RELAY_HOST: '127.0.0.1',
      LACRE_RELAY_PORT: String(sinkPort),
      ...env,
    },
  });
}

/**
 * The confirmation link of the newest mail the sink caught for `email`: it must be encrypted to `key` alone, and
 * gpg (holding that key's secret) decrypts it.
 */
export async function linkFromMail(sink: SmtpSink, home: GpgHome, key: GpgKey, email: string, publicUrl: string): Promise<string> {
  const mail = sink.messages.filter((message) => message.to.includes(email)).at(-1);
  if (mail === undefined) throw new Error(`no mail reached the sink for ${email}`);
  const recipients = await listPacketsKeyIds(home, mail.data);
  if (recipients.length !== 1 || recipients[0] !== key.encryptionKeyId) throw new Error(`mail for ${email} encrypted to ${recipients.join(', ')}`);
  const inner = await simpleParser(await decrypt(home, mail.data));
  const escaped = publicUrl.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const link = new RegExp(`${escaped}/confirm/[A-Za-z0-9_-]+(\\?[^\\s]*)?`).exec(inner.text ?? '')?.[0];
  if (link === undefined) throw new Error(`no confirmation link in the mail for ${email}`);
  return link;
}

export interface PageServer {
  /** http://127.0.0.1:port, also web.public_url. */
  readonly base: string;
  close(): Promise<void>;
}

/** The whole key service listener (startWebServer) on a free loopback port, mailing through `sink`. */
export async function startPageServer(db: Database, sink: SmtpSink, env: Record<string, string> = {}, logger: Logger = createLogger('silent')): Promise<PageServer> {
  const base = `http://127.0.0.1:${await freePort()}`;
  const config = pageTestConfig(sink.port, base, env);
  const relay = new Relay(config.relay, undefined, logger);
  const server = await startWebServer({ config, db, mailer: createMailer(config, relay, logger), logger });
  return {
    base,
    async close() {
      await server.close();
      relay.close();
    },
  };
}
