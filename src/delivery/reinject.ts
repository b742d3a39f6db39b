import nodemailer, { type Mail } from 'nodemailer';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RelayError, type LacreError } from '../errors.js';
import type { Downstream, OutboundEnvelope, RecipientRejections } from '../filter/ports.js';
import SMTPPool from 'nodemailer/lib/smtp-pool/index.js';
import PoolResource from 'nodemailer/lib/smtp-pool/pool-resource.js';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { installFastDotStuffing } from './dot-stuffing.js';
import { sourceHash } from './known-code.js';
import { RelayCapacity } from './relay-capacity.js';

/**
 * `sourceHash` of the nodemailer code the direct feed, the per-attempt view and the capacity limit rely on
 * (checked on 10.6.0): how the pool reads a `PooledMail`, requeues it when its connection closes before the
 * message was read, withdraws it when its `data.signal` aborts, opens a connection only while it has fewer than
 * `options.maxConnections` (read anew each time), and keeps them in `_connections`, each `_connected` once greeted;
 * how a connection takes the message stream (destroying it when the envelope fails), and marks a connection or
 * greeting that took too long with `timeoutType` (CONNECT_TIMEOUT, GREETING_TIMEOUT).
 */
const KNOWN_POOL_SHA256 = 'cfa51e7628ee664337054629471528a798c54397c8c9e4459748d1e937ea9c5a';

/** Whether nodemailer's pool reads a message the way `PooledMail` provides it. */
export function poolIsKnown(): boolean {
  const pool = SMTPPool.prototype as unknown as Record<string, unknown>;
  const connection = SMTPConnection.prototype as unknown as Record<string, unknown>;
  const resource = PoolResource.prototype as unknown as Record<string, unknown>;
  return (
    sourceHash(
      pool['send'],
      pool['_watchAbortSignal'],
      pool['_processMessages'],
      pool['_createConnection'],
      resource['connect'],
      resource['send'],
      connection['send'],
      connection['_setupConnectionHandlers'],
      connection['_onConnect'],
    ) === KNOWN_POOL_SHA256
  );
}

interface SmtpFailure {
  recipient?: string;
  message?: string;
  code?: string;
  responseCode?: number;
  response?: string;
}

type SentInfo = { rejectedErrors?: SmtpFailure[] };

/**
 * The pooled transport's side of nodemailer's transport interface, `send(mail, callback)`, and what the capacity
 * limit reads and sets of its state.
 */
interface PoolTransport {
  send(mail: PooledMail, callback: (error: Error | null, info: SentInfo) => void): void;
  readonly options: { maxConnections: number };
  readonly _connections: readonly { readonly _connected: boolean }[];
}

/**
 * What nodemailer's SMTP pool reads of a message (smtp-pool/index.js, pool-resource.js): the envelope, a
 * Message-ID for its own logs, and the stream to send. When a kept-alive connection turns out closed before a
 * byte of the message was read, the pool asks for the stream again and sends it over another connection.
 */
interface PooledMail {
  /** `signal` withdraws the message: from the queue, or by closing the connection it was handed to. */
  readonly data: { signal: AbortSignal };
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
 *
 * A copy that never reached a greeted connection was never sent: when the relay does not greet its connection
 * in time while it greets others (a listener whose `maxproc` is below relay.max_connections), the copy waits for
 * a connection again, up to relay.timeout_seconds, and the pool opens no more connections than the relay was
 * seen to serve at once (see RelayCapacity). Only the direct feed does this; through `sendMail` such a copy fails
 * with a 4xx as any other.
 */
export class Relay implements Downstream {
  private readonly transport: Mail;
  /** Undefined when nodemailer's pool is not the version Lacre knows: messages then go through `sendMail`. */
  private readonly pool: PoolTransport | undefined;
  private readonly capacity: RelayCapacity;
  private readonly timeoutMs: number;
  private readonly address: string;

