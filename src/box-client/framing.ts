/**
 * A delivery the box stored as Soledad does, `base64url(preamble) + " " + payload` (src/soledad/preamble.ts), read
 * back as its payload: the head is read up to the space, checked, and the rest streams on untouched.
 */
import { Readable } from 'node:stream';
import { LacreError } from '../errors.js';
import { FRAMING_BYTES, InvalidPreambleError, readFraming, type Preamble } from '../soledad/preamble.js';
import { prepend } from '../util/chunks.js';

/** The blob was announced as framed, but does not start with a valid Soledad preamble and its space. */
export class InvalidFramingError extends LacreError {}

export interface Unframed {
  /** The payload: every byte after the first space. */
  stream: Readable;
  preamble: Preamble;
  /** Bytes of framing read off the front (the encoded preamble and the space). */
  framingBytes: number;
}

/** Reads the framing off the front of `framed`; rejects with InvalidFramingError when there is none. */
export async function stripFraming(framed: Readable): Promise<Unframed> {
  const chunks = framed[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  let framing;
  for (;;) {
    try {
      framing = readFraming(head);
    } catch (error) {
      if (!(error instanceof InvalidPreambleError)) throw error;
      framed.destroy();
      throw new InvalidFramingError(`the blob's Soledad preamble is invalid: ${error.message}`, { cause: error });
    }
    if (framing || head.length >= FRAMING_BYTES) break;
    const next = await chunks.next();
    if (next.done) break;
    head = Buffer.concat([head, next.value]);
  }
  if (!framing) {
    framed.destroy();
    throw new InvalidFramingError(`the blob has no Soledad preamble: no space in its first ${Math.min(head.length, FRAMING_BYTES)} bytes`);
  }
  const rest = Readable.from(prepend([head.subarray(framing.payloadOffset)], chunks), { objectMode: false });
  // A consumer that gives up early stops the download underneath too.
  rest.once('close', () => framed.destroy());
  return { stream: rest, preamble: framing.preamble, framingBytes: framing.payloadOffset };
}
