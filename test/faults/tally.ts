/**
 * What the fault suite expects and what arrived: every (message, recipient) pair sent, every copy the downstream
 * accepted, classified the moment it arrives so that only figures (and a few samples) stay in memory.
 */
import { SmtpSink, type SinkOptions } from '../helpers/smtp-sink.js';
import { KEYED, sha256, type FaultMessage } from './load.js';

interface Expected {
  readonly to: ReadonlySet<string>;
  readonly digest: string;
  readonly size: number;
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
/** Messages over this size (the load's 3 MiB ones) are always sampled, with a cap of their own. */
export const LARGE_MESSAGE_BYTES = 2 * 1024 * 1024;
/** Caps on the samples held in memory until the drain: the small ones arrive first and must not crowd out the large. */
const SMALL_SAMPLES_KEPT = 6;
const LARGE_SAMPLES_KEPT = 4;

export class Tally {
  private readonly expected = new Map<string, Expected>();
  private readonly arrivals = new Map<string, number>();
  private plaintextToKeyed = 0;
  private wrong = 0;
  /** Box blobs of messages over LARGE_MESSAGE_BYTES decrypted, encrypted to their recipient alone and exact. */
  largeBoxCopiesDecrypted = 0;
  readonly problems: string[] = [];
  readonly samples: KeyedSample[] = [];

  sent(message: FaultMessage, index: number): void {
    const keep = index % SAMPLE_EVERY === 0 || message.raw.length > LARGE_MESSAGE_BYTES;
    this.expected.set(message.id, {
      to: new Set(message.to),
      digest: sha256(message.raw),
      size: message.raw.length,
      marker: message.marker,
      raw: keep ? message.raw : undefined,
    });
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
   * One blob found in a recipient's Incoming Box: `blob` as stored (must not hold the plaintext marker), the key IDs
   * it is encrypted to (must be the recipient's encryption key alone: the gpg home holds every recipient's secret
   * key, so decrypting proves nothing about who else could) and what it decrypts to (the message as Lacre received it).
   */
  arrivedInBox(recipient: string, blob: Buffer, plaintext: Buffer, encryptedTo: { keyIds: readonly string[]; recipientKeyId: string }): void {
    const id = faultId(plaintext);
    const expected = id === undefined ? undefined : this.expected.get(id);
    if (id === undefined || expected === undefined) return this.problem(`a box blob of an unknown message (${id ?? 'no X-Fault-Id'})`);
    const pair = `${id} ${recipient}`;
    this.arrivals.set(pair, (this.arrivals.get(pair) ?? 0) + 1);
    if (blob.includes(expected.marker)) {
      this.plaintextToKeyed += 1;
      this.problem(`${pair}: plaintext in the box`);
    } else if (encryptedTo.keyIds.join() !== encryptedTo.recipientKeyId) {
      this.problem(`${pair}: box blob encrypted to ${encryptedTo.keyIds.join() || 'no key'}, not ${encryptedTo.recipientKeyId} alone`);
    } else if (sha256(withoutReceived(plaintext)) !== expected.digest) this.problem(`${pair}: the box copy does not decrypt to the message`);
    else if (expected.size > LARGE_MESSAGE_BYTES) this.largeBoxCopiesDecrypted += 1;
  }

  /** Messages sent over LARGE_MESSAGE_BYTES with at least one keyed recipient: each scenario must decrypt one. */
  largeKeyedMessages(): number {
    let large = 0;
    for (const expected of this.expected.values()) if (expected.size > LARGE_MESSAGE_BYTES && [...expected.to].some(isKeyed)) large += 1;
    return large;
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
    if (expected.raw && this.roomForSample(expected.size > LARGE_MESSAGE_BYTES) && !this.samples.some((sample) => sample.original === expected.raw && sample.recipient === recipient)) {
      this.samples.push({ recipient, original: expected.raw, copy: data });
    }
  }

  private roomForSample(large: boolean): boolean {
    const kept = this.samples.filter((sample) => sample.original.length > LARGE_MESSAGE_BYTES === large).length;
    return kept < (large ? LARGE_SAMPLES_KEPT : SMALL_SAMPLES_KEPT);
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
