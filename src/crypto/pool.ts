import { Worker } from 'node:worker_threads';
import { errorMessage, LacreError } from '../errors.js';
import { encryptBuffered, type BufferedJob } from './buffered.js';
import type { KeyPacketWriter } from './encrypt.js';
import { encryptionTargetOf, type NativeTarget } from './recipient-key.js';
import type { WorkerReply, WorkerRequest } from './worker.js';
import { EventLoopGauge } from '../util/loop-gauge.js';

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
  readonly watchdog: NodeJS.Timeout;
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
 * A worker that has not answered a job by then is taken for stuck (the work itself takes milliseconds: a key
 * packet well under one, a message held in memory tens): its jobs fail with a 4xx, so Postfix retries them, and
 * another worker takes its place. Without it, one thread stuck in native code (Node 20's key-export deadlock,
 * native.ts) would hold every message handed to it, and its SMTP session, for good.
 */
export const WORKER_ANSWER_WITHIN_MS = 30_000;

/**
 * Key packets go to a worker only while the event loop is at least this busy (over the last 100 ms). Handing one
 * over and waking the threads costs more CPU in all than writing it here (behind Postfix, ~0.35 ms per message
 * against ~0.1 ms); it pays only when this thread is the limit and another core would otherwise sit idle. At
 * 0.8 short bursts behind Postfix still sent a share of them over; a saturated loop stays above 0.95.
 */
export const KEY_PACKETS_OFFLOAD_ABOVE = 0.95;

export interface EncryptionPoolOptions {
  /** Plaintexts up to this size are encrypted in this thread (IN_THREAD_LIMIT). */
  readonly inThreadLimit?: number;
  /** WORKER_ANSWER_WITHIN_MS. */
  readonly answerWithinMs?: number;
  /** When key packets go to a worker: always, never, or (the default) while the event loop is busy. */
  readonly keyPacketsOnWorker?: 'always' | 'never' | { isBusy(): boolean };
  /** Told when a worker is replaced: it died, or stopped answering. */
  readonly logger?: { error(fields: object, message: string): void };
  /** The worker's script (tests run a wrapped one). */
  readonly workerScript?: URL;
}

/**
 * Encryption off the event loop, so that the SMTP side keeps one core while the others encrypt:
 * - a bigger message held in memory is encrypted on a worker, whole (unless one of its keys is of a type only
 *   openpgp.js handles: the worker runs on node:crypto alone);
 * - a smaller one is encrypted on the event loop; while the loop is busy (KEY_PACKETS_OFFLOAD_ABOVE), its key
 *   packets (public-key operations: RSA, or an ephemeral X25519 agreement, ~0.03–0.06 ms each, most of what
 *   encrypting 4 KiB costs) are written on a worker meanwhile. Handing over a session key and a key costs the
 *   event loop ~0.01 ms.
 * Workers start on first use (with `encryption.workers = 0` there are none); whole messages go to the worker
 * with the fewest jobs in flight, and start another one while all are busy; key packets go to a running worker
 * (the first one starts for them if none runs).
 * A worker that dies, or stops answering (WORKER_ANSWER_WITHIN_MS), fails its jobs (the messages get a 4xx,
 * Postfix retries) and is replaced.
 */
export class EncryptionPool implements BufferedEncryptor {
  private readonly workers: PooledWorker[] = [];
  private nextId = 1;
  private closing = false;

  private readonly inThreadLimit: number;
  private readonly answerWithinMs: number;
  private readonly keyPacketsOnWorker: () => boolean;

  constructor(
    private readonly size: number,
    private readonly options: EncryptionPoolOptions = {},
  ) {
    this.inThreadLimit = options.inThreadLimit ?? IN_THREAD_LIMIT;
    this.answerWithinMs = options.answerWithinMs ?? WORKER_ANSWER_WITHIN_MS;
    const when = size === 0 ? 'never' : (options.keyPacketsOnWorker ?? new EventLoopGauge(KEY_PACKETS_OFFLOAD_ABOVE));
    this.keyPacketsOnWorker = when === 'always' ? () => true : when === 'never' ? () => false : () => when.isBusy();
  }

  /** Worker threads running now. */
  get started(): number {
    return this.workers.length;
  }

