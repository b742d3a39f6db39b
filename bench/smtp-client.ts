import { connect, type Socket } from 'node:net';
import type { Readable } from 'node:stream';

/** One SMTP reply: the code and the text of its last line. */
export interface Reply {
  code: number;
  text: string;
}

const REPLY = /^(?:\d{3}-[^\n]*\n)*(\d{3})(?: ([^\n]*))?\r?\n/;

/**
 * A small SMTP client for load generation: one kept-alive connection, MAIL/RCPT/DATA pipelined (RFC 2920),
 * the body written as given (the caller guarantees it is dot-safe and ends in CRLF). Much lighter on the CPU
 * than a library client, which matters when the client shares two cores with the servers it measures.
 */
export class SmtpSession {
  private buffer = '';
  private readonly replies: Reply[] = [];
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.setNoDelay(true);
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (error) => this.fail(error));
    socket.on('close', () => this.fail(new Error('SMTP connection closed')));
  }

  static async open(port: number, timeoutMs = 10_000): Promise<SmtpSession> {
    const socket = connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`connect to 127.0.0.1:${port} timed out`)), timeoutMs);
      socket.once('connect', () => (clearTimeout(timer), resolve()));
      socket.once('error', (error) => (clearTimeout(timer), reject(error)));
    });
    const session = new SmtpSession(socket);
    try {
      expect(await session.reply(timeoutMs), 220, 'greeting');
      session.socket.write('EHLO bench.localhost\r\n');
      expect(await session.reply(timeoutMs), 250, 'EHLO');
    } catch (error) {
      socket.destroy();
      throw error;
    }
    return session;
  }

  /** Sends one message of pre-stuffed bytes to one or more recipients; rejects unless every step is accepted. */
  async send(from: string, to: string | readonly string[], message: Buffer, timeoutMs = 30_000): Promise<void> {
    await this.startData(from, to, timeoutMs);
    this.socket.write(message);
    this.socket.write('.\r\n');
    expect(await this.reply(timeoutMs), 250, 'end of DATA');
  }

  /** Sends one message streamed from `body` (dot-safe, ending in CRLF) with backpressure; resolves when accepted. */
  async sendStream(from: string, to: string, body: Readable, timeoutMs: number): Promise<void> {
    await this.startData(from, to, 30_000);
    for await (const chunk of body) {
      if (this.failure) throw this.failure;
      if (!this.socket.write(chunk as Buffer)) await this.drained();
    }
    this.socket.write('.\r\n');
    expect(await this.reply(timeoutMs), 250, 'end of DATA');
  }

  async close(): Promise<void> {
    if (this.failure) return;
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.socket.end('QUIT\r\n');
    const timer = setTimeout(() => this.socket.destroy(), 5_000);
    await closed;
    clearTimeout(timer);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private async startData(from: string, to: string | readonly string[], timeoutMs: number): Promise<void> {
    const recipients = typeof to === 'string' ? [to] : to;
    this.socket.write(`MAIL FROM:<${from}>\r\n${recipients.map((rcpt) => `RCPT TO:<${rcpt}>\r\n`).join('')}DATA\r\n`);
    expect(await this.reply(timeoutMs), 250, 'MAIL FROM');
    for (const rcpt of recipients) expect(await this.reply(timeoutMs), 250, `RCPT TO:<${rcpt}>`);
    expect(await this.reply(timeoutMs), 354, 'DATA');
  }

  private drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      this.socket.once('drain', resolve);
      this.waiter = () => (this.failure ? reject(this.failure) : undefined);
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let match = REPLY.exec(this.buffer); match; match = REPLY.exec(this.buffer)) {
      this.replies.push({ code: Number(match[1]), text: match[2] ?? '' });
      this.buffer = this.buffer.slice(match[0].length);
    }
    this.wake();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  private async reply(timeoutMs: number): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const next = this.replies.shift();
      if (next) return next;
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no SMTP reply within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => (clearTimeout(timer), resolve());
      });
    }
  }
}

function expect(reply: Reply, code: number, step: string): void {
  if (reply.code !== code) throw new Error(`${step}: expected ${code}, got ${reply.code} ${reply.text}`);
}
