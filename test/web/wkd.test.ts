import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { configSchema, type Config } from '../../src/config/schema.js';
import type { Database } from '../../src/db/types.js';
import { createHttpStack, type HttpApp } from '../../src/http/stack.js';
import { KeyStore } from '../../src/keys/store.js';
import { createLogger } from '../../src/log/logger.js';
import { wkdHash, zbase32 } from '../../src/web/wkd-format.js';
import { KeyService } from '../../src/web/service.js';
import { registerWkdRoutes } from '../../src/web/wkd.js';
import { createSubmissionKey, writeSubmissionKey } from '../../src/web/wks-key.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { createGpgHome, exportPublicKey, generateKey, gpgOk, type GpgHome, type GpgKey } from '../helpers/gpg.js';

const WKS_CLIENT = '/usr/lib/gnupg/gpg-wks-client';
const run = promisify(execFile);

async function gpgWkdHash(address: string): Promise<string> {
  const { stdout } = await run(WKS_CLIENT, ['--print-wkd-hash', address]);
  return stdout.split(' ')[0]!;
}

describe('WKD hash', () => {
  test('z-base-32 of known bytes', () => {
    assert.equal(zbase32(new Uint8Array([])), '');
    assert.equal(zbase32(new Uint8Array([0xf0, 0xbf, 0xc7])), '6n9hq'); // RFC 6189 test vector from zbase32 spec
  });

  for (const address of ['alice@example.org', 'Alice.Smith@Example.ORG', 'JOE.DOE@example.org', 'x+tag@example.org', 'Ärger.Ö@example.org', 'o\'neil@example.org']) {
    test(`equals gpg-wks-client --print-wkd-hash for ${address}`, async () => {
      const local = address.slice(0, address.lastIndexOf('@'));
      assert.equal(wkdHash(local), await gpgWkdHash(address));
    });
  }
});

interface Fixture {
  home: GpgHome;
  alice: GpgKey;
  aliceArmored: string;
  carol: GpgKey;
  wksKeyPath: string;
  wksFingerprint: string;
  dave: GpgKey;
  erin: GpgKey;
}

const SUBMISSION = 'key-submission@example.org';

function wkdConfig(wksKeyPath: string): Config {
  return configSchema.parse({
    keys: { domains: ['example.org'] },
    web: { wkd: true, sender: 'keys@example.org', wks_submission_address: SUBMISSION, wks_key_path: wksKeyPath },
  });
}

async function wkdApp(db: Database, config: Config): Promise<HttpApp> {
  const logger = createLogger('silent');
  const app = createHttpStack({ logger });
  // The routes only read; the mailer is never reached.
  const service = new KeyService({ db, config, logger, mailer: { send: async () => undefined } });
  registerWkdRoutes(app, { config, logger, service });
  await app.ready();
  return app;
}

async function uidsSeenByGpg(body: Buffer): Promise<string[]> {
  const home = await createGpgHome();
  try {
    await gpgOk(home, ['--batch', '--import'], body);
    const listing = (await gpgOk(home, ['--with-colons', '--list-keys'])).toString('utf8');
    return listing.split('\n').filter((line) => line.startsWith('uid:')).map((line) => line.split(':')[9]!);
  } finally {
    await home.remove();
  }
}

