import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ConfigInput } from '../../src/config/schema.js';
import type { Database } from '../../src/db/types.js';
import { KeyStore } from '../../src/keys/store.js';
import { KeyService } from '../../src/web/service.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, gpgOk, revokeKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { createKeyDirectory } from '../../src/keys/directory.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { refusal, silentLogger, SinkMailbox, webConfig } from './fixtures.js';

let home: GpgHome;
let first: GpgKey;
let second: GpgKey;
let third: GpgKey;
/** A port where nothing listens: the relay "down". */
let closedPort: number;

before(async () => {
  home = await createGpgHome();
  first = await generateKey(home, { email: 'Alice@Example.org' });
  second = await generateKey(home, { email: 'alice@example.org' });
  third = await generateKey(home, { email: 'alice@example.org' });
  const gone = await SmtpSink.start();
  closedPort = gone.port;
  await gone.stop();
});
after(() => home.remove());

interface Fixture {
  db: Database;
  service: KeyService;
  mailer: SinkMailbox;
  store: KeyStore;
  /** Moves the service's clock. */
  advance(ms: number): void;
}

function withService(backend: Parameters<typeof withDatabase>[0], use: (fixture: Fixture) => Promise<void>, web: NonNullable<ConfigInput['web']> = {}): Promise<void> {
  return withDatabase(backend, async (db, database) => {
    const config = webConfig(database, web);
    const sink = await SmtpSink.start();
    const mailer = new SinkMailbox(sink, home, config, closedPort);
    let offset = 0;
    const service = new KeyService({ db, config, mailer, logger: silentLogger, clock: () => new Date(Date.now() + offset) });
    try {
      await use({ db, service, mailer, store: new KeyStore(db, config.keys), advance: (ms) => (offset += ms) });
    } finally {
      mailer.close();
      await sink.stop();
    }
  });
}


async function rowCounts(db: Database): Promise<{ identities: number; keys: number; requests: number }> {
  const rows = await db.query<{ identities: number; keys: number; requests: number }>(
    `select (select count(*) from lacre_identities)::int as identities, (select count(*) from lacre_keys)::int as keys,
            (select count(*) from lacre_key_requests)::int as requests`,
  );
  return rows[0]!;
}

const statuses = async (store: KeyStore): Promise<[string, string][]> =>
  (await store.show('alice@example.org')).map((row) => [row.fingerprint, row.status]);

