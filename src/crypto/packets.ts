/**
 * OpenPGP packet framing (RFC 9580 §4.2): new-format headers with definite lengths, and partial body lengths
 * for packets whose length is not known while they stream. Pure byte layout; no cryptography here.
 */

export const PacketTag = { pkesk: 1, literalData: 11, seipd: 18, mdc: 19 } as const;

/** Header of a packet whose body length is known. */
export function packetHeader(tag: number, length: number): Buffer {
  return Buffer.concat([Buffer.from([0xc0 | tag]), lengthOctets(length)]);
}

/** A definite body length: one, two or five octets. */
export function lengthOctets(length: number): Buffer {
  if (length < 192) return Buffer.from([length]);
  if (length < 8384) {
    const rest = length - 192;
    return Buffer.from([(rest >> 8) + 192, rest & 0xff]);
  }
  const octets = Buffer.allocUnsafe(5);
  octets[0] = 0xff;
  octets.writeUInt32BE(length, 1);
  return octets;
}

/** A multiprecision integer: bit count, then the big-endian bytes without leading zeros. */
export function mpi(bytes: Uint8Array): Buffer {
  let start = 0;
  while (start < bytes.length && bytes[start] === 0) start++;
  const value = bytes.subarray(start);
  const bits = value.length === 0 ? 0 : (value.length - 1) * 8 + (32 - Math.clz32(value[0]!));
  const header = Buffer.from([bits >> 8, bits & 0xff]);
  return Buffer.concat([header, value]);
}

/**
 * Writes one packet of unknown length: partial body chunks of 2^power bytes while data keeps coming, then
 * the remainder under a definite length. A chunk is only written once more data follows it, so the final
 * part is never empty unless the whole body is.
 */
export class PartialPacketWriter {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private started = false;
  private readonly chunkBytes: number;

  /** `power` ≥ 9: RFC 9580 wants the first partial chunk to hold at least 512 bytes. */
  constructor(
    private readonly tag: number,
    private readonly emit: (bytes: Buffer) => void,
    private readonly power = 16,
  ) {
    if (power < 9 || power > 30) throw new RangeError(`partial body chunk power must be 9..30, got ${power}`);
    this.chunkBytes = 2 ** power;
  }

  write(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.pending.push(bytes);
    this.pendingBytes += bytes.length;
    while (this.pendingBytes > this.chunkBytes) this.emitChunk();
  }

  end(): void {
    this.emitHeader(lengthOctets(this.pendingBytes));
    this.emitPending(this.pendingBytes);
  }

  private emitChunk(): void {
    this.emitHeader(Buffer.from([0xe0 | this.power]));
    this.emitPending(this.chunkBytes);
  }

  private emitHeader(length: Buffer): void {
    this.emit(this.started ? length : Buffer.concat([Buffer.from([0xc0 | this.tag]), length]));
    this.started = true;
  }

  /** The first `count` pending bytes, emitted as the pieces they arrived in (no copy). */
  private emitPending(count: number): void {
    this.pendingBytes -= count;
    while (count > 0) {
      const head = this.pending[0]!;
      if (head.length <= count) {
        this.pending.shift();
        this.emit(head);
        count -= head.length;
      } else {
        this.emit(head.subarray(0, count));
        this.pending[0] = head.subarray(count);
        count = 0;
      }
    }
  }
}
