import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { buffer } from 'node:stream/consumers';
import { IncomingBoxClient, IncomingBoxUnreachableError } from '../../src/box-client/client.js';
import { clientVersion, PermanentProcessingError, processIncoming, type BlobOutcome } from '../../src/box-client/consumer.js';
import { InvalidFramingError } from '../../src/box-client/framing.js';
import { FRAMING_BYTES } from '../../src/soledad/preamble.js';
import { databaseBackends } from '../helpers/databases.js';
import { startRealBox, type BoxUser, type RealBox } from './real-box.js';

for (const backend of await databaseBackends()) describe(`processIncoming against the real box (${backend.name})`, () => {
  let box: RealBox;
  let user: BoxUser;
  let client: IncomingBoxClient;

  before(async () => {
    box = await startRealBox(backend);
  });
  after(() => box.close());
  beforeEach(async () => {
    user = await box.createUser();
    client = new IncomingBoxClient({ url: box.url, user: user.user, token: user.token });
  });

  async function deliverMany(count: number, scheme = 'openpgp'): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = `m-${String(i).padStart(3, '0')}`;
      assert.equal(await box.deliver(user.user, id, `message ${i}`, scheme), 200);
      ids.push(id);
    }
    return ids;
  }

  test('hands every PENDING blob to the handler oldest first, as a stream, then marks it PROCESSED', async () => {
    const ids = await deliverMany(5, 'openpgp-mime');
    const seen: Array<{ id: string; body: string; scheme: string; size: number }> = [];
    const summary = await processIncoming(
      client,
      async (id, stream, meta) => {
        seen.push({ id, body: (await buffer(stream)).toString(), scheme: meta.scheme, size: meta.size });
      },
      { concurrency: 1 },
    );
    assert.deepEqual(summary, { processed: 5, failed: 0, skipped: 0, deferred: 0 });
    assert.deepEqual(seen.map((s) => s.id), ids);
    assert.deepEqual(seen[2], { id: 'm-002', body: 'message 2', scheme: 'openpgp-mime', size: 9 });
    for (const id of ids) assert.deepEqual(await client.flags(id), ['PROCESSED']);
    assert.equal(await client.count(), 0);
  });

  test('a blob whose Soledad framing is damaged is marked FAILED (not released to come back every run)', async () => {
    await deliverMany(2);
    const dir = join(box.blobsPath, user.user, 'MX');
    const [stored] = readdirSync(dir).filter((name) => name.startsWith('m-000.'));
    writeFileSync(join(dir, stored!), 'no preamble in front of this');
    const outcomes: BlobOutcome[] = [];
    const summary = await processIncoming(client, async (_id, stream) => void (await buffer(stream)), { concurrency: 1, onOutcome: (o) => outcomes.push(o) });
    assert.deepEqual(summary, { processed: 1, failed: 1, skipped: 0, deferred: 0 });
    assert.ok(outcomes[0]!.outcome === 'failed' && !outcomes[0]!.permanent && outcomes[0]!.error instanceof InvalidFramingError);
    assert.deepEqual(await client.flags('m-000'), ['FAILED']);
  });

  test('runs at most `concurrency` handlers at once, and does reach it', async () => {
    await deliverMany(10);
    let running = 0;
    let peak = 0;
    const summary = await processIncoming(
      client,
      async (_id, stream) => {
        peak = Math.max(peak, ++running);
        await buffer(stream);
        await new Promise((resolve) => setTimeout(resolve, 30));
        running--;
      },
      { concurrency: 3 },
    );
    assert.equal(summary.processed, 10);
    assert.equal(peak, 3);
  });

  test('pages through the box until nothing new is PENDING', async () => {
    await deliverMany(7);
    const summary = await processIncoming(client, async (_id, stream) => void (await buffer(stream)), { pageSize: 2 });
    assert.equal(summary.processed, 7);
    assert.equal(await client.count({ filterFlag: 'PROCESSED' }), 7);
  });

  test('a throwing handler marks FAILED (temporary) with the package version; a permanent error marks FAILED PERMANENT', async () => {
    await deliverMany(3);
    const outcomes: BlobOutcome[] = [];
    const summary = await processIncoming(
      client,
      async (id, stream) => {
        await buffer(stream);
        if (id === 'm-000') throw new Error('could not decode');
        if (id === 'm-001') throw new PermanentProcessingError('not for us');
      },
      { onOutcome: (o) => outcomes.push(o) },
    );
    assert.deepEqual(summary, { processed: 1, failed: 2, skipped: 0, deferred: 0 });
    assert.deepEqual(await client.flags('m-000'), ['FAILED']);
    assert.deepEqual(await client.flags('m-001'), ['FAILED', 'PERMANENT']);
    assert.deepEqual(await client.flags('m-002'), ['PROCESSED']);
    const version = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    assert.equal(clientVersion(), `lacre/${version}`);
    assert.equal(await box.clientVersionOf(user.user, 'm-000'), `lacre/${version}`);
    const failed = outcomes.find((o) => o.id === 'm-001');
    assert.ok(failed?.outcome === 'failed' && failed.permanent === true);
  });

  test('a handler that throws without reading the stream still gets its blob marked', async () => {
    await deliverMany(1);
    const summary = await processIncoming(client, async () => {
      throw new Error('refused at once');
    });
    assert.equal(summary.failed, 1);
    assert.deepEqual(await client.flags('m-000'), ['FAILED']);
  });

  test('blobs another replica holds are left to it', async () => {
    await deliverMany(3);
    const other = new IncomingBoxClient({ url: box.url, user: user.user, token: user.token });
    const held = await other.reserve('m-001');
    assert.ok(held.reserved);
    // Held before our run: PROCESSING blobs are not even listed.
    const handled: string[] = [];
    const summary = await processIncoming(client, async (id, stream) => {
      await buffer(stream);
      handled.push(id);
    }, { pageSize: 100 });
    assert.equal(summary.processed, 2);
    // Sorted: up to four blobs are in flight at once, so the handlers' order is not fixed.
    assert.deepEqual(handled.sort(), ['m-000', 'm-002']);
    assert.deepEqual(await client.flags('m-001'), ['PROCESSING']);
  });

  test('a blob reserved after our listing counts as skipped', async () => {
    await deliverMany(2);
    const other = new IncomingBoxClient({ url: box.url, user: user.user, token: user.token });
    const summary = await processIncoming(client, async (id, stream) => {
      await buffer(stream);
      if (id === 'm-000') assert.ok((await other.reserve('m-001')).reserved);
    }, { concurrency: 1 });
    assert.deepEqual(summary, { processed: 1, failed: 0, skipped: 1, deferred: 0 });
  });

  test('limit and sizeLimit bound the run', async () => {
    await deliverMany(5);
    assert.equal(await box.deliver(user.user, 'big', 'x'.repeat(1000)), 200);
    const limited = await processIncoming(client, async (_id, stream) => void (await buffer(stream)), { limit: 2 });
    assert.equal(limited.processed, 2);
    assert.equal(await client.count(), 4);
    const small = await processIncoming(client, async (_id, stream) => void (await buffer(stream)), { sizeLimit: FRAMING_BYTES + 100 });
    assert.equal(small.processed, 3);
    assert.deepEqual(await client.list(), ['big']);
  });

  test('after the signal aborts no new blob is taken; one whose handler fails because of it is released', async () => {
    await deliverMany(4);
    const controller = new AbortController();
    const handled: string[] = [];
    const summary = await processIncoming(
      client,
      async (id, stream, meta) => {
        await buffer(stream);
        handled.push(id);
        if (id === 'm-001') {
          controller.abort();
          meta.signal?.throwIfAborted();
        }
      },
      { concurrency: 1, signal: controller.signal },
    );
    assert.deepEqual(handled, ['m-000', 'm-001']);
    assert.deepEqual(summary, { processed: 1, failed: 0, skipped: 0, deferred: 1 });
    assert.deepEqual(await client.flags('m-001'), ['PENDING']);
    assert.deepEqual(await client.list(), ['m-001', 'm-002', 'm-003']);
  });

  test('a box that cannot be listed rejects with the client error', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const down = new IncomingBoxClient({ url: `http://127.0.0.1:${port}`, user: user.user, token: user.token, timeoutMs: 2000 });
    await assert.rejects(processIncoming(down, async () => undefined), (e) => e instanceof IncomingBoxUnreachableError && /ECONNREFUSED/.test(e.message));
  });
});
