import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { PublicKey } from 'openpgp';
import { errorMessage, LacreError } from '../errors.js';
import { encryptBuffered, type BufferedJob } from './buffered.js';
import type { KeyPacketWriter } from './encrypt.js';
import type { WorkerReply, WorkerRequest } from './worker.js';

/**
 * Something that encrypts a message held in memory: in this thread, or on a pool of worker threads. It resolves
 * with each copy's armor as armorBuffer makes it, lines ending in `job.eol` (the pipeline marks CRLF armor from
 * a worker as safe for SMTP DATA on that promise).
 */
export interface BufferedEncryptor {
  encrypt(job: BufferedJob): Promise<Uint8Array[]>;
  close(): Promise<void>;
}

export const inThreadEncryptor: BufferedEncryptor = { encrypt: encryptBuffered, close: async () => undefined };

interface Pending {
  resolve(reply: WorkerReply): void;
  reject(error: Error): void;
}

interface PooledWorker {
  worker: Worker;
  pending: Map<number, Pending>;
}

/**
 * Plaintexts up to this size are encrypted on the event loop: handing one to a worker (postMessage, the
 * wake-up, the result back) costs about as much CPU as encrypting it natively, ~0.1–0.2 ms for 4 KiB.
 */
export const IN_THREAD_LIMIT = 64 * 1024;

/**
 * Encryption off the event loop, so that the SMTP side keeps one core while the others encrypt:
 * - a bigger message held in memory is encrypted on a worker, whole;
 * - a smaller one is encrypted on the event loop, but its key packets (public-key operations: RSA, or an
 *   ephemeral X25519 agreement, ~0.03–0.06 ms each, most of what encrypting 4 KiB costs) are written on a
 *   worker meanwhile. Handing over a session key and a key costs the event loop ~0.01 ms.
 * Workers start on first use (with `encryption.workers = 0` there are none); whole messages go to the worker
 * with the fewest jobs in flight, and start another one while all are busy; key packets go to a running worker.
 * A worker that dies fails its jobs (the messages get a 4xx, Postfix retries) and is replaced.
 */
export class EncryptionPool implements BufferedEncryptor {
  private readonly workers: PooledWorker[] = [];
  private readonly binaryKeys = new WeakMap<PublicKey, { hash: string; binary: Uint8Array }>();
  private nextId = 1;
  private closing = false;

  constructor(
    private readonly size: number,
    private readonly inThreadLimit = IN_THREAD_LIMIT,
  ) {}

  /** Worker threads running now. */
  get started(): number {
    return this.workers.length;
  }

  async encrypt(job: BufferedJob): Promise<Uint8Array[]> {
    if (this.closing) throw new LacreError('encryption pool is closed');
    if (job.plaintext.length <= this.inThreadLimit || this.size === 0) {
      return encryptBuffered(job, this.size === 0 ? undefined : this.writeKeyPacketOnWorker).catch((error: unknown) => {
        throw error instanceof LacreError ? error : new LacreError(`encryption failed: ${errorMessage(error)}`, { cause: error });
      });
    }
    const copies = job.copies.map((copy) => ({ keys: copy.keys.map((key) => this.binaryOf(key)) }));
    const reply = await this.request(this.leastBusyWorker(true), { job: { plaintext: job.plaintext, eol: job.eol, copies } });
    return reply.armored!;
  }

  async close(): Promise<void> {
    this.closing = true;
    const failed = new LacreError('encryption pool closed');
    for (const { pending } of this.workers) for (const job of pending.values()) job.reject(failed);
    await Promise.all(this.workers.map(({ worker }) => worker.terminate()));
  }

  private readonly writeKeyPacketOnWorker: KeyPacketWriter = async (target, sessionKey) => {
    if (this.closing) throw new LacreError('encryption pool is closed');
    const reply = await this.request(this.leastBusyWorker(false), { keyPacket: { target, sessionKey } });
    const packet = reply.packet!;
    return Buffer.from(packet.buffer, packet.byteOffset, packet.byteLength);
  };

  /** The worker with the fewest jobs in flight; another one is started first when `mayGrow` and all are busy. */
  private leastBusyWorker(mayGrow: boolean): PooledWorker {
    const allBusy = this.workers.every((worker) => worker.pending.size > 0);
    if (this.workers.length === 0 || (mayGrow && allBusy && this.workers.length < this.size)) this.workers.push(this.spawn());
    return this.workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  }

  private request(target: PooledWorker, request: Omit<WorkerRequest, 'id'>): Promise<WorkerReply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      target.pending.set(id, { resolve, reject });
      target.worker.postMessage({ id, ...request });
    });
  }

  private binaryOf(key: PublicKey): { hash: string; binary: Uint8Array } {
    let known = this.binaryKeys.get(key);
    if (!known) {
      const binary = key.write();
      known = { hash: createHash('sha256').update(binary).digest('hex'), binary };
      this.binaryKeys.set(key, known);
    }
    return known;
  }

  private spawn(): PooledWorker {
    const worker = new Worker(new URL('./worker.js', import.meta.url));
    const pooled: PooledWorker = { worker, pending: new Map() };
    worker.unref();
    worker.on('message', (reply: WorkerReply) => {
      const pending = pooled.pending.get(reply.id);
      pooled.pending.delete(reply.id);
      if (!pending) return;
      if (reply.error === undefined) pending.resolve(reply);
      else pending.reject(new LacreError(`encryption failed: ${reply.error}`));
    });
    const fail = (error: Error) => {
      for (const pending of pooled.pending.values()) pending.reject(new LacreError(`encryption worker failed: ${error.message}`));
      pooled.pending.clear();
      if (this.closing) return;
      const index = this.workers.indexOf(pooled);
      if (index !== -1) this.workers[index] = this.spawn();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!this.closing) fail(new Error(`exited with code ${code}`));
    });
    return pooled;
  }
}
