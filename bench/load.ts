import { SmtpSession } from './smtp-client.js';
import { messageFactory, SENDER } from './messages.js';

export interface LoadOptions {
  port: number;
  /** Every message goes to all of them (one RCPT each). */
  recipients: readonly string[];
  sessions: number;
  messageBytes: number;
  /** Every send after this instant (Date.now()) fails: bounds the whole load in time. */
  deadline: number;
}

/** What one measured batch added up to. */
export class LoadTally {
  readonly latenciesMs: number[] = [];
  seconds = 0;
  cpuMs = 0;

  get messages(): number {
    return this.latenciesMs.length;
  }

  get messagesPerSecond(): number {
    return this.messages / this.seconds;
  }

  get cpuMsPerMessage(): number {
    return this.cpuMs / this.messages;
  }

  percentileMs(p: number): number {
    const sorted = [...this.latenciesMs].sort((a, b) => a - b);
    if (sorted.length === 0) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
  }
}

/**
 * `sessions` kept-alive connections to one server, each sending one message at a time and the next as soon as
 * the previous one is answered. Latency: MAIL FROM sent to the final reply to DATA.
 */
export class LoadGenerator {
  private numbered = 0;
  private readonly makeMessage: (index: number) => Buffer;

  private constructor(
    private readonly options: LoadOptions,
    private readonly sessions: SmtpSession[],
  ) {
    this.makeMessage = messageFactory(options.recipients, options.messageBytes);
  }

  static async open(options: LoadOptions): Promise<LoadGenerator> {
    const opened = await Promise.allSettled(Array.from({ length: options.sessions }, () => SmtpSession.open(options.port)));
    const sessions = opened.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
    const failed = opened.find((result) => result.status === 'rejected');
    if (failed) {
      for (const session of sessions) session.destroy();
      throw failed.reason;
    }
    return new LoadGenerator(options, sessions);
  }

  /**
   * Sends over all sessions until `maxMessages` were claimed or `windowMs` has passed, whichever comes first (no
   * new message starts after the window; those in flight finish). With a tally, adds their latencies and the
   * elapsed time to it. Resolves to the number of messages sent.
   */
  async send(batch: { maxMessages: number; windowMs: number }, tally?: LoadTally): Promise<number> {
    let claimed = 0;
    const started = performance.now();
    const windowEnds = started + batch.windowMs;
    const worker = async (session: SmtpSession) => {
      while (claimed < batch.maxMessages && performance.now() < windowEnds) {
        claimed += 1;
        if (Date.now() > this.options.deadline) throw new Error(`load to port ${this.options.port} passed its deadline`);
        const message = this.makeMessage(this.numbered++);
        const sent = performance.now();
        await session.send(SENDER, this.options.recipients, message);
        tally?.latenciesMs.push(performance.now() - sent);
      }
    };
    await Promise.all(this.sessions.map(worker));
    if (tally) tally.seconds += (performance.now() - started) / 1000;
    return claimed;
  }

  async close(): Promise<void> {
    await Promise.all(this.sessions.map((session) => session.close().catch(() => session.destroy())));
  }
}
