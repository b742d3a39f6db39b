import { Transform } from 'node:stream';

/**
 * ASCII armor (RFC 9580 §6) for an OpenPGP message, streaming: 64 base64 characters per line (as GnuPG
 * writes), then the CRC-24 checksum line, which GnuPG 2.2 needs when the base64 ends without padding
 * (GnuPG bug T7071). openpgp.js's own armor builds a string per line and ran at ~20 MB/s in the large-message
 * benchmark; this one encodes whole chunks natively and copies lines into one buffer.
 */

const BYTES_PER_LINE = 48;
const CHARS_PER_LINE = 64;
const BEGIN = '-----BEGIN PGP MESSAGE-----';
const END = '-----END PGP MESSAGE-----';

const CRC24_INIT = 0xb704ce;
const CRC24_POLY = 0x1864cfb;
const CRC24_TABLE = (() => {
  const table = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 16;
    for (let bit = 0; bit < 8; bit++) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= CRC24_POLY;
    }
    table[i] = crc & 0xffffff;
  }
  return table;
})();

export function crc24(data: Uint8Array, crc = CRC24_INIT): number {
  for (let i = 0; i < data.length; i++) crc = ((crc << 8) ^ CRC24_TABLE[((crc >> 16) ^ data[i]!) & 0xff]!) & 0xffffff;
  return crc;
}

/** Base64 of `data` (a multiple of 48 bytes, except for the final piece) as lines ending in `eol`. */
function encodeLines(data: Buffer, eol: Buffer): Buffer {
  if (data.length === 0) return Buffer.alloc(0);
  const encoded = Buffer.from(data.toString('base64'), 'latin1');
  const lines = Math.ceil(encoded.length / CHARS_PER_LINE);
  const out = Buffer.allocUnsafe(encoded.length + lines * eol.length);
  let at = 0;
  for (let start = 0; start < encoded.length; start += CHARS_PER_LINE) {
    at += encoded.copy(out, at, start, Math.min(start + CHARS_PER_LINE, encoded.length));
    at += eol.copy(out, at);
  }
  return out;
}

function header(eol: string): Buffer {
  return Buffer.from(`${BEGIN}${eol}${eol}`, 'latin1');
}

function footer(crc: number, eol: string): Buffer {
  const checksum = Buffer.from([crc >> 16, (crc >> 8) & 0xff, crc & 0xff]).toString('base64');
  return Buffer.from(`=${checksum}${eol}${END}${eol}`, 'latin1');
}

/** A Transform from binary OpenPGP packets to their armored form. */
export function armorTransform(eol: '\r\n' | '\n'): Transform {
  const eolBytes = Buffer.from(eol, 'latin1');
  let carry: Buffer = Buffer.alloc(0);
  let crc = CRC24_INIT;
  let started = false;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      crc = crc24(chunk, crc);
      const data = carry.length > 0 ? Buffer.concat([carry, chunk]) : chunk;
      const whole = data.length - (data.length % BYTES_PER_LINE);
      carry = Buffer.from(data.subarray(whole));
      const lines = encodeLines(data.subarray(0, whole), eolBytes);
      const parts = started ? [lines] : [header(eol), lines];
      started = true;
      done(null, Buffer.concat(parts));
    },
    flush(done) {
      done(null, Buffer.concat([started ? Buffer.alloc(0) : header(eol), encodeLines(carry, eolBytes), footer(crc, eol)]));
    },
  });
}

/** The armored form of a message held in memory. */
export function armorBuffer(binary: Uint8Array, eol: '\r\n' | '\n'): Buffer {
  const data = Buffer.from(binary.buffer, binary.byteOffset, binary.byteLength);
  return Buffer.concat([header(eol), encodeLines(data, Buffer.from(eol, 'latin1')), footer(crc24(data), eol)]);
}
