import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { RecipientPolicyError } from '../errors.js';
import type { KeyDirectory, RecipientKeys } from '../keys/types.js';
import { processMessage, type Downstream, type FilterOptions, type MessageResult } from './pipeline.js';
import { errorReply, messageReply, recipientReplies, type SmtpReply } from './reply.js';

export interface FilterRequest {
  readonly from: string;
  readonly recipients: ReadonlyArray<{ address: string; lookup: RecipientKeys }>;
  readonly body: Readable;
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

/** The per-message service: recipient policy at RCPT time, then the pipeline, the replies and the log line. */
export class MessageFilter {
  constructor(
    private readonly keys: KeyDirectory,
    private readonly downstream: Downstream,
    private readonly config: Config,
  ) {}

  get options(): FilterOptions {
    return {
      maxHeaderSize: this.config.smtp.max_header_size,
      groupRecipients: this.config.encryption.group_recipients,
      spoolDir: this.config.encryption.spool_dir,
      spoolMemory: this.config.encryption.spool_memory,
    };
  }

  /**
   * Looks a recipient up and applies on_unusable_key. Throws RecipientPolicyError (refuse this recipient) or
   * DatabaseUnavailableError (try again later): never "no key" because the store could not be read.
   */
  async lookupRecipient(address: string): Promise<RecipientKeys> {
    const lookup = await this.keys.lookup(address);
    if (lookup.kind !== 'unusable') return lookup;
    const policy = this.config.encryption.on_unusable_key;
    if (policy === 'plain') return lookup;
    throw new RecipientPolicyError(`recipient's OpenPGP key is not usable (${lookup.reason})`, policy === 'reject', address);
  }

  async process(request: FilterRequest): Promise<FilterOutcome> {
    const started = performance.now();
    const addresses = request.recipients.map((r) => r.address);
    try {
      const result = await processMessage(request, this.downstream, this.options);
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
