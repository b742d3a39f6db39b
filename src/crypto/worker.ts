import { parentPort } from 'node:worker_threads';
import * as openpgp from 'openpgp';
import { encryptBuffered, type BufferedJob } from './buffered.js';
import { errorMessage } from '../errors.js';

/** Parsed keys by the SHA-256 of their binary form: a changed key (new subkey, revocation) is parsed anew. */
const keys = new Map<string, openpgp.PublicKey>();
const MAX_CACHED_KEYS = 10_000;

async function keyFor(hash: string, binary: Uint8Array): Promise<openpgp.PublicKey> {
  const cached = keys.get(hash);
  if (cached) return cached;
  const key = await openpgp.readKey({ binaryKey: binary });
  if (keys.size >= MAX_CACHED_KEYS) keys.delete(keys.keys().next().value!);
  keys.set(hash, key);
  return key;
}

export interface WorkerRequest {
  readonly id: number;
  readonly job: Omit<BufferedJob, 'copies'> & { copies: Array<{ keys: Array<{ hash: string; binary: Uint8Array }> }> };
}

parentPort!.on('message', async ({ id, job }: WorkerRequest) => {
  try {
    const copies = await Promise.all(job.copies.map(async (copy) => ({ keys: await Promise.all(copy.keys.map((k) => keyFor(k.hash, k.binary))) })));
    const armored = await encryptBuffered({ ...job, copies });
    parentPort!.postMessage({ id, armored }, armored.map((a) => a.buffer as ArrayBuffer));
  } catch (error) {
    parentPort!.postMessage({ id, error: errorMessage(error) });
  }
});
