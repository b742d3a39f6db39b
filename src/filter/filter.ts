import { finished, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { BufferedEncryptor } from '../crypto/pool.js';
import type { Config } from '../config/schema.js';
import { NoBoxError, RecipientPolicyError, StreamedCopyError } from '../errors.js';
import type { KeyDirectory } from '../keys/types.js';
import { canonicalDomain, parseAddress, withoutExtension } from '../keys/address.js';
import { processMessage, type FilterOptions, type MessageInput, type MessageResult } from './pipeline.js';
import type { Downstreams } from './ports.js';
import type { RecipientAction, RoutedRecipient } from './plan.js';
import { abortedRecipientReplies, errorReply, messageReply, recipientReplies, type SmtpReply } from './reply.js';

/** A message for the pipeline, plus what the log line and the metrics need. */
export interface FilterRequest extends MessageInput {
  /**
   * The front end answers each recipient on its own (LMTP) rather than the transaction once (SMTP, pipe): then a
   * recipient counts as delivered by its own reply.
   */
  readonly perRecipientReplies: boolean;
  /** Bytes read so far, for the log line. */
  readonly bytesRead?: () => number;
  /** Time spent looking the recipients up at RCPT, for the log line. */
  readonly lookupMs?: number;
  readonly log: Logger;
}

/** What the filter reports for metrics (src/metrics/metrics.ts); optional, one-shot commands pass none. */
export interface FilterObserver {
  messageStarted(): void;
  messageFinished(report: MessageReport): void;
  /** The whole input, once it has been read to its end. */
  bytesReceived(bytes: number): void;
  /** A recipient refused at RCPT time (RecipientPolicyError, DatabaseUnavailableError, ...). */
  recipientRefused(error: unknown, permanent: boolean): void;
}

export interface MessageReport {
  /** The whole transaction's reply. */
  readonly reply: SmtpReply;
  /** One entry per recipient whose copy was accepted (one reply: all of them, or none; per recipient: each on its own). */
  readonly actions: readonly RecipientAction[];
  /** Every failure: the one that stopped the message, or each failed copy's and refused recipient's. */
  readonly errors: readonly unknown[];
  readonly durationSeconds: number;
  readonly size: number | undefined;
  /** At least one copy was encrypted. */
  readonly encrypted: boolean;
}

export interface FilterOutcome {
  /** The whole transaction's reply (SMTP mode, pipe). */
  readonly reply: SmtpReply;
  /** One reply per recipient, in request order (LMTP mode: `perRecipientReplies`). */
  readonly recipientReplies: SmtpReply[];
  readonly result?: MessageResult;
}

export interface MessageFilterParts {
  readonly keys: KeyDirectory;
  readonly downstreams: Downstreams;
  readonly config: Config;
  /** Address → Incoming Box user, when box delivery is configured. */
  readonly boxUsers?: BoxUserDirectory | undefined;
  /** Metrics (lacre serve). */
  readonly observer?: FilterObserver | undefined;
  /** Who encrypts messages held in memory (default: the event loop). */
  readonly encryptor?: BufferedEncryptor | undefined;
}

/** Which Incoming Box user (UUID) an address is delivered to, if any. */
export interface BoxUserDirectory {
  userFor(address: string): Promise<string | undefined>;
}

/** The per-message service: routing and recipient policy at RCPT time, then the pipeline, the replies and the log line. */
export class MessageFilter {
  private readonly keys: KeyDirectory;
  private readonly downstreams: Downstreams;
  private readonly config: Config;
  private readonly boxUsers: BoxUserDirectory | undefined;
  private readonly observer: FilterObserver | undefined;
  private readonly encryptor: BufferedEncryptor | undefined;

  constructor(parts: MessageFilterParts) {
    this.keys = parts.keys;
    this.downstreams = parts.downstreams;
    this.config = parts.config;
    this.boxUsers = parts.boxUsers;
    this.observer = parts.observer;
    this.encryptor = parts.encryptor;
  }

  get options(): FilterOptions {
    return {
      maxHeaderSize: this.config.smtp.max_header_size,
      groupRecipients: this.config.encryption.group_recipients,
      spoolDir: this.config.encryption.spool_dir,
      spoolMemory: this.config.encryption.spool_memory,
      boxScheme: this.config.incoming_box.scheme,
      boxNamespace: this.config.incoming_box.namespace,
      encryptor: this.encryptor,
    };
  }

  /**
   * Looks a recipient up, routes it (relay or Incoming Box) and applies the policies. Throws RecipientPolicyError
   * or NoBoxError (refuse this recipient) or DatabaseUnavailableError (try again later): never "no key" because
   * the store could not be read.
   */
  async lookupRecipient(address: string): Promise<RoutedRecipient> {
    try {
      return await this.route(address);
    } catch (error) {
      this.observer?.recipientRefused(error, errorReply(error).code >= 500);
      throw error;
    }
  }

  private async route(address: string): Promise<RoutedRecipient> {
    const lookup = await this.keys.lookup(address);
    if (lookup.kind === 'unusable' && this.config.encryption.on_unusable_key !== 'plain') {
      const permanent = this.config.encryption.on_unusable_key === 'reject';
      throw new RecipientPolicyError(`recipient's OpenPGP key is not usable (${lookup.reason})`, permanent, address);
    }
    const boxUser = await this.boxUserFor(address);
    if (boxUser === undefined) return { address, lookup };
    if (lookup.kind === 'usable') return { address, lookup, boxUser };
    const policy = this.config.incoming_box.no_key;
    if (policy === 'plain') return { address, lookup };
    throw new RecipientPolicyError('recipient has an Incoming Box but no usable OpenPGP key', policy === 'reject', address);
  }

  /**
   * The box the address is mapped to, else the box of the address without its extension (keys.recipient_delimiter):
   * Postfix delivers alice+tag@ into alice@'s mailbox, so her box receives it, as her key encrypts it.
   */
  private async boxUserFor(address: string): Promise<string | undefined> {
    const box = this.config.incoming_box;
    if (box.url === undefined || !this.boxUsers) return undefined;
    const base = withoutExtension(address, this.config.keys.recipient_delimiter);
    const user = (await this.boxUsers.userFor(address)) ?? (base === undefined ? undefined : await this.boxUsers.userFor(base));
    if (user !== undefined) return user;
    const domain = domainOrUndefined(address);
    if (domain !== undefined && box.domains.some((d) => canonicalDomain(d) === domain)) {
      throw new NoBoxError(address);
    }
    return undefined;
  }

  async process(request: FilterRequest): Promise<FilterOutcome> {
    const started = performance.now();
    const input = watchInput(request, started, this.observer);
    this.observer?.messageStarted();
    request.log.debug({ recipientCount: request.recipients.length, lookupMs: request.lookupMs }, 'message data started');
    const addresses = request.recipients.map((r) => r.address);
    let outcome: FilterOutcome;
    let error: unknown;
    try {
      const result = await processMessage({ ...request, recipients: distinctRecipients(request.recipients) }, this.downstreams, this.options);
      outcome = { reply: messageReply(result), recipientReplies: recipientReplies(addresses, result), result };
    } catch (caught) {
      error = caught;
      outcome = { reply: errorReply(caught), recipientReplies: abortedRecipientReplies(addresses, caught) };
    }
    this.logCopies(request, outcome);
    logLedgerErrors(request, outcome.result);
    this.logOutcome(request, outcome, started, input, error);
    this.observer?.messageFinished(this.report(request, outcome, started, error));
    return outcome;
  }

  private report(request: FilterRequest, outcome: FilterOutcome, started: number, error: unknown): MessageReport {
    const result = outcome.result;
    const accepted = (index: number) => (request.perRecipientReplies ? outcome.recipientReplies[index]! : outcome.reply).code < 400;
    const actions = request.recipients.flatMap(({ address }, index) => {
      const action = result?.plan.actions.get(address);
      return action !== undefined && accepted(index) ? [action] : [];
    });
    const errors = result ? result.results.flatMap((r) => (r.error ? [r.error] : [...(r.rejected?.values() ?? [])])) : [error];
    return {
      reply: outcome.reply,
      actions,
      errors,
      durationSeconds: (performance.now() - started) / 1000,
      size: request.bytesRead?.(),
      encrypted: result?.results.some((r) => r.copy.keys.length > 0) ?? false,
    };
  }

  /** Debug: what became of each copy. */
  private logCopies(request: FilterRequest, outcome: FilterOutcome): void {
    if (!request.log.isLevelEnabled('debug')) return;
    for (const { copy, error, rejected } of outcome.result?.results ?? []) {
      const fields = {
        copy: copy.kind,
        downstream: copy.boxUser === undefined ? 'relay' : 'box',
        recipients: copy.recipients,
        keys: copy.keys.length,
        error: error?.message,
        rejected: rejected && rejected.size > 0 ? [...rejected.keys()] : undefined,
      };
      request.log.debug(fields, error ? 'copy not delivered' : 'copy delivered');
    }
  }

  private logOutcome(request: FilterRequest, outcome: FilterOutcome, started: number, input: InputWatch, error?: unknown): void {
    const result = outcome.result;
    const failures = result?.results.filter((r) => r.error).map((r) => ({ to: r.copy.recipients, error: r.error?.message }));
    const fields = {
      messageId: result?.messageId,
      // The front end's logger carries the queue id it was told; only one it was not told is added here.
      queueId: request.queueId === undefined ? result?.queueId : undefined,
      from: request.from,
      recipientCount: request.recipients.length,
      size: request.bytesRead?.(),
      recipients: request.recipients.map(({ address }) => ({ to: address, action: result?.plan.actions.get(address) })),
      alreadyEncrypted: result?.alreadyEncrypted,
      copies: result?.results.length,
      failures: failures && failures.length > 0 ? failures : undefined,
      lookupMs: request.lookupMs === undefined ? undefined : roundMs(request.lookupMs),
      receiveMs: input.receiveMs === undefined ? undefined : roundMs(input.receiveMs),
      durationMs: roundMs(performance.now() - started),
      outcome: outcome.reply.code,
      reply: `${outcome.reply.code} ${outcome.reply.enhanced} ${outcome.reply.text}`,
      error: describeError(error),
    };
    if (outcome.reply.code >= 400) request.log.warn(fields, 'message not accepted');
    else request.log.info(fields, 'message accepted');
  }
}

/**
 * A recipient named twice with the very same spelling is one mailbox: it gets one copy (Postfix's own duplicate
 * elimination does the same), and each of its RCPTs the reply of that copy. Spellings that differ, even only in
 * case, stay apart: with keys.local_part_case_sensitive they are two mailboxes, and downstream decides otherwise.
 */
function distinctRecipients(recipients: readonly RoutedRecipient[]): RoutedRecipient[] {
  const seen = new Set<string>();
  return recipients.filter(({ address }) => !seen.has(address) && seen.add(address));
}

/** The ledger never stops a message (filter/delivered.ts), but its failures must be seen. */
function logLedgerErrors(request: FilterRequest, result: MessageResult | undefined): void {
  if (!result || result.ledgerErrors.length === 0) return;
  const errors = result.ledgerErrors.map((error) => describeError(error) ?? { type: typeof error, message: String(error) });
  request.log.warn({ queueId: result.queueId, errors }, 'delivery ledger unavailable: a retry of this message may deliver a copy twice');
}

function roundMs(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** When the input was read to its end: the receive stage of the log line, and the bytes for metrics. */
interface InputWatch {
  /** From the start of DATA to the last byte read; undefined while the input is still being read. */
  receiveMs: number | undefined;
}

function watchInput(request: FilterRequest, started: number, observer: FilterObserver | undefined): InputWatch {
  const watch: InputWatch = { receiveMs: undefined };
  // finished() only listens: it does not change how the pipeline reads the stream.
  finished(request.body, (error) => {
    if (error) return;
    watch.receiveMs = performance.now() - started;
    observer?.bytesReceived(request.bytesRead?.() ?? 0);
  });
  return watch;
}

function domainOrUndefined(address: string): string | undefined {
  try {
    return parseAddress(address).domain;
  } catch {
    return undefined;
  }
}

/** The error of the log line: a failed streamed copy's own, as the copy reported it. */
function describeError(error: unknown): { type: string; message: string } | undefined {
  const failure = error instanceof StreamedCopyError ? error.cause : error;
  return failure instanceof Error ? { type: failure.name, message: failure.message } : undefined;
}
