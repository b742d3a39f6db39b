import { randomFillSync } from 'node:crypto';

/**
 * Cryptographically secure random bytes, drawn from node:crypto in blocks. A call to randomBytes costs ~5 µs
 * here whatever its size (the same reason node's randomUUID keeps a cache), and every message needs several
 * small draws: session key, CFB prefix, MIME boundary. Each byte is handed out once and wiped from the block.
 */
const BLOCK_BYTES = 4096;
const block = Buffer.alloc(BLOCK_BYTES);
let used = BLOCK_BYTES;

export function secureRandomBytes(length: number): Buffer {
  if (length > BLOCK_BYTES / 4) return randomFillSync(Buffer.alloc(length));
  if (used + length > BLOCK_BYTES) {
    randomFillSync(block);
    used = 0;
  }
  const bytes = Buffer.from(block.subarray(used, used + length));
  block.fill(0, used, used + length);
  used += length;
  return bytes;
}
