import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';

export interface SunkMessage {
  readonly from: string;
  readonly to: string[];
  readonly data: Buffer;
}

export interface SinkOptions {
  /** Port to bind (0 = any free one); reuse a port to "bring the relay back". */
  port?: number;
  /** Reply for a recipient at RCPT time, e.g. to refuse one permanently. */
  rcptReply?: (address: string) => { code: number; message: string } | undefined;
  lmtp?: boolean;
}

/** A real SMTP server on loopback standing in for Postfix's reinjection listener; keeps what it accepted. */
export class SmtpSink {
  readonly messages: SunkMessage[] = [];
  private server: SMTPServer | undefined;
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
      lmtp: options.lmtp ?? false,
      onRcptTo: (address, _session, callback) => {
        const reply = options.rcptReply?.(address.address);
        if (!reply) return callback();
        return callback(Object.assign(new Error(reply.message), { responseCode: reply.code }));
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          this.messages.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            data: Buffer.concat(chunks),
          });
          callback(null, 'queued');
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    // Drop open (pooled) connections too, as a relay that went away would.
    for (const connection of (server as unknown as { connections: Set<{ close(): void }> }).connections ?? []) connection.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  messageFor(address: string): SunkMessage | undefined {
    return this.messages.find((m) => m.to.includes(address));
  }
}
