import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Config, ConfigInput } from '../../src/config/schema.js';
import type { Database } from '../../src/db/types.js';
import { createKeyDirectory } from '../../src/keys/directory.js';
import { KeyStore } from '../../src/keys/store.js';
import type { KeyDirectory } from '../../src/keys/types.js';
import { findPackageRoot } from '../../src/util/package-root.js';
import { API_ROUTES } from '../../src/web/api.js';
import { startWebServer, type WebServer } from '../../src/web/server.js';
import { databaseBackends, withDatabase, type TestBackend } from '../helpers/databases.js';
import { createGpgHome, generateExpiredKey, generateKey, revokeKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { lastMailTo, silentLogger, SinkMailbox, tokenIn, webConfig } from './fixtures.js';
import { gpgKeyOf } from './keys.js';

let home: GpgHome;
let sink: SmtpSink;
let alice: GpgKey;
let aliceNew: GpgKey;
let expired: GpgKey;
let revoked: string;
let signOnly: GpgKey;
let weak: string;
let outsider: GpgKey;
let closedPort: number;

before(async () => {
  home = await createGpgHome();
  sink = await SmtpSink.start();
  const gone = await SmtpSink.start();
  closedPort = gone.port;
  await gone.stop();
  alice = await generateKey(home, { email: 'alice@example.org' });
  aliceNew = await generateKey(home, { email: 'alice@example.org' });
  expired = await generateExpiredKey(home, { email: 'old@example.org' });
  revoked = await revokeKey(home, await generateKey(home, { email: 'carol@example.org' }));
  signOnly = await generateKey(home, { email: 'signer@example.org', signOnly: true });
  weak = (await gpgKeyOf(home, 'weak@example.org', 'rsa1024', 'rsa1024')).publicArmored;
  outsider = await generateKey(home, { email: 'bob@elsewhere.org' });
});
after(async () => {
  await sink.stop();
  await home.remove();
});

/** Closed when the test's web server is (before its database). */
const closing: { close(): Promise<void> }[] = [];
const closeAfter = (closable: { close(): Promise<void> }): void => void closing.push(closable);

/** Every code the API answered with, per backend: at the end each must be every code errors.ts declares. */
const seenCodes = new Map<string, Set<string>>();

interface Web {
  url: string;
  server: WebServer;
  db: Database;
  store: KeyStore;
  config: Config;
  mailbox: SinkMailbox;
  advance(ms: number): void;
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; headers: Headers; json: Record<string, unknown> }>;
}

function withWeb(backend: TestBackend, use: (web: Web) => Promise<void>, web: NonNullable<ConfigInput['web']> = {}, keys: NonNullable<ConfigInput['keys']> = {}): Promise<void> {
  return withDatabase(backend, async (db, database) => {
    const config = webConfig(database, { requests_per_ip_per_hour: 1000, mails_per_address_per_hour: 100, ...web }, keys);
    const mailbox = new SinkMailbox(sink, home, config, closedPort);
    let offset = 0;
    const server = await startWebServer({ config, db, mailer: mailbox, logger: silentLogger, clock: () => new Date(Date.now() + offset) });
    const url = `http://127.0.0.1:${server.address.port}`;
    const call: Web['call'] = async (method, path, body, headers = {}) => {
      const response = await fetch(url + path, {
        method,
        headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
      });
      const text = await response.text();
      const isJson = /^application\/json/.test(response.headers.get('content-type') ?? '');
      const json = isJson ? (JSON.parse(text) as Record<string, unknown>) : {};
      if (typeof json.error === 'string') {
        seenCodes.set(backend.name, (seenCodes.get(backend.name) ?? new Set()).add(json.error));
        assert.equal(typeof json.message, 'string');
        assert.notEqual(json.message, '');
      }
      return { status: response.status, headers: response.headers, json };
    };
    try {
      await use({ url, server, db, config, mailbox, store: new KeyStore(db, config.keys), advance: (ms) => (offset += ms), call });
    } finally {
      for (const closable of closing.splice(0)) await closable.close();
      await server.close();
      mailbox.close();
    }
  });
}

/** The confirmation link of the newest mail to `to`, read as its owner would: decrypted with gpg. */
async function linkMailedTo(to: string): Promise<{ token: string; text: string; keyIds: string[] }> {
  const mail = await lastMailTo(sink, home, to);
  return { ...mail, token: tokenIn(mail.text) };
}

