import type { Readable } from 'node:stream';
import type { LacreError } from '../errors.js';

/** The filter's ports: what it hands copies to. Front ends, delivery clients and wrappers implement these. */

export interface OutboundEnvelope {
  readonly from: string;
  readonly to: readonly string[];
  readonly use8BitMime: boolean;
}

/** Where copies go: Postfix's reinjection listener, or anything that accepts a whole message or fails. */
export interface Downstream {
  /**
   * Resolves once the downstream has accepted the message for at least one recipient, with the recipients
   * it refused (empty when all were accepted); rejects with a LacreError when the copy was not accepted at all.
   */
  send(envelope: OutboundEnvelope, raw: Readable): Promise<RecipientRejections>;
}

/** Scheme names as the Incoming Box contract spells them (X-Incoming-Scheme). */
export type BoxScheme = 'openpgp' | 'openpgp-mime' | 'openpgp-inline' | 'raw';

/** An Incoming Box as the filter sees it: a PUT of one copy for one user, accepted or not. */
export interface BoxDownstream {
  /** Resolves when stored, or already stored under this id (a retry); rejects with a LacreError otherwise. */
  put(user: string, blobId: string, scheme: BoxScheme, raw: Readable): Promise<void>;
}

export interface Downstreams {
  readonly relay: Downstream;
  readonly box?: BoxDownstream | undefined;
  /** Where accepted copies are recorded, so that a retried message skips them (absent: every retry re-sends all). */
  readonly ledger?: DeliveryLedger | undefined;
}

/**
 * The copies downstreams accepted, by Postfix queue id and the digest of the message's header section: what a
 * retry of the same message must not send again (docs/exactly-once.md).
 */
export interface DeliveryLedger {
  /** Which of `recipients` already had their copy of this message accepted. */
  delivered(queueId: string, digest: string, recipients: readonly string[]): Promise<ReadonlySet<string>>;
  /** Remembers that these recipients' copy of this message was accepted. */
  record(queueId: string, digest: string, recipients: readonly string[]): Promise<void>;
}

/** Recipients a downstream refused while accepting the copy for others. */
export type RecipientRejections = ReadonlyMap<string, LacreError>;
