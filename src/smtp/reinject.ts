import nodemailer, { type Mail } from 'nodemailer';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RelayError, type LacreError } from '../errors.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../filter/pipeline.js';
import SMTPPool from 'nodemailer/lib/smtp-pool/index.js';
import PoolResource from 'nodemailer/lib/smtp-pool/pool-resource.js';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { installFastDotStuffing } from './dot-stuffing.js';
import { sourceHash } from './known-code.js';

/**
 * `sourceHash` of the nodemailer code the direct feed and the per-attempt view rely on (10.6.0 and 10.6.1): how
 * the pool reads a `PooledMail` and requeues it when its connection closes before the message was read, and how
 * a connection takes the message stream (destroying it when the envelope fails).
 */
const KNOWN_POOL_SHA256 = 'e2c1b9606f74d863e78a0bad0db3f59b6bbdb44f20171ff117e963fd3b8c49b2';

/** Whether nodemailer's pool reads a message the way `PooledMail` provides it. */
export function poolIsKnown(): boolean {
  const pool = SMTPPool.prototype as unknown as Record<string, unknown>;
  return sourceHash(pool['send'], pool['_processMessages'], pool['_createConnection'], PoolResource.prototype.send, SMTPConnection.prototype.send) === KNOWN_POOL_SHA256;
}

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
 * byte of the message was read, the pool asks for the stream again and sends it over another connection.
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
  /** Undefined when nodemailer's pool is not the version Lacre knows: messages then go through `sendMail`. */
  private readonly pool: PoolTransport | undefined;

  constructor(config: Config['relay'], hostname: string | undefined, logger: Logger, options: { directToPool?: boolean } = {}) {
    if (!installFastDotStuffing()) logger.warn("nodemailer's DATA escaping is not the version Lacre knows: using it as it is (slower for big messages)");
    const directToPool = (options.directToPool ?? true) && poolIsKnown();
    if (!directToPool && options.directToPool !== false) logger.warn("nodemailer's SMTP pool is not the version Lacre knows: sending through sendMail (slower under load)");
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
    this.pool = directToPool ? (this.transport.transporter as unknown as PoolTransport) : undefined;
  }

  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    const smtpEnvelope = { from: envelope.from, to: [...envelope.to], use8BitMime: envelope.use8BitMime };
    const info = await new Promise<{ rejectedErrors?: SmtpFailure[] }>((resolve, reject) => {
      const settle = (error: Error | null, sent: { rejectedErrors?: SmtpFailure[] }) => (error ? reject(toRelayError(error)) : resolve(sent));
      if (this.pool) this.pool.send(pooledMail(smtpEnvelope, raw), settle);
      else this.transport.sendMail({ envelope: smtpEnvelope, raw }, (error, sent) => settle(error, sent as { rejectedErrors?: SmtpFailure[] }));
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

function pooledMail(envelope: ReturnType<PooledMail['message']['getEnvelope']>, raw: Readable): PooledMail {
  return {
    data: {},
    message: { getEnvelope: () => envelope, messageId: () => '', getHeader: () => undefined, createReadStream: () => streamForAttempt(raw) },
  };
}

/**
 * The stream one delivery attempt reads. nodemailer destroys it when the attempt fails before DATA (a kept-alive
 * connection the relay had just closed), and the pool then asks for it again: so each attempt gets a view that
 * takes nothing from `raw` until it is read, and whose destruction leaves `raw` whole for the next attempt.
 * Once a byte was taken, a message cannot be sent again from its start: a later attempt fails at once (451,
 * Postfix retries) rather than sending the rest, and rather than stalling until the socket timeout.
 */
export function streamForAttempt(raw: Readable): Readable {
  // An attempt nodemailer gave up on before it read (or listened to) its view: release that view first.
  currentAttempt.get(raw)?.destroy();
  if (raw.destroyed) return failedAttempt('the message was withdrawn before it was sent');
  if (raw.readableDidRead) return failedAttempt('the connection closed after the message was partly read; it cannot be sent again from its start');
  let reading = false;
  const onData = (chunk: Buffer) => {
    if (!view.push(chunk)) raw.pause();
  };
  const onEnd = () => view.push(null);
  const onError = (error: Error) => view.destroy(error);
  const onClose = () => {
    if (!raw.readableEnded) view.destroy(new RelayError('relay: the message was withdrawn while it was being sent', false));
  };
  const view: Readable = new Readable({
    read() {
      if (!reading) {
        reading = true;
        raw.on('data', onData).once('end', onEnd);
      }
      raw.resume();
    },
    destroy(error, callback) {
      raw.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      if (!raw.destroyed) raw.pause();
      callback(error);
    },
  });
  raw.once('error', onError).once('close', onClose);
  // Its outcome reaches nodemailer through the send it belongs to: a view abandoned before nodemailer listened
  // (a connection found dead before the envelope) must not end the process when the copy fails later.
  view.on('error', () => undefined);
  currentAttempt.set(raw, view);
  return view;
}

/** The view of each copy's latest attempt. */
const currentAttempt = new WeakMap<Readable, Readable>();

function failedAttempt(reason: string): Readable {
  return new Readable({
    read() {
      this.destroy(new RelayError(`relay: ${reason}`, false));
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
