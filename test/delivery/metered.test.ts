import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import type { Downstream } from '../../src/filter/ports.js';
import { createLogger } from '../../src/log/logger.js';
import { LacreMetrics } from '../../src/metrics/metrics.js';
import { meteredRelay } from '../../src/delivery/metered.js';
import { Relay } from '../../src/delivery/reinject.js';

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

  /** A downstream that reads the copy to its end, like the relay does, and says how reading it ended. */
  function reading(): { downstream: Downstream; outcome: Promise<string> } {
    let settle: (outcome: string) => void = () => undefined;
    const outcome = new Promise<string>((resolve) => (settle = resolve));
    const downstream: Downstream = {
      async send(_envelope, raw) {
        try {
          const bytes = (await buffer(raw)).length;
          settle(`ended after ${bytes} bytes`);
          return new Map();
        } catch (error) {
          settle(`failed: ${(error as Error).message}`);
          throw error;
        }
      },
    };
    return { downstream, outcome };
  }

  const envelope = { from: 'a@example.net', to: ['b@example.net'], use8BitMime: false };

  it('a copy cut short without an error is never read to a normal end (a relay would complete a truncated message)', async () => {
    const { downstream, outcome } = reading();
    const raw = new PassThrough();
    const sent = meteredRelay(downstream, new LacreMetrics()).send(envelope, raw);
    raw.write('the first half');
    await new Promise((resolve) => setImmediate(resolve));
    raw.destroy();
    await assert.rejects(sent);
    assert.match(await outcome, /^failed: /);
  });

  it("the copy's error reaches the downstream as it is, and a complete copy is read to its end, counted", async () => {
    const failing = reading();
    const raw = new PassThrough();
    const sent = meteredRelay(failing.downstream, new LacreMetrics()).send(envelope, raw);
    raw.destroy(new Error('encryption failed'));
    await assert.rejects(sent, /encryption failed/);
    assert.equal(await failing.outcome, 'failed: encryption failed');

    const whole = reading();
    const metrics = new LacreMetrics();
    await meteredRelay(whole.downstream, metrics).send(envelope, Readable.from([Buffer.from('12345'), Buffer.from('678')]));
    assert.equal(await whole.outcome, 'ended after 8 bytes');
    assert.match(await metrics.registry.metrics(), /lacre_delivered_bytes_total\{downstream="relay"\} 8/);
  });

  it('a downstream that gives up on the copy releases it (the copy is destroyed)', async () => {
    const raw = new PassThrough();
    const giveUp: Downstream = {
      async send(_envelope, counted) {
        counted.destroy();
        throw new Error('relay gone');
      },
    };
    await assert.rejects(meteredRelay(giveUp, new LacreMetrics()).send(envelope, raw), /relay gone/);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(raw.destroyed, true);
  });
});

