import { SMTPServer, type SMTPServerAddress, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { RoutedRecipient } from '../filter/plan.js';
import type { MessageFilter } from '../filter/filter.js';
import { errorReply, isSmtpReplyError, replyText, toSmtpError } from '../filter/reply.js';

export interface SmtpListener {
  /** Resolves with the bound address (port 0 picks a free one). */
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
  /** Open inbound connections, for the sessions gauge. */
  sessions(): number;
}

export function parseListen(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(':');
  return { host: listen.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(at + 1)) };
}

/**
 * The inbound side for Postfix's content_filter (SMTP, or LMTP with per-recipient answers). Keys are looked
 * up at RCPT time, so a recipient refused by policy, or a key store that is down, is answered per recipient.
 */
export function createSmtpListener(config: Config, filter: MessageFilter, logger: Logger): SmtpListener {
  const routes = new WeakMap<SMTPServerAddress, RoutedRecipient>();
  const lookupTimes = new WeakMap<SMTPServerAddress, number>();
  const inFlight = new Set<Promise<unknown>>();
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
    // Answered at once: smtp-server's default answers MAIL on the next turn of the event loop, after the
    // replies to what came with it were let go (see batchRepliesPerRead).
    onMailFrom(_address, _session, callback) {
      callback();
    },
    onRcptTo(address, session, callback) {
      const started = performance.now();
      filter.lookupRecipient(address.address).then(
        (route) => {
          const lookupMs = performance.now() - started;
          routes.set(address, route);
          lookupTimes.set(address, lookupMs);
          if (logger.isLevelEnabled('debug')) {
            const fields = { to: address.address, keys: route.lookup.kind, box: route.boxUser !== undefined, lookupMs: Math.round(lookupMs * 10) / 10 };
            sessionLogger(logger, session).debug(fields, 'recipient looked up');
          }
          callback();
        },
        (error: unknown) => {
          const reply = errorReply(error);
          sessionLogger(logger, session).warn({ to: address.address, reply: `${reply.code} ${replyText(reply)}` }, 'recipient not accepted');
          callback(toSmtpError(reply));
        },
      );
    },
    onData(stream, session, callback) {
      const handled = handleData(stream, session, filter, { routes, lookupTimes }, logger).then(
        (replies) => callback(null, replies as unknown as string),
        (error: unknown) => callback(isSmtpReplyError(error) ? error : toSmtpError(errorReply(error))),
      );
      inFlight.add(handled);
      void handled.finally(() => inFlight.delete(handled));
    },
  });
  server.on('error', (error) => logger.error({ err: error }, 'SMTP listener error'));
  server.server.on('connection', batchRepliesPerRead);
  const { host, port } = parseListen(config.smtp.listen);
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
  filter: MessageFilter,
  { routes, lookupTimes }: { routes: WeakMap<SMTPServerAddress, RoutedRecipient>; lookupTimes: WeakMap<SMTPServerAddress, number> },
  logger: Logger,
): Promise<string | Array<string | Error>> {
  const recipients = session.envelope.rcptTo.map((rcpt) => {
    const route = routes.get(rcpt);
    if (!route) throw new Error(`recipient ${rcpt.address} was not looked up`);
    return route;
  });
  const mailFrom = session.envelope.mailFrom;
  const outcome = await filter.process({
    from: mailFrom ? mailFrom.address : '',
    recipients,
    queueId: xForwardOf(session)?.get('IDENT'),
    body: stream,
    use8BitMime: (session.envelope as { bodyType?: string }).bodyType === '8bitmime',
    sizeExceeded: () => stream.sizeExceeded,
    bytesRead: () => stream.byteLength,
    lookupMs: session.envelope.rcptTo.reduce((sum, rcpt) => sum + (lookupTimes.get(rcpt) ?? 0), 0),
    log: sessionLogger(logger, session),
  });
  // smtp-server answers 552 by itself when the size was exceeded, whatever is returned here.
  if (isLmtp(session)) return outcome.recipientReplies.map((reply) => (reply.code < 400 ? replyText(reply) : toSmtpError(reply)));
  if (outcome.reply.code >= 400) throw toSmtpError(outcome.reply);
  return replyText(outcome.reply);
}

function isLmtp(session: SMTPServerSession): boolean {
  return session.openingCommand === 'LHLO';
}

function xForwardOf(session: SMTPServerSession): Map<string, string> | undefined {
  return (session as { xForward?: Map<string, string> }).xForward;
}

function sessionLogger(logger: Logger, session: SMTPServerSession): Logger {
  const xforward = xForwardOf(session);
  return logger.child({
    session: session.id,
    queueId: xforward?.get('IDENT'),
    client: xforward?.get('ADDR') ?? session.remoteAddress,
    clientName: xforward?.get('NAME'),
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
