/**
 * Reads OpenPGP packet headers (RFC 9580 §4.2, old and new format) without parsing any body: enough to count or
 * classify packets before handing the bytes to a full parser. Pure byte layout; no cryptography here.
 */

export interface PacketHeader {
  tag: number;
  /** Offset of the header's first octet. */
  start: number;
  /** Offset of the body's first octet (with partial body lengths, more length octets follow inside the body). */
  bodyStart: number;
  /** Offset just past the packet's body (partial body chunks included). */
  end: number;
}

/** The bytes are not a sequence of well-framed OpenPGP packets. */
export class PacketFramingError extends Error {
  override readonly name = 'PacketFramingError';
}

/** The tag of the packet starting at `offset`, or undefined when its first octet is not a packet header. */
export function packetTagAt(bytes: Uint8Array, offset = 0): number | undefined {
  const first = bytes[offset];
  if (first === undefined || (first & 0x80) === 0) return undefined;
  return first & 0x40 ? first & 0x3f : (first >> 2) & 0x0f;
}

/** Every packet header of `bytes`, in order. Throws PacketFramingError on a bad header or a truncated packet. */
export function* packetHeaders(bytes: Uint8Array): Generator<PacketHeader> {
  let offset = 0;
  while (offset < bytes.length) {
    const header = readHeader(bytes, offset);
    yield header;
    offset = header.end;
  }
}

function readHeader(bytes: Uint8Array, start: number): PacketHeader {
  const tag = packetTagAt(bytes, start);
  if (tag === undefined) throw new PacketFramingError(`no packet header at byte ${start}`);
  const first = bytes[start]!;
  const body = first & 0x40 ? newFormatBody(bytes, start + 1) : oldFormatBody(bytes, start + 1, first & 0x03);
  if (body.end > bytes.length) throw new PacketFramingError(`the packet at byte ${start} (tag ${tag}) is truncated`);
  return { tag, start, ...body };
}

type Body = Pick<PacketHeader, 'bodyStart' | 'end'>;

function oldFormatBody(bytes: Uint8Array, offset: number, lengthType: number): Body {
  if (lengthType === 3) return { bodyStart: offset, end: bytes.length }; // indeterminate: the rest of the data
  const octets = 1 << lengthType; // 1, 2 or 4
  const bodyStart = offset + octets;
  return { bodyStart, end: bodyStart + readUint(bytes, offset, octets) };
}

/** New-format length: one, two or five octets, or partial body chunks ending in a definite length. */
function newFormatBody(bytes: Uint8Array, offset: number): Body {
  let bodyStart: number | undefined;
  let cursor = offset;
  for (;;) {
    const first = need(bytes, cursor);
    const lengthOctets = first < 192 ? 1 : first < 224 ? 2 : first === 255 ? 5 : 1;
    bodyStart ??= cursor + lengthOctets;
    if (first < 192) return { bodyStart, end: cursor + 1 + first };
    if (first < 224) return { bodyStart, end: cursor + 2 + ((first - 192) << 8) + need(bytes, cursor + 1) + 192 };
    if (first === 255) return { bodyStart, end: cursor + 5 + readUint(bytes, cursor + 1, 4) };
    cursor += 1 + (1 << (first & 0x1f)); // a partial body chunk; another length follows it
  }
}

function readUint(bytes: Uint8Array, offset: number, octets: number): number {
  let value = 0;
  for (let index = 0; index < octets; index++) value = value * 256 + need(bytes, offset + index);
  return value;
}

function need(bytes: Uint8Array, offset: number): number {
  const value = bytes[offset];
  if (value === undefined) throw new PacketFramingError(`a packet length is cut off at byte ${offset}`);
  return value;
}
