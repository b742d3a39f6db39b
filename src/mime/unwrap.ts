/**
 * Reading back the wrapping src/mime/assemble.ts puts around an encrypted copy, for whoever decrypts it:
 * where the armored block is, and, given its plaintext, the original message.
 *
 * - PGP/MIME (pgpMimeEnvelope, an RFC 3156 multipart/encrypted): the plaintext is the original content entity
 *   (its Content-* lines, the blank line, the body). The message is RECONSTRUCTED as: the outer header lines
 *   except Content-* (the multipart/encrypted Content-Type) and except the `MIME-Version: 1.0` line
 *   pgpMimeEnvelope adds when the original had none, then the entity. It is byte-identical to the original when
 *   the original's Content-* lines came last in its header block (the usual case); otherwise they move to the end
 *   of the header block. An added `MIME-Version: 1.0` cannot be told from an original one in the same place, so
 *   it is dropped only when the entity carries no Content-* field (a message without MIME headers rarely has
 *   MIME-Version).
 * - Inline (inlineEnvelope): the body is one armored block; the message is its header block as received, then the
 *   plaintext body. The body was encrypted decoded from its transfer encoding and Content-Transfer-Encoding was
 *   dropped, so this too is a reconstruction, not the original bytes.
 *
 * Pure and streaming (no OpenPGP here: the caller decrypts): only header blocks are held in memory.
 */
import { errorMessage, LacreError } from '../errors.js';
import { prepend } from '../util/chunks.js';
import { fieldValue, findField, isContentField, type HeaderField, type SplitMessage } from './header.js';
import { splitMessage } from './split.js';

/** Header blocks above this size are refused (the same bound as smtp.max_header_size's default). */
const MAX_HEADER_SIZE = 1024 * 1024;
/** Longest line kept while looking for the armor; armor lines are at most 76 characters. */
const MAX_LINE = 64 * 1024;

/** Not a wrapping that can be undone: a header block too large, no armored block, or one cut off. */
export class MalformedWrappingError extends LacreError {}

export type WrappingStyle = 'pgp-mime' | 'inline';

export interface Wrapped {
  /** The outer header block, as received. */
  readonly outer: SplitMessage;
  /** 'pgp-mime' when the outer Content-Type is multipart/encrypted; else 'inline' (the body is the armored block). */
  readonly style: WrappingStyle;
  /**
   * The lines (with their endings, as latin1 text) of the first armored PGP MESSAGE block, BEGIN and END lines
   * included; the rest of the body is read and dropped. Fails with MalformedWrappingError when the body holds no
   * armored block, or only the start of one.
   */
  readonly armor: AsyncIterable<string>;
}

/** Reads the outer header block from `chunks` and tells the style; the body is left for `armor` to read. */
export async function unwrap(chunks: AsyncIterator<Buffer>): Promise<Wrapped> {
  const outer = await splitOrFail(chunks);
  const style = isMultipartEncrypted(outer) ? 'pgp-mime' : 'inline';
  return { outer, style, armor: armoredBlock(prepend([outer.bodyStart], chunks)) };
}

/** The original message (streamed) from the outer header block and the plaintext of the armored block. */
export async function restoreOriginal(outer: SplitMessage, style: WrappingStyle, plaintext: AsyncIterator<Buffer>): Promise<AsyncIterable<Buffer>> {
  if (style === 'inline') return prepend([outer.headerBlock, outer.separator], plaintext);
  const entity = await splitOrFail(plaintext);
  const head = [...outerFieldsToKeep(outer, entity).map((field) => field.raw), entity.headerBlock, entity.separator, entity.bodyStart];
  return prepend(head, plaintext);
}

function isMultipartEncrypted(split: SplitMessage): boolean {
  const contentType = findField(split.fields, 'content-type');
  return contentType !== undefined && /^multipart\/encrypted\b/i.test(fieldValue(contentType));
}

/** Outer fields that belong to the original message: not Content-*, not the MIME-Version pgpMimeEnvelope added. */
function outerFieldsToKeep(outer: SplitMessage, entity: SplitMessage): HeaderField[] {
  const kept = outer.fields.filter((field) => !isContentField(field));
  const mimeVersion = findField(outer.fields, 'mime-version');
  const added =
    mimeVersion !== undefined &&
    fieldValue(mimeVersion) === '1.0' &&
    outer.fields[outer.fields.indexOf(mimeVersion) + 1]?.lowerName === 'content-type' &&
    !entity.fields.some(isContentField);
  return added ? kept.filter((field) => field !== mimeVersion) : kept;
}

async function splitOrFail(chunks: AsyncIterator<Buffer>): Promise<SplitMessage> {
  try {
    return await splitMessage(chunks, MAX_HEADER_SIZE);
  } catch (error) {
    throw new MalformedWrappingError(`cannot read the header block: ${errorMessage(error)}`, { cause: error });
  }
}

async function* armoredBlock(chunks: AsyncIterable<Buffer>): AsyncGenerator<string> {
  let state: 'before' | 'inside' | 'after' = 'before';
  for await (const line of lines(chunks)) {
    if (state === 'before' && line.startsWith('-----BEGIN PGP MESSAGE-----')) state = 'inside';
    if (state === 'inside') yield line;
    if (state === 'inside' && line.startsWith('-----END PGP MESSAGE-----')) state = 'after';
  }
  if (state === 'before') throw new MalformedWrappingError('no armored OpenPGP message in the body');
  if (state === 'inside') throw new MalformedWrappingError('the armored OpenPGP message is cut off');
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
