import { parentPort } from 'node:worker_threads';
import { armorBuffer } from './armor.js';
import { nativeSessionKey, seipdBytes, sessionKeyPacket, type NativeSessionKey } from './native.js';
import type { NativeTarget } from './recipient-key.js';
import { errorMessage } from '../errors.js';
import { wholeArrayBuffers } from '../util/transfer.js';

/**
 * An encryption worker thread (pool.ts). It works on node:crypto alone, with the keys already resolved to
 * native targets by the main thread, so it never loads openpgp.js (~13 MB of memory per thread).
 */

/** A whole message held in memory (one list of targets per copy), or one key packet to write. */
export type WorkerRequest = {
  readonly id: number;
  readonly job?: NativeJob;
  readonly keyPacket?: { target: NativeTarget; sessionKey: NativeSessionKey };
};

export interface NativeJob {
  readonly plaintext: Uint8Array;
  readonly eol: '\r\n' | '\n';
  readonly copies: ReadonlyArray<readonly NativeTarget[]>;
}

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

/** What encryptBuffered (buffered.ts) makes, for native targets: one session key, one SEIPD, a PKESK per target. */
function armoredCopies({ plaintext, eol, copies }: NativeJob): Buffer[] {
  const targets = copies.map((copy) => copy.map(asBuffers));
  const sessionKey = nativeSessionKey(targets.flat());
  const content = seipdBytes(plaintext, sessionKey);
  return targets.map((copy) => armorBuffer(Buffer.concat([...copy.map((target) => sessionKeyPacket(target, sessionKey)), content]), eol));
}

function answer({ job, keyPacket }: WorkerRequest): { reply: Omit<WorkerReply, 'id'>; transfer: ArrayBuffer[] } {
  if (keyPacket) return { reply: { packet: sessionKeyPacket(asBuffers(keyPacket.target), asBuffers(keyPacket.sessionKey)) }, transfer: [] };
  const armored = armoredCopies(job!);
  return { reply: { armored }, transfer: wholeArrayBuffers(armored) };
}

parentPort!.on('message', (request: WorkerRequest) => {
  try {
    const { reply, transfer } = answer(request);
    parentPort!.postMessage({ id: request.id, ...reply }, transfer);
  } catch (error) {
    parentPort!.postMessage({ id: request.id, error: errorMessage(error) });
  }
});
