import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel } from 'node:worker_threads';
import { wholeArrayBuffers } from '../../src/util/transfer.js';

describe('transfer lists', () => {
  it("take a buffer that fills its ArrayBuffer, and leave out one in Node's shared pool; both arrive intact", async () => {
    const own = Buffer.alloc(100_000, 'o');
    const pooled = Buffer.concat([Buffer.from('in the'), Buffer.from(' pool')]);
    const neighbour = Buffer.from('a neighbour in the pool');
    assert.notEqual(pooled.byteLength, pooled.buffer.byteLength, 'the small one is a slice of the pool');
    const transfer = wholeArrayBuffers([own, pooled]);
    assert.deepEqual(transfer, [own.buffer]);

    const { port1, port2 } = new MessageChannel();
    const received = new Promise<Uint8Array[]>((resolve) => port2.once('message', resolve));
    port1.postMessage([own, pooled], transfer);
    const [ownArrived, pooledArrived] = await received;
    port1.close();
    assert.equal(own.length, 0, 'the big one moved, not copied');
    assert.equal(Buffer.from(ownArrived!).toString(), 'o'.repeat(100_000));
    assert.equal(Buffer.from(pooledArrived!).toString(), 'in the pool');
    assert.equal(pooled.toString(), 'in the pool', 'the pooled one is still here');
    assert.equal(neighbour.toString(), 'a neighbour in the pool');
  });
});
