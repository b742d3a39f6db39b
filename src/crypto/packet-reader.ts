/**
 * Reads OpenPGP packet framing (RFC 4880 §4.2 old and new format, RFC 9580 §4.2) to tell whether bytes are an
 * encrypted OpenPGP message: one or more session-key packets (PKESK, SKESK), then one encrypted-data packet
 * (SED, SEIPD, AEAD) that runs to the end. Reading only: nothing is decrypted, nothing here throws; any doubt
 * (truncated input, bogus lengths, another packet) is "not encrypted".
 */

export const ReadTag = { pkesk: 1, skesk: 3, sed: 9, seipd: 18, aead: 20 } as const;

const SESSION_KEY_TAGS: ReadonlySet<number> = new Set([ReadTag.pkesk, ReadTag.skesk]);
const ENCRYPTED_DATA_TAGS: ReadonlySet<number> = new Set([ReadTag.sed, ReadTag.seipd, ReadTag.aead]);
/** Versions each packet may carry (RFC 4880, RFC 9580, and the AEAD packet of the crypto-refresh drafts). */
const KNOWN_VERSIONS: ReadonlyMap<number, ReadonlySet<number>> = new Map([
  [ReadTag.pkesk, new Set([3, 6])],
  [ReadTag.skesk, new Set([4, 5, 6])],
  [ReadTag.seipd, new Set([1, 2])],
  [ReadTag.aead, new Set([1])],
]);

/** How a packet's body length is given. */
export type BodyLength =
  | { readonly kind: 'definite'; readonly length: number }
  /** A partial body chunk of this many bytes; more length headers follow (new format, data packets only). */
  | { readonly kind: 'partial'; readonly length: number }
  /** Old format, length type 3: the packet runs to the end of the data. */
  | { readonly kind: 'indeterminate' };

export interface PacketHeader {
  readonly tag: number;
  /** Offset of the first body byte. */
  readonly bodyOffset: number;
  readonly length: BodyLength;
}

/** The packet header at `offset`, or undefined when it is cut short or not a packet header at all. */
export function readPacketHeader(bytes: Uint8Array, offset: number): PacketHeader | undefined {
  const first = bytes[offset];
  if (first === undefined || (first & 0x80) === 0) return undefined;
  if (first & 0x40) {
    const length = readNewLength(bytes, offset + 1);
    return length && { tag: first & 0x3f, bodyOffset: length.next, length: length.length };
  }
  const tag = (first >> 2) & 0x0f;
  const lengthType = first & 0x03;
  if (lengthType === 3) return { tag, bodyOffset: offset + 1, length: { kind: 'indeterminate' } };
  const octets = 1 << lengthType;
  if (offset + 1 + octets > bytes.length) return undefined;
  let length = 0;
  for (let i = 0; i < octets; i++) length = length * 256 + bytes[offset + 1 + i]!;
  return { tag, bodyOffset: offset + 1 + octets, length: { kind: 'definite', length } };
}

/** A new-format length (RFC 9580 §4.2.1) at `offset`: one, two or five octets, or a partial body length. */
export function readNewLength(bytes: Uint8Array, offset: number): { length: BodyLength; next: number } | undefined {
  const first = bytes[offset];
  if (first === undefined) return undefined;
  if (first < 192) return { length: { kind: 'definite', length: first }, next: offset + 1 };
  if (first < 224) {
    const second = bytes[offset + 1];
    if (second === undefined) return undefined;
    return { length: { kind: 'definite', length: ((first - 192) << 8) + second + 192 }, next: offset + 2 };
  }
  if (first < 255) return { length: { kind: 'partial', length: 2 ** (first & 0x1f) }, next: offset + 1 };
  if (offset + 5 > bytes.length) return undefined;
  const length = (bytes[offset + 1]! * 2 ** 24) + ((bytes[offset + 2]! << 16) | (bytes[offset + 3]! << 8) | bytes[offset + 4]!);
  return { length: { kind: 'definite', length }, next: offset + 5 };
}

