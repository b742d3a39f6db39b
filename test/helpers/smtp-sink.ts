import { SMTPServer } from 'smtp-server';
import type { AddressInfo, Socket } from 'node:net';

export interface SunkMessage {
  readonly from: string;
  readonly to: string[];
  readonly data: Buffer;
  /** The MAIL and RCPT command lines of this transaction exactly as the client sent them (UTF-8 decoded, no CRLF). */
  readonly commands: string[];
}

export interface SinkOptions {
  /** Port to bind (0 = any free one); reuse a port to "bring the relay back". */
  port?: number;
  /** Reply for a recipient at RCPT time, e.g. to refuse one permanently. */
  rcptReply?: (address: string) => { code: number; message: string } | undefined;
  lmtp?: boolean;
  /** Holds the answer to a transaction's DATA until the promise settles (never: a downstream that stalls). */
  holdData?: (recipients: string[]) => Promise<void> | undefined;
  /** Called with each message accepted, before its 250. */
  onMessage?: (message: SunkMessage) => void;
  /** false: messages go to onMessage only and are not kept (a long load). Default true. */
  keep?: boolean;
  /** Pause after every chunk read: a downstream that reads slowly. */
  readDelayMs?: number;
  /** smtp-server's maxClients (default 100). */
  maxClients?: number;
}

/** A real SMTP server on loopback standing in for Postfix's reinjection listener; keeps what it accepted. */
export class SmtpSink {
  readonly messages: SunkMessage[] = [];
  private server: SMTPServer | undefined;
  /** Per client port: the MAIL/RCPT lines of the transaction under way on that connection. */
  private readonly envelopeLines = new Map<number, string[]>();
  port = 0;

  static async start(options: SinkOptions = {}): Promise<SmtpSink> {
    const sink = new SmtpSink();
    await sink.listen(options);
    return sink;
  }

  async listen(options: SinkOptions = {}): Promise<void> {
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['AUTH', 'STARTTLS'],
      disableReverseLookup: true,
      logger: false,
      ...(options.maxClients === undefined ? {} : { maxClients: options.maxClients }),
      lmtp: options.lmtp ?? false,
      onRcptTo: (address, _session, callback) => {
        const reply = options.rcptReply?.(address.address);
        if (!reply) return callback();
        return callback(Object.assign(new Error(reply.message), { responseCode: reply.code }));
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          if (options.readDelayMs) {
            stream.pause();
            setTimeout(() => stream.resume(), options.readDelayMs);
          }
        });
        stream.on('end', async () => {
          await options.holdData?.(session.envelope.rcptTo.map((r) => r.address));
          const message: SunkMessage = {
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            data: Buffer.concat(chunks),
            commands: [...(this.envelopeLines.get(session.remotePort) ?? [])],
          };
          if (options.keep ?? true) this.messages.push(message);
          options.onMessage?.(message);
          callback(null, 'queued');
        });
      },
    });
    server.server.prependListener('connection', (socket: Socket) => this.recordEnvelopeLines(socket));
    this.port = await listenOnLoopback(server, options.port ?? this.port);
    this.server = server;
  }

  /** Goes away as a stopped listener does: open connections (mid-DATA ones too) are dropped. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await closeDroppingConnections(server);
  }

  /** smtp-server rewrites addresses (Unicode domains): keep the client's own MAIL and RCPT lines beside them. */
  private recordEnvelopeLines(socket: Socket): void {
    const port = socket.remotePort ?? 0;
    let pending = Buffer.alloc(0);
    let inData = false;
    socket.prependListener('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      for (let end = pending.indexOf('\r\n'); end >= 0; end = pending.indexOf('\r\n')) {
        const line = pending.subarray(0, end).toString('utf8');
        pending = pending.subarray(end + 2);
        if (inData) inData = line !== '.';
        else if (/^MAIL FROM:/i.test(line)) this.envelopeLines.set(port, [line]);
        else if (/^RCPT TO:/i.test(line)) this.envelopeLines.get(port)?.push(line);
        else if (/^DATA$/i.test(line)) inData = true;
      }
    });
    socket.once('close', () => this.envelopeLines.delete(port));
  }

  messageFor(address: string): SunkMessage | undefined {
    return this.messages.find((m) => m.to.includes(address));
  }
}

/** Listens on 127.0.0.1:`port` (0 = any free one); resolves with the port. */
export async function listenOnLoopback(server: SMTPServer, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  // A client that vanishes (a killed lacre serve) resets its connection: smtp-server reports that as an 'error'
  // event, which without a listener would end the test process.
  server.on('error', () => undefined);
  return (server.server.address() as AddressInfo).port;
}

/** Closes the server and drops its open (pooled, even mid-DATA) connections, as a relay that went away would. */
export async function closeDroppingConnections(server: SMTPServer): Promise<void> {
  for (const connection of (server as unknown as { connections: Set<{ close(): void }> }).connections ?? []) connection.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}
