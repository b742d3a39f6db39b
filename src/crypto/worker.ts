import { parentPort } from 'node:worker_threads';
import type { PublicKey } from 'openpgp';
import type { BufferedJob } from './buffered.js';
import { sessionKeyPacket, type NativeSessionKey } from './native.js';
import type { NativeTarget } from './recipient-key.js';
import { errorMessage } from '../errors.js';

/**
 * What whole messages need (openpgp.js, ~13 MB per thread) is loaded with the first one: a worker that only
 * writes key packets goes without it.
 */
let wholeMessagesLoaded: Promise<{ readKey: typeof import('openpgp').readKey; encryptBuffered: typeof import('./buffered.js').encryptBuffered }> | undefined;
function wholeMessages() {
  wholeMessagesLoaded ??= Promise.all([import('openpgp'), import('./buffered.js')]).then(([openpgp, buffered]) => ({
    readKey: openpgp.readKey,
    encryptBuffered: buffered.encryptBuffered,
  }));
  return wholeMessagesLoaded;
}

/** Parsed keys by the SHA-256 of their binary form: a changed key (new subkey, revocation) is parsed anew. */
const keys = new Map<string, PublicKey>();
const MAX_CACHED_KEYS = 10_000;

async function keyFor(hash: string, binary: Uint8Array): Promise<PublicKey> {
  const cached = keys.get(hash);
  if (cached) return cached;
  const { readKey } = await wholeMessages();
  const key = await readKey({ binaryKey: binary });
  if (keys.size >= MAX_CACHED_KEYS) keys.delete(keys.keys().next().value!);
  keys.set(hash, key);
  return key;
}

/** A whole message to encrypt, or one key packet to write (the PKESK of a message encrypted on the main thread). */
export type WorkerRequest = {
  readonly id: number;
  readonly job?: Omit<BufferedJob, 'copies'> & { copies: Array<{ keys: Array<{ hash: string; binary: Uint8Array }> }> };
  readonly keyPacket?: { target: NativeTarget; sessionKey: NativeSessionKey };
};

export interface WorkerReply {
  readonly id: number;
  readonly armored?: Uint8Array[];
  readonly packet?: Uint8Array;
  readonly error?: string;
}

/** Buffers arrive as plain Uint8Arrays (structured clone); node:crypto's KeyObjects arrive as they were. */
function asBuffers<T extends object>(value: T): T {
  const revived = { ...value } as Record<string, unknown>;
  for (const [name, field] of Object.entries(revived)) {
    if (field instanceof Uint8Array && !Buffer.isBuffer(field)) revived[name] = Buffer.from(field.buffer, field.byteOffset, field.byteLength);
  }
  return revived as T;
}

async function answer({ job, keyPacket }: WorkerRequest): Promise<{ reply: Omit<WorkerReply, 'id'>; transfer: ArrayBuffer[] }> {
  if (keyPacket) {
    const packet = sessionKeyPacket(asBuffers(keyPacket.target), asBuffers(keyPacket.sessionKey));
    return { reply: { packet }, transfer: [] };
  }
  const copies = await Promise.all(job!.copies.map(async (copy) => ({ keys: await Promise.all(copy.keys.map((k) => keyFor(k.hash, k.binary))) })));
  const { encryptBuffered } = await wholeMessages();
  const armored = await encryptBuffered({ ...job!, copies });
  return { reply: { armored }, transfer: armored.map((a) => a.buffer as ArrayBuffer) };
}

parentPort!.on('message', async (request: WorkerRequest) => {
  try {
    const { reply, transfer } = await answer(request);
    parentPort!.postMessage({ id: request.id, ...reply }, transfer);
  } catch (error) {
    parentPort!.postMessage({ id: request.id, error: errorMessage(error) });
  }
});
