import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { simpleParser } from 'mailparser';
import { loadConfig } from '../../src/config/load.js';
import { Relay } from '../../src/delivery/reinject.js';
import { KeyStore } from '../../src/keys/store.js';
import { createLogger } from '../../src/log/logger.js';
import { runExpiryNotices } from '../../src/web/expiry.js';
import { createMailer } from '../../src/web/mailer.js';
import { createGpgHome, decrypt, generateKey, revokeKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;

describe('expiry notices', async () => {
  let home: GpgHome;
  let soon: GpgKey;
  let later: GpgKey;
  let sink: SmtpSink;
  let refuse = false;

  before(async () => {
    home = await createGpgHome();
    soon = await generateKey(home, { email: 'soon@example.org', expire: '7d' });
    later = await generateKey(home, { email: 'later@example.org', expire: '60d' });
    sink = await SmtpSink.start({ rcptReply: () => (refuse ? { code: 451, message: '4.3.0 try later' } : undefined) });
  });
  after(async () => {
    await sink.stop();
    await home.remove();
  });

  for (const backend of await databaseBackends()) {
    it(`${backend.name}: one notice per key before it expires, encrypted to it and in the user's language; one more once expired; none twice`, async () => {
      await withDatabase(backend, async (db) => {
        const config = loadConfig({ env: { LACRE_WEB_SENDER: 'keys@example.org', LACRE_WEB_PUBLIC_URL: 'https://keys.example.org/', LACRE_RELAY_PORT: String(sink.port) } });
        const relay = new Relay(config.relay, undefined, createLogger('silent'));
        const deps = { db, config, mailer: createMailer(config, relay, createLogger('silent')), logger: createLogger('silent') };
        try {
          const store = new KeyStore(db, config.keys);
          const imported = await store.importKey(soon.publicArmored);
          await store.importKey(later.publicArmored);
          await db.query(`update lacre_identities set lang = 'es' where email = 'soon@example.org'`);
          assert.equal(imported.kind, 'imported');
          const expires = imported.kind === 'imported' ? imported.expiresAt! : new Date();
          const start = sink.messages.length;

          assert.deepEqual(await runExpiryNotices(deps), { sent: 1, failed: 0, purgedPending: 0 });
          const notice = sink.messages.at(-1)!;
          assert.deepEqual(notice.to, ['soon@example.org']);
          assert.match((await simpleParser(notice.data)).subject ?? '', /^Su clave OpenPGP para soon@example\.org caduca el \d{4}-\d\d-\d\d$/);
          const inner = await simpleParser(await decrypt(home, notice.data));
          assert.match(inner.text ?? '', /https:\/\/keys\.example\.org\/\?lang=es/);

          assert.equal((await runExpiryNotices(deps)).sent, 0, 'a second run sends nothing');
          const afterExpiry = new Date(expires.getTime() + HOUR);
          refuse = true;
          assert.deepEqual(await runExpiryNotices(deps, afterExpiry), { sent: 0, failed: 1, purgedPending: 0 });
          refuse = false;
          assert.equal((await runExpiryNotices(deps, afterExpiry)).sent, 1, 'the refused notice is sent by the next run');
          const expired = sink.messages.at(-1)!;
          assert.match((await simpleParser(expired.data)).subject ?? '', /ha caducado$/);
          assert.equal((await runExpiryNotices(deps, new Date(expires.getTime() + 2 * DAY))).sent, 0);
          assert.equal(sink.messages.length - start, 2);
          // "later" expires in 60 days: its notice comes 14 days before, not now.
          assert.equal((await runExpiryNotices(deps, new Date(Date.now() + 47 * DAY))).sent, 1);
          assert.deepEqual(sink.messages.at(-1)!.to, ['later@example.org']);
        } finally {
          relay.close();
        }
      });
    });

    it(`${backend.name}: a key revoked before its date gets no "expiring" notice (it cannot be encrypted to), and is not retried`, async () => {
      await withDatabase(backend, async (db) => {
        const config = loadConfig({ env: { LACRE_WEB_SENDER: 'keys@example.org', LACRE_RELAY_PORT: String(sink.port) } });
        const revokedHome = await createGpgHome();
        try {
          const key = await generateKey(revokedHome, { email: 'gone@example.org', expire: '7d' });
          const store = new KeyStore(db, config.keys);
          await store.importKey(key.publicArmored);
          await store.importKey(await revokeKey(revokedHome, key));
          const deps = { db, config, mailer: { send: async () => assert.fail('no mail') }, logger: createLogger('silent') };
          assert.deepEqual(await runExpiryNotices(deps), { sent: 0, failed: 0, purgedPending: 0 });
        } finally {
          await revokedHome.remove();
        }
      });
    });

    it(`${backend.name}: two instances running at once send each notice once`, async () => {
      await withDatabase(backend, async (db) => {
        const config = loadConfig({ env: { LACRE_WEB_SENDER: 'keys@example.org', LACRE_RELAY_PORT: String(sink.port) } });
        const relay = new Relay(config.relay, undefined, createLogger('silent'));
        const deps = { db, config, mailer: createMailer(config, relay, createLogger('silent')), logger: createLogger('silent') };
        try {
          await new KeyStore(db, config.keys).importKey(soon.publicArmored);
          const runs = await Promise.all([runExpiryNotices(deps), runExpiryNotices(deps), runExpiryNotices(deps)]);
          assert.equal(runs.reduce((sum, run) => sum + run.sent, 0), 1);
        } finally {
          relay.close();
        }
      });
    });

    it(`${backend.name}: pending uploads nobody confirmed are forgotten once their links are dead; an admin's pending key stays`, async () => {
      await withDatabase(backend, async (db) => {
        const config = loadConfig({ env: { LACRE_WEB_SENDER: 'keys@example.org', LACRE_RELAY_PORT: String(sink.port) } });
        const store = new KeyStore(db, config.keys);
        await store.importKey(soon.publicArmored, { status: 'pending' });
        await store.importKey(later.publicArmored, { status: 'pending' });
        await db.query(
          `insert into lacre_key_requests (token_hash, action, email, fingerprint, expires_at) values ($1, 'publish', 'soon@example.org', $2, now() + interval '48 hours')`,
          ['a'.repeat(64), soon.fingerprint],
        );
        const deps = { db, config, mailer: { send: async () => undefined }, logger: createLogger('silent') };
        assert.equal((await runExpiryNotices(deps)).purgedPending, 0, 'its link is still alive');
        assert.equal((await runExpiryNotices(deps, new Date(Date.now() + 49 * HOUR))).purgedPending, 1);
        assert.deepEqual((await store.list()).map((row) => `${row.email} ${row.status}`), ['later@example.org pending']);
        await runExpiryNotices(deps, new Date(Date.now() + 9 * DAY));
        assert.equal((await db.query('select 1 from lacre_key_requests')).length, 0, 'requests dead for a week are gone');
      });
    });
  }
});
