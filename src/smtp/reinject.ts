import nodemailer, { type Mail } from 'nodemailer';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RelayError, type LacreError } from '../errors.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../filter/pipeline.js';

interface SmtpFailure {
  recipient?: string;
  message?: string;
  code?: string;
  responseCode?: number;
  response?: string;
}

/**
 * Reinjection into Postfix (relay.host:relay.port) over a pool of kept-alive SMTP connections. The message
 * goes as raw bytes with the envelope given: nodemailer composes nothing.
 */
export class Relay implements Downstream {
  private readonly transport: Mail;

  constructor(config: Config['relay'], hostname: string | undefined, private readonly logger: Logger) {
    this.transport = nodemailer.createTransport({
      pool: true,
      host: config.host,
      port: config.port,
      secure: false,
      ignoreTLS: true,
      maxConnections: config.max_connections,
      maxMessages: Infinity,
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: config.timeout_seconds * 1000,
      ...(hostname ? { name: hostname } : {}),
    });
  }

  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    let info: { rejectedErrors?: SmtpFailure[] };
    try {
      info = (await this.transport.sendMail({
        envelope: { from: envelope.from, to: [...envelope.to], use8BitMime: envelope.use8BitMime } as { from: string; to: string[] },
        raw,
      })) as { rejectedErrors?: SmtpFailure[] };
    } catch (error) {
      throw toRelayError(error);
    }
    const rejected = new Map<string, LacreError>();
    for (const failure of info.rejectedErrors ?? []) rejected.set(String(failure.recipient), toRelayError(failure));
    return rejected;
  }

  /** True when a connection to the relay can be opened and greets us. */
  async verify(): Promise<boolean> {
    return this.transport.verify().then(() => true, () => false);
  }

  /** What nodemailer's pool tells about itself: whether it can take another message now, and how many it has not finished. */
  poolState(): { idle: boolean; pending: number } {
    const pool = this.transport.transporter as { pendingCount?: () => number };
    return { idle: this.transport.isIdle(), pending: pool.pendingCount?.() ?? 0 };
  }

  close(): void {
    this.transport.close();
  }
}

export function toRelayError(error: unknown): RelayError {
  if (error instanceof RelayError) return error;
  const failure = (error ?? {}) as SmtpFailure;
  const code = failure.responseCode;
  const detail = failure.response ?? failure.message ?? String(error);
  return new RelayError(`relay: ${detail}`, code !== undefined && code >= 500, code, { cause: error });
}
