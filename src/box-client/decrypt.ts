/**
 * Turns a blob from the Incoming Box back into the message for a mailbox, by its scheme (X-Incoming-Scheme):
 *
 * - `openpgp`: the whole original message is one OpenPGP message (armored or binary); its plaintext IS the
 *   message, byte for byte.
 * - `openpgp-mime`: an RFC 3156 message (an inline one labelled so is read as inline);
 * - `openpgp-inline`: a message whose body is one armored block.
 *   For both, src/mime/unwrap.ts finds the armored block and rebuilds the message around its plaintext.
 * - `raw`: not encrypted by Lacre; the bytes as stored.
 *
 * Everything streams: only header blocks are held in memory.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import * as openpgp from 'openpgp';
import type { PrivateKey } from 'openpgp';
import { errorMessage, LacreError } from '../errors.js';
import { MalformedWrappingError, restoreOriginal, unwrap, type WrappingStyle } from '../mime/unwrap.js';
import { prepend } from '../util/chunks.js';

/** The blob could not be turned into a message: temporary, except a NoMatchingKeyError. */
export class BlobDecryptionError extends LacreError {}

/** None of our keys is a recipient of the message: no later client version will decrypt it. */
export class NoMatchingKeyError extends BlobDecryptionError {}

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
      return decryptWrapped(blob, keys);
    case 'openpgp-inline':
      return decryptWrapped(blob, keys, 'inline');
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

/** A PGP/MIME or inline copy: its style as the message says, unless the scheme insists on one. */
async function decryptWrapped(blob: Readable, keys: readonly PrivateKey[], style?: WrappingStyle): Promise<Readable> {
  const wrapped = await unwrap(blob[Symbol.asyncIterator]() as AsyncIterator<Buffer>).catch(rethrowAsBlobError);
  const plaintext = await decrypt(await readMessage({ armoredMessage: webStream(asBlobErrors(wrapped.armor)) }), keys);
  const chunks = plaintext[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return Readable.from(await restoreOriginal(wrapped.outer, style ?? wrapped.style, chunks).catch(rethrowAsBlobError));
}

/** A wrapping that cannot be undone is a blob that cannot be decrypted (temporary). */
function rethrowAsBlobError(error: unknown): never {
  throw error instanceof MalformedWrappingError ? new BlobDecryptionError(error.message, { cause: error }) : error;
}

async function* asBlobErrors<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (error) {
    rethrowAsBlobError(error);
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

async function* asText(chunks: AsyncIterable<Buffer>): AsyncGenerator<string> {
  for await (const chunk of chunks) yield chunk.toString('latin1');
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
