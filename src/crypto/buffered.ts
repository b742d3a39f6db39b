import type { PublicKey } from 'openpgp';
import { armorBuffer } from './armor.js';
import { encryptContentBytes, newSessionKey, sessionKeyPackets, type KeyPacketWriter } from './encrypt.js';

/**
 * One plaintext held in memory, encrypted once under a fresh session key, and armored once per copy with
 * only that copy's PKESK packets (see encrypt.ts). Runs on the main thread; the worker threads have their own
 * native-only version (worker.ts).
 */
export interface BufferedJob {
  readonly plaintext: Uint8Array;
  readonly copies: ReadonlyArray<{ keys: readonly PublicKey[] }>;
  readonly eol: '\r\n' | '\n';
}

/**
 * The armored message of each copy, in order. The key packets are asked for first: when a worker writes them
 * (`writeNative`), they are made there while the content is encrypted here.
 */
export async function encryptBuffered(job: BufferedJob, writeNative?: KeyPacketWriter): Promise<Uint8Array[]> {
  const sessionKey = await newSessionKey(job.copies.flatMap((copy) => copy.keys));
  const keyPackets = Promise.all(job.copies.map((copy) => sessionKeyPackets(sessionKey, copy.keys, writeNative)));
  let ciphertext: Buffer;
  try {
    ciphertext = encryptContentBytes(job.plaintext, sessionKey);
  } catch (error) {
    keyPackets.catch(() => undefined); // the job fails with this error; theirs would go unheard
    throw error;
  }
  return (await keyPackets).map((packets) => armorBuffer(Buffer.concat([packets, ciphertext]), job.eol));
}
