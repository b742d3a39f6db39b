import { PassThrough, Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import libbase64 from 'libbase64';
import libqp from 'libqp';
import { MessageTooLargeError, LacreError } from '../errors.js';
import { armorMessage, encryptContent, newSessionKey, sessionKeyPackets, type SessionKey } from '../crypto/encrypt.js';
import type { RecipientKeys } from '../keys/types.js';
import { splitMessage } from '../mime/split.js';
import type { SplitMessage } from '../mime/header.js';
import { contentEntityHead, inlineEnvelope, pgpMimeEnvelope } from '../mime/assemble.js';
import { alreadyEncryptedReason, contentTypeOf, inlineEligible, INLINE_PEEK_BYTES, messageIdOf, transferEncodingOf } from '../mime/inspect.js';
import { fanOut } from './fanout.js';
import { planDelivery, type Copy, type CopyKind, type Plan } from './plan.js';
import { CipherSpool, defaultSpoolDir } from './spool.js';

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

export interface FilterOptions {
  readonly maxHeaderSize: number;
  readonly groupRecipients: boolean;
  readonly spoolDir?: string | undefined;
  readonly spoolMemory: number;
}

export interface MessageInput {
  readonly from: string;
  readonly recipients: ReadonlyArray<{ address: string; lookup: RecipientKeys }>;
  readonly body: Readable;
  readonly use8BitMime: boolean;
  /** True once the input turned out larger than allowed (smtp-server tells at the end of DATA). */
  readonly sizeExceeded?: () => boolean;
}

/** Recipients a downstream refused while accepting the copy for others. */
export type RecipientRejections = ReadonlyMap<string, LacreError>;

export interface CopyResult {
  readonly copy: Copy;
  /** The copy as a whole was not accepted. */
  readonly error?: LacreError;
  /** The copy was accepted, but not for these recipients. */
  readonly rejected?: RecipientRejections;
}

export interface MessageResult {
  readonly plan: Plan;
  readonly results: CopyResult[];
  readonly messageId: string | undefined;
  readonly alreadyEncrypted: string | undefined;
}

/** What was learnt from the header block and the first body bytes. */
interface Inspected {
  readonly split: SplitMessage;
  readonly rest: AsyncIterator<Buffer>;
}

/**
 * Runs one message through plan → encrypt → deliver. Resolves with every copy's outcome; rejects only for
 * faults of the message as a whole (header too large, size exceeded, a body stream error), after which
 * nothing has been accepted downstream... except copies that had already completed, which the caller
 * reports as a tempfail (Postfix then retries: a possible duplicate, never a loss).
 */
export async function processMessage(input: MessageInput, downstream: Downstream, options: FilterOptions): Promise<MessageResult> {
  const source = input.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  try {
    const { split, rest } = await inspect(source, options.maxHeaderSize);
    const type = contentTypeOf(split.fields);
    const alreadyEncrypted = alreadyEncryptedReason(type, split.bodyStart);
    const plan = planDelivery({
      recipients: input.recipients,
      alreadyEncrypted,
      inlineEligible: inlineEligible(type),
      groupRecipients: options.groupRecipients,
    });
    const results = await produceAndDeliver(plan, split, rest, input, downstream, options);
    return { plan, results, messageId: messageIdOf(split.fields), alreadyEncrypted };
  } finally {
    // smtp-server only answers once the DATA stream has ended: drain whatever an early failure left unread.
    input.body.resume();
  }
}

async function inspect(source: AsyncIterator<Buffer>, maxHeaderSize: number): Promise<Inspected> {
  const split = await splitMessage(source, maxHeaderSize);
  let bodyStart = split.bodyStart;
  // Enough of the body to recognise an inline PGP block behind leading white space.
  while (bodyStart.length < INLINE_PEEK_BYTES && bodyStart.toString('latin1').trimStart().length < 64) {
    const next = await source.next();
    if (next.done) break;
    bodyStart = Buffer.concat([bodyStart, next.value]);
  }
  return { split: { ...split, bodyStart }, rest: source };
}

async function* bodyChunks(split: SplitMessage, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  if (split.bodyStart.length > 0) yield split.bodyStart;
  for (;;) {
    const next = await rest.next();
    if (next.done) return;
    yield next.value;
  }
}

interface Encryption {
  readonly kind: Exclude<CopyKind, 'plain'>;
  readonly sessionKey: SessionKey;
  readonly spool: CipherSpool;
  readonly input: Writable;
  readonly done: Promise<void>;
}

async function produceAndDeliver(
  plan: Plan,
  split: SplitMessage,
  rest: AsyncIterator<Buffer>,
  input: MessageInput,
  downstream: Downstream,
  options: FilterOptions,
): Promise<CopyResult[]> {
  const abort = new AbortController();
  const fail = (error: unknown) => abort.abort(error);
  const envelopeFor = (copy: Copy): OutboundEnvelope => ({ from: input.from, to: copy.recipients, use8BitMime: input.use8BitMime });
  const spoolDir = options.spoolDir ?? defaultSpoolDir();

  const sinks: Writable[] = [];
  const deliveries: Promise<CopyResult>[] = [];
  const plainCopy = plan.copies.find((copy) => copy.kind === 'plain');
  const plainSink = plainCopy ? new PassThrough() : undefined;
  if (plainCopy && plainSink) {
    plainSink.write(split.headerBlock);
    plainSink.write(split.separator);
    sinks.push(plainSink);
    deliveries.push(deliver(downstream, envelopeFor(plainCopy), plainSink, plainCopy, abort.signal, fail));
  }
  const encryptions: Encryption[] = [];
  try {
    for (const kind of ['mime', 'inline'] as const) {
      const copies = plan.copies.filter((copy) => copy.kind === kind);
      if (copies.length === 0) continue;
      const encryption = await startEncryption(kind, copies, split, spoolDir, options.spoolMemory);
      encryption.done.catch(fail);
      encryptions.push(encryption);
      sinks.push(encryption.input);
    }
    await fanOut(bodyChunks(split, rest), sinks, abort.signal);
    if (input.sizeExceeded?.()) throw new MessageTooLargeError('message exceeds smtp.max_size');
    for (const encryption of encryptions) encryption.input.end();
    await Promise.all(encryptions.map((encryption) => encryption.done));
    // The plain copy is completed last: if an encryption fails, the relay has not accepted anything yet.
    plainSink?.end();
    for (const encryption of encryptions) {
      for (const copy of plan.copies.filter((c) => c.kind === encryption.kind)) {
        const raw = await encryptedCopy(copy, encryption, split);
        deliveries.push(deliver(downstream, envelopeFor(copy), raw, copy, abort.signal, () => undefined));
      }
    }
  } catch (error) {
    fail(error);
    for (const sink of sinks) sink.destroy(asError(error));
    await Promise.allSettled(deliveries);
    throw abort.signal.reason ?? error;
  } finally {
    await settleAndDispose(deliveries, encryptions);
  }
  return Promise.all(deliveries);
}

async function settleAndDispose(deliveries: Promise<CopyResult>[], encryptions: Encryption[]): Promise<void> {
  await Promise.allSettled(deliveries);
  await Promise.all(encryptions.map((encryption) => encryption.spool.dispose()));
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** One copy to the downstream; a refusal is this copy's result, not an exception. */
async function deliver(
  downstream: Downstream,
  envelope: OutboundEnvelope,
  raw: Readable,
  copy: Copy,
  signal: AbortSignal,
  onFailure: (error: unknown) => void,
): Promise<CopyResult> {
  try {
    signal.throwIfAborted();
    const rejected = await downstream.send(envelope, raw);
    return rejected.size > 0 ? { copy, rejected } : { copy };
  } catch (error) {
    raw.destroy();
    // The plain copy streams while the input is read: its failure must stop the whole message.
    onFailure(error);
    return { copy, error: error instanceof LacreError ? error : new LacreError(String(error), { cause: error }) };
  }
}

async function startEncryption(
  kind: Exclude<CopyKind, 'plain'>,
  copies: Copy[],
  split: SplitMessage,
  spoolDir: string,
  spoolMemory: number,
): Promise<Encryption> {
  const sessionKey = await newSessionKey(copies.flatMap((copy) => copy.keys));
  const plaintext = new PassThrough();
  const input: Writable = kind === 'mime' ? plaintext : transferDecoder(transferEncodingOf(split.fields), plaintext);
  if (kind === 'mime') plaintext.write(contentEntityHead(split));
  const spool = new CipherSpool(spoolDir, spoolMemory);
  const ciphertext = await encryptContent(plaintext, sessionKey);
  return { kind, sessionKey, spool, input, done: pipeline(ciphertext, spool) };
}

/** Inline PGP carries the decoded text: undo the transfer encoding on the way in. */
function transferDecoder(encoding: string, into: PassThrough): Writable {
  const decoder = encoding === 'base64' ? new libbase64.Decoder() : encoding === 'quoted-printable' ? new libqp.Decoder() : undefined;
  if (!decoder) return into;
  decoder.pipe(into);
  decoder.on('error', (error: Error) => into.destroy(error));
  return decoder;
}

async function encryptedCopy(copy: Copy, encryption: Encryption, split: SplitMessage): Promise<Readable> {
  const keyPackets = await sessionKeyPackets(encryption.sessionKey, copy.keys);
  const envelope = encryption.kind === 'mime' ? pgpMimeEnvelope(split) : inlineEnvelope(split);
  const binary = Readable.from(concat([keyPackets], encryption.spool.reader()));
  const armored = armorMessage(binary, split.eol);
  return Readable.from(concat([envelope.prefix], armored, [envelope.suffix]));
}

async function* concat(...parts: Array<AsyncIterable<Buffer> | Iterable<Buffer>>): AsyncGenerator<Buffer> {
  for (const part of parts) yield* part;
}