describe('WKD routes', () => {
  let fixture: Fixture;

  before(async () => {
    const home = await createGpgHome();
    const alice = await generateKey(home, { email: 'Alice.Smith@example.org', name: 'Alice' });
    // A second address in the same key: WKD must not publish it beside the first.
    await gpgOk(home, ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-add-uid', alice.fingerprint, 'Alice at home <alice@elsewhere.example>']);
    const aliceArmored = await exportPublicKey(home, alice.fingerprint);
    const carol = await generateKey(home, { email: 'carol@example.org' });
    const dave = await generateKey(home, { email: 'dave@example.org' });
    const erin = await generateKey(home, { email: 'erin@example.net' });
    const wksKeyPath = join(home.dir, 'wks', 'key.asc');
    const submission = await createSubmissionKey(SUBMISSION);
    await writeSubmissionKey(wksKeyPath, submission.armored, { force: false });
    fixture = { home, alice, aliceArmored, carol, dave, erin, wksKeyPath, wksFingerprint: submission.fingerprint };
  });
  after(() => fixture.home.remove());

  test('with no submission address: no submission-address file, and the key file is not needed', async () => {
    const backend = (await databaseBackends())[0]!;
    await withDatabase(backend, async (db) => {
      const config = configSchema.parse({ keys: { domains: ['example.org'] }, web: { wkd: true, wks_key_path: '/nonexistent/wks.asc' } });
      const app = await wkdApp(db, config);
      try {
        assert.equal((await app.inject({ url: '/.well-known/openpgpkey/example.org/submission-address' })).statusCode, 404);
        assert.equal((await app.inject({ url: '/.well-known/openpgpkey/example.org/policy' })).statusCode, 200);
        const hash = await gpgWkdHash(SUBMISSION);
        assert.equal((await app.inject({ url: `/.well-known/openpgpkey/example.org/hu/${hash}` })).statusCode, 404);
      } finally {
        await app.close();
      }
    });
  });

  test('serves confirmed keys only, one user ID, both forms, on every backend', async (t) => {
    for (const backend of await databaseBackends()) {
      await t.test(backend.name, () =>
        withDatabase(backend, async (db) => {
          const store = new KeyStore(db, { local_part_case_sensitive: false });
          await store.importKey(fixture.aliceArmored, { emails: ['Alice.Smith@example.org'] });
          await store.importKey(fixture.carol.publicArmored, { status: 'pending' });
          await store.importKey(fixture.dave.publicArmored);
          await db.query(`update lacre_keys set status = 'disabled' where email = 'dave@example.org'`);
          await store.importKey(fixture.erin.publicArmored);
          const app = await wkdApp(db, wkdConfig(fixture.wksKeyPath));
          try {
            await checkServed(app, fixture);
          } finally {
            await app.close();
          }
        }),
      );
    }
  });
});

async function checkServed(app: HttpApp, fixture: Fixture): Promise<void> {
  const aliceHash = await gpgWkdHash('Alice.Smith@example.org');
  const advanced = await app.inject({ url: `/.well-known/openpgpkey/example.org/hu/${aliceHash}?l=Alice.Smith`, headers: { host: 'openpgpkey.example.org' } });
  const direct = await app.inject({ url: `/.well-known/openpgpkey/hu/${aliceHash}?l=Alice.Smith`, headers: { host: 'Example.ORG' } });
  for (const [name, response] of [['advanced', advanced], ['direct', direct]] as const) {
    assert.equal(response.statusCode, 200, name);
    assert.equal(response.headers['content-type'], 'application/octet-stream', name);
    assert.equal(response.headers['access-control-allow-origin'], '*', name);
    assert.notEqual(response.rawPayload[0], '-'.charCodeAt(0), `${name}: binary, not armored`);
    assert.deepEqual(await uidsSeenByGpg(response.rawPayload), ['Alice <Alice.Smith@example.org>'], name);
  }

  const head = await app.inject({ method: 'HEAD', url: `/.well-known/openpgpkey/example.org/hu/${aliceHash}` });
  assert.equal(head.statusCode, 200, 'HEAD is answered (the draft requires it)');
  assert.equal(head.headers['content-type'], 'application/octet-stream');
  // With ?l= only that address is read (any case, as the hash lower-cases it); an l that is not the hash's is a 404.
  assert.equal((await app.inject({ url: `/.well-known/openpgpkey/example.org/hu/${aliceHash}?l=alice.smith` })).statusCode, 200);
  assert.equal((await app.inject({ url: `/.well-known/openpgpkey/example.org/hu/${aliceHash}?l=carol` })).statusCode, 404);

  for (const address of ['carol@example.org', 'dave@example.org', 'nobody@example.org']) {
    const hash = await gpgWkdHash(address);
    const response = await app.inject({ url: `/.well-known/openpgpkey/example.org/hu/${hash}` });
    assert.equal(response.statusCode, 404, `${address} is not served`);
  }
  // Erin's key is confirmed, but example.net is not one of keys.domains.
  const erinHash = await gpgWkdHash('erin@example.net');
  assert.equal((await app.inject({ url: `/.well-known/openpgpkey/example.net/hu/${erinHash}` })).statusCode, 404);
  assert.equal((await app.inject({ url: `/.well-known/openpgpkey/hu/${erinHash}`, headers: { host: 'example.net' } })).statusCode, 404);
  // The right hash under the wrong host (direct form) is not Alice's either.
  assert.equal((await app.inject({ url: `/.well-known/openpgpkey/hu/${aliceHash}`, headers: { host: 'example.net' } })).statusCode, 404);
  assert.equal((await app.inject({ url: '/.well-known/openpgpkey/example.org/hu/not-a-hash' })).statusCode, 404);

  for (const url of ['/.well-known/openpgpkey/example.org/policy', '/.well-known/openpgpkey/policy']) {
    const policy = await app.inject({ url, headers: { host: 'example.org' } });
    assert.equal(policy.statusCode, 200, url);
    assert.equal(policy.headers['access-control-allow-origin'], '*');
    assert.match(policy.body, new RegExp(`^submission-address: ${SUBMISSION}\n`, 'm'));
    assert.ok(policy.body.endsWith('\n'), 'gpg refuses an unterminated last line');
  }
  assert.equal((await app.inject({ url: '/.well-known/openpgpkey/example.net/policy' })).statusCode, 404);
  for (const url of ['/.well-known/openpgpkey/example.org/submission-address', '/.well-known/openpgpkey/submission-address']) {
    const response = await app.inject({ url, headers: { host: 'example.org' } });
    assert.equal(response.statusCode, 200, url);
    assert.equal(response.body, `${SUBMISSION}\n`);
  }
  // The submission address's own key, public part only, where a client looks it up.
  const submissionHash = await gpgWkdHash(SUBMISSION);
  const submission = await app.inject({ url: `/.well-known/openpgpkey/example.org/hu/${submissionHash}` });
  assert.equal(submission.statusCode, 200);
  assert.deepEqual(await uidsSeenByGpg(submission.rawPayload), [`<${SUBMISSION}>`]);
  assert.doesNotMatch(submission.rawPayload.toString('latin1'), /PRIVATE/);
  const home = await createGpgHome();
  try {
    await gpgOk(home, ['--batch', '--import'], submission.rawPayload);
    const secrets = (await gpgOk(home, ['--with-colons', '--list-secret-keys'])).toString('utf8');
    assert.equal(secrets.trim(), '', 'no secret key is served');
    const listing = (await gpgOk(home, ['--with-colons', '--list-keys'])).toString('utf8');
    assert.match(listing, new RegExp(`fpr:+${fixture.wksFingerprint}:`));
  } finally {
    await home.remove();
  }
}
