/**
 * `lacre inbox import-soledad DIR`: a Soledad server's blob directory (its layout as Soledad's fs_backend writes
 * it) brought into the box, then read back as Soledad's client reads it.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { configSchema } from '../../src/config/schema.js';
import { openDatabase } from '../../src/db/open.js';
import { createLogger } from '../../src/log/logger.js';
import { startIncomingBoxServer } from '../../src/box/server.js';
import { BoxUserStore } from '../../src/box/users.js';
import { incomingFraming, tagOf } from '../../src/soledad/preamble.js';
import { databaseBackends, databaseEnv, openTestDatabase } from '../helpers/databases.js';
import { runLacre } from '../helpers/lacre.js';
import { tokenHeader, TRUSTED } from './server-box.js';

const ALICE = '5f2b9c1e-0d6a-4c1b-9a57-3e8f2d4b6a10';
const BOB = '6a3c0d2f-1e7b-4d2c-8b68-4f9e3e5c7b21';
const LEAP_USER = '0123456789abcdef0123456789abcdef';
const LEAP_USER_CANONICAL = '01234567-89ab-cdef-0123-456789abcdef';

/** Writes one blob where Soledad's fs_backend keeps it: {root}/{user}/{namespace}/{id[0]}/{id[0:3]}/{id[0:6]}/{id}. */
function soledadBlob(root: string, user: string, namespace: string, id: string, bytes: Buffer | undefined, options: { flags?: string[]; minutesAgo?: number } = {}): Buffer | undefined {
  const dir = join(root, user, namespace, id[0]!, id.slice(0, 3), id.slice(0, 6));
  mkdirSync(dir, { recursive: true });
  const path = join(dir, id);
  if (bytes === undefined) {
    writeFileSync(`${path}.deleted`, '');
    return undefined;
  }
  writeFileSync(path, bytes);
  if (options.flags) writeFileSync(`${path}.flags`, JSON.stringify(options.flags));
  const when = new Date(Date.now() - (options.minutesAgo ?? 0) * 60_000);
  utimesSync(path, when, when);
  return bytes;
}

/** What Soledad's server stores for a delivery: the framing, then the armored message. */
function delivered(id: string, text: string): Buffer {
  const payload = Buffer.from(`-----BEGIN PGP MESSAGE-----\n\n${text}\n-----END PGP MESSAGE-----\n`);
  return Buffer.concat([incomingFraming(id, payload.length, new Date()), payload]);
}

