/**
 * Soledad's blob framing, as its server stores an Incoming Box delivery and its client reads it back:
 * `base64url(preamble) + " " + payload` (leapcode/soledad `server/_incoming.py`, `common/blobs/preamble.py`).
 *
 * The preamble is Python's `struct.Struct('2sbbQ16s255p255pQ')` in native order and alignment, which on every
 * platform Soledad ran on (x86_64, little-endian) is `<2sbb4xQ16s255p255p2xQ`: 552 bytes, 736 base64 characters
 * with no padding. Pure: bytes in, bytes out.
 */

export const PREAMBLE_MAGIC = Buffer.from([0x13, 0x37]);
/** 552 bytes: magic, scheme, method, 4 pad, timestamp, iv, doc id, rev, 2 pad, size. */
export const PREAMBLE_BYTES = 552;
/** The older form without the size field (542 bytes), still read by Soledad's client. */
export const LEGACY_PREAMBLE_BYTES = 542;
/** base64 of 552 bytes: 736 characters, a multiple of 4, so never any '='. */
export const ENCODED_PREAMBLE_LENGTH = 736;
/** The encoded preamble and the space after it. */
export const FRAMING_BYTES = ENCODED_PREAMBLE_LENGTH + 1;

export const SCHEME_SYMKEY = 1;
export const SCHEME_EXTERNAL = 2;
export const METHOD_PGP = 3;

const PASCAL_FIELD = 255;
const OFFSET = { scheme: 2, method: 3, timestamp: 8, iv: 16, docId: 32, rev: 287, size: 544 } as const;
const SPACE = 0x20;

export interface Preamble {
  readonly scheme: number;
  readonly method: number;
  /** Seconds since the epoch. */
  readonly timestamp: number;
  readonly docId: string;
  readonly rev: string;
  /** The payload's length; undefined in the legacy form. */
  readonly size: number | undefined;
}

export class InvalidPreambleError extends Error {
  override readonly name = 'InvalidPreambleError';
}

/** The framing Soledad's server puts before the body of a trusted `PUT /incoming/{user}/{blob_id}`. */
export function incomingFraming(blobId: string, payloadSize: number, deliveredAt: Date): Buffer {
  const preamble = encodePreamble({
    scheme: SCHEME_EXTERNAL,
    method: METHOD_PGP,
    timestamp: Math.floor(deliveredAt.getTime() / 1000),
    docId: blobId,
    rev: '0',
    size: payloadSize,
  });
  return Buffer.concat([Buffer.from(preamble.toString('base64url'), 'ascii'), Buffer.from([SPACE])]);
}

export function encodePreamble(preamble: Preamble): Buffer {
  const bytes = Buffer.alloc(PREAMBLE_BYTES);
  PREAMBLE_MAGIC.copy(bytes, 0);
  bytes.writeInt8(preamble.scheme, OFFSET.scheme);
  bytes.writeInt8(preamble.method, OFFSET.method);
  bytes.writeBigUInt64LE(BigInt(preamble.timestamp), OFFSET.timestamp);
  writePascal(bytes, OFFSET.docId, preamble.docId);
  writePascal(bytes, OFFSET.rev, preamble.rev);
  bytes.writeBigUInt64LE(BigInt(preamble.size ?? 0), OFFSET.size);
  return bytes;
}

/** Reads a 552- or 542-byte preamble as Soledad's `decode_preamble` does; throws InvalidPreambleError otherwise. */
export function decodePreamble(bytes: Buffer): Preamble {
  if (bytes.length !== PREAMBLE_BYTES && bytes.length !== LEGACY_PREAMBLE_BYTES) {
    throw new InvalidPreambleError(`a preamble is ${PREAMBLE_BYTES} bytes, not ${bytes.length}`);
  }
  if (!bytes.subarray(0, 2).equals(PREAMBLE_MAGIC)) throw new InvalidPreambleError('the preamble does not start with 0x13 0x37');
  return {
    scheme: bytes.readInt8(OFFSET.scheme),
    method: bytes.readInt8(OFFSET.method),
    timestamp: Number(bytes.readBigUInt64LE(OFFSET.timestamp)),
    docId: readPascal(bytes, OFFSET.docId),
    rev: readPascal(bytes, OFFSET.rev),
    size: bytes.length === PREAMBLE_BYTES ? Number(bytes.readBigUInt64LE(OFFSET.size)) : undefined,
  };
}

/**
 * Where the payload starts in a framed blob whose head is `head` (at least up to the first space), and the
 * preamble read from it; undefined when the head has no space within the longest encoded preamble.
 */
export function readFraming(head: Buffer): { preamble: Preamble; payloadOffset: number } | undefined {
  const space = head.subarray(0, ENCODED_PREAMBLE_LENGTH + 1).indexOf(SPACE);
  if (space < 0) return undefined;
  const encoded = head.subarray(0, space).toString('ascii');
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(encoded)) throw new InvalidPreambleError('the preamble is not base64url');
  return { preamble: decodePreamble(Buffer.from(encoded, 'base64url')), payloadOffset: space + 1 };
}

/**
 * Soledad's `Tag` header: base64url, with padding (its Python 2 client needs it), of a blob's last 16 bytes
 * (24 characters), or of all of a shorter blob's bytes.
 */
export function tagOf(last16: Buffer): string {
  const encoded = last16.toString('base64url');
  return encoded.padEnd(Math.ceil(encoded.length / 4) * 4, '=');
}

function writePascal(bytes: Buffer, offset: number, text: string): void {
  const value = Buffer.from(text, 'utf8');
  if (value.length > PASCAL_FIELD - 1) throw new InvalidPreambleError(`a preamble field holds at most ${PASCAL_FIELD - 1} bytes`);
  bytes.writeUInt8(value.length, offset);
  value.copy(bytes, offset + 1);
}

function readPascal(bytes: Buffer, offset: number): string {
  const length = Math.min(bytes.readUInt8(offset), PASCAL_FIELD - 1);
  return bytes.subarray(offset + 1, offset + 1 + length).toString('utf8');
}
