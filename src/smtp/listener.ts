import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerEnvelope, type SMTPServerSession } from 'smtp-server';
import type { AddressInfo, Socket } from 'node:net';
import { finished } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { RoutedRecipient } from '../filter/plan.js';
import type { MessageFilter } from '../filter/filter.js';
import { errorReply, isSmtpReplyError, replyText, toSmtpError } from '../filter/reply.js';
import { DataTimeoutError } from '../errors.js';
import { receivedSpelling, watchConnections } from './envelope.js';
import { parseHostPort } from '../util/host-port.js';
import { allowedClients } from '../util/allowed-clients.js';

export interface SmtpListener {
  /** Resolves with the bound address (port 0 picks a free one). */
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
  /** Open inbound connections, for the sessions gauge. */
  sessions(): number;
}

/**
 * The inbound side for Postfix's content_filter (SMTP, or LMTP with per-recipient answers). Keys are looked
 * up at RCPT time, so a recipient refused by policy, or a key store that is down, is answered per recipient.
 */
export function createSmtpListener(config: Config, filter: MessageFilter, logger: Logger): SmtpListener {
  const transactions = new WeakMap<SMTPServerEnvelope, Transaction>();
  const peers = new WeakMap<SMTPServerSession, string>();
  const inFlight = new Set<Promise<unknown>>();
  const isAllowed = allowedClients(config.smtp.allowed_clients);
  const server = new SMTPServer({
    lmtp: config.smtp.lmtp,
    ...(config.smtp.hostname ? { name: config.smtp.hostname } : {}),
    banner: 'Lacre',
    size: config.smtp.max_size,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    useXForward: true,
    disableReverseLookup: true,
    maxClients: config.smtp.max_clients,
    socketTimeout: config.smtp.socket_timeout_seconds * 1000,
    closeTimeout: 30_000,
    logger: false,
    onConnect(session, callback) {
      // Before any XFORWARD, which makes smtp-server overwrite session.remoteAddress.
      peers.set(session, session.remoteAddress);
      if (isAllowed(session.remoteAddress)) return callback();
      logger.warn({ session: session.id, client: session.remoteAddress }, 'connection refused: client not in smtp.allowed_clients');
      callback(Object.assign(new Error('5.7.1 Lacre takes mail from its own MTA only'), { responseCode: 554 }));
    },
    // Answered at once: smtp-server's default answers MAIL on the next turn of the event loop, after the
    // replies to what came with it were let go (see batchRepliesPerRead).
    onMailFrom(address, session, callback) {
      transactions.set(session.envelope, startTransaction(address, session, peers.get(session)));
      callback();
    },
    onRcptTo(address, session, callback) {
      const transaction = transactions.get(session.envelope);
      if (!transaction) return callback(Object.assign(new Error('5.5.1 need MAIL command'), { responseCode: 503 }));
      const spelling = receivedSpelling(address);
      const started = performance.now();
      filter.lookupRecipient(spelling).then(
        (route) => {
          const lookupMs = performance.now() - started;
          transaction.recipients.push({ smtp: address, route });
          transaction.lookupMs += lookupMs;
          if (logger.isLevelEnabled('debug')) {
            const fields = { to: spelling, keys: route.lookup.kind, box: route.boxUser !== undefined, lookupMs: Math.round(lookupMs * 10) / 10 };
            transactionLogger(logger, session, transaction).debug(fields, 'recipient looked up');
          }
          callback();
        },
        (error: unknown) => {
          const reply = errorReply(error);
          transactionLogger(logger, session, transaction).warn({ to: spelling, reply: `${reply.code} ${replyText(reply)}` }, 'recipient not accepted');
          callback(toSmtpError(reply));
        },
      );
    },
    onData(stream, session, callback) {
      const transaction = transactions.get(session.envelope);
      if (!transaction) return callback(new Error('no mail transaction'));
      // smtp-server kept one entry per case-insensitive address: put back every accepted RCPT. Lacre answers
      // LMTP from its own list (handleData); smtp-server reads this one where it answers by itself, per entry:
      // an error passed instead of replies (none is today), and its own 552 with `rejectOversized` (off).
      session.envelope.rcptTo = transaction.recipients.map((recipient) => recipient.smtp);
      armDataDeadline(stream, config.smtp.data_timeout_seconds, () => {
        const error = new DataTimeoutError(`the DATA phase took longer than smtp.data_timeout_seconds (${config.smtp.data_timeout_seconds} s)`);
        const reply = errorReply(error);
        stream.destroy(error);
        connections.send(session, reply.code, replyText(reply));
      });
      const handled = handleData(stream, session, transaction, filter, logger).then(
        (replies) => callback(null, replies as unknown as string),
        (error: unknown) => callback(isSmtpReplyError(error) ? error : toSmtpError(errorReply(error))),
      );
      inFlight.add(handled);
      void handled.finally(() => inFlight.delete(handled));
    },
  });
  const connections = watchConnections(server, () =>
    logger.warn("smtp-server's address parsing is not the version Lacre knows: international domains are reinjected as smtp-server decoded them (Unicode)"),
  );
  server.on('error', (error) => logger.error({ err: error }, 'SMTP listener error'));
  server.server.on('connection', batchRepliesPerRead);
  const { host, port } = parseHostPort(config.smtp.listen);
  return {
    listen: () =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve(server.server.address() as AddressInfo);
        });
      }),
    close: () => closeGracefully(server, inFlight),
    sessions: () => (server as unknown as { connections: Set<unknown> }).connections.size,
  };
}

