import { Transform } from 'node:stream';
import { markDataSafe } from '../mime/data-safe.js';

/**
 * ASCII armor (RFC 9580 §6) for an OpenPGP message, streaming: 64 base64 characters per line (as GnuPG
 * writes), then the CRC-24 checksum line, which GnuPG 2.2 needs when the base64 ends without padding
 * (GnuPG bug T7071). openpgp.js's own armor builds a string per line and ran at ~20 MB/s in the large-message
 * benchmark; this one encodes each chunk's lines straight into one output buffer.
 */

const BYTES_PER_LINE = 48;
const CHARS_PER_LINE = 64;
const BEGIN = '-----BEGIN PGP MESSAGE-----';
const END = '-----END PGP MESSAGE-----';

const CRC24_INIT = 0xb704ce;
const CRC24_POLY = 0x1864cfb;

/** Slicing-by-4 tables: TABLES[k][b] is the CRC of byte b followed by k zero bytes (twice the speed of one table). */
const CRC24_TABLES = (() => {
  const tables = [0, 1, 2, 3].map(() => new Int32Array(256));
  const [first] = tables as [Int32Array];
  for (let i = 0; i < 256; i++) {
    let crc = i << 16;
    for (let bit = 0; bit < 8; bit++) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= CRC24_POLY;
    }
    first[i] = crc & 0xffffff;
  }
  for (let k = 1; k < 4; k++) {
    for (let i = 0; i < 256; i++) {
      const previous = tables[k - 1]![i]!;
      tables[k]![i] = ((previous << 8) ^ first[(previous >> 16) & 0xff]!) & 0xffffff;
    }
  }
  return tables as [Int32Array, Int32Array, Int32Array, Int32Array];
})();

export function crc24(data: Uint8Array, crc = CRC24_INIT): number {
  const [t0, t1, t2, t3] = CRC24_TABLES;
  const whole = data.length - (data.length % 4);
  let i = 0;
  for (; i < whole; i += 4) {
    const x = (crc << 8) ^ (data[i]! << 24) ^ (data[i + 1]! << 16) ^ (data[i + 2]! << 8) ^ data[i + 3]!;
    crc = (t3[x >>> 24]! ^ t2[(x >>> 16) & 0xff]! ^ t1[(x >>> 8) & 0xff]! ^ t0[x & 0xff]!) & 0xffffff;
  }
  for (; i < data.length; i++) crc = ((crc << 8) ^ t0[((crc >> 16) ^ data[i]!) & 0xff]!) & 0xffffff;
  return crc;
}

const ALPHABET = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', 'latin1');
/** The two base64 characters of every 12-bit value: one lookup per half of a 3-byte group. */
const PAIRS = (() => {
  const pairs = new Uint8Array(4096 * 2);
  for (let i = 0; i < 4096; i++) {
    pairs[2 * i] = ALPHABET[i >> 6]!;
    pairs[2 * i + 1] = ALPHABET[i & 63]!;
  }
  return pairs;
})();
const PAD = 0x3d;

/** Bytes that `length` input bytes take as base64 lines, each followed by `eolLength` bytes. */
function encodedLength(length: number, eolLength: number): number {
  return Math.ceil(length / 3) * 4 + Math.ceil(length / BYTES_PER_LINE) * eolLength;
}

/**
 * Writes the base64 of data[from, to) into `out` at `at` as lines of 64 characters, each followed by `eol`;
 * returns where it stopped. Only the last line may be short (padded). Encoding straight into the output
 * buffer, instead of Node's base64 string and a copy per line, makes no garbage and runs ~3x faster.
 */
function encodeLinesInto(data: Uint8Array, from: number, to: number, out: Buffer, at: number, eol: Buffer): number {
  const pairs = PAIRS;
  for (let line = from; line < to; line += BYTES_PER_LINE) {
    const lineEnd = Math.min(line + BYTES_PER_LINE, to);
    let i = line;
    for (; i + 3 <= lineEnd; i += 3) {
      const group = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
      const high = (group >>> 12) << 1;
      const low = (group & 0xfff) << 1;
      out[at] = pairs[high]!;
      out[at + 1] = pairs[high + 1]!;
      out[at + 2] = pairs[low]!;
      out[at + 3] = pairs[low + 1]!;
      at += 4;
    }
    if (i < lineEnd) at = encodeTail(data, i, lineEnd - i, out, at);
    for (let k = 0; k < eol.length; k++) out[at++] = eol[k]!;
  }
  return at;
}

