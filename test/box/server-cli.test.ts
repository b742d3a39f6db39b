/** `lacre inbox user|token|purge` end to end, and the incoming_box settings from the environment. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadConfig, maskSecrets } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log/logger.js';
import { configSchema } from '../../src/config/schema.js';
import { startIncomingBoxServer } from '../../src/box/server.js';
import { openDatabase } from '../../src/db/open.js';
import { runLacre } from '../helpers/lacre.js';
import { tokenHeader, trustedAuth, TRUSTED } from './server-box.js';

const workDir = mkdtempSync(join(tmpdir(), 'lacre-inbox-cli-'));
after(() => rmSync(workDir, { recursive: true, force: true }));

describe('incoming_box settings from the environment', () => {
  it('reads comma-separated lists for trusted_tokens and domains', () => {
    const config = loadConfig({ env: { LACRE_INCOMING_BOX_TRUSTED_TOKENS: 'lacre-mx:s3cret, other:t0ken,', LACRE_INCOMING_BOX_DOMAINS: 'example.org,example.net' } });
    assert.deepEqual(config.incoming_box.trusted_tokens, ['lacre-mx:s3cret', 'other:t0ken']);
    assert.deepEqual(config.incoming_box.domains, ['example.org', 'example.net']);
  });

  it('names the list item that is wrong, and where it came from, without the other items', () => {
    try {
      loadConfig({ env: { LACRE_INCOMING_BOX_TRUSTED_TOKENS: 'lacre-mx:s3cret,no-colon' } });
      assert.fail('accepted a token without a service');
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /^incoming_box\.trusted_tokens\.1 \(from LACRE_INCOMING_BOX_TRUSTED_TOKENS\): .*"no-colon"/);
      assert.doesNotMatch(error.message, /s3cret/);
    }
  });

  it('masks every trusted token when the configuration is printed', () => {
    const config = loadConfig({ env: { LACRE_INCOMING_BOX_TRUSTED_TOKENS: 'a:one,b:two', LACRE_INCOMING_BOX_TOKEN: 'a:one' } });
    const masked = maskSecrets(config);
    assert.deepEqual(masked.incoming_box.trusted_tokens, ['*****', '*****']);
    assert.equal(masked.incoming_box.token, '*****');
    assert.deepEqual(config.incoming_box.trusted_tokens, ['a:one', 'b:two'], 'the original is not changed');
  });
});

describe('lacre inbox (embedded database)', () => {
  it('adds users and aliases, lists, creates tokens that open the box, deletes addresses and purges', { timeout: 120_000 }, async () => {
    const dataDir = join(workDir, 'data');
    const blobsPath = join(workDir, 'blobs');
    const env = { LACRE_DATABASE_DATA_DIR: dataDir, LACRE_INCOMING_BOX_BLOBS_PATH: blobsPath, LACRE_LOG_LEVEL: 'warn' };
    const lacre = async (...args: string[]) => {
      const result = await runLacre(['inbox', '--create', ...args], { ...env, LACRE_INCOMING_BOX_RETENTION_HOURS: '0' });
      return { ...result, out: result.stdout.toString('utf8') };
    };
    const added = await lacre('user', 'add', 'Alice@Example.org');
    assert.equal(added.code, 0, added.stderr);
    const user = added.out.trim();
    assert.match(user, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal((await lacre('user', 'add', 'alias@example.org', '--user', user)).out.trim(), user, 'an alias names the same user');
    assert.equal((await lacre('user', 'add', 'ALICE@example.org')).out.trim(), user, 'the same address (case aside) is not added twice');
    const chosen = '6f1e2d3c-4b5a-4987-8654-321fedcba987';
    assert.equal((await lacre('user', 'add', 'bob@example.org', '--user', chosen)).out.trim(), chosen);
    const clash = await lacre('user', 'add', 'alias@example.org', '--user', chosen);
    assert.equal(clash.code, 1);
    assert.match(clash.stderr, /alias@example\.org already belongs to user/);
    assert.match((await lacre('user', 'add', 'not-an-address')).stderr, /not an address/);

    const listed = JSON.parse((await lacre('user', 'list', '--json')).out) as { email: string; user: string }[];
    assert.deepEqual(listed.map((e) => [e.email, e.user]).sort(), [['Alice@example.org', user], ['alias@example.org', user], ['bob@example.org', chosen]].sort());

    const created = await lacre('token', 'create', 'alias@example.org');
    assert.equal(created.code, 0, created.stderr);
    const token = created.out.trim();
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    assert.match((await lacre('token', 'create', '00000000-0000-4000-8000-000000000000')).stderr, /no box user/);

    assert.equal((await lacre('user', 'delete', 'alias@example.org')).code, 0);
    assert.equal((await lacre('user', 'delete', 'alias@example.org')).code, 1, 'deleting it again fails');

    // The token opens the box (served here, in-process, on the same data directory).
    const config = configSchema.parse({ database: { data_dir: dataDir }, incoming_box: { listen: '127.0.0.1:0', blobs_path: blobsPath, trusted_tokens: [TRUSTED], retention_hours: 0 } });
    const db = await openDatabase(config.database);
    const server = await startIncomingBoxServer(config, db, createLogger('silent'));
    const base = `http://127.0.0.1:${server.port}`;
    const auth = tokenHeader(user, token);
    try {
      assert.equal((await fetch(`${base}/incoming/${user}/m1`, { method: 'PUT', headers: { authorization: trustedAuth }, body: 'sealed' })).status, 200);
      const reservation = ((await (await fetch(`${base}/blobs/${user}/m1/reserve?namespace=MX`, { method: 'POST', headers: { authorization: auth } })).json()) as { reservation: string }).reservation;
      const done = await fetch(`${base}/blobs/${user}/m1?namespace=MX`, { method: 'POST', headers: { authorization: auth, 'x-reservation': reservation }, body: '["PROCESSED"]' });
      assert.equal(done.status, 200);
    } finally {
      await server.close();
      await db.close();
    }
    const purged = await lacre('purge');
    assert.equal(purged.code, 0, purged.stderr);
    assert.equal(purged.out, 'purged 1 blob\n');
    assert.equal((await lacre('purge')).out, 'purged 0 blobs\n');
  });
});
