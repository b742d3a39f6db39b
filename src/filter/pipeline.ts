import { PassThrough, Readable, type Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { createHash, type Hash } from 'node:crypto';
import libbase64 from 'libbase64';
import libqp from 'libqp';
import { MessageTooLargeError, LacreError, StreamedCopyError } from '../errors.js';
import { markArmor } from '../crypto/armor.js';
import { joinedWhenSafe } from '../mime/data-safe.js';
import { armorMessage, encryptContent, newSessionKey, sessionKeyPackets, type SessionKey } from '../crypto/encrypt.js';
import { inThreadEncryptor, type BufferedEncryptor } from '../crypto/pool.js';
import { splitMessage } from '../mime/split.js';
import { postfixQueueIdOf } from '../mime/received.js';
import type { SplitMessage } from '../mime/header.js';
import { contentEntityHead, inlineEnvelope, pgpMimeEnvelope } from '../mime/assemble.js';
import { contentTypeOf, inlineEligible, INLINE_PEEK_BYTES, messageIdOf, transferEncodingOf, type ContentType } from '../mime/inspect.js';
import { alreadyEncryptedReason, ENCRYPTED_PEEK_BYTES, needsLongerLook } from './already-encrypted.js';
import { fanOut } from './fanout.js';
import { planDelivery, type Copy, type EncryptedKind, type Plan, type RoutedRecipient } from './plan.js';
import { blobIdFor } from './blob-id.js';
import { INCOMING_NAMESPACE } from '../config/schema.js';
import { CipherSpool, defaultSpoolDir } from './spool.js';
import { MessageLedger } from './delivered.js';
import { countedForCollection } from '../util/young-gc.js';
import type { BoxScheme, Downstreams, RecipientRejections } from './ports.js';

export interface FilterOptions {
  readonly maxHeaderSize: number;
  /** Messages up to this many body bytes are encrypted from memory (default BUFFERED_MESSAGE_LIMIT). */
  readonly bufferLimit?: number;
  /** Who encrypts messages held in memory (default: this thread). */
  readonly encryptor?: BufferedEncryptor | undefined;
  readonly boxScheme?: 'openpgp' | 'openpgp-mime';
  readonly boxNamespace?: string;
  readonly groupRecipients: boolean;
  readonly spoolDir?: string | undefined;
  readonly spoolMemory: number;
}

export interface MessageInput {
  readonly from: string;
  readonly recipients: readonly RoutedRecipient[];
  readonly body: Readable;
  /** Postfix's queue id (XFORWARD IDENT), which stays the same when Postfix retries the message. */
  readonly queueId?: string | undefined;
  readonly use8BitMime: boolean;
  /** True once the input turned out larger than allowed (smtp-server tells at the end of DATA). */
  readonly sizeExceeded?: () => boolean;
}

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
  /** Postfix's queue id: the input's (XFORWARD IDENT), else the one Postfix wrote in the topmost Received field. */
  readonly queueId: string | undefined;
  readonly alreadyEncrypted: string | undefined;
  /** The delivery ledger could not be read or written for this message: a retry of it may deliver a copy twice. */
  readonly ledgerErrors: readonly unknown[];
}

/** What was learnt from the header block and the first body bytes. */
interface Inspected {
  readonly split: SplitMessage;
  readonly type: ContentType;
  /** `split.bodyStart` is the whole body. */
  readonly bodyComplete: boolean;
  readonly rest: AsyncIterator<Buffer>;
}

/**
 * Runs one message through plan → encrypt → deliver. Resolves with every copy's outcome; rejects only for
 * faults of the message as a whole (header too large, size exceeded, a body stream error), after which
 * nothing has been accepted downstream... except copies that had already completed, which the caller
 * reports as a tempfail (Postfix then retries: a possible duplicate, never a loss).
 */
