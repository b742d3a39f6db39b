import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { text } from 'node:stream/consumers';
import {
  IncomingBoxClient,
  IncomingBoxHttpError,
  IncomingBoxUnreachableError,
  ReservationLostError,
} from '../../src/box-client/client.js';
import { InvalidFramingError } from '../../src/box-client/framing.js';
import { FRAMING_BYTES, incomingFraming } from '../../src/soledad/preamble.js';
import { databaseBackends } from '../helpers/databases.js';
import { startRealBox, type BoxUser, type RealBox } from './real-box.js';
import { freePort } from '../helpers/ports.js';

for (const backend of await databaseBackends()) {
  describe(`IncomingBoxClient against the real box (${backend.name})`, () => {
    let box: RealBox;
    let alice: BoxUser;
    let bob: BoxUser;
    const client = () => new IncomingBoxClient({ url: `${box.url}/`, user: alice.user, token: alice.token });

    before(async () => {
      box = await startRealBox(backend);
    });
    after(() => box.close());
    beforeEach(async () => {
      [alice, bob] = await Promise.all([box.createUser(), box.createUser()]);
    });

    test('count and list: PENDING only, oldest first by default, with the qualifiers', async () => {
      const c = client();
      assert.equal(await c.count(), 0);
      for (const [id, body] of [['b-1', 'one'], ['b-2', 'two two'], ['b-3', 'three three three']] as const) {
        assert.equal(await box.deliver(alice.user, id, body, 'openpgp'), 200);
      }
      assert.equal(await c.count(), 3);
      assert.deepEqual(await c.list(), ['b-1', 'b-2', 'b-3']);
      assert.deepEqual(await c.list({ orderBy: '+date' }), ['b-1', 'b-2', 'b-3']);
      assert.deepEqual(await c.list({ orderBy: '-date', limit: 2, page: 1 }), ['b-3', 'b-2']);
      assert.deepEqual(await c.list({ orderBy: '-date', limit: 2, page: 2 }), ['b-1']);
      // Sizes are of the stored bytes: the delivery behind its Soledad framing.
      assert.deepEqual(await c.list({ sizeLimit: FRAMING_BYTES + 7 }), ['b-1', 'b-2']);
      assert.equal(await c.count({ sizeLimit: FRAMING_BYTES + 3 }), 1);

      const details = await c.list({ details: true, limit: 1 });
      assert.equal(details.length, 1);
      assert.deepEqual({ ...details[0]!, createdAt: undefined }, { id: 'b-1', size: FRAMING_BYTES + 3, state: 'PENDING', flags: ['PENDING'], scheme: 'openpgp', createdAt: undefined });
      assert.ok(Math.abs(details[0]!.createdAt.getTime() - Date.now()) < 60_000);
    });

    test('reserve: PROCESSING for one client; a second reserve is "already reserved", not an error', async () => {
      await box.deliver(alice.user, 'r-1', 'payload');
      const mine = await client().reserve('r-1');
      assert.ok(mine.reserved && mine.reservation.length > 0 && mine.expiresAt > new Date());
      assert.deepEqual(await client().reserve('r-1'), { reserved: false, reason: 'already-reserved' });
      assert.deepEqual(await client().reserve('no-such-blob'), { reserved: false, reason: 'not-found' });
      assert.deepEqual(await client().flags('r-1'), ['PROCESSING']);
      assert.deepEqual(await client().list(), []);
      assert.deepEqual(await client().list({ includeProcessing: true }), ['r-1']);
      assert.equal(await client().count({ filterFlag: 'PROCESSING' }), 1);
    });

    test('fetch streams the payload without its framing, with size and scheme; a range of the stored bytes answers 206 with its bounds', async () => {
      const body = Buffer.from('0123456789abcdef');
      await box.deliver(alice.user, 'f-1', body, 'openpgp-mime');
      const whole = await client().fetch('f-1');
      assert.equal(whole.size, 16);
      assert.equal(whole.scheme, 'openpgp-mime');
      assert.equal(whole.range, undefined);
      assert.deepEqual({ docId: whole.preamble?.docId, size: whole.preamble?.size }, { docId: 'f-1', size: 16 });
      assert.equal(await text(whole.stream), body.toString());
      const part = await client().fetch('f-1', { range: { start: FRAMING_BYTES + 4, end: FRAMING_BYTES + 7 } });
      assert.deepEqual(part.range, { start: FRAMING_BYTES + 4, end: FRAMING_BYTES + 7, total: FRAMING_BYTES + 16 });
      assert.equal(part.size, 4);
      assert.equal(await text(part.stream), '4567');
      const tail = await client().fetch('f-1', { range: { start: FRAMING_BYTES + 14 } });
      assert.equal(await text(tail.stream), 'ef');
      await assert.rejects(client().fetch('f-1', { range: { start: FRAMING_BYTES + 99 } }), (e) => e instanceof IncomingBoxHttpError && e.status === 416);
      await assert.rejects(client().fetch('missing'), (e) => e instanceof IncomingBoxHttpError && e.status === 404);
    });

    test('scheme is raw when the delivery named none', async () => {
      await box.deliver(alice.user, 'raw-1', 'x');
      assert.equal((await client().fetch('raw-1')).scheme, 'raw');
    });

    test('fetchAndReserve, then markProcessed with the reservation', async () => {
      await box.deliver(alice.user, 'p-1', 'content');
      const got = await client().fetchAndReserve('p-1');
      assert.ok(got.reserved);
      assert.equal(await text(got.stream), 'content');
      await client().markProcessed('p-1', got.reservation);
      assert.deepEqual(await client().flags('p-1'), ['PROCESSED']);
      assert.deepEqual(await client().fetchAndReserve('p-1'), { reserved: false, reason: 'already-reserved' });
      assert.deepEqual(await client().fetchAndReserve('absent'), { reserved: false, reason: 'not-found' });
    });

    test('a flag change with a stale reservation is ReservationLostError (409) and changes nothing', async () => {
      await box.deliver(alice.user, 'p-2', 'content');
      const got = await client().reserve('p-2');
      assert.ok(got.reserved);
      await assert.rejects(client().markProcessed('p-2', 'not-the-reservation'), (e) => e instanceof ReservationLostError && e.status === 409);
      assert.deepEqual(await client().flags('p-2'), ['PROCESSING']);
    });

    test('markFailed records temporary/permanent and the client version; failed blobs leave the default listing', async () => {
      await box.deliver(alice.user, 'x-1', 'a');
      await box.deliver(alice.user, 'x-2', 'b');
      const one = await client().reserve('x-1');
      const two = await client().reserve('x-2');
      assert.ok(one.reserved && two.reserved);
      await client().markFailed('x-1', one.reservation, { version: 'lacre/9.9.9' });
      await client().markFailed('x-2', two.reservation, { version: 'lacre/9.9.8', permanent: true });
      assert.deepEqual(await client().flags('x-1'), ['FAILED']);
      assert.deepEqual(await client().flags('x-2'), ['FAILED', 'PERMANENT']);
      assert.equal(await box.clientVersionOf(alice.user, 'x-1'), 'lacre/9.9.9');
      assert.equal(await box.clientVersionOf(alice.user, 'x-2'), 'lacre/9.9.8');
      assert.deepEqual(await client().list(), []);
      assert.deepEqual(await client().list({ filterFlag: 'FAILED' }), ['x-1', 'x-2']);
      assert.deepEqual(await client().list({ filterFlag: 'PERMANENT' }), ['x-2']);
    });

    test('release gives the blob back: PENDING and reservable again', async () => {
      await box.deliver(alice.user, 'rel-1', 'a');
      const got = await client().reserve('rel-1');
      assert.ok(got.reserved);
      await client().release('rel-1', got.reservation);
      assert.deepEqual(await client().flags('rel-1'), ['PENDING']);
      assert.equal((await client().reserve('rel-1')).reserved, true);
    });

    test('delete: true when removed, false when absent', async () => {
      await box.deliver(alice.user, 'd-1', 'a');
      assert.equal(await client().delete('d-1'), true);
      assert.equal(await client().delete('d-1'), false);
      await assert.rejects(client().fetch('d-1'), (e) => e instanceof IncomingBoxHttpError && e.status === 404);
    });

    test("upload stores the user's own blob once; the same id again is false (409)", async () => {
      assert.equal(await client().upload('u-1', Buffer.from('mine'), { scheme: 'raw' }), true);
      assert.equal(await client().upload('u-1', Buffer.from('again')), false);
      assert.equal(await text((await client().fetch('u-1')).stream), 'mine');
    });

    test('a namespace is a separate box', async () => {
      await box.deliver(alice.user, 'n-1', 'a');
      const other = new IncomingBoxClient({ url: box.url, user: alice.user, token: alice.token, namespace: 'other' });
      assert.equal(await other.count(), 0);
      assert.equal(await client().count(), 1);
    });

    test("a wrong token, or another user's token, is IncomingBoxHttpError 401", async () => {
      const wrong = new IncomingBoxClient({ url: box.url, user: alice.user, token: 'wrong' });
      await assert.rejects(wrong.count(), (e) => e instanceof IncomingBoxHttpError && e.status === 401);
      const bobAsAlice = new IncomingBoxClient({ url: box.url, user: alice.user, token: bob.token });
      await assert.rejects(bobAsAlice.list(), (e) => e instanceof IncomingBoxHttpError && e.status === 401);
    });
  });
}