/** The fingerprints the directory encrypts to for `address`, once it shows `expected` (NOTIFY takes a moment; 5 s at most). */
async function directoryKeys(directory: KeyDirectory, address: string, expected: string): Promise<string[]> {
  let fingerprints: string[] = [];
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const found = await directory.lookup(address);
    fingerprints = found.kind === 'usable' ? found.keys.map((key) => key.getFingerprint().toUpperCase()) : [];
    if (fingerprints.includes(expected)) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return fingerprints;
}

async function expectError(response: Promise<{ status: number; json: Record<string, unknown>; headers: Headers }>, status: number, code: string): Promise<Headers> {
  const answer = await response;
  assert.deepEqual([answer.status, answer.json.error], [status, code], JSON.stringify(answer.json));
  return answer.headers;
}

for (const backend of await databaseBackends()) {
  describe(`key service API (${backend.name})`, () => {
    it('upload → mail encrypted to the key → link → confirmed; a second upload changes nothing until confirmed', () =>
      withWeb(backend, async ({ call, store, db, config }) => {
        // The filter's own cached directory, as `lacre serve` runs it: it must see each confirmation (NOTIFY), and no pending key.
        const directory = await createKeyDirectory(db, config.keys, silentLogger);
        closeAfter(directory);
        assert.equal((await directory.lookup('alice@example.org')).kind, 'none');
        const upload = await call('POST', '/api/keys', { key: alice.publicArmored, style: 'mime' }, { 'accept-language': 'es-AR, en;q=0.5' });
        assert.equal(upload.status, 202);
        assert.deepEqual(upload.json, { status: 'pending', email: 'alice@example.org', fingerprint: alice.fingerprint });
        const mailed = await linkMailedTo('alice@example.org');
        assert.deepEqual(mailed.keyIds, [alice.encryptionKeyId], 'encrypted to the uploaded key only');
        assert.match(mailed.text, /Para confirmar/, 'in the language the client asked for');
        assert.ok(mailed.text.includes(`https://keys.example.org/confirm/${mailed.token}`));

        const before = await call('GET', '/api/keys/alice@example.org');
        assert.deepEqual([before.status, before.json.status], [200, 'pending']);
        assert.ok((await call('GET', `/confirm/${mailed.token}`)).status < 500);
        assert.equal((await call('GET', '/api/keys/alice@example.org')).json.status, 'pending', 'GET /confirm never changes state');
        assert.equal((await directory.lookup('alice@example.org')).kind, 'none', 'mail is never encrypted to a pending key');

        const confirmed = await call('POST', `/api/confirm/${mailed.token}`);
        assert.deepEqual([confirmed.status, confirmed.json], [200, { status: 'confirmed', action: 'publish', email: 'alice@example.org', fingerprint: alice.fingerprint }]);
        const view = await call('GET', '/api/keys/ALICE%40example.org');
        assert.deepEqual([view.json.status, view.json.fingerprint, view.json.email], ['confirmed', alice.fingerprint, 'alice@example.org']);
        assert.deepEqual(Object.keys(view.json).sort(), ['created', 'email', 'expires', 'fingerprint', 'status']);
        await expectError(call('POST', `/api/confirm/${mailed.token}`), 410, 'token-used');
        assert.deepEqual(await directoryKeys(directory, 'alice@example.org', alice.fingerprint), [alice.fingerprint]);

        assert.equal((await call('POST', '/api/keys', { key: aliceNew.publicArmored, email: 'alice@example.org' })).status, 202);
        const second = await linkMailedTo('alice@example.org');
        assert.deepEqual(second.keyIds, [aliceNew.encryptionKeyId]);
        assert.equal((await call('GET', '/api/keys/alice@example.org')).json.fingerprint, alice.fingerprint, 'the pending upload changes nothing');
        assert.deepEqual((await store.confirmedKeysFor('alice@example.org')).map((row) => row.fingerprint), [alice.fingerprint]);
        assert.deepEqual(await directoryKeys(directory, 'alice@example.org', alice.fingerprint), [alice.fingerprint]);
        await call('POST', `/api/confirm/${second.token}`);
        assert.deepEqual(await directoryKeys(directory, 'alice@example.org', aliceNew.fingerprint), [aliceNew.fingerprint], 'the next message goes to the new key');
        assert.deepEqual(
          (await store.show('alice@example.org')).map((row) => [row.fingerprint, row.status]),
          [[alice.fingerprint, 'disabled'], [aliceNew.fingerprint, 'confirmed']],
        );

        const again = await call('POST', '/api/keys', { key: aliceNew.publicArmored });
        assert.deepEqual([again.status, again.json.status], [200, 'confirmed'], 're-upload of the confirmed key: no new confirmation');
      }));

    it('deletes by DELETE or POST …/delete only after the mailed link is confirmed', () =>
      withWeb(backend, async ({ call }) => {
        await expectError(call('DELETE', '/api/keys/alice@example.org'), 404, 'no-key');
        await call('POST', '/api/keys', { key: alice.publicArmored });
        await call('POST', `/api/confirm/${(await linkMailedTo('alice@example.org')).token}`);
        for (const request of [() => call('DELETE', '/api/keys/alice@example.org'), () => call('POST', '/api/keys/alice@example.org/delete')]) {
          const asked = await request();
          assert.deepEqual([asked.status, asked.json], [202, { status: 'pending', email: 'alice@example.org', fingerprint: alice.fingerprint }]);
        }
        const mail = await linkMailedTo('alice@example.org');
        assert.deepEqual(mail.keyIds, [alice.encryptionKeyId], 'encrypted to the current key');
        assert.equal((await call('GET', '/api/keys/alice@example.org')).json.status, 'confirmed');
        const done = await call('POST', `/api/confirm/${mail.token}`);
        assert.deepEqual([done.status, done.json.status], [200, 'deleted']);
        assert.equal((await call('GET', '/api/keys/alice@example.org')).json.status, 'none');
      }));

    it('answers each bad upload with its stable code and a translated message', () =>
      withWeb(
        backend,
        async ({ call }) => {
          const upload = (key: string, email?: string) => call('POST', '/api/keys', { key, ...(email ? { email } : {}) });
          await expectError(upload('hello'), 400, 'not-a-key');
          await expectError(upload(alice.secretArmored), 400, 'secret-key');
          await expectError(upload(expired.publicArmored), 400, 'expired');
          await expectError(upload(revoked), 400, 'revoked');
          await expectError(upload(signOnly.publicArmored), 400, 'no-encryption-subkey');
          await expectError(upload(weak), 400, 'weak-algorithm');
          await expectError(upload(alice.publicArmored, 'mallory@example.org'), 400, 'address-not-in-key');
          await expectError(upload(outsider.publicArmored), 400, 'domain-not-served');
          await expectError(upload(alice.publicArmored, 'not an address'), 400, 'invalid-address');
          await expectError(upload('x'.repeat(5000)), 413, 'too-large');
          await expectError(call('POST', '/api/keys', '{"key": '), 400, 'invalid-request');
          await expectError(call('POST', '/api/keys', { key: alice.publicArmored, colour: 'red' }), 400, 'invalid-request');
          await expectError(call('POST', '/api/keys', { key: alice.publicArmored, style: 'fancy' }), 400, 'invalid-request');
          await expectError(call('POST', '/api/keys', { key: 'k'.repeat(65 * 1024) }), 413, 'too-large');
          await expectError(call('GET', '/api/keys/nope'), 400, 'invalid-address');
          await expectError(call('PUT', '/api/keys'), 405, 'method-not-allowed');
          await expectError(call('GET', '/api/nothing'), 404, 'not-found');
          await expectError(call('POST', '/api/confirm/not*a*token'), 404, 'token-unknown');
          await expectError(call('POST', `/api/confirm/${'A'.repeat(43)}`), 404, 'token-unknown');

          const spanish = await call('POST', '/api/keys?lang=es', { key: 'hello' });
          assert.equal(spanish.headers.get('content-language'), 'es');
          assert.notEqual(spanish.json.message, (await call('POST', '/api/keys', { key: 'hello' })).json.message, 'the message is translated');
        },
        {},
        { max_key_bytes: 4096 },
      ));

    it('expires links by the clock', () =>
      withWeb(backend, async ({ call, advance }) => {
        await call('POST', '/api/keys', { key: alice.publicArmored });
        const { token } = await linkMailedTo('alice@example.org');
        advance(49 * 3_600_000);
        await expectError(call('POST', `/api/confirm/${token}`), 410, 'token-expired');
      }));

    it('limits mails per address (429 + Retry-After) and says 503 mail-not-sent when the relay is down, leaving nothing behind', () =>
      withWeb(
        backend,
        async ({ call, db, mailbox }) => {
          assert.equal((await call('POST', '/api/keys', { key: alice.publicArmored })).status, 202);
          const limited = await expectError(call('POST', '/api/keys', { key: aliceNew.publicArmored, email: 'alice@example.org' }), 429, 'too-many-requests');
          assert.ok(Number(limited.get('retry-after')) > 3500);

          mailbox.failing = true;
          await expectError(call('POST', '/api/keys', { key: (await generateKey(home, { email: 'dan@example.org' })).publicArmored }), 503, 'mail-not-sent');
          const left = await db.query<{ email: string }>('select email from lacre_identities order by email');
          assert.deepEqual(left.map((row) => row.email), ['alice@example.org']);
        },
        { mails_per_address_per_hour: 1 },
      ));

    it('limits state-changing requests per client address, believing X-Forwarded-For only from trust_proxy', async () => {
      await withWeb(
        backend,
        async ({ call }) => {
          for (let i = 0; i < 2; i += 1) await call('POST', `/api/confirm/${'B'.repeat(43)}`, undefined, { 'x-forwarded-for': `203.0.113.${i}` });
          assert.equal((await call('GET', '/api/keys/alice@example.org')).status, 200, 'reading is not limited');
          const headers = await expectError(call('POST', '/api/keys', { key: 'x' }, { 'x-forwarded-for': '203.0.113.9' }), 429, 'too-many-requests');
          assert.ok(Number(headers.get('retry-after')) > 3500);
          await expectError(call('DELETE', '/api/keys/alice@example.org'), 429, 'too-many-requests');
        },
        { requests_per_ip_per_hour: 2 },
      );
      await withWeb(
        backend,
        async ({ call }) => {
          for (let i = 0; i < 4; i += 1) {
            await expectError(call('POST', `/api/confirm/${'B'.repeat(43)}`, undefined, { 'x-forwarded-for': `203.0.113.${i}` }), 404, 'token-unknown');
          }
          await expectError(call('POST', `/api/confirm/${'B'.repeat(43)}`, undefined, { 'x-forwarded-for': '203.0.113.1' }), 404, 'token-unknown');
          await expectError(call('POST', `/api/confirm/${'B'.repeat(43)}`, undefined, { 'x-forwarded-for': '203.0.113.1' }), 429, 'too-many-requests');
        },
        { requests_per_ip_per_hour: 2, trust_proxy: ['127.0.0.1'] },
      );
    });

    it('answers 503 unavailable when the database is gone', () =>
      withWeb(backend, async ({ call, db }) => {
        await db.close();
        await expectError(call('GET', '/api/keys/alice@example.org'), 503, 'unavailable');
      }));
  });
}