/** The last one or two bytes, with padding. */
function encodeTail(data: Uint8Array, i: number, left: number, out: Buffer, at: number): number {
  const group = (data[i]! << 16) | (left === 2 ? data[i + 1]! << 8 : 0);
  out[at] = ALPHABET[group >>> 18]!;
  out[at + 1] = ALPHABET[(group >>> 12) & 63]!;
  out[at + 2] = left === 2 ? ALPHABET[(group >>> 6) & 63]! : PAD;
  out[at + 3] = PAD;
  return at + 4;
}

/** Base64 of `data` as lines ending in `eol`. */
function encodeLines(data: Uint8Array, eol: Buffer): Buffer {
  const out = Buffer.allocUnsafe(encodedLength(data.length, eol.length));
  encodeLinesInto(data, 0, data.length, out, 0, eol);
  return out;
}

function header(eol: string): Buffer {
  return Buffer.from(`${BEGIN}${eol}${eol}`, 'latin1');
}

function footer(crc: number, eol: string): Buffer {
  const checksum = Buffer.from([crc >> 16, (crc >> 8) & 0xff, crc & 0xff]).toString('base64');
  return Buffer.from(`=${checksum}${eol}${END}${eol}`, 'latin1');
}

/**
 * A Transform from binary OpenPGP packets to their armored form: one output buffer per input chunk, made of
 * whole lines. With CRLF line ends every output buffer is marked as safe for SMTP DATA as it is.
 */
export function armorTransform(eol: '\r\n' | '\n'): Transform {
  const eolBytes = Buffer.from(eol, 'latin1');
  const lineBytes = CHARS_PER_LINE + eolBytes.length;
  let carry: Buffer = Buffer.alloc(0);
  let crc = CRC24_INIT;
  let started = false;
  return new Transform({
    // One buffer per read: a byte-mode reader behind would concatenate pieces waiting together, and lose the mark.
    readableObjectMode: true,
    readableHighWaterMark: 1,
    transform(chunk: Buffer, _encoding, done) {
      crc = crc24(chunk, crc);
      const head = started ? undefined : header(eol);
      started = true;
      const lines = Math.floor((carry.length + chunk.length) / BYTES_PER_LINE);
      const out = Buffer.allocUnsafe((head?.length ?? 0) + lines * lineBytes);
      let at = head ? head.copy(out) : 0;
      let from = 0;
      if (lines > 0 && carry.length > 0) {
        // The line begun by the previous chunk: at most 47 carried bytes, completed from this one.
        from = BYTES_PER_LINE - carry.length;
        at = encodeLinesInto(Buffer.concat([carry, chunk.subarray(0, from)]), 0, BYTES_PER_LINE, out, at, eolBytes);
      }
      const to = from + Math.floor((chunk.length - from) / BYTES_PER_LINE) * BYTES_PER_LINE;
      if (lines > 0) encodeLinesInto(chunk, from, to, out, at, eolBytes);
      carry = lines > 0 ? Buffer.from(chunk.subarray(to)) : Buffer.concat([carry, chunk]);
      done(null, out.length > 0 ? markArmor(out, eol) : undefined);
    },
    flush(done) {
      done(null, markArmor(Buffer.concat([started ? Buffer.alloc(0) : header(eol), encodeLines(carry, eolBytes), footer(crc, eol)]), eol));
    },
  });
}

/** The armored form of a message held in memory (marked safe for SMTP DATA with CRLF line ends). */
export function armorBuffer(binary: Uint8Array, eol: '\r\n' | '\n'): Buffer {
  const data = Buffer.from(binary.buffer, binary.byteOffset, binary.byteLength);
  return markArmor(Buffer.concat([header(eol), encodeLines(data, Buffer.from(eol, 'latin1')), footer(crc24(data), eol)]), eol);
}

/**
 * Armor with CRLF line ends is whole lines none of which starts with '.': safe for SMTP DATA as it is. Also for
 * armor this module made elsewhere (in a worker thread: a mark does not cross threads).
 */
export function markArmor(armored: Buffer, eol: '\r\n' | '\n'): Buffer {
  return eol === '\r\n' ? markDataSafe(armored) : armored;
}
