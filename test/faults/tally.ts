/**
 * What the fault suite expects and what arrived: every (message, recipient) pair sent, every copy the downstream
 * accepted, classified the moment it arrives so that only figures (and a few samples) stay in memory.
 */
import { SmtpSink, type SinkOptions } from '../helpers/smtp-sink.js';
import { KEYED, sha256, type FaultMessage } from './load.js';

interface Expected {
  readonly to: ReadonlySet<string>;
  readonly digest: string;
  readonly marker: string;
  /** Kept for a few messages only: their keyed copies are decrypted after the drain. */
  readonly raw: Buffer | undefined;
}

export interface KeyedSample {
  readonly recipient: string;
  readonly original: Buffer;
  readonly copy: Buffer;
}

export interface Figures {
  /** Messages Postfix accepted. */
  messages: number;
  /** Copies owed: (message, recipient) pairs sent. */
  sent: number;
  /** Distinct (message, recipient) pairs that arrived. */
  delivered: number;
  /** Copies beyond the first of a pair. */
  duplicated: number;
  /** Pairs sent that never arrived. */
  lost: number;
  plaintextToKeyed: number;
  /** Keyless copies that are not byte-identical to what was sent, and copies to a recipient never sent to. */
  wrong: number;
}

const SAMPLE_EVERY = 25;
const SAMPLES_KEPT = 6;

export class Tally {
  private readonly expected = new Map<string, Expected>();
  private readonly arrivals = new Map<string, number>();
  private plaintextToKeyed = 0;
  private wrong = 0;
  readonly problems: string[] = [];
  readonly samples: KeyedSample[] = [];

  sent(message: FaultMessage, index: number): void {
    const keep = index % SAMPLE_EVERY === 0 || message.raw.length > 2 * 1024 * 1024;
    this.expected.set(message.id, { to: new Set(message.to), digest: sha256(message.raw), marker: message.marker, raw: keep ? message.raw : undefined });
  }

  /** One copy as the downstream accepted it, for these envelope recipients. */
  arrived(recipients: readonly string[], data: Buffer): void {
    const id = faultId(data);
    const expected = id === undefined ? undefined : this.expected.get(id);
    if (id === undefined || expected === undefined) return this.problem(`a copy of an unknown message (${id ?? 'no X-Fault-Id'})`);
    for (const recipient of recipients) {
      const pair = `${id} ${recipient}`;
      this.arrivals.set(pair, (this.arrivals.get(pair) ?? 0) + 1);
      if (!expected.to.has(recipient)) this.problem(`${pair}: a copy to a recipient the message was not sent to`);
      else if (isKeyed(recipient)) this.checkKeyed(pair, recipient, expected, data);
      else if (sha256(withoutReceived(data)) !== expected.digest) this.problem(`${pair}: the keyless copy is not byte-identical`);
    }
  }

  /**
   * One blob found in a recipient's Incoming Box: `blob` as stored (must not hold the plaintext marker) and what
   * it decrypts to (the message as Lacre received it).
   */
  arrivedInBox(recipient: string, blob: Buffer, plaintext: Buffer): void {
    const id = faultId(plaintext);
    const expected = id === undefined ? undefined : this.expected.get(id);
    if (id === undefined || expected === undefined) return this.problem(`a box blob of an unknown message (${id ?? 'no X-Fault-Id'})`);
    const pair = `${id} ${recipient}`;
    this.arrivals.set(pair, (this.arrivals.get(pair) ?? 0) + 1);
    if (blob.includes(expected.marker)) {
      this.plaintextToKeyed += 1;
      this.problem(`${pair}: plaintext in the box`);
    } else if (sha256(withoutReceived(plaintext)) !== expected.digest) this.problem(`${pair}: the box copy does not decrypt to the message`);
  }

  figures(): Figures {
    let sentPairs = 0;
    let delivered = 0;
    let duplicated = 0;
    for (const [id, expected] of this.expected) {
      for (const recipient of expected.to) {
        sentPairs += 1;
        const copies = this.arrivals.get(`${id} ${recipient}`) ?? 0;
        if (copies > 0) delivered += 1;
        duplicated += Math.max(0, copies - 1);
      }
    }
    return { messages: this.expected.size, sent: sentPairs, delivered, duplicated, lost: sentPairs - delivered, plaintextToKeyed: this.plaintextToKeyed, wrong: this.wrong };
  }

  /** Pairs not arrived yet, for a failure message. */
  missing(limit = 10): string[] {
    const missing: string[] = [];
    for (const [id, expected] of this.expected) {
      for (const recipient of expected.to) if (!this.arrivals.has(`${id} ${recipient}`) && missing.length < limit) missing.push(`${id} ${recipient}`);
    }
    return missing;
  }

  private checkKeyed(pair: string, recipient: string, expected: Expected, data: Buffer): void {
    const encrypted = data.includes('multipart/encrypted') && data.includes('-----BEGIN PGP MESSAGE-----');
    if (!encrypted || data.includes(expected.marker)) {
      this.plaintextToKeyed += 1;
      this.problem(`${pair}: plaintext to a keyed recipient`);
      return;
    }
    if (expected.raw && this.samples.length < SAMPLES_KEPT && !this.samples.some((sample) => sample.original === expected.raw && sample.recipient === recipient)) {
      this.samples.push({ recipient, original: expected.raw, copy: data });
    }
  }

  private problem(text: string): void {
    if (!text.includes('plaintext')) this.wrong += 1;
    if (this.problems.length < 20) this.problems.push(text);
  }
}

export function isKeyed(recipient: string): boolean {
  return (KEYED as readonly string[]).includes(recipient);
}

function faultId(data: Buffer): string | undefined {
  const head = data.subarray(0, Math.min(data.length, 64 * 1024)).toString('latin1');
  return /^X-Fault-Id: (\S+)\r?$/m.exec(head)?.[1];
}

/** The copy without the Received fields Postfix's public smtpd put on top (the only change Postfix makes here). */
function withoutReceived(data: Buffer): Buffer {
  let at = 0;
  for (;;) {
    if (data.subarray(at, at + 9).toString('latin1').toLowerCase() !== 'received:') return data.subarray(at);
    let end = data.indexOf('\r\n', at);
    while (end >= 0 && (data[end + 2] === 0x20 || data[end + 2] === 0x09)) end = data.indexOf('\r\n', end + 2);
    if (end < 0) return data.subarray(at);
    at = end + 2;
  }
}

export type CountingSinkOptions = Pick<SinkOptions, 'port' | 'readDelayMs'>;

/** A real SMTP server on loopback in the place of Postfix's reinjection listener; hands each accepted copy to a tally. */
export class CountingSink {
  private readonly sink = new SmtpSink();
  copies = 0;

  constructor(private readonly onCopy: (recipients: string[], data: Buffer) => void) {}

  get port(): number {
    return this.sink.port;
  }

  /** Listens (again: on the same port unless told otherwise); copies are counted and handed on, never kept. */
  start(options: CountingSinkOptions = {}): Promise<void> {
    return this.sink.listen({
      ...options,
      keep: false,
      onMessage: (message) => {
        this.copies += 1;
        this.onCopy(message.to, message.data);
      },
    });
  }

  /** Goes away as a stopped listener does: open connections (mid-DATA ones included) are dropped. */
  stop(): Promise<void> {
    return this.sink.stop();
  }
}
