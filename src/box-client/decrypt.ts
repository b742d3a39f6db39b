/**
 * Turns a blob from the Incoming Box back into the message for a mailbox, by its scheme (X-Incoming-Scheme):
 *
 * - `openpgp`: the whole original message is one OpenPGP message (armored or binary); its plaintext IS the
 *   message, byte for byte.
 * - `openpgp-mime`: an RFC 3156 message. The armored block holds the original content entity (its Content-* lines,
 *   the blank line, the body). The message is RECONSTRUCTED as: the outer header lines except Content-* (the
 *   multipart/encrypted Content-Type) and except the `MIME-Version: 1.0` line Lacre adds when the original had
 *   none, then the decrypted entity. It is byte-identical to the original when the original's Content-* lines came
 *   last in its header block (the usual case); otherwise they move to the end of the header block. Lacre cannot
 *   tell an added `MIME-Version: 1.0` from an original one in the same place, so it drops that line only when the
 *   entity carries no Content-* field (a message without MIME headers rarely has MIME-Version).
 * - `openpgp-inline`: a message whose body is one armored block: its header block as received, then the decrypted
 *   body. Lacre encrypted the body decoded from its transfer encoding and dropped Content-Transfer-Encoding, so
 *   this too is a reconstruction, not the original bytes.
 * - `raw`: not encrypted by Lacre; the bytes as stored.
 *
 * Everything streams: only header blocks are held in memory.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import * as openpgp from 'openpgp';
import type { PrivateKey } from 'openpgp';
import { errorMessage, LacreError } from '../errors.js';
import { findField, fieldValue, isContentField, type HeaderField, type SplitMessage } from '../mime/header.js';
import { splitMessage } from '../mime/split.js';

/** Header blocks above this size are refused (the same bound as smtp.max_header_size's default). */
const MAX_HEADER_SIZE = 1024 * 1024;
/** Longest line kept while looking for the armor; armor lines are at most 76 characters. */
const MAX_LINE = 64 * 1024;

/** The blob could not be turned into a message (temporary unless a subclass says otherwise). */
export class BlobDecryptionError extends LacreError {
  readonly permanent: boolean = false;
}

/** None of our keys is a recipient of the message: no later client version will decrypt it. */
export class NoMatchingKeyError extends BlobDecryptionError {
  override readonly permanent = true;
}

/** A scheme this client does not know; a later version may. */
export class UnknownSchemeError extends BlobDecryptionError {}

/** Reads the armored secret key(s), unlocking protected ones with the passphrase. */
export async function loadDecryptionKeys(armored: string, passphrase?: string): Promise<PrivateKey[]> {
  let keys: PrivateKey[];
  try {
    keys = await openpgp.readPrivateKeys({ armoredKeys: armored });
  } catch (error) {
    throw new LacreError(`cannot read the secret key: ${errorMessage(error)}`, { cause: error });
  }
  return Promise.all(keys.map((key) => unlock(key, passphrase)));
}

async function unlock(key: PrivateKey, passphrase: string | undefined): Promise<PrivateKey> {
  if (key.isDecrypted()) return key;
  if (passphrase === undefined) throw new LacreError(`secret key ${key.getFingerprint().toUpperCase()} is protected: give its passphrase`);
  try {
    return await openpgp.decryptKey({ privateKey: key, passphrase });
  } catch (error) {
    throw new LacreError(`cannot unlock secret key ${key.getFingerprint().toUpperCase()}: ${errorMessage(error)}`, { cause: error });
  }
}

/** The message bytes a mailbox should get for this blob. Rejects (or the stream errors) with BlobDecryptionError. */
export async function openBlob(blob: Readable, scheme: string, keys: readonly PrivateKey[]): Promise<Readable> {
  switch (scheme) {
    case 'raw':
      return blob;
    case 'openpgp':
      return decryptWhole(blob, keys);
    case 'openpgp-mime':
      return decryptPgpMime(blob, keys);
    case 'openpgp-inline':
      return decryptInline(blob, keys);
    default:
      throw new UnknownSchemeError(`unknown scheme "${scheme}"`);
  }
}

