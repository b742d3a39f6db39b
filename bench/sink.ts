/**
 * Bench child: the downstream relay. Accepts every message, counts it and discards it. Run with an IPC channel
 * (bench/children.ts startHelper): sends { ready: port }, answers "stats" with SinkStats and "reset" with {}.
 */
import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';

export interface SinkStats {
  messages: number;
  /** Messages holding an ASCII-armored OpenPGP message: proof that Lacre encrypted rather than passed. */
  pgpMessages: number;
  bytes: number;
  largestBytes: number;
}

const ARMOR = Buffer.from('-----BEGIN PGP MESSAGE-----');
const stats: SinkStats = { messages: 0, pgpMessages: 0, bytes: 0, largestBytes: 0 };

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  disableReverseLookup: true,
  logger: false,
  maxClients: 1000,
  onData(stream, _session, callback) {
    let size = 0;
    let armored = false;
    let tail = Buffer.alloc(0);
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (armored) return;
      // Look across the chunk boundary too: the marker may be split between two chunks.
      armored = Buffer.concat([tail, chunk.subarray(0, ARMOR.length)]).includes(ARMOR) || chunk.includes(ARMOR);
      tail = Buffer.from(chunk.subarray(-ARMOR.length));
    });
    stream.on('end', () => {
      stats.messages += 1;
      if (armored) stats.pgpMessages += 1;
      stats.bytes += size;
      stats.largestBytes = Math.max(stats.largestBytes, size);
      callback(null, 'discarded');
    });
  },
});

server.listen(0, '127.0.0.1', () => {
  process.send!({ ready: (server.server.address() as AddressInfo).port });
});

process.on('message', (question: string) => {
  if (question === 'stats') process.send!({ ...stats });
  if (question === 'reset') {
    Object.assign(stats, { messages: 0, pgpMessages: 0, bytes: 0, largestBytes: 0 });
    process.send!({});
  }
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
