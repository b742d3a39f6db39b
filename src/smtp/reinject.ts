import nodemailer, { type Mail } from 'nodemailer';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RelayError, type LacreError } from '../errors.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../filter/pipeline.js';
import { installFastDotStuffing } from './dot-stuffing.js';

interface SmtpFailure {
  recipient?: string;
  message?: string;
  code?: string;
  responseCode?: number;
  response?: string;
}

/** The pooled transport's side of nodemailer's transport interface: `send(mail, callback)`. */
interface PoolTransport {
  send(mail: PooledMail, callback: (error: Error | null, info: { rejectedErrors?: SmtpFailure[] }) => void): void;
}

/**
 * What nodemailer's SMTP pool reads of a message (smtp-pool/index.js, pool-resource.js): the envelope, a
 * Message-ID for its own logs, and the stream to send. When a kept-alive connection turns out closed before a
 * byte was sent, the pool retries on another connection, but closing the first destroyed the stream.
 */
interface PooledMail {
  readonly data: Record<string, never>;
  readonly message: {
    getEnvelope(): { from: string; to: string[]; use8BitMime: boolean };
    messageId(): string;
    getHeader(name: string): undefined;
    createReadStream(): Readable;
  };
}

/**
 * Reinjection into Postfix (relay.host:relay.port) over nodemailer's pool of kept-alive SMTP connections. The
 * message goes as raw bytes with the envelope exactly as received. It is handed to the pool directly rather
 * than through `sendMail`: for raw input the Mailer only builds a MimeNode that parses the envelope addresses
 * (re-encoding international domains) and draws a Message-ID and a boundary it never uses, which cost about
 * an eighth of the event loop per message under load.
 */
export class Relay implements Downstream {
  private readonly transport: Mail;
  private readonly pool: PoolTransport;

  constructor(config: Config['relay'], hostname: string | undefined, private readonly logger: Logger) {
    if (!installFastDotStuffing()) logger.warn("nodemailer's DATA escaping is not the version Lacre knows: using it as it is (slower for big messages)");
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
    this.pool = this.transport.transporter as unknown as PoolTransport;
  }

  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    const smtpEnvelope = { from: envelope.from, to: [...envelope.to], use8BitMime: envelope.use8BitMime };
    const mail: PooledMail = {
      data: {},
      message: { getEnvelope: () => smtpEnvelope, messageId: () => '', getHeader: () => undefined, createReadStream: () => (raw.destroyed ? closedBeforeSent() : raw) },
    };
    const info = await new Promise<{ rejectedErrors?: SmtpFailure[] }>((resolve, reject) => {
      this.pool.send(mail, (error, sent) => (error ? reject(toRelayError(error)) : resolve(sent)));
    });
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

/** The copy for a retry whose stream the closed connection destroyed: fails at once (451, Postfix retries) rather than stalling until the socket timeout. */
function closedBeforeSent(): Readable {
  return new Readable({
    read() {
      this.destroy(new RelayError('relay: the connection closed before the message was sent', false));
    },
  });
}

export function toRelayError(error: unknown): RelayError {
  if (error instanceof RelayError) return error;
  const failure = (error ?? {}) as SmtpFailure;
  const code = failure.responseCode;
  const detail = failure.response ?? failure.message ?? String(error);
  return new RelayError(`relay: ${detail}`, code !== undefined && code >= 500, code, { cause: error });
}
