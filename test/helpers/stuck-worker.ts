import { parentPort } from 'node:worker_threads';
import type { WorkerRequest } from '../../src/crypto/worker.js';

/**
 * Lacre's encryption worker, except that it blocks its thread for good, as a native deadlock would, on a whole
 * message starting "STUCK" and on a key packet for a NIST P-256 key.
 */
function isStuck({ job, keyPacket }: WorkerRequest): boolean {
  if (job) return Buffer.from(job.plaintext.subarray(0, 5)).toString('latin1') === 'STUCK';
  return keyPacket?.target.kind === 'ecdh' && keyPacket.target.curve === 'prime256v1';
}

// The real worker's listener is wrapped as it subscribes; a port delivers nothing before someone listens, so no
// request is missed while the worker loads.
const port = parentPort!;
const subscribe = port.on.bind(port);
port.on = ((event: string, listener: (request: WorkerRequest) => void) =>
  subscribe(event, (request: WorkerRequest) => {
    if (isStuck(request)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    listener(request);
  })) as typeof port.on;
await import('../../src/crypto/worker.js');