export async function processMessage(input: MessageInput, downstreams: Downstreams, options: FilterOptions): Promise<MessageResult> {
  const source = input.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  try {
    const { split, type, bodyComplete, rest } = await inspect(source, options.maxHeaderSize);
    const alreadyEncrypted = alreadyEncryptedReason(type, transferEncodingOf(split.fields), { bytes: split.bodyStart, complete: bodyComplete });
    const queueId = input.queueId ?? postfixQueueIdOf(split.fields);
    const addresses = input.recipients.map((recipient) => recipient.address);
    const { entry, delivered } = await MessageLedger.open(downstreams.ledger, queueId, split.headerBlock, addresses);
    const plan = planDelivery({
      recipients: input.recipients,
      alreadyEncrypted,
      inlineEligible: inlineEligible(type),
      groupRecipients: options.groupRecipients,
      boxScheme: options.boxScheme ?? 'openpgp',
      alreadyDelivered: delivered,
    });
    const results = await produceAndDeliver(plan, split, rest, { input, downstreams, options, queueId, ledger: entry });
    return { plan, results, messageId: messageIdOf(split.fields), queueId, alreadyEncrypted, ledgerErrors: entry?.errors ?? [] };
  } finally {
    // smtp-server only answers once the DATA stream has ended: drain whatever an early failure left unread,
    // through the same iterator (its 'readable' listener would keep a plain resume() from flowing).
    await drain(source);
  }
}

async function drain(source: AsyncIterator<Buffer>): Promise<void> {
  try {
    while (!(await source.next()).done);
  } catch {
    // The input itself failed: nothing left to read.
  }
}

async function inspect(source: AsyncIterator<Buffer>, maxHeaderSize: number): Promise<Inspected> {
  const split = await splitMessage(source, maxHeaderSize);
  const type = contentTypeOf(split.fields);
  const body = new BodyPeek(source, split.bodyStart);
  // Enough of the body to recognise an inline PGP block behind leading white space...
  await body.readWhile(() => body.length < INLINE_PEEK_BYTES && body.bytes().toString('latin1').trimStart().length < 64);
  // ...and, for what may be encrypted already, to check its structure: a bounded window (rule 3).
  if (needsLongerLook(type, body.bytes())) await body.readWhile(() => body.length < ENCRYPTED_PEEK_BYTES);
  return { split: { ...split, bodyStart: body.bytes() }, type, bodyComplete: body.complete, rest: source };
}

/** The first bytes of the body, read ahead of the rest. */
class BodyPeek {
  private chunks: Buffer[];
  length: number;
  complete = false;

  constructor(
    private readonly source: AsyncIterator<Buffer>,
    start: Buffer,
  ) {
    this.chunks = [start];
    this.length = start.length;
  }

  bytes(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
    return this.chunks[0]!;
  }

  async readWhile(wanted: () => boolean): Promise<void> {
    while (!this.complete && wanted()) {
      const next = await this.source.next();
      if (next.done) this.complete = true;
      else {
        this.chunks.push(next.value);
        this.length += next.value.length;
      }
    }
  }
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
  readonly kind: EncryptedKind | 'raw';
  readonly sessionKey: SessionKey | undefined;
  readonly spool: CipherSpool;
  readonly input: Writable;
  readonly done: Promise<void>;
}

/**
 * Messages up to this size are read whole and encrypted from memory: for small messages the stream layers of
 * the streamed path (fan-out, SEIPD, armor, envelope) cost more than the encryption itself, and a message held
 * whole can go to a worker thread. A fixed bound, so memory stays flat (rule 3).
 */
export const BUFFERED_MESSAGE_LIMIT = 256 * 1024;

/**
 * A copy streaming to the relay while the input is read (the plain copy, or a kind's only encrypted copy) stops
 * the whole message when it fails: the input cannot be read past a copy nobody consumes, and in SMTP mode the
 * answer is one anyway. Its failure carries that copy's recipients, so that LMTP can answer them with it and
 * the others with a temporary failure instead of bouncing them too.
 */
function failedStreamedCopy(copy: Copy, fail: (error: unknown) => void): (error: unknown) => void {
  return (error) => fail(new StreamedCopyError(copy.recipients, error));
}

