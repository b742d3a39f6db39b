import { connect, type Socket } from 'node:net';

/**
 * A literal SMTP/LMTP client for tests: sends exactly the bytes given and returns each reply, so tests can
 * speak XFORWARD, LMTP and odd inputs that a library client would refuse or rewrite.
 */
export class RawSmtpClient {
  private buffer = '';
  private waiters: Array<() => void> = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }

  /** `host` defaults to loopback; the connection leaves from the host's address towards it. */
  static async connect(port: number, host = '127.0.0.1'): Promise<{ client: RawSmtpClient; greeting: string }> {
    const socket = connect(port, host);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const client = new RawSmtpClient(socket);
    return { client, greeting: await client.reply() };
  }

  /** Next complete (possibly multi-line) reply. */
  async reply(timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = /^(?:\d{3}-[^\n]*\n)*\d{3}(?: [^\n]*)?\r?\n/.exec(this.buffer);
      if (match) {
        this.buffer = this.buffer.slice(match[0].length);
        return match[0].trimEnd();
      }
      if (Date.now() > deadline) throw new Error(`no SMTP reply within ${timeoutMs} ms (have: ${JSON.stringify(this.buffer)})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Writes `text` as it is, without waiting for a reply (to pipeline commands). */
  write(text: string | Buffer): void {
    this.socket.write(text);
  }

  async command(line: string): Promise<string> {
    this.socket.write(`${line}\r\n`);
    return this.reply();
  }

  /** Sends DATA, the dot-stuffed message and the terminator; returns the DATA reply and `replies` final replies. */
  async data(message: Buffer, replies = 1): Promise<{ start: string; final: string[] }> {
    const start = await this.command('DATA');
    if (!start.startsWith('354')) return { start, final: [] };
    const stuffed = Buffer.from(message.toString('latin1').replace(/(^|\n)\./g, '$1..'), 'latin1');
    this.socket.write(stuffed);
    this.socket.write(stuffed.length && stuffed[stuffed.length - 1] === 0x0a ? '.\r\n' : '\r\n.\r\n');
    const final: string[] = [];
    for (let i = 0; i < replies; i++) final.push(await this.reply(120_000));
    return { start, final };
  }

  /** Resolves when the server has closed the connection (fails after `timeoutMs`). */
  async closed(timeoutMs = 30_000): Promise<void> {
    if (this.socket.readableEnded || this.socket.destroyed) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs} ms`)), timeoutMs);
      this.socket.once('end', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Sends QUIT and waits for the server to close; a server that does not (it hangs: a test is failing) is cut off. */
  async close(timeoutMs = 5_000): Promise<void> {
    this.socket.end('QUIT\r\n');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.socket.destroy(), timeoutMs);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/** One whole transaction: EHLO/LHLO, MAIL, RCPT…, DATA; returns every reply. */
export async function sendRaw(
  port: number,
  envelope: { from: string; to: string[]; lmtp?: boolean; xforward?: string },
  message: Buffer,
): Promise<{ rcpt: string[]; data: string[] }> {
  const { client } = await RawSmtpClient.connect(port);
  try {
    await client.command(`${envelope.lmtp ? 'LHLO' : 'EHLO'} test.example`);
    if (envelope.xforward) await client.command(`XFORWARD ${envelope.xforward}`);
    const mail = await client.command(`MAIL FROM:<${envelope.from}> BODY=8BITMIME`);
    if (!mail.startsWith('250')) throw new Error(`MAIL refused: ${mail}`);
    const rcpt: string[] = [];
    for (const to of envelope.to) rcpt.push(await client.command(`RCPT TO:<${to}>`));
    const accepted = rcpt.filter((r) => r.startsWith('250')).length;
    if (accepted === 0) return { rcpt, data: [] };
    const { start, final } = await client.data(message, envelope.lmtp ? accepted : 1);
    return { rcpt, data: final.length ? final : [start] };
  } finally {
    await client.close();
  }
}