  constructor(
    config: Omit<Config['relay'], 'delivered_retention_hours'>,
    hostname: string | undefined,
    private readonly logger: Logger,
    options: RelayOptions = {},
  ) {
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
      greetingTimeout: options.greetingTimeoutMs ?? 10_000,
      socketTimeout: config.timeout_seconds * 1000,
      ...(hostname ? { name: hostname } : {}),
    });
    this.pool = directToPool ? (this.transport.transporter as unknown as PoolTransport) : undefined;
    this.capacity = new RelayCapacity(config.max_connections, options.capacityRetryMs ?? CAPACITY_RETRY_MS);
    this.timeoutMs = config.timeout_seconds * 1000;
    this.address = `${config.host}:${config.port}`;
  }

  async send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections> {
    const smtpEnvelope = { from: envelope.from, to: [...envelope.to], use8BitMime: envelope.use8BitMime };
    const info = this.pool
      ? await this.sendPooled(this.pool, smtpEnvelope, raw)
      : await new Promise<SentInfo>((resolve, reject) => {
          this.transport.sendMail({ envelope: smtpEnvelope, raw }, (error, sent) => (error ? reject(toRelayError(error)) : resolve(sent as SentInfo)));
        });
    const rejected = new Map<string, LacreError>();
    for (const failure of info.rejectedErrors ?? []) rejected.set(String(failure.recipient), toRelayError(failure));
    return rejected;
  }

  /**
   * Hands the copy to the pool; when its connection got no greeting (nothing of it was sent), again, until it
   * reaches a greeted connection. One that has not started its DATA by relay.timeout_seconds is withdrawn (4xx).
   */
  private async sendPooled(pool: PoolTransport, envelope: PooledEnvelope, raw: Readable): Promise<SentInfo> {
    const deadline = new AbortController();
    const timer = setTimeout(() => {
      if (!raw.readableDidRead) deadline.abort(new RelayError(`relay: no connection to ${this.address} was ready within ${this.timeoutMs / 1000} s`, false));
    }, this.timeoutMs);
    try {
      for (;;) {
        pool.options.maxConnections = this.capacity.current(Date.now());
        try {
          return await new Promise<SentInfo>((resolve, reject) => {
            pool.send(pooledMail(envelope, raw, deadline.signal), (error, sent) => (error ? reject(error) : resolve(sent)));
          });
        } catch (error) {
          if (!neverGreeted(error) || raw.readableDidRead || raw.destroyed || deadline.signal.aborted) throw toRelayError(error);
          this.learnCapacity(pool);
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** A connection got no greeting: the ones greeted and still open are what the relay serves at once. */
  private learnCapacity(pool: PoolTransport): void {
    const greeted = pool._connections.filter((connection) => connection._connected).length;
    const first = this.capacity.learn(greeted, Date.now());
    pool.options.maxConnections = this.capacity.current(Date.now());
    if (!first) return;
    const { configured, retryMs } = this.capacity;
    this.logger.warn(
      { relay: this.address, capacity: greeted, maxConnections: configured },
      `relay ${this.address} serves only ${greeted} connections at once, fewer than relay.max_connections (${configured}): ` +
        `Lacre now opens at most ${greeted} (copies wait for a free one), trying ${configured} again every ` +
        `${retryMs / 60_000} minutes. Raise the reinjection listener's maxproc in master.cf ` +
        `above relay.max_connections (then postfix reload), or lower relay.max_connections`,
    );
  }

  /** True when a connection to the relay can be opened and greets us. */
  async verify(): Promise<boolean> {
    return this.transport.verify().then(() => true, () => false);
  }

  /** What nodemailer's pool tells about itself: whether it can take another message now, and how many it has not finished. */
  poolState(): { idle: boolean; pending: number; maxConnections: number } {
    const pool = this.transport.transporter as { pendingCount?: () => number };
    return { idle: this.transport.isIdle(), pending: pool.pendingCount?.() ?? 0, maxConnections: this.capacity.current(Date.now()) };
  }

  close(): void {
    this.transport.close();
  }
}

export interface RelayOptions {
  /** false: always through `sendMail` (tests of the fallback). */
  directToPool?: boolean;
  /** Tests shorten these: how long a new connection may wait for its greeting, and CAPACITY_RETRY_MS. */
  greetingTimeoutMs?: number;
  capacityRetryMs?: number;
}

/** How long a learned relay capacity holds before relay.max_connections is tried again. */
const CAPACITY_RETRY_MS = 10 * 60_000;

type PooledEnvelope = ReturnType<PooledMail['message']['getEnvelope']>;

/** The connection did not open, or opened and was not greeted, in time: the copy never reached the relay. */
function neverGreeted(error: unknown): boolean {
  const timeoutType = (error as { timeoutType?: unknown } | null)?.timeoutType;
  return timeoutType === 'GREETING_TIMEOUT' || timeoutType === 'CONNECT_TIMEOUT';
}

function pooledMail(envelope: PooledEnvelope, raw: Readable, signal: AbortSignal): PooledMail {
  return {
    data: { signal },
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
  // nodemailer's AbortError for a copy Lacre withdrew carries Lacre's reason.
  if (error instanceof Error && error.cause instanceof RelayError) return error.cause;
  const failure = (error ?? {}) as SmtpFailure;
  const code = failure.responseCode;
  const detail = failure.response ?? failure.message ?? String(error);
  return new RelayError(`relay: ${detail}`, code !== undefined && code >= 500, code, { cause: error });
}
