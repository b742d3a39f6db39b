import { createHash } from 'node:crypto';
import type { DeliveryLedger } from './ports.js';

/**
 * One message's entry in the delivery ledger: asked once before the copies are produced, told after each copy a
 * downstream accepted. The ledger only ever saves duplicates, it never decides a delivery: when it cannot be read,
 * nothing is skipped; when it cannot be written, the copy stays delivered. Either failure is kept for the log
 * line (a retry of this message may then deliver a copy twice).
 */
export class MessageLedger {
  /** Ledger failures of this message (read or write), for the log line. */
  readonly errors: unknown[] = [];

  private constructor(
    private readonly ledger: DeliveryLedger,
    private readonly queueId: string,
    private readonly digest: string,
    /**
     * False for a message to one recipient: its only copy accepted, Lacre answers 250 at once (no path answers 4xx
     * after it), so no retry of it can need the record. It is still read: an earlier attempt with more recipients
     * may have recorded this one (docs/exactly-once.md).
     */
    private readonly recordsNeeded: boolean,
  ) {}

  /**
   * The message's entry and the recipients already delivered; no entry (and nothing skipped) without a ledger or
   * a queue id, since only Postfix's queue id tells a retry from a new message.
   */
  static async open(
    ledger: DeliveryLedger | undefined,
    queueId: string | undefined,
    headerSection: Buffer,
    recipients: readonly string[],
  ): Promise<{ entry: MessageLedger | undefined; delivered: ReadonlySet<string> }> {
    if (!ledger || queueId === undefined) return { entry: undefined, delivered: NOBODY };
    const entry = new MessageLedger(ledger, queueId, headerDigest(headerSection), recipients.length > 1);
    try {
      return { entry, delivered: await ledger.delivered(queueId, entry.digest, recipients) };
    } catch (error) {
      entry.errors.push(error);
      return { entry, delivered: NOBODY };
    }
  }

  /** Called right after a downstream accepted a copy for these recipients; never throws. */
  async record(recipients: readonly string[]): Promise<void> {
    if (recipients.length === 0 || !this.recordsNeeded) return;
    try {
      await this.ledger.record(this.queueId, this.digest, recipients);
    } catch (error) {
      this.errors.push(error);
    }
  }
}

const NOBODY: ReadonlySet<string> = new Set();

/** SHA-256 (hex) of the header section as received: known before any body byte, for streamed messages too. */
export function headerDigest(headerSection: Buffer): string {
  return createHash('sha256').update(headerSection).digest('hex');
}
