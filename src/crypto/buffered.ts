import type { PublicKey } from 'openpgp';
import { armorBuffer } from './armor.js';
import { encryptContentBytes, newSessionKey, sessionKeyPackets } from './encrypt.js';

/**
 * One plaintext held in memory, encrypted once under a fresh session key, and armored once per copy with
 * only that copy's PKESK packets (see encrypt.ts). Runs on the main thread or in a worker (pool.ts).
 */
export interface BufferedJob {
  readonly plaintext: Uint8Array;
  readonly copies: ReadonlyArray<{ keys: readonly PublicKey[] }>;
  readonly eol: '\r\n' | '\n';
}

/** The armored message of each copy, in order. */
export async function encryptBuffered(job: BufferedJob): Promise<Uint8Array[]> {
  const sessionKey = await newSessionKey(job.copies.flatMap((copy) => copy.keys));
  const ciphertext = await encryptContentBytes(job.plaintext, sessionKey);
  return Promise.all(
    job.copies.map(async (copy) => {
      const keyPackets = await sessionKeyPackets(sessionKey, copy.keys);
      return armorBuffer(Buffer.concat([keyPackets, ciphertext]), job.eol);
    }),
  );
}
