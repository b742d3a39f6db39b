import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { createLogger } from '../../src/log/logger.js';
import { LacreMetrics } from '../../src/metrics/metrics.js';
import { meteredRelay } from '../../src/metrics/downstream.js';
import { Relay } from '../../src/smtp/reinject.js';

describe('metered relay', () => {
  it('a copy that fails while it waits for a relay connection does not end the process', async () => {
    // A relay that accepts connections and never greets: the copy stays queued in nodemailer's pool.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    const relay = new Relay({ host: '127.0.0.1', port, max_connections: 1, timeout_seconds: 1 }, undefined, createLogger('silent'));
    const uncaught: Error[] = [];
    const record = (error: Error) => uncaught.push(error);
    process.on('uncaughtException', record);
    try {
      const raw = new Readable({ read() {} });
      const sent = meteredRelay(relay, new LacreMetrics()).send({ from: 'a@example.net', to: ['b@example.net'], use8BitMime: false }, raw);
      raw.destroy(new Error('the message was aborted'));
      await assert.rejects(sent); // the relay never greets: the copy fails (connection timeout)
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(uncaught.map((error) => error.message), []);
    } finally {
      process.off('uncaughtException', record);
      relay.close();
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  });
});
