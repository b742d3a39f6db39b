/**
 * Buffers made of whole lines, each ending in CRLF, none starting with '.', with no other CR or LF. After a line
 * end such a buffer goes into SMTP DATA as it is: no dot to stuff, no line end to mend. Armor with CRLF line
 * ends is made so; the armorer marks it, and the mark lets the relay skip examining every byte
 * (src/delivery/dot-stuffing.ts), which for a big message cost as much as its encryption.
 *
 * The mark is a property of the buffer itself, so it travels with the chunk through the streams between the
 * armorer and the relay; a buffer made from a marked one (a slice, a concatenation) is not marked.
 */
const DATA_SAFE: unique symbol = Symbol('lacre.dataSafe');

export type DataSafe<T extends Uint8Array = Buffer> = T & { readonly [DATA_SAFE]: true };

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

export function markDataSafe<T extends Uint8Array>(buffer: T): DataSafe<T> {
  // Not enumerable: the bytes are what a buffer is, to comparisons too.
  return Object.defineProperty(buffer, DATA_SAFE, { value: true }) as DataSafe<T>;
}

export function isDataSafe<T extends Uint8Array>(buffer: T): buffer is DataSafe<T> {
  return (buffer as { [DATA_SAFE]?: true })[DATA_SAFE] === true;
}

/** Whether `buffer` is made as a data-safe buffer must be, found by looking at every byte. */
export function isWholeCrlfLines(buffer: Uint8Array): boolean {
  const length = buffer.length;
  if (length > 0 && buffer[length - 1] !== LF) return false;
  let lineStart = true;
  for (let i = 0; i < length; i++) {
    const byte = buffer[i]!;
    if (byte === DOT && lineStart) return false;
    lineStart = false;
    if (byte === CR) {
      if (buffer[i + 1] !== LF) return false;
    } else if (byte === LF) {
      if (buffer[i - 1] !== CR) return false;
      lineStart = true;
    }
  }
  return true;
}

/**
 * The pieces of a copy held in memory as one buffer, marked safe, when each piece is safe (marked, or found so):
 * one write to the relay instead of one per piece. Otherwise the pieces as they are, so that the marked ones
 * still pass unexamined.
 */
export function joinedWhenSafe(pieces: Buffer[]): Buffer[] {
  if (pieces.length < 2 || !pieces.every((piece) => isDataSafe(piece) || isWholeCrlfLines(piece))) return pieces;
  return [markDataSafe(Buffer.concat(pieces))];
}
