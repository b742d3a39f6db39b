/**
 * Issue 16: the requests LEAP Soledad's own client sends (`BlobManager`, `IncomingBox` in leapcode/soledad at
 * f0baf1d, client/_db/blobs/__init__.py and client/incoming.py; Python 2, so replayed here request for request)
 * and the answers it needs. Every request goes out as treq sends it: `Authorization: Token base64(uuid:token)`, no Content-Type on a body, `+date` as `%2Bdate`.
 * Soledad's client treats every status but exactly 200 as an error, and a refused reservation as "skip this one".
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { describe, it } from 'node:test';
import { decodePreamble, ENCODED_PREAMBLE_LENGTH, PREAMBLE_BYTES } from '../../src/soledad/preamble.js';
import { corpus } from '../helpers/corpus.js';
import { databaseBackends } from '../helpers/databases.js';
import { createGpgHome, decrypt, encryptWithGpg, generateKey } from '../helpers/gpg.js';
import { TRUSTED, tokenHeader, withBox, type TestBox } from './server-box.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One request as treq makes it: the Authorization header, a body without Content-Type, nothing else of ours. */
function soledadRequest(box: TestBox, method: string, path: string, auth: string, body?: Buffer | string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: auth };
    const payload = body === undefined ? undefined : Buffer.from(body);
    if (payload) headers['content-length'] = String(payload.length);
    const request = httpRequest(`${box.base}${path}`, { method, headers });
    request.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(payload);
  });
}

function json(answer: Answer): unknown {
  assert.equal(answer.status, 200, `expected exactly 200, got ${answer.status}: ${answer.body.toString()}`);
  return JSON.parse(answer.body.toString());
}

/** Soledad's MX: `Authorization: Token base64("service:token")`. */
const mxAuth = `Token ${Buffer.from(TRUSTED).toString('base64')}`;

/** Python's own struct, with Soledad's format string (no byte-order prefix: native, as Soledad packs it). */
function pythonUnpack(encoded: string): Promise<unknown[]> {
  const script = [
    'import base64, json, struct, sys',
    "raw = base64.urlsafe_b64decode(sys.argv[1])",
    "magic, scheme, method, ts, iv, doc_id, rev, size = struct.Struct('2sbbQ16s255p255pQ').unpack(raw)",
    'print(json.dumps([magic.hex(), scheme, method, doc_id.decode(), rev.decode(), size, len(raw)]))',
  ].join('\n');
  return new Promise((resolve, reject) =>
    execFile('python3', ['-c', script, encoded], (error, stdout, stderr) => (error ? reject(new Error(`${error.message}: ${stderr}`)) : resolve(JSON.parse(stdout) as unknown[]))),
  );
}

/** created_at set so that the listing's order is known without sleeping. */
async function age(box: TestBox, user: string, id: string, secondsAgo: number): Promise<void> {
  await box.db.query(`UPDATE lacre_blobs SET created_at = now() - make_interval(secs => $3) WHERE user_uuid = $1 AND blob_id = $2`, [user, id, secondsAgo]);
}