/**
 * Whether `bytes` hold an encrypted OpenPGP message. `complete` says they are the whole message; otherwise
 * they are its first bytes (a window), and a data packet running past their end is taken as it announces
 * itself. Every session-key packet must lie wholly inside, and the data packet's header and version octet too.
 */
export function isEncryptedOpenPgp(bytes: Uint8Array, complete: boolean): boolean {
  let offset = 0;
  let sessionKeys = 0;
  for (;;) {
    const header = readPacketHeader(bytes, offset);
    if (!header) return false;
    if (SESSION_KEY_TAGS.has(header.tag)) {
      if (header.length.kind !== 'definite') return false;
      const end = header.bodyOffset + header.length.length;
      if (end > bytes.length || !knownVersion(header, bytes)) return false;
      sessionKeys++;
      offset = end;
      continue;
    }
    if (!ENCRYPTED_DATA_TAGS.has(header.tag) || sessionKeys === 0) return false;
    if (header.bodyOffset >= bytes.length || !knownVersion(header, bytes)) return false;
    return dataPacketFits(bytes, header, complete);
  }
}

function knownVersion(header: PacketHeader, bytes: Uint8Array): boolean {
  const versions = KNOWN_VERSIONS.get(header.tag);
  if (!versions) return true;
  if (header.length.kind === 'definite' && header.length.length === 0) return false;
  return versions.has(bytes[header.bodyOffset] ?? -1);
}

/**
 * Walks the data packet's body (every partial chunk): it must end exactly where the bytes end, or, for a
 * window, run past their end. Nothing may follow it: the data packet is the last packet of the message.
 */
function dataPacketFits(bytes: Uint8Array, header: PacketHeader, complete: boolean): boolean {
  let length = header.length;
  let offset = header.bodyOffset;
  for (;;) {
    if (length.kind === 'indeterminate') return true;
    const end = offset + length.length;
    if (end > bytes.length) return !complete;
    if (length.kind === 'definite') return end === bytes.length;
    if (end === bytes.length) return !complete;
    const next = readNewLength(bytes, end);
    if (!next) return !complete;
    length = next.length;
    offset = next.next;
  }
}

/** A packet as framed in a sequence: where its header starts, where its body starts, where it ends. */
export interface FramedPacket {
  readonly tag: number;
  /** Offset of the header's first octet. */
  readonly start: number;
  /** Offset of the body's first octet (with partial body lengths, more length octets follow inside the body). */
  readonly bodyStart: number;
  /** Offset just past the packet's body (partial body chunks included). */
  readonly end: number;
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

/** Every packet of `bytes`, in order. Throws PacketFramingError on a bad header or a truncated packet. */
export function* packetHeaders(bytes: Uint8Array): Generator<FramedPacket> {
  let offset = 0;
  while (offset < bytes.length) {
    const packet = framePacket(bytes, offset);
    yield packet;
    offset = packet.end;
  }
}

function framePacket(bytes: Uint8Array, start: number): FramedPacket {
  if (packetTagAt(bytes, start) === undefined) throw new PacketFramingError(`no packet header at byte ${start}`);
  const header = readPacketHeader(bytes, start);
  if (!header) throw new PacketFramingError(`a packet length is cut off at byte ${start + 1}`);
  const end = packetEnd(bytes, header);
  if (end > bytes.length) throw new PacketFramingError(`the packet at byte ${start} (tag ${header.tag}) is truncated`);
  return { tag: header.tag, start, bodyStart: header.bodyOffset, end };
}

/** Where a packet's body ends, following partial body chunks to the definite length that closes them. */
function packetEnd(bytes: Uint8Array, header: PacketHeader): number {
  let length = header.length;
  let offset = header.bodyOffset;
  for (;;) {
    if (length.kind === 'indeterminate') return bytes.length;
    const end = offset + length.length;
    if (length.kind === 'definite') return end;
    const next = end < bytes.length ? readNewLength(bytes, end) : undefined;
    if (!next) throw new PacketFramingError(`a packet length is cut off at byte ${end}`);
    length = next.length;
    offset = next.next;
  }
}
