/**
 * The admin socket on its own: file modes whatever the umask, a stale socket cleared and a live one refused, and
 * every route of the scripts' JSON API (docs/admin-socket.md) on both backends, refusals included.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AdminClient } from '../../src/admin/client.js';
import { startAdminSocket, type AdminSocket } from '../../src/admin/server.js';
import { loadConfig } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import type { Database } from '../../src/db/types.js';
import { createLogger } from '../../src/log/logger.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, gpgOk, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { leaveStaleSocket } from '../helpers/stale-socket.js';

let home: GpgHome;
let dir: string;
let alice: GpgKey;
let aliceNew: GpgKey;
let bob: GpgKey;

before(async () => {
  home = await createGpgHome();
  dir = await mkdtemp(join(tmpdir(), 'lacre-admin-'));
  alice = await generateKey(home, { email: 'alice@example.org' });
  aliceNew = await generateKey(home, { email: 'alice@example.org', name: 'Alice New' });
  bob = await generateKey(home, { email: 'bob@example.org' });
});
after(async () => {
  await home.remove();
  await rm(dir, { recursive: true, force: true });
});

const silent = createLogger('silent');

function start(db: Database, socket: string): Promise<AdminSocket | undefined> {
  return startAdminSocket(configSchema.parse({ admin: { socket } }), db, silent);
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** One request as a script would send it: raw HTTP on the socket, JSON in and out. */
function call(socketPath: string, method: string, path: string, body?: unknown): Promise<Answer> {
  const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const outgoing = request(
      { socketPath, method, path, headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {} },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          assert.match(String(response.headers['content-type']), /^application\/json/);
          resolve({ status: response.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
        });
      },
    );
    outgoing.on('error', reject);
    outgoing.end(payload);
  });
}

function statuses(answer: Answer): string[] {
  return (answer.body.keys as { email: string; fingerprint: string; status: string }[]).map((key) => `${key.email} ${key.fingerprint.slice(0, 8)} ${key.status}`);
}

describe('admin socket file', () => {
  it('is mode 0600 under umask 000, in a directory created 0700', async () => {
    const socket = join(dir, 'made', 'here', 'admin.sock');
    const previous = process.umask(0o000);
    let admin: AdminSocket | undefined;
    try {
      await withDatabase({ name: 'embedded' }, async (db) => {
        admin = await start(db, socket);
        assert.equal((await stat(socket)).mode & 0o777, 0o600);
        assert.ok((await stat(socket)).isSocket());
        assert.equal((await stat(join(dir, 'made', 'here'))).mode & 0o777, 0o700);
        assert.equal((await stat(join(dir, 'made'))).mode & 0o777, 0o700);
        await admin!.close();
        await assert.rejects(stat(socket), { code: 'ENOENT' }, 'close removes the socket file');
      });
    } finally {
      process.umask(previous);
    }
  });

  it('removes a stale socket at start, refuses while another service answers, and leaves other files alone', () =>
    withDatabase({ name: 'embedded' }, async (db) => {
      const socket = join(dir, 'stale.sock');
      await leaveStaleSocket(socket);
      assert.ok((await stat(socket)).isSocket());
      const first = (await start(db, socket))!;
      try {
        assert.equal((await call(socket, 'GET', '/')).body.service, 'lacre-admin');
        await assert.rejects(start(db, socket), (error: Error) => {
          assert.match(error.message, /admin\.socket .*stale\.sock: another lacre serve answers there/);
          return true;
        });
        assert.equal((await call(socket, 'GET', '/')).status, 200, 'the refused start left the live socket alone');
      } finally {
        await first.close();
      }
      const plainFile = join(dir, 'not-a-socket');
      await writeFile(plainFile, 'mine');
      await assert.rejects(start(db, plainFile), /exists and is not a socket/);
      assert.equal((await stat(plainFile)).size, 4);
      assert.equal(await start(db, ''), undefined, '"" is off');
      assert.equal(await start(db, 'off'), undefined, '"off" is off');
      assert.equal(loadConfig({ env: { LACRE_ADMIN_SOCKET: 'off' } }).admin.socket, '', 'the environment can turn it off');
      await assert.rejects(start(db, join(dir, 'x'.repeat(120))), /a Unix socket path may be at most 107 bytes long/);
    }));
});