async function produceAndDeliver(
  plan: Plan,
  split: SplitMessage,
  rest: AsyncIterator<Buffer>,
  message: MessageContext,
): Promise<CopyResult[]> {
  const { options } = message;
  const body = bodyChunks(split, rest);
  const head: Buffer[] = [];
  let headBytes = 0;
  for (;;) {
    if (headBytes > (options.bufferLimit ?? BUFFERED_MESSAGE_LIMIT)) {
      const restOfBody = { [Symbol.asyncIterator]: () => body };
      return produceStreaming(plan, split, concat(head, restOfBody), message);
    }
    const next = await body.next();
    if (next.done) return produceBuffered(plan, split, Buffer.concat(head, headBytes), message);
    head.push(next.value);
    headBytes += next.value.length;
  }
}

/** For copies that nothing can abort (a fresh AbortController per message cost more than its encryption's RNG). */
const NEVER_ABORTED = new AbortController().signal;

/** The whole message is in memory: encrypt each kind once, then deliver every copy. */
async function produceBuffered(
  plan: Plan,
  split: SplitMessage,
  body: Buffer,
  message: MessageContext,
): Promise<CopyResult[]> {
  const { input, options } = message;
  if (input.sizeExceeded?.()) throw new MessageTooLargeError('message exceeds smtp.max_size');
  const whole = Buffer.concat([split.headerBlock, split.separator, body]);
  const digest = plan.copies.some((copy) => copy.boxUser !== undefined) ? createHash('sha256').update(whole).digest('hex') : '';
  const encryptor = options.encryptor ?? inThreadEncryptor;
  const piecesOf = new Map<Copy, Buffer[]>();
  await Promise.all(
    (['mime', 'inline', 'whole'] as const).map(async (kind) => {
      const copies = plan.copies.filter((copy) => copy.kind === kind);
      if (copies.length === 0) return;
      const plaintext = plaintextOf(kind, split, body, whole);
      const armored = await encryptor.encrypt({ plaintext, copies: copies.map((copy) => ({ keys: copy.keys })), eol: split.eol });
      copies.forEach((copy, i) => piecesOf.set(copy, wrapArmored(copy, armorPiece(armored[i]!, split.eol), split)));
    }),
  );
  return Promise.all(
    plan.copies.map((copy) => {
      // One piece per chunk: a piece marked safe goes into SMTP DATA without being examined (mime/data-safe.ts).
      const raw = Readable.from(piecesOf.get(copy) ?? [whole]);
      return deliver(() => sendCopy(copy, raw, { ...message, digest }), copy, raw, NEVER_ABORTED, () => undefined);
    }),
  );
}

function plaintextOf(kind: EncryptedKind, split: SplitMessage, body: Buffer, whole: Buffer): Buffer {
  if (kind === 'whole') return whole;
  if (kind === 'mime') return Buffer.concat([contentEntityHead(split), body]);
  const encoding = transferEncodingOf(split.fields);
  if (encoding === 'base64') return decodeBase64(body.toString('latin1'));
  if (encoding === 'quoted-printable') return libqp.decode(body.toString('latin1'));
  return body;
}

/**
 * RFC 2045 §6.8: characters outside the base64 alphabet are skipped, as the streamed path's decoder does; a plain
 * decode would take '-' and '_' for base64url digits, and a small message would decrypt to other bytes than a big one.
 */
function decodeBase64(text: string): Buffer {
  return libbase64.decode(text.replace(/[^A-Za-z0-9+/=]/g, ''));
}

function wrapArmored(copy: Copy, armored: Buffer, split: SplitMessage): Buffer[] {
  if (copy.kind === 'whole') return [armored];
  const envelope = copy.kind === 'mime' ? pgpMimeEnvelope(split) : inlineEnvelope(split);
  return joinedWhenSafe([envelope.prefix, armored, envelope.suffix]);
}

