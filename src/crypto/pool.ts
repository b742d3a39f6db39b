import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { PublicKey } from 'openpgp';
import { errorMessage, LacreError } from '../errors.js';
import { encryptBuffered, type BufferedJob } from './buffered.js';

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
  resolve(armored: Uint8Array[]): void;
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
 * Encryption off the event loop for bigger messages held in memory: the SMTP side keeps one core while the
 * others encrypt. Workers start on first use (a server that only sees small messages never pays for their
 * memory); jobs go to the worker with the fewest in flight. A worker that dies fails its jobs (the messages get
 * a 4xx, Postfix retries) and is replaced.
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
      return encryptBuffered(job).catch((error: unknown) => {
        throw new LacreError(`encryption failed: ${errorMessage(error)}`, { cause: error });
      });
    }
    if (this.workers.length < this.size && this.workers.every((worker) => worker.pending.size > 0)) this.workers.push(this.spawn());
    const target = this.workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = this.nextId++;
    const copies = job.copies.map((copy) => ({ keys: copy.keys.map((key) => this.binaryOf(key)) }));
    return new Promise((resolve, reject) => {
      target.pending.set(id, { resolve, reject });
      target.worker.postMessage({ id, job: { plaintext: job.plaintext, eol: job.eol, copies } });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map(({ worker }) => worker.terminate()));
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
    worker.on('message', (reply: { id: number; armored?: Uint8Array[]; error?: string }) => {
      const pending = pooled.pending.get(reply.id);
      pooled.pending.delete(reply.id);
      if (!pending) return;
      if (reply.armored) pending.resolve(reply.armored);
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