describe('IncomingBoxClient against a box that is down or silent', () => {
  test('sends Authorization: Token base64("USER:token") and the namespace', async () => {
    let seen: { authorization?: string; url?: string } = {};
    const recorder = await listen(
      createServer((req, res) => {
        seen = { authorization: req.headers.authorization, url: req.url };
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"count": 7}');
      }),
    );
    try {
      const client = new IncomingBoxClient({ url: recorder.url, user: 'u-1', token: 't:with:colons' });
      assert.equal(await client.count({ includeProcessing: true }), 7);
      assert.equal(seen.authorization, `Token ${Buffer.from('u-1:t:with:colons').toString('base64')}`);
      assert.equal(seen.url, '/blobs/u-1/?namespace=MX&filter_flag=PENDING&include_processing=1&only_count=1');
    } finally {
      await recorder.close();
    }
  });


  test('reads the framing off a blob the box says is framed, and takes the bytes of any other as they are', async () => {
    const bodies: Record<string, { headers: Record<string, string>; body: Buffer }> = {
      '/blobs/u/framed?namespace=MX': { headers: { 'x-incoming-framing': 'soledad' }, body: Buffer.concat([incomingFraming('framed', 7, new Date()), Buffer.from('payload')]) },
      // An older box: no framing header, a bare blob.
      '/blobs/u/bare?namespace=MX': { headers: {}, body: Buffer.from('EzcCAw looks framed but is not said to be') },
      '/blobs/u/broken?namespace=MX': { headers: { 'x-incoming-framing': 'soledad' }, body: Buffer.from('EzcCAw== not a preamble') },
      '/blobs/u/spaceless?namespace=MX': { headers: { 'x-incoming-framing': 'soledad' }, body: Buffer.alloc(2000, 'A') },
    };
    const server = await listen(
      createServer((req, res) => {
        const { headers, body } = bodies[req.url!]!;
        res.writeHead(200, { ...headers, 'content-length': String(body.length) }).end(body);
      }),
    );
    try {
      const client = new IncomingBoxClient({ url: server.url, user: 'u', token: 't' });
      const framed = await client.fetch('framed');
      assert.equal(framed.size, 7);
      assert.equal(await text(framed.stream), 'payload');
      const bare = await client.fetch('bare');
      assert.equal(bare.preamble, undefined);
      assert.equal(await text(bare.stream), 'EzcCAw looks framed but is not said to be');
      await assert.rejects(client.fetch('broken'), InvalidFramingError);
      await assert.rejects(client.fetch('spaceless'), InvalidFramingError);
    } finally {
      await server.close();
    }
  });

  test('nothing listening: IncomingBoxUnreachableError', async () => {
    const port = await freePort();
    const client = new IncomingBoxClient({ url: `http://127.0.0.1:${port}`, user: 'u', token: 't' });
    await assert.rejects(client.count(), (e) => e instanceof IncomingBoxUnreachableError && /ECONNREFUSED/.test(e.message));
  });

  test('no answer within the timeout: IncomingBoxUnreachableError, promptly', async () => {
    const silent = await listen(createServer(() => undefined));
    try {
      const client = new IncomingBoxClient({ url: silent.url, user: 'u', token: 't', timeoutMs: 300 });
      const started = Date.now();
      await assert.rejects(client.list(), (e) => e instanceof IncomingBoxUnreachableError && /300 ms/.test(e.message));
      assert.ok(Date.now() - started < 5000);
    } finally {
      await silent.close();
    }
  });

  test('a download that stalls mid-body errors the stream instead of hanging', async () => {
    const stalling = await listen(
      createServer((_req, res) => {
        res.writeHead(200, { 'content-length': '100', 'x-incoming-scheme': 'raw' });
        res.write('only part of it');
      }),
    );
    try {
      const client = new IncomingBoxClient({ url: stalling.url, user: 'u', token: 't', timeoutMs: 300 });
      const blob = await client.fetch('id');
      await assert.rejects(text(blob.stream), (e) => e instanceof IncomingBoxUnreachableError && /stalled/.test(e.message));
    } finally {
      await stalling.close();
    }
  });

  test('a slow consumer is not a stalled download', async () => {
    const server = await listen(createServer((_req, res) => res.end('x'.repeat(200_000))));
    try {
      const client = new IncomingBoxClient({ url: server.url, user: 'u', token: 't', timeoutMs: 200 });
      const blob = await client.fetch('id');
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal((await text(blob.stream)).length, 200_000);
    } finally {
      await server.close();
    }
  });
});

async function listen(server: Server): Promise<{ url: string; close(): Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