for (const backend of await databaseBackends()) {
  describe(`KeyService (${backend.name})`, () => {
    it('stores an upload as pending, mails a link encrypted to that key, and publishes it at confirmation', () =>
      withService(backend, async ({ db, service, mailer, store }) => {
        const uploaded = await service.upload({ key: first.publicArmored, style: 'inline', lang: 'es' });
        assert.deepEqual(uploaded, { status: 'pending', email: 'Alice@example.org', fingerprint: first.fingerprint });
        assert.deepEqual(await store.confirmedKeysFor('alice@example.org'), [], 'a pending key is never used for mail');
        assert.equal((await service.status('ALICE@example.org')).status, 'pending');
        assert.equal(mailer.count, 1);
        const mailed = await mailer.last('Alice@example.org');
        assert.deepEqual(mailed.keyIds, [first.encryptionKeyId], 'the mail is encrypted to the uploaded key');
        assert.match(mailed.text, /Para confirmar/, 'in the language asked for');
        const token = await (await mailer.lastToken('Alice@example.org'));
        const stored = await db.query<{ token_hash: string }>('select token_hash from lacre_key_requests');
        assert.ok(!stored.some((row) => row.token_hash.includes(token)), 'only the hash is stored');

        assert.deepEqual(await service.describeRequest(token), { action: 'publish', email: 'Alice@example.org', fingerprint: first.fingerprint, lang: 'es' });
        assert.equal((await service.status('alice@example.org')).status, 'pending', 'describing changes nothing');

        assert.deepEqual(await service.confirm(token), { action: 'publish', email: 'Alice@example.org', fingerprint: first.fingerprint });
        const view = await service.status('alice@example.org');
        assert.equal(view.status, 'confirmed');
        assert.equal(view.fingerprint, first.fingerprint);
        assert.ok(view.created && view.expires && new Date(view.expires) > new Date());
        assert.deepEqual((await store.confirmedKeysFor('alice@example.org')).map((row) => [row.fingerprint, row.style]), [[first.fingerprint, 'inline']]);
        const identity = await db.query<{ lang: string }>('select lang from lacre_identities');
        assert.deepEqual(identity, [{ lang: 'es' }]);
        assert.equal(mailer.count, 2, 'a "published" mail follows');
        assert.deepEqual((await mailer.last('Alice@example.org')).keyIds, [first.encryptionKeyId]);

        assert.equal((await refusal(service.confirm(token))).code, 'token-used');
        assert.equal((await refusal(service.describeRequest(token))).status, 410);
        assert.equal((await refusal(service.confirm('A'.repeat(43)))).code, 'token-unknown');
      }));

    it('changes nothing while a second upload is pending, and disables the old key when it is confirmed', () =>
      withService(backend, async ({ service, mailer, store }) => {
        await service.upload({ key: first.publicArmored, lang: 'en' });
        await service.confirm((await mailer.lastToken('Alice@example.org')));
        const upload = await service.upload({ key: second.publicArmored, email: 'alice@example.org', lang: 'en' });
        assert.equal(upload.email, 'Alice@example.org', 'the identity keeps its spelling');
        assert.deepEqual(await statuses(store), [[first.fingerprint, 'confirmed'], [second.fingerprint, 'pending']]);
        assert.equal((await service.status('alice@example.org')).fingerprint, first.fingerprint);
        assert.deepEqual((await mailer.last('Alice@example.org')).keyIds, [second.encryptionKeyId], 'mailed to the new key');

        await service.confirm((await mailer.lastToken('Alice@example.org')));
        assert.deepEqual(await statuses(store), [[first.fingerprint, 'disabled'], [second.fingerprint, 'confirmed']]);
        assert.deepEqual((await store.confirmedKeysFor('alice@example.org')).map((row) => row.fingerprint), [second.fingerprint]);
      }));

    it('refreshes an already confirmed key without a mail and keeps it confirmed', () =>
      withService(backend, async ({ service, mailer, store }) => {
        await service.upload({ key: first.publicArmored, lang: 'en' });
        await service.confirm((await mailer.lastToken('Alice@example.org')));
        const sent = mailer.count;
        assert.deepEqual(await service.upload({ key: first.publicArmored, lang: 'en' }), { status: 'confirmed', email: 'Alice@example.org', fingerprint: first.fingerprint });
        assert.equal(mailer.count, sent);
        assert.deepEqual(await statuses(store), [[first.fingerprint, 'confirmed']]);
      }));

    it('takes the revocation of a stored key at once, without a mail; refuses a revoked key it does not hold', () =>
      withService(backend, async ({ db, service, mailer, store }) => {
        const retiring = await generateKey(home, { email: 'alice@example.org' });
        const stranger = await generateKey(home, { email: 'alice@example.org' });
        await service.upload({ key: retiring.publicArmored, lang: 'en' });
        await service.confirm(await mailer.lastToken('alice@example.org'));
        const directory = await createKeyDirectory(db, { local_part_case_sensitive: false, recipient_delimiter: '+', cache_ttl_seconds: 300 }, silentLogger);
        try {
          assert.equal((await directory.lookup('alice@example.org')).kind, 'usable');
          const sent = mailer.count;
          assert.deepEqual(await service.upload({ key: await revokeKey(home, retiring), lang: 'en' }), { status: 'revoked', email: 'alice@example.org', fingerprint: retiring.fingerprint });
          assert.equal(mailer.count, sent, 'no confirmation needed: only the owner can revoke');
          directory.invalidate();
          assert.equal((await directory.lookup('alice@example.org')).kind, 'unusable', 'mail is no longer encrypted to it');
          assert.deepEqual(await statuses(store), [[retiring.fingerprint, 'confirmed']]);
          assert.equal((await refusal(service.upload({ key: await revokeKey(home, stranger), lang: 'en' }))).code, 'revoked');
        } finally {
          await directory.close();
        }
      }));

    it('an old removal link does not remove a newer key; a re-upload of an older copy does not bring its earlier expiry back', () =>
      withService(backend, async ({ service, mailer, store }) => {
        const old = await generateKey(home, { email: 'alice@example.org', expire: '30d' });
        await service.upload({ key: old.publicArmored, lang: 'en' });
        await service.confirm(await mailer.lastToken('alice@example.org'));
        await service.requestDelete('alice@example.org', 'en');
        const removal = await mailer.lastToken('alice@example.org');

        const unattended = ['--batch', '--pinentry-mode', 'loopback', '--passphrase', ''];
        await gpgOk(home, [...unattended, '--quick-set-expire', old.fingerprint, '90d']);
        await gpgOk(home, [...unattended, '--quick-set-expire', old.fingerprint, '90d', '*']);
        const extended = (await gpgOk(home, ['--armor', '--export', old.fingerprint])).toString('utf8');
        assert.equal((await service.upload({ key: extended, lang: 'en' })).status, 'confirmed');
        const later = (await service.status('alice@example.org')).expires!;
        assert.ok(new Date(later).getTime() > Date.now() + 80 * 86_400_000);
        await service.upload({ key: old.publicArmored, lang: 'en' });
        assert.equal((await service.status('alice@example.org')).expires, later, 'the merged copy keeps the later date');

        await service.upload({ key: second.publicArmored, lang: 'en' });
        await service.confirm(await mailer.lastToken('alice@example.org'));
        assert.equal((await refusal(service.confirm(removal))).code, 'no-key');
        assert.deepEqual((await store.confirmedKeysFor('alice@example.org')).map((row) => row.fingerprint), [second.fingerprint]);
      }));

    it('a pending upload the admin disabled is not brought back by its link', () =>
      withService(backend, async ({ service, mailer, store }) => {
        await service.upload({ key: third.publicArmored, lang: 'en' });
        const token = await mailer.lastToken('alice@example.org');
        assert.equal(await store.disable(third.fingerprint), 1);
        assert.equal((await refusal(service.confirm(token))).code, 'token-expired');
        assert.deepEqual(await statuses(store), [[third.fingerprint, 'disabled']]);
      }));

    it('refuses an expired link by the clock, and a link whose key was deleted meanwhile', () =>
      withService(backend, async ({ service, mailer, advance, store }) => {
        await service.upload({ key: first.publicArmored, lang: 'en' });
        const token = (await mailer.lastToken('Alice@example.org'));
        advance(48 * 3_600_000 + 1000);
        assert.deepEqual([(await refusal(service.confirm(token))).code, (await refusal(service.describeRequest(token))).status], ['token-expired', 410]);
        advance(-48 * 3_600_000 - 1000);
        await store.delete('alice@example.org');
        assert.equal((await refusal(service.confirm(token))).code, 'no-key');
      }));

    it('limits the mails per address and hour, whoever asks, with Retry-After', () =>
      withService(
        backend,
        async ({ service, mailer, advance }) => {
          await service.upload({ key: first.publicArmored, lang: 'en' });
          await service.upload({ key: second.publicArmored, email: 'alice@example.org', lang: 'en' });
          advance(10 * 60_000);
          const refused = await refusal(service.upload({ key: third.publicArmored, email: 'alice@example.org', lang: 'en' }));
          assert.equal(refused.code, 'too-many-requests');
          assert.equal(refused.status, 429);
          const retry = Number(refused.headers['Retry-After']);
          assert.ok(retry > 49 * 60 && retry <= 50 * 60, `Retry-After ${retry}`);
          assert.equal(mailer.count, 2);
          advance(retry * 1000);
          assert.equal((await service.upload({ key: third.publicArmored, email: 'alice@example.org', lang: 'en' })).status, 'pending');
        },
        { mails_per_address_per_hour: 2 },
      ));

    it('keeps its word under parallel requests: the mails of the hour are not overrun, two confirmations leave one key', () =>
      withService(
        backend,
        async ({ service, mailer, store }) => {
          const keys = [first, second, third];
          const outcomes = await Promise.allSettled(
            [...keys, ...keys].map((key) => service.upload({ key: key.publicArmored, email: 'alice@example.org', lang: 'en' })),
          );
          const accepted = outcomes.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
          assert.equal(accepted.length, 2, 'exactly the two mails of the hour');
          // Keys that spell the address differently may each create its spelling's identity when they race.
          const tokens = [...(await mailer.tokens('alice@example.org')), ...(await mailer.tokens('Alice@example.org'))];
          assert.equal(tokens.length, 2);
          await Promise.all(tokens.map((token) => service.confirm(token)));
          assert.equal((await store.confirmedKeysFor('alice@example.org')).length, 1, 'the later confirmation disabled the earlier');
        },
        { mails_per_address_per_hour: 2 },
      ));

    it('undoes exactly what an upload created when its mail cannot be sent', () =>
      withService(backend, async ({ db, service, mailer }) => {
        mailer.failing = true;
        const refused = await refusal(service.upload({ key: first.publicArmored, lang: 'en' }));
        assert.deepEqual([refused.code, refused.status], ['mail-not-sent', 503]);
        assert.deepEqual(await rowCounts(db), { identities: 0, keys: 0, requests: 0 });

        mailer.failing = false;
        await service.upload({ key: first.publicArmored, lang: 'en' });
        mailer.failing = true;
        await refusal(service.upload({ key: first.publicArmored, lang: 'en' }));
        assert.deepEqual(await rowCounts(db), { identities: 1, keys: 1, requests: 1 }, 'the earlier upload stays whole');
        mailer.failing = false;
        await service.confirm((await mailer.lastToken('Alice@example.org')));
        assert.equal((await service.status('alice@example.org')).status, 'confirmed');
      }));

    it('deletes the address with all its keys only when the mailed link is confirmed', () =>
      withService(backend, async ({ db, service, mailer }) => {
        assert.equal((await refusal(service.requestDelete('alice@example.org', 'en'))).code, 'no-key');
        await service.upload({ key: first.publicArmored, lang: 'en' });
        await service.confirm((await mailer.lastToken('Alice@example.org')));
        await service.upload({ key: second.publicArmored, email: 'alice@example.org', lang: 'en' });
        assert.deepEqual(await service.requestDelete('ALICE@example.org', 'es'), { status: 'pending', email: 'Alice@example.org', fingerprint: first.fingerprint });
        assert.deepEqual((await mailer.last('Alice@example.org')).keyIds, [first.encryptionKeyId], 'encrypted to the current key');
        assert.equal((await service.status('alice@example.org')).status, 'confirmed', 'nothing goes before the link is followed');
        const token = (await mailer.lastToken('Alice@example.org'));
        assert.equal((await service.describeRequest(token)).action, 'delete');
        assert.deepEqual(await service.confirm(token), { action: 'delete', email: 'Alice@example.org', fingerprint: first.fingerprint });
        assert.equal((await service.status('alice@example.org')).status, 'none');
        assert.deepEqual(await rowCounts(db), { identities: 0, keys: 0, requests: 3 });
        assert.equal((await refusal(service.confirm(token))).code, 'token-used');
      }));

    it('takes a WKS submission as pending with a nonce, without mail, and serves confirmed keys to WKD', () =>
      withService(backend, async ({ service, mailer }) => {
        const sent: string[] = [];
        const submitted = await service.submitPending({ key: first.publicArmored, email: 'alice@example.org', lang: 'en', channel: 'wks' }, async (pending) => {
          sent.push(pending.token);
        });
        assert.deepEqual(sent, [submitted.token], 'WKS sends its own request, with the nonce');
        assert.equal(mailer.count, 0);
        assert.equal(await service.confirmedKey('alice@example.org'), undefined);
        await service.confirm(submitted.token);
        const served = await service.confirmedKey('alice@example.org');
        assert.equal(served?.fingerprint, first.fingerprint);
        assert.deepEqual((await service.confirmedKeysOfDomain('EXAMPLE.org')).map((row) => row.email), ['Alice@example.org']);
      }));

    it('refuses addresses it does not serve', () =>
      withService(backend, async ({ service }) => {
        assert.equal((await refusal(service.status('bob@elsewhere.org'))).code, 'domain-not-served');
        assert.equal((await refusal(service.status('nope'))).code, 'invalid-address');
        assert.deepEqual(await service.status('nobody@example.org'), { email: 'nobody@example.org', status: 'none', fingerprint: null, created: null, expires: null });
      }));
  });
}