/** An armored copy from the encryptor as a Buffer, without copying it (and marked again when it comes from a worker). */
function armorPiece(armored: Uint8Array, eol: '\r\n' | '\n'): Buffer {
  if (Buffer.isBuffer(armored)) return armored;
  return markArmor(Buffer.from(armored.buffer, armored.byteOffset, armored.byteLength), eol);
}

/** Bigger messages: the body streams once through every encryptor (and the plain copy) into spools. */
async function produceStreaming(
  plan: Plan,
  split: SplitMessage,
  bodyStream: AsyncIterable<Buffer>,
  message: MessageContext,
): Promise<CopyResult[]> {
  const { input, options } = message;
  const abort = new AbortController();
  const fail = (error: unknown) => abort.abort(error);
  const spoolDir = options.spoolDir ?? defaultSpoolDir();
  const send = (copy: Copy, raw: Readable, digest: string) => sendCopy(copy, raw, { ...message, digest });

  const sinks: Writable[] = [];
  const deliveries: Promise<CopyResult>[] = [];
  // Only box copies need the digest (their blob id); hashing 200 MB costs a sizeable part of a second.
  const digest = plan.copies.some((copy) => copy.boxUser !== undefined) ? createHash('sha256').update(split.headerBlock).update(split.separator) : undefined;
  const plainCopy = plan.copies.find((copy) => copy.kind === 'plain');
  const plainSink = plainCopy ? new PassThrough() : undefined;
  if (plainCopy && plainSink) {
    plainSink.write(split.headerBlock);
    plainSink.write(split.separator);
    sinks.push(plainSink);
    deliveries.push(deliver(() => send(plainCopy, plainSink, ''), plainCopy, plainSink, abort.signal, failedStreamedCopy(plainCopy, fail)));
  }
  const encryptions: Encryption[] = [];
  const direct: DirectEncryption[] = [];
  // At most one copy per message streams to the relay while the input is read: two would each hold a relay
  // connection, and with the pool full (relay.max_connections, or many such messages at once) the fan-out
  // would wait on a copy that waits for a connection the other copy never gives back.
  let relayStreaming = plainCopy !== undefined;
  try {
    for (const kind of ['mime', 'inline', 'whole', 'raw'] as const) {
      const copies = plan.copies.filter((copy) => copy.kind === kind);
      if (copies.length === 0) continue;
      if (!relayStreaming && kind !== 'raw' && copies.length === 1 && copies[0]!.boxUser === undefined) {
        relayStreaming = true;
        const copy = copies[0]!;
        const encryption = await startDirectEncryption(kind, copy, split);
        encryption.done.catch(fail);
        direct.push(encryption);
        sinks.push(encryption.input);
        deliveries.push(deliver(() => send(copy, encryption.output, ''), copy, encryption.output, abort.signal, failedStreamedCopy(copy, fail)));
        continue;
      }
      const encryption = await startEncryption(kind, copies, split, spoolDir, options.spoolMemory);
      encryption.done.catch(fail);
      encryptions.push(encryption);
      sinks.push(encryption.input);
    }
    const body = countedForCollection(bodyStream);
    await fanOut(digest ? hashing(body, digest) : body, sinks, abort.signal);
    if (input.sizeExceeded?.()) throw new MessageTooLargeError('message exceeds smtp.max_size');
    // The copy streaming to the relay (plain or direct) is completed last: if a spooled encryption fails,
    // the relay has not accepted anything yet.
    for (const encryption of encryptions) encryption.input.end();
    await Promise.all(encryptions.map((encryption) => encryption.done));
    for (const encryption of direct) encryption.input.end();
    await Promise.all(direct.map((encryption) => encryption.done));
    plainSink?.end();
    const messageDigest = digest?.digest('hex') ?? '';
    for (const encryption of encryptions) {
      for (const copy of plan.copies.filter((c) => c.kind === encryption.kind)) {
        const raw = await copyStream(copy, encryption, split);
        deliveries.push(deliver(() => send(copy, raw, messageDigest), copy, raw, abort.signal, () => undefined));
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

async function* hashing(chunks: AsyncIterable<Buffer>, hash: Hash): AsyncGenerator<Buffer> {
  for await (const chunk of chunks) {
    hash.update(chunk);
    yield chunk;
  }
}

/** What every copy of one message shares. */
interface MessageContext {
  readonly input: MessageInput;
  readonly downstreams: Downstreams;
  readonly options: FilterOptions;
  /** Postfix's queue id (MessageResult.queueId): one value for the ledger and the box's blob ids. */
  readonly queueId: string | undefined;
  /** The message's entry in the delivery ledger, when it has one (a ledger and a queue id). */
  readonly ledger: MessageLedger | undefined;
}

interface SendContext extends MessageContext {
  /** SHA-256 of the whole message (hex), known once the input was read; '' before, and when no copy goes to a box. */
  readonly digest: string;
}

/** Box copies are whole, mime or raw (plan.ts); plain and inline copies only ever go to the relay. */
const BOX_SCHEMES: Record<Copy['kind'], BoxScheme> = { whole: 'openpgp', mime: 'openpgp-mime', raw: 'raw', plain: 'raw', inline: 'openpgp-inline' };

/**
 * The copy to its downstream, then, once accepted, into the delivery ledger (before the message is answered: a
 * retry after a later failure then skips it).
 */
async function sendCopy(copy: Copy, raw: Readable, context: SendContext): Promise<RecipientRejections> {
  const rejected = await sendToDownstream(copy, raw, context);
  await context.ledger?.record(rejected.size === 0 ? copy.recipients : copy.recipients.filter((rcpt) => !rejected.has(rcpt)));
  return rejected;
}

/** Reinjection for SMTP recipients; a PUT into the user's Incoming Box for box recipients. */
async function sendToDownstream(copy: Copy, raw: Readable, context: SendContext): Promise<RecipientRejections> {
  const { input, downstreams, options } = context;
  if (copy.boxUser === undefined) {
    return downstreams.relay.send({ from: input.from, to: copy.recipients, use8BitMime: input.use8BitMime }, raw);
  }
  if (!downstreams.box) throw new LacreError('Incoming Box delivery is not configured (incoming_box.url)');
  const blobId = blobIdFor({ queueId: context.queueId, digest: context.digest, recipient: copy.recipients[0]!, namespace: options.boxNamespace ?? INCOMING_NAMESPACE });
  await downstreams.box.put(copy.boxUser, blobId, BOX_SCHEMES[copy.kind], raw);
  return new Map();
}

async function settleAndDispose(deliveries: Promise<CopyResult>[], encryptions: Encryption[]): Promise<void> {
  await Promise.allSettled(deliveries);
  await Promise.all(encryptions.map((encryption) => encryption.spool.dispose()));
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

/** One copy to its downstream; a refusal is this copy's result, not an exception. */
async function deliver(
  send: () => Promise<RecipientRejections>,
  copy: Copy,
  raw: Readable,
  signal: AbortSignal,
  onFailure: (error: unknown) => void,
): Promise<CopyResult> {
  // An aborted message destroys its copies with the error, possibly before the downstream listens (a copy
  // queued for a relay connection): the outcome is reported through send(), never as an 'error' event.
  raw.on('error', () => undefined);
  try {
    signal.throwIfAborted();
    const rejected = await send();
    return rejected.size > 0 ? { copy, rejected } : { copy };
  } catch (error) {
    raw.destroy();
    // A copy streaming while the input is read: its failure must stop the whole message.
    onFailure(error);
    return { copy, error: error instanceof LacreError ? error : new LacreError(String(error), { cause: error }) };
  }
}

interface DirectEncryption {
  readonly input: Writable;
  /** The copy as it goes out, produced while the input is read. */
  readonly output: Readable;
  /** Settles when the ciphertext has been produced whole (or failed). */
  readonly done: Promise<void>;
}

/**
 * The only copy of its kind for the relay: its PKESK is known before the first byte, so the copy streams
 * out while the input is read, with no spool. Like the plain copy, it is only completed (the relay only
 * sees its end) once the input was read whole and within the size limit; an abort destroys it unfinished.
 * Box copies wait for the whole input instead, because their blob id includes the message's digest.
 */
async function startDirectEncryption(kind: EncryptedKind, copy: Copy, split: SplitMessage): Promise<DirectEncryption> {
  const { plaintext, input } = streamedPlaintext(kind, split);
  const sessionKey = await newSessionKey(copy.keys);
  const keyPackets = await sessionKeyPackets(sessionKey, copy.keys);
  const ciphertext = encryptContent(plaintext, sessionKey);
  const output = wrapStream(kind, armorMessage(Readable.from(concat([keyPackets], ciphertext)), split.eol), split);
  return { input, output, done: finished(ciphertext) };
}

function wrapStream(kind: EncryptedKind, armored: Readable, split: SplitMessage): Readable {
  if (kind === 'whole') return armored;
  const envelope = kind === 'mime' ? pgpMimeEnvelope(split) : inlineEnvelope(split);
  return Readable.from(concat([envelope.prefix], armored, [envelope.suffix]));
}

/**
 * Starts what one kind of copy needs while the input is read: an encryption into a spool, or for raw copies
 * (an already encrypted message for an Incoming Box) the input itself into a spool.
 */
async function startEncryption(
  kind: EncryptedKind | 'raw',
  copies: Copy[],
  split: SplitMessage,
  spoolDir: string,
  spoolMemory: number,
): Promise<Encryption> {
  const spool = new CipherSpool(spoolDir, spoolMemory);
  const { plaintext, input } = streamedPlaintext(kind, split);
  if (kind === 'raw') return { kind, sessionKey: undefined, spool, input, done: pipeline(plaintext, spool) };
  const sessionKey = await newSessionKey(copies.flatMap((copy) => copy.keys));
  const ciphertext = encryptContent(plaintext, sessionKey);
  return { kind, sessionKey, spool, input, done: pipeline(ciphertext, spool) };
}

/**
 * What a kind encrypts, as it streams: its head first (the content entity's header for PGP/MIME, the message's
 * header for whole-message and raw copies), then the body that `input` takes, decoded on the way for inline.
 */
function streamedPlaintext(kind: EncryptedKind | 'raw', split: SplitMessage): { plaintext: PassThrough; input: Writable } {
  const plaintext = new PassThrough();
  if (kind === 'mime') plaintext.write(contentEntityHead(split));
  if (kind === 'whole' || kind === 'raw') plaintext.write(Buffer.concat([split.headerBlock, split.separator]));
  const input = kind === 'inline' ? transferDecoder(transferEncodingOf(split.fields), plaintext) : plaintext;
  return { plaintext, input };
}

/** Inline PGP carries the decoded text: undo the transfer encoding on the way in. */
function transferDecoder(encoding: string, into: PassThrough): Writable {
  const decoder = encoding === 'base64' ? new libbase64.Decoder() : encoding === 'quoted-printable' ? new libqp.Decoder() : undefined;
  if (!decoder) return into;
  decoder.pipe(into);
  decoder.on('error', (error: Error) => into.destroy(error));
  return decoder;
}

async function copyStream(copy: Copy, encryption: Encryption, split: SplitMessage): Promise<Readable> {
  const spooled = countedForCollection(encryption.spool.reader());
  if (encryption.kind === 'raw' || !encryption.sessionKey) return Readable.from(spooled);
  const keyPackets = await sessionKeyPackets(encryption.sessionKey, copy.keys);
  const binary = Readable.from(concat([keyPackets], spooled));
  return wrapStream(encryption.kind, armorMessage(binary, split.eol), split);
}

async function* concat(...parts: Array<AsyncIterable<Buffer> | Iterable<Buffer>>): AsyncGenerator<Buffer> {
  for (const part of parts) yield* part;
}