async function decryptWhole(blob: Readable, keys: readonly PrivateKey[]): Promise<Readable> {
  const chunks = blob[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await chunks.next();
  if (first.done) throw new BlobDecryptionError('empty blob');
  const all = prepend([first.value], chunks);
  // Armor starts with "-----BEGIN" (perhaps after blank lines); a binary OpenPGP packet has its top bit set.
  if ((first.value[0]! & 0x80) !== 0) return decrypt(await readMessage({ binaryMessage: webStream(all) }), keys);
  return decrypt(await readMessage({ armoredMessage: webStream(asText(all)) }), keys);
}

async function decryptPgpMime(blob: Readable, keys: readonly PrivateKey[]): Promise<Readable> {
  const chunks = blob[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const outer = await splitOrFail(chunks);
  // An inline copy labelled openpgp-mime is still readable: its body is the armored block, not a multipart.
  if (!isMultipartEncrypted(outer)) return decryptInlineBody(outer, chunks, keys);
  const armor = armoredBlock(prepend([outer.bodyStart], chunks));
  const plaintext = await decrypt(await readMessage({ armoredMessage: webStream(armor) }), keys);
  const entityChunks = plaintext[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const entity = await splitOrFail(entityChunks);
  const head = [...outerFieldsToKeep(outer, entity).map((field) => field.raw), entity.headerBlock, entity.separator, entity.bodyStart];
  return Readable.from(prepend(head, entityChunks));
}

async function decryptInline(blob: Readable, keys: readonly PrivateKey[]): Promise<Readable> {
  const chunks = blob[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return decryptInlineBody(await splitOrFail(chunks), chunks, keys);
}

async function decryptInlineBody(outer: SplitMessage, chunks: AsyncIterator<Buffer>, keys: readonly PrivateKey[]): Promise<Readable> {
  const armor = armoredBlock(prepend([outer.bodyStart], chunks));
  const plaintext = await decrypt(await readMessage({ armoredMessage: webStream(armor) }), keys);
  return Readable.from(prepend([outer.headerBlock, outer.separator], plaintext[Symbol.asyncIterator]() as AsyncIterator<Buffer>));
}

function isMultipartEncrypted(split: SplitMessage): boolean {
  const contentType = findField(split.fields, 'content-type');
  return contentType !== undefined && /^multipart\/encrypted\b/i.test(fieldValue(contentType));
}

/** Outer fields that belong to the original message: not Content-*, not the MIME-Version Lacre added. */
function outerFieldsToKeep(outer: SplitMessage, entity: SplitMessage): HeaderField[] {
  const kept = outer.fields.filter((field) => !isContentField(field));
  const mimeVersion = findField(outer.fields, 'mime-version');
  const addedByLacre =
    mimeVersion !== undefined &&
    fieldValue(mimeVersion) === '1.0' &&
    outer.fields[outer.fields.indexOf(mimeVersion) + 1]?.lowerName === 'content-type' &&
    !entity.fields.some(isContentField);
  return addedByLacre ? kept.filter((field) => field !== mimeVersion) : kept;
}

async function splitOrFail(chunks: AsyncIterator<Buffer>): Promise<SplitMessage> {
  try {
    return await splitMessage(chunks, MAX_HEADER_SIZE);
  } catch (error) {
    throw new BlobDecryptionError(`cannot read the header block: ${errorMessage(error)}`, { cause: error });
  }
}

type MessageInput = { binaryMessage: ReadableStream<Uint8Array> } | { armoredMessage: ReadableStream<string> };

async function readMessage(input: MessageInput): Promise<openpgp.Message<ReadableStream<Uint8Array>>> {
  try {
    return (await openpgp.readMessage(input as { binaryMessage: ReadableStream<Uint8Array> })) as openpgp.Message<ReadableStream<Uint8Array>>;
  } catch (error) {
    throw new BlobDecryptionError(`not an OpenPGP message: ${errorMessage(error)}`, { cause: error });
  }
}

async function decrypt(message: openpgp.Message<ReadableStream<Uint8Array>>, keys: readonly PrivateKey[]): Promise<Readable> {
  assertAddressedToUs(message, keys);
  try {
    const { data } = await openpgp.decrypt({
      message,
      decryptionKeys: [...keys],
      format: 'binary',
      // Plaintext streams out before the integrity check at its end; the check failing errors the stream, and the
      // Maildir delivery then removes its tmp/ file, so unauthenticated bytes never reach new/.
      config: { allowUnauthenticatedStream: true },
    });
    return Readable.fromWeb(data as unknown as WebReadableStream<Uint8Array>).on('error', () => undefined);
  } catch (error) {
    throw new BlobDecryptionError(`decryption failed: ${errorMessage(error)}`, { cause: error });
  }
}

/** Compares key ids up front, so "not for us" is told apart from a damaged message. */
function assertAddressedToUs(message: openpgp.Message<ReadableStream<Uint8Array>>, keys: readonly PrivateKey[]): void {
  const recipients = message.getEncryptionKeyIDs();
  if (recipients.length === 0) throw new BlobDecryptionError('the message is not encrypted to a public key');
  // A hidden recipient (wildcard key id, `gpg --throw-keyids`) may be us: only trying will tell.
  if (recipients.some((id) => /^0+$/.test(id.toHex()))) return;
  const ours = keys.flatMap((key) => key.getKeys().map((k) => k.getKeyID()));
  if (!recipients.some((id) => ours.some((own) => own.equals(id)))) {
    const named = recipients.map((id) => id.toHex().toUpperCase()).join(', ');
    throw new NoMatchingKeyError(`no matching key: the message is encrypted to ${named}`);
  }
}

/** The lines of the first armored PGP MESSAGE block, BEGIN and END lines included; the rest is read and dropped. */
async function* armoredBlock(chunks: AsyncIterable<Buffer>): AsyncGenerator<string> {
  let state: 'before' | 'inside' | 'after' = 'before';
  for await (const line of lines(chunks)) {
    if (state === 'before' && line.startsWith('-----BEGIN PGP MESSAGE-----')) state = 'inside';
    if (state === 'inside') yield line;
    if (state === 'inside' && line.startsWith('-----END PGP MESSAGE-----')) state = 'after';
  }
  if (state === 'before') throw new BlobDecryptionError('no armored OpenPGP message in the body');
  if (state === 'inside') throw new BlobDecryptionError('the armored OpenPGP message is cut off');
}

/** Lines (with their endings) as latin1 text; over-long lines are cut, which only matters outside the armor. */
async function* lines(chunks: AsyncIterable<Buffer>): AsyncGenerator<string> {
  let carry = '';
  for await (const chunk of chunks) {
    const text = carry + chunk.toString('latin1');
    const end = text.lastIndexOf('\n') + 1;
    carry = text.slice(end);
    if (carry.length > MAX_LINE) carry = carry.slice(0, MAX_LINE);
    if (end > 0) yield* text.slice(0, end).split(/(?<=\n)/);
  }
  if (carry) yield carry;
}

async function* asText(chunks: AsyncIterable<Buffer>): AsyncGenerator<string> {
  for await (const chunk of chunks) yield chunk.toString('latin1');
}

async function* prepend(head: readonly Buffer[], rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  for (const buffer of head) if (buffer.length > 0) yield buffer;
  for (;;) {
    const next = await rest.next();
    if (next.done) return;
    yield next.value;
  }
}

/** A pull-driven web stream over an async iterable (openpgp.js reads web streams). */
function webStream<T>(source: AsyncIterable<T>): ReadableStream<T> {
  const iterator = source[Symbol.asyncIterator]();
  return new ReadableStream<T>({
    async pull(controller) {
      const next = await iterator.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel(reason) {
      await iterator.return?.(reason);
    },
  });
}