for (const backend of await databaseBackends()) {
  describe(`Soledad's client against the box (${backend.name})`, () => {
    it("replays the client's sequence: deliver, list PENDING oldest first, reserve, fetch with Tag and preamble, decrypt, PROCESSED, list, count, delete", () =>
      withBox(backend, {}, async (box) => {
        const home = await createGpgHome();
        try {
          const key = await generateKey(home, { email: 'alice@example.org' });
          const alice = await box.createUser('alice@example.org');
          // A second device of the same user: another token, another credential.
          const otherDevice = tokenHeader(alice.id, (await box.users.createToken(alice.id)).token);
          const message = corpus[1]!.raw;
          const sealed = await encryptWithGpg(home, [key.fingerprint], message);
          const ids = ['3f2b9c1e-0d6a-4c1b-9a57-3e8f2d4b6a10', '1a2b3c4d-0d6a-4c1b-9a57-3e8f2d4b6a11', '2c3d4e5f-0d6a-4c1b-9a57-3e8f2d4b6a12'];
          const target = ids[0]!;

          // The MX: a trusted PUT of the armored message, no Content-Type.
          for (const id of ids) {
            const delivered = await soledadRequest(box, 'PUT', `/incoming/${alice.id}/${id}`, mxAuth, sealed);
            assert.equal(delivered.status, 200, delivered.body.toString());
          }
          for (const [index, id] of ids.entries()) await age(box, alice.id, id, 30 - index);

          // IncomingBox._fetch_pending: GET {remote}/{uuid}/?namespace=MX&order_by=%2Bdate&filter_flag=PENDING
          const pending = json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/?namespace=MX&order_by=%2Bdate&filter_flag=PENDING`, alice.auth));
          assert.deepEqual(pending, ids, 'oldest first');

          // fetch_for_processing: POST ["PROCESSING"]; another device asking is refused (and skips it).
          const flagsPath = `/blobs/${alice.id}/${target}?namespace=MX`;
          const reserved = await soledadRequest(box, 'POST', flagsPath, alice.auth, JSON.stringify(['PROCESSING']));
          assert.equal(reserved.status, 200, reserved.body.toString());
          assert.equal(reserved.body.length, 0);
          const refused = await soledadRequest(box, 'POST', flagsPath, otherDevice, JSON.stringify(['PROCESSING']));
          assert.notEqual(refused.status, 200, 'the other device does not get it');
          assert.equal(refused.status, 409);
          const [row] = await box.db.query<{ reserved_by: string }>('SELECT reserved_by FROM lacre_blobs WHERE blob_id = $1', [target]);
          assert.equal(row!.reserved_by, createHash('sha256').update(alice.token).digest('hex'), 'the credential is kept as its hash');

          // BlobManager.get: GET {uuid}/{id}?namespace=MX; it needs a Tag and a preamble before the first space.
          const fetched = await soledadRequest(box, 'GET', flagsPath, alice.auth);
          assert.equal(fetched.status, 200);
          const tag = fetched.headers.tag as string;
          assert.equal(tag.length, 24);
          assert.deepEqual(Buffer.from(tag, 'base64url'), fetched.body.subarray(-16), "the Tag is the stored blob's last 16 bytes");
          assert.ok(tag.endsWith('=='), "padded: Python 2's urlsafe_b64decode insists");
          assert.equal(Number(fetched.headers['content-length']), fetched.body.length);
          const space = fetched.body.indexOf(0x20);
          assert.equal(space, ENCODED_PREAMBLE_LENGTH);
          const encoded = fetched.body.subarray(0, space).toString('ascii');
          assert.match(encoded, /^EzcCAw[A-Za-z0-9_-]+$/, 'url-safe base64 of an external (2), pgp (3) preamble, no padding');
          const raw = Buffer.from(encoded, 'base64url');
          assert.equal(raw.length, PREAMBLE_BYTES);
          const preamble = decodePreamble(raw);
          const payload = fetched.body.subarray(space + 1);
          assert.deepEqual(
            { magic: raw.subarray(0, 2).toString('hex'), scheme: preamble.scheme, method: preamble.method, docId: preamble.docId, rev: preamble.rev, size: preamble.size },
            { magic: '1337', scheme: 2, method: 3, docId: target, rev: '0', size: sealed.length },
          );
          assert.ok(Math.abs(preamble.timestamp - Date.now() / 1000) < 120, 'the delivery time');
          assert.deepEqual(await pythonUnpack(encoded), ['1337', 2, 3, target, '0', sealed.length, PREAMBLE_BYTES], "Python's struct reads it as Soledad does");
          assert.deepEqual(payload, sealed, 'every byte after the first space is what the MX PUT');
          assert.deepEqual(await decrypt(home, payload), message, 'and gpg decrypts it to the delivered message');

          // set_processed: POST ["PROCESSED"], without any reservation header.
          const processed = await soledadRequest(box, 'POST', flagsPath, alice.auth, JSON.stringify(['PROCESSED']));
          assert.equal(processed.status, 200, processed.body.toString());
          assert.equal(processed.body.length, 0);

          // A listing without filter_flag shows it, with its flag.
          assert.deepEqual(json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/?namespace=MX&order_by=%2Bdate`, alice.auth)), ids);
          assert.deepEqual(json(await soledadRequest(box, 'GET', `${flagsPath}&only_flags=True`, alice.auth)), ['PROCESSED']);
          assert.deepEqual(json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/?namespace=MX&order_by=%2Bdate&filter_flag=PENDING`, alice.auth)), ids.slice(1));
          // BlobManager.count: only_count=True.
          assert.deepEqual(json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/?namespace=MX&only_count=True`, alice.auth)), { count: 3 });

          // BlobManager.delete, then the blob is gone.
          const deleted = await soledadRequest(box, 'DELETE', flagsPath, alice.auth);
          assert.equal(deleted.status, 200);
          assert.equal(deleted.body.length, 0);
          assert.equal((await soledadRequest(box, 'GET', flagsPath, alice.auth)).status, 404);
          assert.deepEqual(json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/?namespace=MX&only_count=True`, alice.auth)), { count: 2 });
        } finally {
          await home.remove();
        }
      }));

    it('two devices setting PROCESSING at once: exactly one gets it, every time', () =>
      withBox(backend, { processing_threshold_seconds: 600 }, async (box) => {
        const alice = await box.createUser('alice@example.org');
        const devices = [alice.auth, tokenHeader(alice.id, (await box.users.createToken(alice.id)).token)];
        for (let round = 0; round < 25; round++) {
          const id = `race-${round}`;
          assert.equal((await soledadRequest(box, 'PUT', `/incoming/${alice.id}/${id}`, mxAuth, 'sealed')).status, 200);
          const answers = await Promise.all(devices.map((auth) => soledadRequest(box, 'POST', `/blobs/${alice.id}/${id}?namespace=MX`, auth, '["PROCESSING"]')));
          const statuses = answers.map((answer) => answer.status);
          assert.deepEqual([...statuses].sort(), [200, 409], `round ${round}: ${statuses.join(', ')}`);
          // The winner finishes it; the loser cannot.
          const winner = devices[statuses.indexOf(200)]!;
          const loser = devices[statuses.indexOf(409)]!;
          assert.equal((await soledadRequest(box, 'POST', `/blobs/${alice.id}/${id}?namespace=MX`, loser, '["PROCESSED"]')).status, 409);
          assert.equal((await soledadRequest(box, 'POST', `/blobs/${alice.id}/${id}?namespace=MX`, winner, '["PROCESSED"]')).status, 200);
        }
      }));

    it("a client-set reservation: the same device again is 200; FAILED, PERMANENT and a release only from it; it expires", () =>
      withBox(backend, { processing_threshold_seconds: 1 }, async (box) => {
        const alice = await box.createUser('alice@example.org');
        const other = tokenHeader(alice.id, (await box.users.createToken(alice.id)).token);
        const post = (auth: string, id: string, flags: string[]) => soledadRequest(box, 'POST', `/blobs/${alice.id}/${id}?namespace=MX`, auth, JSON.stringify(flags));
        const flagsOf = async (id: string) => json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/${id}?namespace=MX&only_flags=True`, alice.auth));
        for (const id of ['a', 'b', 'c', 'd']) assert.equal((await soledadRequest(box, 'PUT', `/incoming/${alice.id}/${id}`, mxAuth, id)).status, 200);

        assert.equal((await post(alice.auth, 'a', ['PROCESSED'])).status, 409, 'not reserved: PROCESSED is refused (Soledad would take it)');
        assert.equal((await post(alice.auth, 'a', ['PROCESSING'])).status, 200);
        assert.equal((await post(alice.auth, 'a', ['PROCESSING'])).status, 200, 'the same device again');
        for (const flags of [['PROCESSED'], ['FAILED'], ['FAILED', 'PERMANENT'], ['PENDING']]) {
          assert.equal((await post(other, 'a', flags)).status, 409, `${flags.join(',')} from the other device`);
        }
        assert.deepEqual(await flagsOf('a'), ['PROCESSING']);
        assert.equal((await post(alice.auth, 'a', ['FAILED'])).status, 200);
        assert.deepEqual(await flagsOf('a'), ['FAILED']);
        assert.equal((await post(other, 'a', ['PROCESSING'])).status, 409, 'FAILED is not handed out again');

        assert.equal((await post(alice.auth, 'b', ['PROCESSING'])).status, 200);
        assert.equal((await post(alice.auth, 'b', ['FAILED', 'PERMANENT'])).status, 200);
        assert.deepEqual(await flagsOf('b'), ['FAILED', 'PERMANENT']);

        assert.equal((await post(alice.auth, 'c', ['PROCESSING'])).status, 200);
        assert.equal((await post(alice.auth, 'c', ['PENDING'])).status, 200, 'released');
        assert.equal((await post(other, 'c', ['PROCESSING'])).status, 200, 'and taken by the other device');

        assert.equal((await post(alice.auth, 'd', ['PROCESSING'])).status, 200);
        await new Promise((resolve) => setTimeout(resolve, 1300));
        assert.deepEqual(await flagsOf('d'), ['PENDING'], 'expired');
        assert.equal((await post(alice.auth, 'd', ['PROCESSED'])).status, 409, 'an expired reservation confirms nothing');
        assert.equal((await post(other, 'd', ['PROCESSING'])).status, 200);
        assert.equal((await post(other, 'd', ['PROCESSED'])).status, 200);
        assert.equal((await post(alice.auth, 'absent', ['PROCESSING'])).status, 404);
        assert.equal((await post(alice.auth, 'd', ['SEEN'])).status, 406);
      }));

    it("a LEAP user id (uuid4().hex: 32 digits, no dashes) names the same user in the path and in the credential", () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser('alice@example.org');
        const leapId = alice.id.replaceAll('-', '');
        const leapAuth = tokenHeader(leapId, alice.token);
        assert.equal((await soledadRequest(box, 'PUT', `/incoming/${leapId}/m1`, mxAuth, 'sealed')).status, 200);
        assert.deepEqual(json(await soledadRequest(box, 'GET', `/blobs/${leapId}/?namespace=MX`, leapAuth)), ['m1']);
        assert.deepEqual(json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/?namespace=MX`, leapAuth)), ['m1'], 'either spelling, either place');
        assert.equal((await soledadRequest(box, 'POST', `/blobs/${leapId}/m1?namespace=MX`, leapAuth, '["PROCESSING"]')).status, 200);
        assert.equal((await soledadRequest(box, 'POST', `/blobs/${alice.id}/m1?namespace=MX`, alice.auth, '["PROCESSED"]')).status, 200, 'one credential, whichever spelling reserved');
        const bob = await box.createUser('bob@example.org');
        assert.equal((await soledadRequest(box, 'GET', `/blobs/${leapId}/?namespace=MX`, tokenHeader(leapId, bob.token))).status, 401);
        assert.equal((await soledadRequest(box, 'GET', `/blobs/${leapId.toUpperCase()}/?namespace=MX`, leapAuth)).status, 401, 'only lower case, as LEAP writes it');
      }));

    it('takes every body without a Content-Type, and an MX delivery answers {"success": true}', () =>
      withBox(backend, {}, async (box) => {
        const alice = await box.createUser('alice@example.org');
        const delivered = await soledadRequest(box, 'PUT', `/incoming/${alice.id}/m?namespace=mx`, mxAuth, 'sealed');
        assert.equal(delivered.status, 200);
        assert.match(String(delivered.headers['content-type']), /^application\/json/);
        assert.deepEqual(JSON.parse(delivered.body.toString()), { success: true });
        assert.deepEqual(json(await soledadRequest(box, 'GET', `/blobs/${alice.id}/?namespace=MX`, alice.auth)), ['m'], 'mx on /incoming is MX');
        const uploaded = await soledadRequest(box, 'PUT', `/blobs/${alice.id}/own`, alice.auth, 'EzcBAQ…symkey blob');
        assert.equal(uploaded.status, 200);
        assert.equal(uploaded.body.length, 0, "an upload's 200 is empty, as Soledad's");
        assert.equal((await soledadRequest(box, 'GET', `/blobs/${alice.id}/own`, alice.auth)).body.toString(), 'EzcBAQ…symkey blob', 'the namespace "default"');
        assert.equal((await soledadRequest(box, 'POST', `/blobs/${alice.id}/own`, alice.auth, '["PROCESSING"]')).status, 200);
        assert.equal((await soledadRequest(box, 'POST', `/blobs/${alice.id}/own`, alice.auth, 'not json')).status, 400);
        assert.equal((await soledadRequest(box, 'PUT', `/incoming/${alice.id}/m`, mxAuth, 'again')).status, 409);
      }));
  });
}