  async encrypt(job: BufferedJob): Promise<Uint8Array[]> {
    if (this.closing) throw new LacreError('encryption pool is closed');
    try {
      const copies = job.plaintext.length > this.inThreadLimit && this.size > 0 ? await nativeTargetsOf(job) : undefined;
      if (!copies) return await encryptBuffered(job, this.keyPacketsOnWorker() ? this.writeKeyPacketOnWorker : undefined);
      const reply = await this.dispatch({ job: { plaintext: job.plaintext, eol: job.eol, copies } }, true);
      return reply.armored!;
    } catch (error) {
      throw error instanceof LacreError ? error : new LacreError(`encryption failed: ${errorMessage(error)}`, { cause: error });
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    const failed = new LacreError('encryption pool closed');
    for (const pooled of this.workers) failPending(pooled, failed);
    await Promise.all(this.workers.map(({ worker }) => worker.terminate()));
  }

  private readonly writeKeyPacketOnWorker: KeyPacketWriter = async (target, sessionKey) => {
    const reply = await this.dispatch({ keyPacket: { target, sessionKey } }, false);
    const packet = reply.packet!;
    return Buffer.from(packet.buffer, packet.byteOffset, packet.byteLength);
  };

  /** The worker with the fewest jobs in flight; another one is started first when `mayGrow` and all are busy. */
  private leastBusyWorker(mayGrow: boolean): PooledWorker {
    const allBusy = this.workers.every((worker) => worker.pending.size > 0);
    if (this.workers.length === 0 || (mayGrow && allBusy && this.workers.length < this.size)) this.workers.push(this.spawn());
    return this.workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
  }

  /** To the least busy worker; checked again here, as a job may have waited for its keys while the pool closed. */
  private dispatch(request: Omit<WorkerRequest, 'id'>, mayGrow: boolean): Promise<WorkerReply> {
    if (this.closing) return Promise.reject(new LacreError('encryption pool is closed'));
    return this.request(this.leastBusyWorker(mayGrow), request);
  }

  private request(target: PooledWorker, request: Omit<WorkerRequest, 'id'>): Promise<WorkerReply> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const watchdog = setTimeout(() => this.replace(target, new Error(`no answer within ${this.answerWithinMs} ms`)), this.answerWithinMs);
      watchdog.unref();
      target.pending.set(id, { resolve, reject, watchdog });
      target.worker.postMessage({ id, ...request });
    });
  }

  /** Fails a worker's jobs and puts a new worker in its place (unless the pool is closing). */
  private replace(pooled: PooledWorker, cause: Error): void {
    failPending(pooled, new LacreError(`encryption worker failed: ${cause.message}`));
    const index = this.workers.indexOf(pooled);
    if (this.closing || index === -1) return;
    this.options.logger?.error({ err: cause }, 'encryption worker replaced');
    this.workers[index] = this.spawn();
    // A thread stuck in native code does not stop; it is left behind rather than waited for.
    pooled.worker.terminate().catch(() => undefined);
  }

  private spawn(): PooledWorker {
    const worker = new Worker(this.options.workerScript ?? new URL('./worker.js', import.meta.url));
    const pooled: PooledWorker = { worker, pending: new Map() };
    worker.unref();
    worker.on('message', (reply: WorkerReply) => {
      const pending = pooled.pending.get(reply.id);
      if (!pending) return;
      pooled.pending.delete(reply.id);
      clearTimeout(pending.watchdog);
      if (reply.error === undefined) pending.resolve(reply);
      else pending.reject(new LacreError(`encryption failed: ${reply.error}`));
    });
    worker.on('error', (error) => this.replace(pooled, error));
    worker.on('exit', (code) => this.replace(pooled, new Error(`exited with code ${code}`)));
    return pooled;
  }
}

/**
 * Each copy's keys as node:crypto targets, resolved here (cached per key), so that the worker needs no
 * openpgp.js; undefined when a key is of a type left to openpgp.js (X448, Brainpool…): such a message is
 * encrypted in this thread.
 */
async function nativeTargetsOf(job: BufferedJob): Promise<NativeTarget[][] | undefined> {
  const now = new Date();
  const copies = await Promise.all(job.copies.map((copy) => Promise.all(copy.keys.map((key) => encryptionTargetOf(key, now)))));
  return copies.every((targets) => targets.every((target) => target.kind !== 'openpgp')) ? (copies as NativeTarget[][]) : undefined;
}

function failPending(pooled: PooledWorker, error: Error): void {
  for (const pending of pooled.pending.values()) {
    clearTimeout(pending.watchdog);
    pending.reject(error);
  }
  pooled.pending.clear();
}