describe('the API as documented', () => {
  const root = findPackageRoot();

  const declared = [...readFileSync(join(root, 'src/web/errors.ts'), 'utf8').matchAll(/^\s+\| '([a-z-]+)';?$/gm)].map((match) => match[1]!);

  it('answered every error code errors.ts declares, on every backend', async () => {
    assert.ok(declared.length >= 20);
    for (const backend of await databaseBackends()) {
      const seen = seenCodes.get(backend.name) ?? new Set<string>();
      assert.deepEqual([...declared].filter((code) => !seen.has(code)).sort(), [], backend.name);
    }
  });

  it('docs/openapi.yaml (JSON, itself YAML) names every route of api.ts, and no other', () => {
    const spec = JSON.parse(readFileSync(join(root, 'docs/openapi.yaml'), 'utf8')) as {
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
      components: { schemas: { Error: { properties: { error: { enum: string[] } } } } };
    };
    assert.match(spec.openapi, /^3\.1\./);
    assert.deepEqual([...spec.components.schemas.Error.properties.error.enum].sort(), [...declared].sort(), 'every code is documented');
    const documented = Object.entries(spec.paths)
      .filter(([path]) => path.startsWith('/api/'))
      .flatMap(([path, methods]) => Object.keys(methods).filter((method) => method !== 'parameters').map((method) => `${method} ${path}`));
    assert.deepEqual(documented.sort(), API_ROUTES.map(([method, path]) => `${method} ${path}`).sort());
  });
});
