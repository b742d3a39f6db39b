import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { describe, it } from 'node:test';
import { createBoxUserDirectory } from '../../src/box/users.js';
import { FRAMING_BYTES, readFraming, tagOf } from '../../src/soledad/preamble.js';
import { databaseBackends } from '../helpers/databases.js';
import { chunked, sleep, tokenHeader, trustedAuth, withBox, type TestBox } from './server-box.js';

const ALICE = 'alice@example.org';
const BOB = 'bob@example.org';

async function usage(box: TestBox, user: string): Promise<number> {
  const [row] = await box.db.query<{ used_bytes: number }>('SELECT used_bytes FROM lacre_box_usage WHERE user_uuid = $1', [user]);
  return Number(row?.used_bytes ?? 0);
}

async function json(response: Response): Promise<unknown> {
  assert.equal(response.status, 200, `expected 200, got ${response.status}: ${await response.clone().text()}`);
  return response.json();
}

/** Sets created_at so that listings have a known order without sleeping. */
async function age(box: TestBox, user: string, id: string, secondsAgo: number): Promise<void> {
  await box.db.query(`UPDATE lacre_blobs SET created_at = now() - make_interval(secs => $3) WHERE user_uuid = $1 AND blob_id = $2`, [user, id, secondsAgo]);
}

/** Deliveries land in MX; the blobs API must name it (without a namespace it means Soledad's "default"). */
async function reserve(box: TestBox, auth: string, user: string, id: string): Promise<Response> {
  return box.request('POST', `/blobs/${user}/${id}/reserve?namespace=MX`, { auth });
}

async function setFlags(box: TestBox, auth: string, user: string, id: string, flags: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return box.request('POST', `/blobs/${user}/${id}?namespace=MX`, { auth, body: JSON.stringify(flags), headers: { 'content-type': 'application/json', ...headers } });
}