for (const backend of await databaseBackends()) {
  describe(`admin socket JSON API (${backend.name})`, () => {
    it('imports (armored and base64 of binary), lists, shows, disables, restores, lists pending and removes', () =>
      withDatabase(backend, async (db) => {
        const socket = join(dir, `api-${backend.name}.sock`);
        const admin = (await start(db, socket))!;
        try {
          const armored = await call(socket, 'POST', '/keys', { armored: alice.publicArmored });
          assert.equal(armored.status, 200);
          assert.deepEqual(
            (armored.body.outcomes as { kind: string; fingerprint: string; emails: string[] }[]).map((o) => [o.kind, o.fingerprint, o.emails]),
            [['imported', alice.fingerprint, ['alice@example.org']]],
          );
          const binary = (await gpgOk(home, ['--export', bob.fingerprint])).toString('base64');
          const fromBinary = await call(socket, 'POST', '/keys', { base64: binary, emails: ['Robert@Example.org'], style: 'inline' });
          assert.deepEqual((fromBinary.body.outcomes as { emails: string[] }[])[0]!.emails, ['Robert@example.org']);
          const pendingUpload = await call(socket, 'POST', '/keys', { armored: aliceNew.publicArmored, status: 'pending' });
          assert.equal((pendingUpload.body.outcomes as { kind: string }[])[0]!.kind, 'imported');

          assert.deepEqual(statuses(await call(socket, 'GET', '/keys')), [
            `alice@example.org ${alice.fingerprint.slice(0, 8)} confirmed`,
            `alice@example.org ${aliceNew.fingerprint.slice(0, 8)} pending`,
            `Robert@example.org ${bob.fingerprint.slice(0, 8)} confirmed`,
          ]);
          assert.deepEqual(statuses(await call(socket, 'GET', '/pending')), [`alice@example.org ${aliceNew.fingerprint.slice(0, 8)} pending`]);
          const shown = await call(socket, 'GET', `/keys/${encodeURIComponent('ROBERT@example.org')}`);
          const [robert] = shown.body.keys as { style: string; usable: boolean; userIds: string[] }[];
          assert.equal(robert!.style, 'inline');
          assert.equal(robert!.usable, true);
          assert.deepEqual(robert!.userIds, ['bob <bob@example.org>']);

          // A key made the address's key again disables the one in between, as a confirmed upload would.
          assert.deepEqual((await call(socket, 'POST', `/keys/${alice.fingerprint}/disable`, {})).body, { disabled: 1 });
          await call(socket, 'POST', '/keys', { armored: aliceNew.publicArmored, status: 'confirmed' });
          assert.deepEqual((await call(socket, 'POST', `/keys/${alice.fingerprint}/restore`, { address: 'Alice@example.org' })).body, {
            fingerprint: alice.fingerprint,
            emails: ['alice@example.org'],
            disabled: 1,
          });
          assert.deepEqual(statuses(await call(socket, 'GET', '/keys/alice@example.org')), [
            `alice@example.org ${alice.fingerprint.slice(0, 8)} confirmed`,
            `alice@example.org ${aliceNew.fingerprint.slice(0, 8)} disabled`,
          ]);
          assert.deepEqual(statuses(await call(socket, 'GET', '/pending')), []);

          // By fingerprint, without an address: every address the key is stored for.
          await call(socket, 'POST', '/keys', { armored: bob.publicArmored });
          assert.deepEqual((await call(socket, 'POST', `/keys/${bob.fingerprint}/disable`, {})).body, { disabled: 2 });
          assert.deepEqual((await call(socket, 'POST', `/keys/${bob.fingerprint}/restore`, {})).body, {
            fingerprint: bob.fingerprint,
            emails: ['bob@example.org', 'Robert@example.org'],
            disabled: 0,
          });
          assert.deepEqual((await call(socket, 'DELETE', `/keys/${encodeURIComponent('bob@example.org')}`)).body, { removed: 1 });
          assert.deepEqual((await call(socket, 'DELETE', `/keys/${encodeURIComponent('robert@example.org')}`)).body, { removed: 1 });
          assert.deepEqual((await call(socket, 'DELETE', `/keys/${aliceNew.fingerprint}`)).body, { removed: 1 });
          assert.deepEqual(statuses(await call(socket, 'GET', '/keys')), [`alice@example.org ${alice.fingerprint.slice(0, 8)} confirmed`]);
        } finally {
          await admin.close();
        }
      }));

    it('answers every refusal with its code and status', () =>
      withDatabase(backend, async (db) => {
        const socket = join(dir, `refusals-${backend.name}.sock`);
        const admin = (await start(db, socket))!;
        try {
          const refusals: [string, string, unknown, number, string][] = [
            ['POST', '/keys', {}, 400, 'invalid-request'],
            ['POST', '/keys', { armored: 'x', base64: 'eA==' }, 400, 'invalid-request'],
            ['POST', '/keys', { base64: 'not base64!' }, 400, 'invalid-request'],
            ['POST', '/keys', { armored: 'x', surprise: true }, 400, 'invalid-request'],
            ['POST', '/keys', { armored: 'x', style: 'html' }, 400, 'invalid-request'],
            ['POST', '/keys', '{not json', 400, 'invalid-request'],
            ['POST', '/keys', { armored: 'A'.repeat(2 * 1024 * 1024) }, 413, 'too-large'],
            ['GET', '/keys/not-an-address', undefined, 400, 'invalid-address'],
            ['GET', '/keys/nobody@example.org', undefined, 404, 'no-key'],
            ['POST', '/keys/nobody@example.org/disable', {}, 404, 'no-key'],
            ['POST', `/keys/${alice.fingerprint}/restore`, {}, 404, 'no-key'],
            ['POST', '/keys/alice@example.org/restore', {}, 422, 'key-rejected'],
            ['DELETE', '/keys/nobody@example.org', undefined, 404, 'no-key'],
            ['GET', '/nothing-here', undefined, 404, 'not-found'],
          ];
          for (const [method, path, body, status, code] of refusals) {
            const answer = await call(socket, method, path, body);
            assert.deepEqual([answer.status, answer.body.error], [status, code], `${method} ${path} ${JSON.stringify(body)?.slice(0, 60)}`);
            assert.equal(typeof answer.body.message, 'string');
          }
          // An import the store refuses is an outcome per key, not a refusal of the request.
          const refused = await call(socket, 'POST', '/keys', { armored: 'not a key' });
          assert.equal(refused.status, 200);
          assert.equal((refused.body.outcomes as { kind: string }[])[0]!.kind, 'refused');

          // The client turns each code back into the typed refusal.
          const client = (await AdminClient.connect(socket))!;
          await assert.rejects(client.show('nobody@example.org'), { name: 'AdminRefusal', code: 'no-key', message: 'no keys for nobody@example.org' });
        } finally {
          await admin.close();
        }
      }));
  });
}
