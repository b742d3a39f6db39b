import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RecipientPolicyError } from '../errors.js';
import type { KeyDirectory } from '../keys/types.js';
import { parseAddress } from '../keys/address.js';
import { processMessage, type Downstreams, type FilterOptions, type MessageResult } from './pipeline.js';
import type { RoutedRecipient } from './plan.js';
import { errorReply, messageReply, recipientReplies, type SmtpReply } from './reply.js';

export interface FilterRequest {
  readonly from: string;
  readonly recipients: readonly RoutedRecipient[];
  readonly body: Readable;
  readonly queueId?: string | undefined;
  readonly use8BitMime: boolean;
  readonly sizeExceeded?: () => boolean;
  /** Bytes read so far, for the log line. */
  readonly bytesRead?: () => number;
  readonly log: Logger;
}

export interface FilterOutcome {
  /** The whole transaction's reply (SMTP mode, pipe). */
  readonly reply: SmtpReply;
  /** One reply per recipient, in request order (LMTP mode). */
  readonly recipientReplies: SmtpReply[];
  readonly result?: MessageResult;
}

/** Which Incoming Box user (UUID) an address is delivered to, if any. */
export interface BoxUserDirectory {
  userFor(address: string): Promise<string | undefined>;
}

/** The per-message service: routing and recipient policy at RCPT time, then the pipeline, the replies and the log line. */
export class MessageFilter {
  constructor(
    private readonly keys: KeyDirectory,
    private readonly downstreams: Downstreams,
    private readonly config: Config,
    private readonly boxUsers?: BoxUserDirectory,
  ) {}

  get options(): FilterOptions {
    return {
      maxHeaderSize: this.config.smtp.max_header_size,
      groupRecipients: this.config.encryption.group_recipients,
      spoolDir: this.config.encryption.spool_dir,
      spoolMemory: this.config.encryption.spool_memory,
      boxScheme: this.config.incoming_box.scheme,
      boxNamespace: this.config.incoming_box.namespace,
    };
  }

  /**
   * Looks a recipient up, routes it (relay or Incoming Box) and applies the policies. Throws
   * RecipientPolicyError (refuse this recipient) or DatabaseUnavailableError (try again later): never "no key"
   * because the store could not be read.
   */
  async lookupRecipient(address: string): Promise<RoutedRecipient> {
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

  private async boxUserFor(address: string): Promise<string | undefined> {
    const box = this.config.incoming_box;
    if (box.url === undefined || !this.boxUsers) return undefined;
    const user = await this.boxUsers.userFor(address);
    if (user !== undefined) return user;
    const domain = domainOrUndefined(address);
    if (domain !== undefined && box.domains.some((d) => d.toLowerCase() === domain)) {
      throw new RecipientPolicyError('no Incoming Box for this recipient', true, address, '5.1.1');
    }
    return undefined;
  }

  async process(request: FilterRequest): Promise<FilterOutcome> {
    const started = performance.now();
    const addresses = request.recipients.map((r) => r.address);
    try {
      const result = await processMessage(request, this.downstreams, this.options);
      const outcome = { reply: messageReply(result), recipientReplies: recipientReplies(addresses, result), result };
      this.logOutcome(request, outcome, started);
      return outcome;
    } catch (error) {
      const reply = errorReply(error);
      const outcome = { reply, recipientReplies: addresses.map(() => reply) };
      this.logOutcome(request, outcome, started, error);
      return outcome;
    }
  }

  private logOutcome(request: FilterRequest, outcome: FilterOutcome, started: number, error?: unknown): void {
    const result = outcome.result;
    const failures = result?.results.filter((r) => r.error).map((r) => ({ to: r.copy.recipients, error: r.error?.message }));
    const fields = {
      messageId: result?.messageId,
      from: request.from,
      recipientCount: request.recipients.length,
      size: request.bytesRead?.(),
      recipients: request.recipients.map(({ address }) => ({ to: address, action: result?.plan.actions.get(address) })),
      alreadyEncrypted: result?.alreadyEncrypted,
      copies: result?.results.length,
      failures: failures && failures.length > 0 ? failures : undefined,
      durationMs: Math.round((performance.now() - started) * 10) / 10,
      outcome: outcome.reply.code,
      reply: `${outcome.reply.code} ${outcome.reply.enhanced} ${outcome.reply.text}`,
      error: error instanceof Error ? { type: error.name, message: error.message } : undefined,
    };
    if (outcome.reply.code >= 400) request.log.warn(fields, 'message not accepted');
    else request.log.info(fields, 'message accepted');
  }
}

function domainOrUndefined(address: string): string | undefined {
  try {
    return parseAddress(address).domain;
  } catch {
    return undefined;
  }
}