for (const backend of await databaseBackends()) {
  describe(`Incoming Box server (${backend.name})`, () => {
    it('stores a delivery durably and answers a redelivery 409 without storing it twice', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        const payload = randomBytes(70_000);
        const first = await box.deliver(alice.id, 'msg-1', payload, { scheme: 'openpgp-mime' });
        assert.equal(first.status, 200);
        assert.equal(first.headers.get('content-type'), 'application/json; charset=utf-8');
        assert.deepEqual(await first.json(), { success: true });
        const again = await box.deliver(alice.id, 'msg-1', randomBytes(10));
        assert.equal(again.status, 409);
        assert.equal(await again.text(), 'Blob already exists');
        assert.equal(box.files(alice.id).length, 1, 'one file for one blob');
        assert.deepEqual(box.tempFiles(), []);
        assert.equal(await usage(box, alice.id), FRAMING_BYTES + payload.length, 'the stored bytes count, framing included');

        const fetched = await box.request('GET', `/blobs/${alice.id}/msg-1?namespace=MX`, { auth: alice.auth });
        assert.equal(fetched.status, 200);
        assert.equal(fetched.headers.get('content-type'), 'application/octet-stream');
        assert.equal(fetched.headers.get('content-length'), String(FRAMING_BYTES + payload.length));
        assert.equal(fetched.headers.get('accept-ranges'), 'bytes');
        assert.equal(fetched.headers.get('x-incoming-scheme'), 'openpgp-mime');
        assert.equal(fetched.headers.get('x-incoming-framing'), 'soledad');
        assert.equal(fetched.headers.get('tag'), tagOf(payload.subarray(-16)));
        const stored = Buffer.from(await fetched.arrayBuffer());
        const framing = readFraming(stored)!;
        assert.equal(framing.payloadOffset, FRAMING_BYTES);
        assert.deepEqual({ docId: framing.preamble.docId, size: framing.preamble.size }, { docId: 'msg-1', size: payload.length });
        assert.deepEqual(stored.subarray(FRAMING_BYTES), payload, 'the payload as delivered, after the framing');
      }));

    it('frames a chunked delivery with its real size, and stores a user upload exactly as sent', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        const payload = randomBytes(100_000);
        assert.equal((await box.request('PUT', `/incoming/${alice.id}/streamed`, { auth: trustedAuth, body: chunked(payload, 7000) })).status, 200);
        const stored = Buffer.from(await (await box.request('GET', `/blobs/${alice.id}/streamed?namespace=MX`, { auth: alice.auth })).arrayBuffer());
        assert.equal(readFraming(stored)!.preamble.size, payload.length, 'the size written once the body had ended');
        assert.deepEqual(stored.subarray(FRAMING_BYTES), payload);
        assert.equal((await box.deliver(alice.id, 'empty', '')).status, 200);
        const empty = Buffer.from(await (await box.request('GET', `/blobs/${alice.id}/empty?namespace=MX`, { auth: alice.auth })).arrayBuffer());
        assert.equal(empty.length, FRAMING_BYTES);
        assert.equal(readFraming(empty)!.preamble.size, 0);

        const upload = Buffer.from('a client-encrypted blob, its own preamble and all');
        assert.equal((await box.request('PUT', `/blobs/${alice.id}/own`, { auth: alice.auth, body: upload })).status, 200);
        const own = await box.request('GET', `/blobs/${alice.id}/own`, { auth: alice.auth });
        assert.equal(own.headers.get('x-incoming-framing'), null);
        assert.equal(own.headers.get('tag'), tagOf(upload.subarray(-16)));
        assert.deepEqual(Buffer.from(await own.arrayBuffer()), upload);
        assert.equal(await usage(box, alice.id), 2 * FRAMING_BYTES + payload.length + upload.length);
      }));

    it('answers bad deliveries: 404 unknown user, 400 bad id/namespace/scheme, 401 bad credentials, 405 other methods', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        assert.equal((await box.deliver('00000000-0000-4000-8000-000000000000', 'm', 'x')).status, 404);
        assert.equal((await box.deliver('not-a-uuid', 'm', 'x')).status, 404);
        assert.equal((await box.deliver(alice.id.toUpperCase(), 'm', 'x')).status, 404, 'user ids are lower-case');
        assert.equal((await box.deliver(alice.id, 'bad%2Fid', 'x')).status, 400);
        // A dot-leading id would name a file the storage keeps for itself: refused before anything is stored.
        assert.equal((await box.deliver(alice.id, '.hidden', 'x')).status, 400);
        assert.equal((await box.request('PUT', `/blobs/${alice.id}/.hidden`, { auth: alice.auth, body: 'x' })).status, 400);
        assert.equal((await box.deliver(alice.id, 'x'.repeat(129), 'x')).status, 400);
        assert.equal((await box.deliver(alice.id, 'm', 'x', { namespace: 'no%20spaces' })).status, 400);
        assert.equal((await box.deliver(alice.id, 'm', 'x', { scheme: 'rot13' })).status, 400);
        for (const auth of [undefined, 'Bearer abc', 'Token !!!', tokenHeader('lacre-mx', 'wrong'), tokenHeader('other', 'trusted-secret'), alice.auth]) {
          const answer = await box.request('PUT', `/incoming/${alice.id}/m`, { auth, body: 'x' });
          assert.equal(answer.status, 401, `credential ${auth}`);
          assert.equal(answer.headers.get('www-authenticate'), 'Token');
        }
        assert.equal((await box.request('GET', `/incoming/${alice.id}/m`, { auth: trustedAuth })).status, 405);
        assert.equal((await box.request('GET', '/elsewhere', { auth: trustedAuth })).status, 404);
        assert.deepEqual(box.files(alice.id), [], 'nothing refused was stored');
        // An address alone, or a token alone, makes a user that can receive.
        const tokenOnly = (await box.users.add('carol@example.org')).user;
        await box.users.createToken(tokenOnly);
        await box.users.delete('carol@example.org');
        assert.equal((await box.deliver(tokenOnly, 'm', 'x')).status, 200);
      }));

    it('keeps each box to its own user: other users, trusted tokens and forged names get 401', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        const bob = await box.createUser(BOB);
        assert.equal((await box.deliver(alice.id, 'private', 'for alice only')).status, 200);
        const attempts: [string, string | undefined][] = [
          ['no credential', undefined],
          ['bob', bob.auth],
          ['bob naming alice', tokenHeader(alice.id, bob.token)],
          ['trusted application', trustedAuth],
          ['a wrong token', tokenHeader(alice.id, 'guess')],
        ];
        for (const [who, auth] of attempts) {
          for (const [method, path] of [['GET', `/blobs/${alice.id}/`], ['GET', `/blobs/${alice.id}/private`], ['DELETE', `/blobs/${alice.id}/private`], ['POST', `/blobs/${alice.id}/private/reserve`]] as const) {
            const answer = await box.request(method, path, { auth });
            assert.equal(answer.status, 401, `${who}: ${method} ${path}`);
          }
        }
        // The same answer for a box that does not exist: nothing reveals which ones do.
        assert.equal((await box.request('GET', '/blobs/00000000-0000-4000-8000-000000000000/', { auth: bob.auth })).status, 401);
        assert.deepEqual(await json(await box.request('GET', `/blobs/${alice.id}/?namespace=MX`, { auth: alice.auth })), ['private']);
        assert.deepEqual(await json(await box.request('GET', `/blobs/${bob.id}/?namespace=MX`, { auth: bob.auth })), []);
      }));

    it('fetches byte ranges: 206 with Content-Range and the Tag, 416 when unsatisfiable, 404 when absent', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        const payload = Buffer.from('0123456789abcdefghij');
        // The user's own blob, stored as sent, in the namespace a request without one means ("default").
        assert.equal((await box.request('PUT', `/blobs/${alice.id}/r`, { auth: alice.auth, body: payload })).status, 200);
        const range = async (header: string) => box.request('GET', `/blobs/${alice.id}/r?namespace=default`, { auth: alice.auth, headers: { range: header } });
        const cases: [string, number, string, string][] = [
          ['bytes=2-5', 206, '2345', 'bytes 2-5/20'],
          ['bytes=15-', 206, 'fghij', 'bytes 15-19/20'],
          ['bytes=-3', 206, 'hij', 'bytes 17-19/20'],
          ['bytes=18-100', 206, 'ij', 'bytes 18-19/20'],
        ];
        for (const [header, status, body, contentRange] of cases) {
          const answer = await range(header);
          assert.equal(answer.status, status, header);
          assert.equal(answer.headers.get('content-range'), contentRange, header);
          assert.equal(answer.headers.get('content-length'), String(body.length), header);
          assert.equal(answer.headers.get('tag'), tagOf(payload.subarray(-16)), `${header}: the whole blob's tag`);
          assert.equal(await answer.text(), body, header);
        }
        const unsatisfiable = await range('bytes=20-');
        assert.equal(unsatisfiable.status, 416);
        assert.equal(unsatisfiable.headers.get('content-range'), 'bytes */20');
        const several = await range('bytes=0-1,4-5');
        assert.equal(several.status, 200, 'several ranges: the whole blob');
        assert.equal(await several.text(), payload.toString());
        assert.equal((await box.request('GET', `/blobs/${alice.id}/missing`, { auth: alice.auth })).status, 404);
      }));

    it('lists every blob of a namespace oldest first as Soledad does, and filters with every qualifier, without touching blob files', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        const sizes: Record<string, number> = { a: 10, b: 2000, c: 30, d: 40, e: 50 };
        for (const [id, size] of Object.entries(sizes)) assert.equal((await box.deliver(alice.id, id, randomBytes(size), { scheme: 'openpgp' })).status, 200);
        assert.equal((await box.deliver(alice.id, 'other-ns', 'x', { namespace: 'other' })).status, 200);
        for (const [index, id] of ['a', 'b', 'c', 'd', 'e'].entries()) await age(box, alice.id, id, 100 - index);
        const get = async (query: string) => json(await box.request('GET', `/blobs/${alice.id}/${query}`, { auth: alice.auth }));
        const list = async (query = '') => get(`?namespace=MX${query}`);

        assert.deepEqual(await list(), ['a', 'b', 'c', 'd', 'e']);
        assert.deepEqual(await json(await box.request('GET', `/blobs/${alice.id}?namespace=MX`, { auth: alice.auth })), ['a', 'b', 'c', 'd', 'e'], 'no trailing slash');
        assert.deepEqual(await get(''), [], 'no namespace means "default", where nothing was delivered');
        assert.deepEqual(await get('?namespace=mx'), [], 'namespaces are case-sensitive');
        assert.deepEqual(await get('?namespace=other'), ['other-ns']);
        assert.deepEqual(await list('&order_by=-date'), ['e', 'd', 'c', 'b', 'a']);
        assert.deepEqual(await list('&order_by=+date'), ['a', 'b', 'c', 'd', 'e'], '"+" arrives as a space');
        assert.deepEqual(await list('&order_by=%2Bdate'), ['a', 'b', 'c', 'd', 'e']);
        assert.deepEqual(await list('&limit=2'), ['a', 'b']);
        assert.deepEqual(await list('&limit=2&page=2'), ['c', 'd']);
        assert.deepEqual(await list('&limit=2&page=3'), ['e']);
        assert.deepEqual(await list('&limit=2&page=4'), []);
        assert.deepEqual(await list(`&size_limit=${FRAMING_BYTES + 40}`), ['a', 'c', 'd'], 'sizes are of the stored bytes');
        assert.deepEqual(await list('&only_count=1'), { count: 5 });
        assert.deepEqual(await list('&only_count=True'), { count: 5 }, "Soledad's client sends True");
        assert.deepEqual(await list(`&only_count=1&size_limit=${FRAMING_BYTES + 40}`), { count: 3 });
        const details = (await list('&details=1&limit=1&order_by=-date')) as Record<string, unknown>[];
        assert.equal(details.length, 1);
        assert.deepEqual({ ...details[0], created_at: undefined }, { id: 'e', size: FRAMING_BYTES + 50, state: 'PENDING', flags: ['PENDING'], scheme: 'openpgp', created_at: undefined });
        assert.ok(Math.abs(Date.parse(String(details[0]!.created_at)) - (Date.now() - 96_000)) < 30_000, 'created_at is the arrival time');

        // State filters.
        const reserved = await reserve(box, alice.auth, alice.id, 'b');
        const { reservation } = (await json(reserved)) as { reservation: string };
        assert.deepEqual(await list(), ['a', 'b', 'c', 'd', 'e'], 'without filter_flag, every state');
        assert.deepEqual(await list('&filter_flag=PENDING'), ['a', 'c', 'd', 'e']);
        assert.deepEqual(await list('&include_processing=1'), ['a', 'b', 'c', 'd', 'e']);
        assert.deepEqual(await list('&filter_flag=PENDING&include_processing=1'), ['a', 'b', 'c', 'd', 'e']);
        assert.deepEqual(await list('&filter_flag=PROCESSING'), ['b']);
        assert.deepEqual(await get(`b?namespace=MX&only_flags=True`), ['PROCESSING']);
        assert.equal((await setFlags(box, alice.auth, alice.id, 'b', ['FAILED'], { 'x-reservation': reservation })).status, 200);
        assert.deepEqual(await list('&include_processing=1'), ['a', 'c', 'd', 'e'], 'FAILED is neither PENDING nor PROCESSING');
        assert.deepEqual(await list(), ['a', 'b', 'c', 'd', 'e'], 'FAILED is listed without filter_flag');
        assert.deepEqual(await list('&filter_flag=FAILED'), ['b']);
        assert.deepEqual(await list('&filter_flag=PERMANENT'), []);
        assert.deepEqual(await list('&only_count=1&filter_flag=FAILED'), { count: 1 });
        assert.deepEqual(await list('&only_count=1&filter_flag=PENDING'), { count: 4 });

        for (const bad of ['namespace=MX&page=2', 'namespace=MX&limit=0', 'limit=x', 'order_by=size', 'filter_flag=SEEN', 'only_count=maybe', 'size_limit=-1', 'namespace=a.b', 'namespace=']) {
          assert.equal((await box.request('GET', `/blobs/${alice.id}/?${bad}`, { auth: alice.auth })).status, 400, bad);
        }
        // Listing reads metadata only: it works with the files gone.
        for (const file of box.files(alice.id)) (await import('node:fs')).rmSync(`${box.blobsPath}/${alice.id}/MX/${file}`);
        assert.deepEqual(await list('&order_by=-date&filter_flag=PENDING'), ['e', 'd', 'c', 'a']);
        // A file gone under a listed blob (a delete or purge racing the fetch) is 404, not 500.
        assert.equal((await box.request('GET', `/blobs/${alice.id}/a?namespace=MX`, { auth: alice.auth })).status, 404);
      }));

    it('answers a flags POST that waits for "100 Continue" (no hang)', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        assert.equal((await box.deliver(alice.id, 'm1', 'x')).status, 200);
        const { request } = await import('node:http');
        const status = await new Promise<number>((resolve, reject) => {
          const body = JSON.stringify(['PROCESSED']);
          const req = request(`${box.base}/blobs/${alice.id}/m1?namespace=MX`, {
            method: 'POST',
            headers: { authorization: alice.auth, 'content-type': 'application/json', 'content-length': String(body.length), expect: '100-continue' },
          });
          req.setTimeout(5_000, () => req.destroy(new Error('no answer within 5 s')));
          req.on('continue', () => req.end(body));
          req.on('response', (res) => {
            res.resume();
            resolve(res.statusCode!);
          });
          req.on('error', reject);
        });
        assert.equal(status, 409, 'not reserved: refused, but answered');
      }));

    it('runs the state machine: reserve, 409 for a second client, confirm only with the reservation', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        await box.deliver(alice.id, 'm1', 'one');
        const flags = async (id: string) => json(await box.request('GET', `/blobs/${alice.id}/${id}?namespace=MX&only_flags=1`, { auth: alice.auth }));
        assert.deepEqual(await flags('m1'), ['PENDING']);
        assert.equal((await reserve(box, alice.auth, alice.id, 'absent')).status, 404);
        const first = await reserve(box, alice.auth, alice.id, 'm1');
        const { reservation, expires_at: expiresAt } = (await json(first)) as { reservation: string; expires_at: string };
        assert.match(reservation, /^[A-Za-z0-9_-]{40,}$/);
        assert.ok(Math.abs(Date.parse(expiresAt) - (Date.now() + 1000)) < 5000, `expires in about the threshold: ${expiresAt}`);
        assert.equal((await reserve(box, alice.auth, alice.id, 'm1')).status, 409, 'a second client cannot take it');
        assert.deepEqual(await flags('m1'), ['PROCESSING']);
        assert.equal((await box.request('GET', `/blobs/${alice.id}/m1?namespace=MX`, { auth: alice.auth })).status, 200, 'the holder downloads it');

        assert.equal((await setFlags(box, alice.auth, alice.id, 'm1', ['PROCESSED'])).status, 409, 'no reservation');
        assert.equal((await setFlags(box, alice.auth, alice.id, 'm1', ['PROCESSED'], { 'x-reservation': 'forged' })).status, 409, 'wrong reservation');
        const unknown = await setFlags(box, alice.auth, alice.id, 'm1', ['PROCESSED', 'SEEN'], { 'x-reservation': reservation });
        assert.equal(unknown.status, 406);
        assert.equal(await unknown.text(), 'invalid flag: SEEN');
        assert.equal((await setFlags(box, alice.auth, alice.id, 'm1', ['PROCESSING'], { 'x-reservation': reservation })).status, 409, 'held through …/reserve: not taken by a client-set PROCESSING');
        for (const bad of [[], ['PERMANENT'], ['PROCESSED', 'FAILED'], 'PROCESSED', { flags: [] }]) {
          assert.equal((await setFlags(box, alice.auth, alice.id, 'm1', bad, { 'x-reservation': reservation })).status, 400, JSON.stringify(bad));
        }
        assert.equal((await box.request('POST', `/blobs/${alice.id}/m1?namespace=MX`, { auth: alice.auth, body: 'not json' })).status, 400);
        assert.equal((await setFlags(box, alice.auth, alice.id, 'absent', ['PROCESSED'], { 'x-reservation': reservation })).status, 404);
        assert.deepEqual(await flags('m1'), ['PROCESSING'], 'refused changes changed nothing');

        assert.equal((await setFlags(box, alice.auth, alice.id, 'm1', ['PROCESSED'], { 'x-reservation': reservation })).status, 200);
        assert.deepEqual(await flags('m1'), ['PROCESSED']);
        assert.equal((await setFlags(box, alice.auth, alice.id, 'm1', ['PROCESSED'], { 'x-reservation': reservation })).status, 409, 'a reservation is used once');
        assert.equal((await reserve(box, alice.auth, alice.id, 'm1')).status, 409, 'a PROCESSED blob is not reserved again');

        // Releasing gives it back.
        await box.deliver(alice.id, 'm2', 'two');
        const second = (await json(await reserve(box, alice.auth, alice.id, 'm2'))) as { reservation: string };
        assert.equal((await setFlags(box, alice.auth, alice.id, 'm2', ['PENDING'], { 'x-reservation': second.reservation })).status, 200);
        assert.deepEqual(await flags('m2'), ['PENDING']);
        assert.equal((await reserve(box, alice.auth, alice.id, 'm2')).status, 200);
      }));

    it('expires a reservation after the threshold: PENDING again, the stalled client can no longer confirm', () =>
      withBox(backend, { processing_threshold_seconds: 1 }, async (box) => {
        const alice = await box.createUser(ALICE);
        await box.deliver(alice.id, 'slow', 'x');
        const stalled = (await json(await reserve(box, alice.auth, alice.id, 'slow'))) as { reservation: string };
        const pending = `/blobs/${alice.id}/?namespace=MX&filter_flag=PENDING`;
        assert.deepEqual(await json(await box.request('GET', pending, { auth: alice.auth })), []);
        await sleep(1300);
        assert.deepEqual(await json(await box.request('GET', `/blobs/${alice.id}/slow?namespace=MX&only_flags=1`, { auth: alice.auth })), ['PENDING']);
        assert.deepEqual(await json(await box.request('GET', pending, { auth: alice.auth })), ['slow']);
        assert.equal((await setFlags(box, alice.auth, alice.id, 'slow', ['PROCESSED'], { 'x-reservation': stalled.reservation })).status, 409);
        const taken = (await json(await reserve(box, alice.auth, alice.id, 'slow'))) as { reservation: string };
        assert.equal((await setFlags(box, alice.auth, alice.id, 'slow', ['PROCESSED'], { 'x-reservation': taken.reservation })).status, 200);

        // Expiry without a listing in between: reserve takes over an expired reservation directly.
        await box.deliver(alice.id, 'again', 'y');
        await json(await reserve(box, alice.auth, alice.id, 'again'));
        assert.equal((await reserve(box, alice.auth, alice.id, 'again')).status, 409);
        await sleep(1300);
        assert.equal((await reserve(box, alice.auth, alice.id, 'again')).status, 200);
      }));

    it('records failures with the client version; permanent ones are purged with PROCESSED ones after the retention', () =>
      withBox(backend, { retention_hours: 1.5 / 3600 }, async (box) => {
        const alice = await box.createUser(ALICE);
        for (const id of ['done', 'temp-fail', 'perm-fail', 'waiting']) await box.deliver(alice.id, id, Buffer.alloc(100, id));
        const finish = async (id: string, flags: string[], version?: string) => {
          const { reservation } = (await json(await reserve(box, alice.auth, alice.id, id))) as { reservation: string };
          const headers: Record<string, string> = { 'x-reservation': reservation, ...(version ? { 'x-client-version': version } : {}) };
          assert.equal((await setFlags(box, alice.auth, alice.id, id, flags, headers)).status, 200);
        };
        await finish('done', ['PROCESSED']);
        await finish('temp-fail', ['FAILED'], 'bitmask-0.10.1');
        await finish('perm-fail', ['PERMANENT', 'FAILED'], 'bitmask-0.11.0');
        const flags = async (id: string) => json(await box.request('GET', `/blobs/${alice.id}/${id}?namespace=MX&only_flags=1`, { auth: alice.auth }));
        assert.deepEqual(await flags('temp-fail'), ['FAILED']);
        assert.deepEqual(await flags('perm-fail'), ['FAILED', 'PERMANENT']);
        const rows = await box.db.query<{ blob_id: string; failed_version: string | null; failed_permanent: boolean }>(
          `SELECT blob_id, failed_version, failed_permanent FROM lacre_blobs WHERE state = 'FAILED' ORDER BY blob_id`,
        );
        assert.deepEqual(rows.map((r) => ({ ...r })), [
          { blob_id: 'perm-fail', failed_version: 'bitmask-0.11.0', failed_permanent: true },
          { blob_id: 'temp-fail', failed_version: 'bitmask-0.10.1', failed_permanent: false },
        ]);
        assert.deepEqual(await json(await box.request('GET', `/blobs/${alice.id}/?namespace=MX&filter_flag=PENDING`, { auth: alice.auth })), ['waiting']);
        assert.equal((await reserve(box, alice.auth, alice.id, 'temp-fail')).status, 409, 'failed blobs are not handed out again');

        assert.equal(await box.server.purge(), 0, 'nothing is older than the retention yet');
        assert.equal(box.files(alice.id).length, 4);
        await sleep(1700);
        assert.equal(await box.server.purge(), 2);
        const left = (await json(await box.request('GET', `/blobs/${alice.id}/?namespace=MX&details=1&include_processing=1`, { auth: alice.auth }))) as { id: string }[];
        assert.deepEqual(left.map((b) => b.id), ['waiting']);
        assert.deepEqual(await json(await box.request('GET', `/blobs/${alice.id}/?namespace=MX&filter_flag=FAILED`, { auth: alice.auth })), ['temp-fail']);
        assert.deepEqual(await json(await box.request('GET', `/blobs/${alice.id}/?namespace=MX`, { auth: alice.auth })), ['temp-fail', 'waiting']);
        assert.equal((await box.request('GET', `/blobs/${alice.id}/done?namespace=MX`, { auth: alice.auth })).status, 404);
        assert.equal(box.files(alice.id).length, 2, 'the purged blobs\u2019 files are gone');
        assert.equal(await usage(box, alice.id), 2 * (FRAMING_BYTES + 100));
      }));

    it('deletes blobs and lets users store their own (409 exists, 507 over quota)', () =>
      withBox(backend, { quota: 1000 }, async (box) => {
        const alice = await box.createUser(ALICE);
        const own = await box.request('PUT', `/blobs/${alice.id}/draft?namespace=drafts`, { auth: alice.auth, body: Buffer.alloc(600, 1) });
        assert.equal(own.status, 200);
        assert.equal((await box.request('PUT', `/blobs/${alice.id}/draft?namespace=drafts`, { auth: alice.auth, body: 'x' })).status, 409);
        const over = await box.request('PUT', `/blobs/${alice.id}/big?namespace=drafts`, { auth: alice.auth, body: Buffer.alloc(500, 2) });
        assert.equal(over.status, 507);
        assert.equal(await over.text(), 'Quota Exceeded!');
        assert.deepEqual(await json(await box.request('GET', `/blobs/${alice.id}/?namespace=drafts`, { auth: alice.auth })), ['draft']);
        assert.equal((await box.request('DELETE', `/blobs/${alice.id}/draft?namespace=drafts`, { auth: alice.auth })).status, 200);
        assert.equal((await box.request('DELETE', `/blobs/${alice.id}/draft?namespace=drafts`, { auth: alice.auth })).status, 404);
        assert.deepEqual(box.files(alice.id, 'drafts'), []);
        assert.equal(await usage(box, alice.id), 0);
        assert.equal((await box.request('PUT', `/blobs/${alice.id}/big?namespace=drafts`, { auth: alice.auth, body: Buffer.alloc(500, 2) })).status, 200, 'room again after the delete');
        assert.equal((await box.request('PATCH', `/blobs/${alice.id}/big`, { auth: alice.auth })).status, 405);
      }));

    it('refuses writes over quota plus tolerance with 507 and stores nothing, streamed or declared', () =>
      // Room for two deliveries' framing and 1100 bytes of payload.
      withBox(backend, { quota: 1000 + 2 * FRAMING_BYTES, quota_tolerance: 100 }, async (box) => {
        const alice = await box.createUser(ALICE);
        assert.equal((await box.deliver(alice.id, 'fits', Buffer.alloc(900))).status, 200);
        const streamed = await box.request('PUT', `/incoming/${alice.id}/too-big`, { auth: trustedAuth, body: chunked(randomBytes(300_000)) });
        assert.equal(streamed.status, 507, 'chunked upload larger than the room left');
        assert.equal(await streamed.text(), 'Quota Exceeded!');
        const declared = await box.deliver(alice.id, 'too-big', Buffer.alloc(201));
        assert.equal(declared.status, 507, 'Content-Length over the room left');
        assert.deepEqual(box.tempFiles(), [], 'no temporary file is left');
        assert.equal(box.files(alice.id).length, 1, 'nothing of the refused blobs was kept');
        assert.equal((await box.request('GET', `/blobs/${alice.id}/too-big?namespace=MX&only_flags=1`, { auth: alice.auth })).status, 404);
        assert.equal((await box.deliver(alice.id, 'tolerated', Buffer.alloc(200))).status, 200, 'up to quota + tolerance');
        assert.equal(await usage(box, alice.id), 1100 + 2 * FRAMING_BYTES);
        assert.equal((await box.deliver(alice.id, 'one-more-byte', Buffer.alloc(1))).status, 507);
      }));

    it('checks quota race-free: of concurrent writes, only those that fit are stored', () =>
      // Room for three of the 300-byte deliveries and one of 10 bytes, each with its framing.
      withBox(backend, { quota: 3 * (FRAMING_BYTES + 300) + FRAMING_BYTES + 10 }, async (box) => {
        const alice = await box.createUser(ALICE);
        const answers = await Promise.all(
          Array.from({ length: 10 }, (_, index) => box.request('PUT', `/incoming/${alice.id}/c${index}`, { auth: trustedAuth, body: chunked(Buffer.alloc(300, index), 100) })),
        );
        const statuses = answers.map((answer) => answer.status).sort();
        assert.deepEqual(statuses, [200, 200, 200, 507, 507, 507, 507, 507, 507, 507]);
        assert.equal(await usage(box, alice.id), 3 * (FRAMING_BYTES + 300));
        assert.equal(box.files(alice.id).length, 3);
        assert.deepEqual(box.tempFiles(), []);
        // Concurrent deliveries of one id: exactly one is stored.
        const same = await Promise.all(Array.from({ length: 5 }, () => box.deliver(alice.id, 'dup', Buffer.alloc(10))));
        assert.deepEqual(same.map((answer) => answer.status).sort(), [200, 409, 409, 409, 409]);
        assert.equal(box.files(alice.id).length, 4);
      }));

    it('forgets a delivery whose client goes away mid-body: no blob, no temporary file, the id stays free', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        const request = httpRequest(`${box.base}/incoming/${alice.id}/cut`, { method: 'PUT', headers: { authorization: trustedAuth, 'content-length': String(10_000_000) } });
        request.on('error', () => undefined);
        request.write(randomBytes(1_000_000));
        const deadline = Date.now() + 5000;
        while (box.tempFiles().length === 0) {
          assert.ok(Date.now() < deadline, 'the upload did not start');
          await sleep(10);
        }
        request.destroy();
        while (box.tempFiles().length > 0) {
          assert.ok(Date.now() < deadline + 5000, 'the temporary file stayed');
          await sleep(10);
        }
        assert.deepEqual(box.files(alice.id), []);
        assert.equal((await box.request('GET', `/blobs/${alice.id}/cut?namespace=MX&only_flags=1`, { auth: alice.auth })).status, 404);
        assert.equal((await box.deliver(alice.id, 'cut', 'whole')).status, 200, 'a redelivery is stored');
      }));

    it('answers "Expect: 100-continue" before the body: a refused delivery is never sent', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        await box.deliver(alice.id, 'exists', 'x');
        const send = (id: string) =>
          new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
            let continued = false;
            const request = httpRequest(`${box.base}/incoming/${alice.id}/${id}`, {
              method: 'PUT',
              headers: { authorization: trustedAuth, expect: '100-continue', 'content-length': '5' },
            });
            request.on('continue', () => {
              continued = true;
              request.end('hello');
            });
            request.on('response', (response) => {
              response.resume();
              response.on('end', () => resolve({ status: response.statusCode ?? 0, continued }));
            });
            request.on('error', reject);
            request.flushHeaders();
          });
        assert.deepEqual(await send('exists'), { status: 409, continued: false });
        assert.deepEqual(await send('fresh'), { status: 200, continued: true });
        const body = await box.request('GET', `/blobs/${alice.id}/fresh?namespace=MX`, { auth: alice.auth });
        assert.equal((await body.text()).slice(FRAMING_BYTES), 'hello');
      }));

    it('lists a few thousand blobs quickly through the listing index', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser(ALICE);
        const bob = await box.createUser(BOB);
        const total = 4000;
        for (const user of [alice.id, bob.id]) {
          await box.db.query(
            `INSERT INTO lacre_blobs (user_uuid, namespace, blob_id, size, file_name, created_at, state)
             SELECT $1, 'MX', 'b' || lpad(i::text, 6, '0'), i, 'f' || i, now() - make_interval(secs => $2 - i),
                    CASE WHEN i % 10 = 0 THEN 'PROCESSED' ELSE 'PENDING' END
               FROM generate_series(1, $2) AS i`,
            [user, total],
          );
        }
        await box.db.query('ANALYZE lacre_blobs');
        const pending = total - total / 10;
        const started = Date.now();
        const list = async (query: string) => json(await box.request('GET', `/blobs/${alice.id}/?namespace=MX&${query}`, { auth: alice.auth }));
        const page = (await list('filter_flag=PENDING&limit=100&order_by=-date')) as string[];
        const pendingOnes = (await list('filter_flag=PENDING')) as string[];
        const count = (await list('filter_flag=PENDING&only_count=1')) as { count: number };
        const everything = (await list('order_by=%2Bdate')) as string[];
        const elapsed = Date.now() - started;
        assert.equal(page.length, 100);
        assert.equal(page[0], `b${String(total - 1).padStart(6, '0')}`, 'newest first (b004000 is PROCESSED)');
        assert.equal(pendingOnes.length, pending);
        assert.equal(pendingOnes[0], 'b000001');
        assert.equal(count.count, pending);
        assert.equal(everything.length, total);
        assert.equal(everything[total - 1], `b${String(total).padStart(6, '0')}`);
        assert.ok(elapsed < 4000, `four listings of ${total} blobs took ${elapsed} ms`);
        const explain = async (where: string) => {
          const plan = await box.db.query<{ 'QUERY PLAN': string }>(
            `EXPLAIN SELECT blob_id FROM lacre_blobs WHERE user_uuid = $1 AND namespace = 'MX' ${where} ORDER BY created_at DESC, blob_id DESC LIMIT 100`,
            [alice.id],
          );
          return plan.map((row) => row['QUERY PLAN']).join('\n');
        };
        // Read in order from an index alone: no sort, no table access, whichever index the planner prefers for a state.
        for (const where of [`AND state = 'PENDING'`, `AND state = 'PROCESSED'`, '']) {
          const plan = await explain(where);
          assert.match(plan, /Index Only Scan Backward using lacre_blobs_(listing|by_date)/, plan);
          assert.doesNotMatch(plan, /Sort/, plan);
        }
        assert.match(await explain(''), /lacre_blobs_by_date/);
      }));

    it('maps addresses to users case-insensitively for the filter (domain always, local part by default)', () =>
      withBox(backend, {}, async (box) => {
        const { user } = await box.users.add('Alice@Example.ORG');
        assert.deepEqual(await box.users.add('alice@example.org'), { user, added: false }, 'a case variant is the same address');
        const alias = await box.users.add('postmaster@example.org', user);
        assert.deepEqual(alias, { user, added: true });
        await assert.rejects(box.users.add('postmaster@EXAMPLE.org', '00000000-0000-4000-8000-000000000001'), /already belongs/);
        const directory = createBoxUserDirectory(box.db, { local_part_case_sensitive: false, cache_ttl_seconds: 300 } as { local_part_case_sensitive: boolean });
        assert.equal(await directory.userFor('ALICE@example.org'), user);
        assert.equal(await directory.userFor('<postmaster@Example.Org>'), user);
        assert.equal(await directory.userFor('nobody@example.org'), undefined);
        assert.equal(await directory.userFor('not an address'), undefined);
        const sensitive = createBoxUserDirectory(box.db, { local_part_case_sensitive: true });
        assert.equal(await sensitive.userFor('Alice@EXAMPLE.org'), user);
        assert.equal(await sensitive.userFor('alice@example.org'), undefined);
        const stored = await box.users.list();
        assert.deepEqual(stored.map((e) => [e.email, e.user]).sort(), [['Alice@example.org', user], ['postmaster@example.org', user]]);
        // Tokens are stored hashed.
        const { token } = await box.users.createToken('alice@example.org');
        const [row] = await box.db.query<{ token_hash: string }>('SELECT token_hash FROM lacre_box_tokens WHERE user_uuid = $1', [user]);
        assert.equal(row!.token_hash, createHash('sha256').update(token).digest('hex'));
        assert.equal(await box.users.verifyToken(user, token), true);
        assert.equal(await box.users.verifyToken(user, `${token}x`), false);
        await assert.rejects(box.users.createToken('00000000-0000-4000-8000-000000000009'), /no box user/);
      }));
  });
}