for (const backend of await databaseBackends()) {
  describe(`lacre inbox import-soledad (${backend.name})`, () => {
    it("brings a Soledad blob directory in: bytes unchanged, flags as states, arrival order; a second run changes nothing", { timeout: 120_000 }, async () => {
      const work = mkdtempSync(join(tmpdir(), 'lacre-import-soledad-'));
      const source = join(work, 'soledad-blobs');
      const blobsPath = join(work, 'blobs');
      const opened = await openTestDatabase(backend);
      let db = opened.db;
      try {
        const users = new BoxUserStore(db);
        await users.add('alice@example.org', ALICE);
        const { token } = await users.createToken(ALICE);
        const blobs = {
          oldest: soledadBlob(source, ALICE, 'MX', 'aaa111', delivered('aaa111', 'first'), { flags: ['PENDING'], minutesAgo: 30 })!,
          second: soledadBlob(source, ALICE, 'MX', 'bbb222', delivered('bbb222', 'second'), { flags: ['PENDING'], minutesAgo: 20 })!,
          processed: soledadBlob(source, ALICE, 'MX', 'ccc333', delivered('ccc333', 'done'), { flags: ['PROCESSED'], minutesAgo: 25 })!,
          reserved: soledadBlob(source, ALICE, 'MX', 'eee555', delivered('eee555', 'taken'), { flags: ['PROCESSING'], minutesAgo: 10 })!,
          own: soledadBlob(source, ALICE, 'default', 'fff666', Buffer.from('EzcBAQ a client-encrypted blob'))!,
          bobs: soledadBlob(source, BOB, 'MX', 'ggg777', delivered('ggg777', 'for bob'), { flags: ['PENDING'] })!,
        };
        soledadBlob(source, ALICE, 'MX', 'ddd444', undefined);
        symlinkSync('/nonexistent', join(source, ALICE, 'MX', 'a', 'aaa', 'aaa111', 'aaa111.lock'));
        // LEAP names users uuid4().hex: the box holds them under the canonical UUID.
        const leapBlob = soledadBlob(source, LEAP_USER, 'MX', 'hhh888', delivered('hhh888', 'for a LEAP user'), { flags: ['PENDING'] })!;
        mkdirSync(join(source, 'not-a-user', 'MX'), { recursive: true });

        const env = { ...databaseEnv(opened.config), LACRE_INCOMING_BOX_BLOBS_PATH: blobsPath, LACRE_LOG_LEVEL: 'warn' };
        const importOnce = async () => {
          if (backend.name === 'embedded') await db.close(); // one process at a time: the command's
          const run = await runLacre(['inbox', 'import-soledad', source], env);
          if (backend.name === 'embedded') db = await openDatabase(opened.config);
          return { code: run.code, out: run.stdout.toString('utf8'), err: run.stderr };
        };
        const first = await importOnce();
        assert.equal(first.out, 'imported 7, already here 0, deleted in Soledad 1\n', first.err);
        assert.match(first.err, /skipped not-a-user: a user id is a lower-case UUID/);
        assert.match(first.err, new RegExp(`user ${LEAP_USER_CANONICAL} has no address or token here`));
        const [leapRow] = await db.query<{ size: string }>(`SELECT size::text FROM lacre_blobs WHERE user_uuid = $1 AND blob_id = 'hhh888'`, [LEAP_USER_CANONICAL]);
        assert.equal(Number(leapRow?.size), leapBlob.length);
        assert.match(first.err, new RegExp(`user ${BOB} has no address or token here`));
        assert.equal(first.code, 1, 'something was left behind');

        const config = configSchema.parse({ incoming_box: { listen: '127.0.0.1:0', blobs_path: blobsPath, trusted_tokens: [TRUSTED] } });
        const server = await startIncomingBoxServer(config, db, createLogger('silent'));
        try {
          const auth = tokenHeader(ALICE, token);
          const get = (path: string) => fetch(`http://127.0.0.1:${server.port}/blobs/${ALICE}/${path}`, { headers: { authorization: auth } });
          assert.deepEqual(await (await get('?namespace=MX&order_by=%2Bdate&filter_flag=PENDING')).json(), ['aaa111', 'bbb222', 'eee555'], 'oldest first, by mtime; PROCESSING is no one\u2019s here');
          assert.deepEqual(await (await get('?namespace=MX&order_by=%2Bdate')).json(), ['aaa111', 'ccc333', 'bbb222', 'eee555']);
          assert.deepEqual(await (await get('ccc333?namespace=MX&only_flags=True')).json(), ['PROCESSED']);
          const oldest = await get('aaa111?namespace=MX');
          assert.equal(oldest.headers.get('x-incoming-framing'), 'soledad');
          assert.equal(oldest.headers.get('x-incoming-scheme'), 'openpgp');
          assert.equal(oldest.headers.get('tag'), tagOf(blobs.oldest.subarray(-16)));
          assert.deepEqual(Buffer.from(await oldest.arrayBuffer()), blobs.oldest, 'byte for byte');
          const own = await get('fff666');
          assert.equal(own.headers.get('x-incoming-framing'), null);
          assert.deepEqual(Buffer.from(await own.arrayBuffer()), blobs.own);
          assert.equal((await get('ddd444?namespace=MX')).status, 404);
          const whileServing = await runLacre(['inbox', 'import-soledad', source], env);
          assert.notEqual(whileServing.code, 0);
          assert.match(whileServing.stderr, /in use by process/, 'not beside a running box');
          const [usage] = await db.query<{ used_bytes: number }>('SELECT used_bytes FROM lacre_box_usage WHERE user_uuid = $1', [ALICE]);
          const aliceBytes = [blobs.oldest, blobs.second, blobs.processed, blobs.reserved, blobs.own].reduce((sum, b) => sum + b.length, 0);
          assert.equal(Number(usage!.used_bytes), aliceBytes, 'the quota counts them');
        } finally {
          await server.close();
        }
        assert.deepEqual(readFileSync(join(source, BOB, 'MX', 'g', 'ggg', 'ggg777', 'ggg777')), blobs.bobs, 'the source is left as it was');

        const again = await importOnce();
        assert.equal(again.out, 'imported 0, already here 7, deleted in Soledad 1\n', again.err);
      } finally {
        if (db !== opened.db) await db.close();
        await opened.cleanup();
        rmSync(work, { recursive: true, force: true });
      }
    });
  });
}