/** One mail transaction as the client sent it (smtp-server's envelope merges recipients and rewrites domains). */
interface Transaction {
  /** The sender as spelled in MAIL FROM. */
  readonly from: string;
  /** The XFORWARD attributes sent for this transaction, [UNAVAILABLE] ones left out. */
  readonly xforward: ReadonlyMap<string, string>;
  /** The connection's own peer, for the log when no client address was forwarded. */
  readonly peer: string | undefined;
  /** Every accepted RCPT in order, duplicates included, with its route. */
  readonly recipients: Array<{ readonly smtp: SMTPServerAddress; readonly route: RoutedRecipient }>;
  lookupMs: number;
}

/**
 * XFORWARD attributes belong to the transaction that follows them (XFORWARD_README): Postfix sends only those it
 * has for each message (for a locally submitted one, SOURCE=LOCAL alone) over a connection it keeps, while
 * smtp-server keeps every attribute for the life of the connection. So they are taken at MAIL, and forgotten.
 */
function startTransaction(from: SMTPServerAddress, session: SMTPServerSession, peer: string | undefined): Transaction {
  const xforward = new Map<string, string>();
  for (const [name, value] of session.xForward ?? []) if (typeof value === 'string' && value !== '') xforward.set(name, value);
  session.xForward?.clear();
  return { from: receivedSpelling(from), xforward, peer, recipients: [], lookupMs: 0 };
}

/** Calls `expire` when the client has not sent the whole message (up to its final dot) within `seconds`. */
function armDataDeadline(stream: SMTPServerDataStream, seconds: number, expire: () => void): void {
  const timer = setTimeout(() => {
    if (!stream.writableEnded && !stream.destroyed) expire();
  }, seconds * 1000);
  finished(stream, () => clearTimeout(timer));
}

/**
 * Stops accepting, lets the messages in DATA finish (their replies decide what Postfix keeps), then closes
 * the idle connections Postfix keeps cached with a 421 rather than waiting for Postfix to drop them.
 */
async function closeGracefully(server: SMTPServer, inFlight: Set<Promise<unknown>>): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  await Promise.allSettled([...inFlight]);
  const connections = (server as unknown as { connections: Set<{ send(code: number, text: string): void; close(): void }> }).connections;
  for (const connection of connections) {
    connection.send(421, '4.3.2 Lacre shutting down, try again later');
    connection.close();
  }
  await closed;
}

async function handleData(
  stream: SMTPServerDataStream,
  session: SMTPServerSession,
  transaction: Transaction,
  filter: MessageFilter,
  logger: Logger,
): Promise<string | Array<string | Error>> {
  const lmtp = isLmtp(session);
  const outcome = await filter.process({
    perRecipientReplies: lmtp,
    from: transaction.from,
    recipients: transaction.recipients.map((recipient) => recipient.route),
    queueId: transaction.xforward.get('IDENT'),
    body: stream,
    use8BitMime: session.envelope.bodyType === '8bitmime',
    sizeExceeded: () => stream.sizeExceeded,
    bytesRead: () => stream.byteLength,
    lookupMs: transaction.lookupMs,
    log: transactionLogger(logger, session, transaction),
  });
  // A message over smtp.max_size gets Lacre's own 552 5.3.4 (MessageTooLargeError), per recipient in LMTP:
  // smtp-server's `rejectOversized` is left off.
  if (lmtp) return outcome.recipientReplies.map((reply) => (reply.code < 400 ? replyText(reply) : toSmtpError(reply)));
  if (outcome.reply.code >= 400) throw toSmtpError(outcome.reply);
  return replyText(outcome.reply);
}

function isLmtp(session: SMTPServerSession): boolean {
  return session.openingCommand === 'LHLO';
}

function transactionLogger(logger: Logger, session: SMTPServerSession, transaction: Transaction): Logger {
  const xforward = transaction.xforward;
  return logger.child({
    session: session.id,
    queueId: xforward.get('IDENT'),
    client: xforward.get('ADDR') ?? transaction.peer ?? session.remoteAddress,
    clientName: xforward.get('NAME'),
  });
}

/**
 * Postfix pipelines its commands (XFORWARD, MAIL, RCPT, DATA in one packet) and smtp-server writes each reply as
 * it is made, one system call each: a third of Lacre's busy time behind Postfix went to those writes. The
 * socket is corked when a read arrives and uncorked on the next turn of the event loop, after the commands
 * read were answered (a cached key lookup answers RCPT within the same turn), so their replies leave in one
 * write. A reply made later (a key looked up in the database, the end of DATA) goes out when it is made.
 */
export function batchRepliesPerRead(socket: Socket): void {
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  // prependListener: before smtp-server's parser reads the chunk, and without putting the socket in flowing mode.
  socket.prependListener('data', () => {
    if (corked) return;
    corked = true;
    socket.cork();
    setImmediate(uncork);
  });
}
