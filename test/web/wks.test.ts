import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import libmime from 'libmime';
import { readPrivateKey } from 'openpgp';
import { configSchema, type Config } from '../../src/config/schema.js';
import type { Database } from '../../src/db/types.js';
import { Relay } from '../../src/delivery/reinject.js';
import { LacreError } from '../../src/errors.js';
import type { Downstream } from '../../src/filter/ports.js';
import { createLogger } from '../../src/log/logger.js';
import { catalogs } from '../../src/web/i18n.js';
import { createMailer } from '../../src/web/mailer.js';
import { KeyService } from '../../src/web/service.js';
import { createWksIntake, interceptSubmissions } from '../../src/web/wks-intake.js';
import { createSubmissionKey, writeSubmissionKey } from '../../src/web/wks-key.js';
import { databaseBackends, withDatabase } from '../helpers/databases.js';
import { createGpgHome, generateKey, gpgOk, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

const WKS_CLIENT = '/usr/lib/gnupg/gpg-wks-client';
const SUBMISSION = 'key-submission@example.org';
const ALICE = 'alice@example.org';

interface ClientResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** GnuPG's own WKS client, offline: --fake-submission-addr makes it find every key in its keyring. */
function wksClient(home: GpgHome, args: string[], input?: Buffer): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(WKS_CLIENT, ['--fake-submission-addr', SUBMISSION, ...args], { env: { ...process.env, GNUPGHOME: home.dir } });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(stdout), stderr }));
    child.stdin.end(input ?? Buffer.alloc(0));
  });
}

interface World {
  home: GpgHome;
  alice: GpgKey;
  keyDir: string;
  wksKeyPath: string;
  submissionPublic: string;
}

function wksConfig(world: World, relayPort: number, wksKeyPath = world.wksKeyPath, language = 'en'): Config {
  return configSchema.parse({
    keys: { domains: ['example.org'] },
    relay: { host: '127.0.0.1', port: relayPort, timeout_seconds: 5 },
    web: { sender: 'keys@example.org', wks_submission_address: SUBMISSION, wks_key_path: wksKeyPath, public_url: 'https://keys.example.org', default_language: language },
  });
}

interface Running {
  downstream: Downstream;
  relay: Relay;
}

function running(world: World, sink: SmtpSink, db: Database, options: { relayPort?: number; wksKeyPath?: string; maxBytes?: number; language?: string } = {}): Running {
  const config = wksConfig(world, options.relayPort ?? sink.port, options.wksKeyPath, options.language);
  const logger = createLogger('silent');
  const relay = new Relay(config.relay, undefined, logger);
  const mailer = createMailer(config, relay, logger);
  const service = new KeyService({ db, config, mailer, logger });
  const intake = createWksIntake({ config, service, mailer, catalogs: catalogs(), logger })!;
  return { downstream: interceptSubmissions(relay, { ...intake, ...(options.maxBytes ? { maxBytes: options.maxBytes } : {}) }), relay };
}

async function deliver(downstream: Downstream, to: string[], message: Buffer): Promise<ReadonlyMap<string, LacreError>> {
  return downstream.send({ from: ALICE, to, use8BitMime: false }, Readable.from([message]));
}

/** The nonce of a confirmation request, read the way only the key's holder can: gpg decrypts the WKS part. */
async function nonceOf(home: GpgHome, request: Buffer): Promise<string> {
  const armored = /-----BEGIN PGP MESSAGE-----[\s\S]*?-----END PGP MESSAGE-----/.exec(request.toString('latin1'))![0];
  const fields = (await gpgOk(home, ['--batch', '--decrypt'], armored)).toString('utf8');
  return /^nonce: (\S+)$/m.exec(fields)![1]!;
}

function clearResponse(address: string, nonce: string): Buffer {
  return Buffer.from(
    `From: ${address}\r\nTo: ${SUBMISSION}\r\nSubject: Key publication confirmation\r\nWks-Draft-Version: 3\r\nMIME-Version: 1.0\r\n` +
      `Content-Type: application/vnd.gnupg.wks\r\n\r\ntype: confirmation-response\r\nsender: ${SUBMISSION}\r\naddress: ${address}\r\nnonce: ${nonce}\r\n`,
  );
}

async function keyStatus(db: Database, email: string): Promise<string[]> {
  const rows = await db.query<{ status: string }>(`select status from lacre_keys where lower(email) = lower($1) order by id`, [email]);
  return rows.map((row) => row.status);
}

async function waitFor<T>(find: () => T | undefined, what: string): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const found = find();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('WKS with the real gpg-wks-client', () => {
  let world: World;
  let sink: SmtpSink;

  before(async () => {
    const home = await createGpgHome();
    const alice = await generateKey(home, { email: ALICE, name: 'Alice' });
    const keyDir = await mkdtemp(join(tmpdir(), 'lacre-wks-'));
    const wksKeyPath = join(keyDir, 'wks', 'key.asc');
    const submission = await createSubmissionKey(SUBMISSION);
    await writeSubmissionKey(wksKeyPath, submission.armored, { force: false });
    const submissionPublic = (await readPrivateKey({ armoredKey: submission.armored })).toPublic().armor();
    // The client encrypts to the submission key and checks the request's signature with it: in its keyring, as
    // WKD lookup would have put it there.
    await gpgOk(home, ['--batch', '--import'], submissionPublic);
    world = { home, alice, keyDir, wksKeyPath, submissionPublic };
    sink = await SmtpSink.start();
  });
  after(async () => {
    await sink.stop();
    await world.home.remove();
    await rm(world.keyDir, { recursive: true, force: true });
  });

  /** Lacre's WKS intake in front of the relay to the sink, on one database; the sink starts empty. */
  async function withWks(db: Database, options: Parameters<typeof running>[3], use: (lacre: Running) => Promise<void>): Promise<void> {
    sink.messages.length = 0;
    const lacre = running(world, sink, db, options);
    try {
      await use(lacre);
    } finally {
      lacre.relay.close();
    }
  }

  /** One test body on the last backend (the real PostgreSQL server when there is one: the quicker to open). */
  async function onOneBackend(use: (db: Database) => Promise<void>): Promise<void> {
    await withDatabase((await databaseBackends()).at(-1)!, use);
  }

  test('submission by --create → confirmation request → --receive → response → key confirmed, on every backend', async (t) => {
    for (const backend of await databaseBackends()) {
      await t.test(backend.name, () =>
        withDatabase(backend, (db) =>
          withWks(db, {}, async ({ downstream }) => {
            const created = await wksClient(world.home, ['--create', world.alice.fingerprint, ALICE]);
            assert.equal(created.code, 0, created.stderr);
            assert.match(created.stdout.toString('latin1'), /^Content-Type: multipart\/encrypted/m);

            await deliver(downstream, [SUBMISSION], created.stdout);
            assert.deepEqual(await keyStatus(db, ALICE), ['pending']);
            const request = await waitFor(() => sink.messageFor(ALICE), 'the confirmation request');
            assert.deepEqual(request.to, [ALICE]);
            const requestText = request.data.toString('latin1');
            assert.match(requestText, /^Wks-Draft-Version: 3\r$/m);
            assert.match(requestText, /^Wks-Phase: confirm\r$/m);
            assert.match(requestText, /^Content-Type: multipart\/signed;/m);
            assert.equal(sink.messages.length, 1, 'nothing else was relayed: the submission itself was taken');

            const answered = await wksClient(world.home, ['--status-fd', '2', '--receive'], request.data);
            assert.equal(answered.code, 0, `gpg-wks-client --receive: ${answered.stderr}`);
            assert.match(answered.stderr, /\[GNUPG:\] SUCCESS/);
            const response = answered.stdout;
            assert.match(response.toString('latin1'), /^To: key-submission@example\.org/m);
            assert.match(response.toString('latin1'), /^Content-Type: multipart\/encrypted/m, 'encrypted to the submission key');

            await deliver(downstream, [SUBMISSION], response);
            assert.deepEqual(await keyStatus(db, ALICE), ['confirmed']);
            // The same response again: the nonce is used up, nothing changes, nothing is retried.
            await deliver(downstream, [SUBMISSION], response);
            assert.deepEqual(await keyStatus(db, ALICE), ['confirmed']);
          }),
        ),
      );
    }
  });

  test('only the submission address is taken: other recipients are relayed, a mail for it alone relays nothing', () =>
    onOneBackend((db) =>
      withWks(db, {}, async ({ downstream }) => {
        const plain = Buffer.from('From: alice@example.org\r\nTo: bob@example.org, key-submission@example.org\r\nSubject: hi\r\n\r\nnot a submission\r\n');
        const rejected = await deliver(downstream, ['bob@example.org', 'Key-Submission@Example.org'], plain);
        assert.equal(rejected.size, 0);
        assert.equal(sink.messages.length, 1);
        assert.deepEqual(sink.messages[0]!.to, ['bob@example.org']);
        assert.deepEqual(sink.messages[0]!.data, plain);
        await deliver(downstream, [SUBMISSION], plain);
        assert.equal(sink.messages.length, 1, 'the garbage mail to the submission address alone is dropped, not relayed');
        assert.deepEqual(await db.query('select * from lacre_key_requests'), []);
        await deliver(downstream, ['carol@example.org'], plain);
        assert.deepEqual(sink.messages[1]!.to, ['carol@example.org'], 'mail without the submission address passes untouched');
      }),
    ));

  test('a mail larger than the bound is dropped unread, and nothing is stored', () =>
    onOneBackend((db) =>
      withWks(db, { maxBytes: 1024 }, async ({ downstream }) => {
        const created = await wksClient(world.home, ['--create', world.alice.fingerprint, ALICE]);
        assert.ok(created.stdout.length > 1024);
        assert.equal((await deliver(downstream, [SUBMISSION], created.stdout)).size, 0);
        assert.deepEqual(await keyStatus(db, ALICE), []);
        assert.equal(sink.messages.length, 0);
      }),
    ));

  test('temporary failures reject the copy for a retry: relay down, submission key missing', () =>
    onOneBackend(async (db) => {
      const created = await wksClient(world.home, ['--create', world.alice.fingerprint, ALICE]);
      const closed = await SmtpSink.start();
      const closedPort = closed.port;
      await closed.stop();
      await withWks(db, { relayPort: closedPort }, async ({ downstream }) => {
        await assert.rejects(deliver(downstream, [SUBMISSION], created.stdout), LacreError);
        await assert.rejects(deliver(downstream, [SUBMISSION], created.stdout), LacreError);
        // Postfix retries: each try leaves nothing behind, so none uses up the address's mails of the hour.
        assert.deepEqual(await db.query('select 1 from lacre_key_requests'), []);
        assert.deepEqual(await keyStatus(db, ALICE), []);
      });
      await withWks(db, { wksKeyPath: join(world.keyDir, 'missing.asc') }, async ({ downstream }) => {
        await assert.rejects(deliver(downstream, [SUBMISSION], created.stdout), /lacre wks init/);
        // With other recipients, only the submission address is refused (they were relayed).
        const rejected = await deliver(downstream, ['bob@example.org', SUBMISSION], created.stdout);
        assert.deepEqual([...rejected.keys()], [SUBMISSION]);
        assert.deepEqual(sink.messages.map((message) => message.to), [['bob@example.org']]);
      });
    }));

  test('a failure that is not the mail\'s (a statement timeout, a fault) fails the copy for a retry: nothing is dropped', () =>
    onOneBackend(async (db) => {
      // The server cancels the statements on key requests, as with a statement_timeout the DBA set.
      const timingOut: Database = Object.assign(Object.create(db) as Database, {
        query: (sql: string, params?: unknown[]) =>
          /lacre_key_requests/.test(sql) ? Promise.reject(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' })) : db.query(sql, params),
        queryInTransaction: (statements: readonly { sql: string }[]) =>
          statements.some((statement) => /lacre_key_requests/.test(statement.sql))
            ? Promise.reject(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }))
            : db.queryInTransaction(statements as never),
      });
      const created = await wksClient(world.home, ['--create', world.alice.fingerprint, ALICE]);
      await withWks(timingOut, {}, async ({ downstream }) => {
        await assert.rejects(deliver(downstream, [SUBMISSION], created.stdout), /statement timeout/);
        await assert.rejects(deliver(downstream, [SUBMISSION], clearResponse(ALICE, 'n'.repeat(32))), /statement timeout/);
      });
      assert.deepEqual(await keyStatus(db, ALICE), []);
    }));

  test('a submission Postfix retries asks each address once: only the one whose request failed is asked again', () =>
    onOneBackend(async (db) => {
      let refuseSecond = true;
      const picky = await SmtpSink.start({ rcptReply: (to) => (refuseSecond && to === 'carla.b@example.org' ? { code: 451, message: '4.3.0 later' } : undefined) });
      const lacre = running(world, picky, db);
      try {
        const carla = await generateKey(world.home, { email: 'carla@example.org', name: 'Carla' });
        await gpgOk(world.home, ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-add-uid', carla.fingerprint, 'Carla <carla.b@example.org>']);
        const armored = (await gpgOk(world.home, ['--armor', '--export', carla.fingerprint])).toString('utf8').replace(/\r?\n/g, '\r\n');
        const submission = Buffer.from(`From: carla@example.org\r\nTo: ${SUBMISSION}\r\nSubject: key\r\nMIME-Version: 1.0\r\nContent-Type: application/pgp-keys\r\n\r\n${armored}`);
        await assert.rejects(deliver(lacre.downstream, [SUBMISSION], submission), LacreError, 'the second request could not be sent: Postfix retries');
        refuseSecond = false;
        await deliver(lacre.downstream, [SUBMISSION], submission);
        const to = (address: string) => picky.messages.filter((message) => message.to.includes(address)).length;
        assert.equal(to('carla@example.org'), 1, 'the address already asked is not asked again');
        assert.equal(to('carla.b@example.org'), 1);
      } finally {
        lacre.relay.close();
        await picky.stop();
      }
    }));

  test("a response in the clear (the client's fallback) confirms; one naming another address does not", async (t) => {
    for (const backend of await databaseBackends()) {
      await t.test(backend.name, () =>
        withDatabase(backend, (db) =>
          withWks(db, {}, async ({ downstream }) => {
            const created = await wksClient(world.home, ['--create', world.alice.fingerprint, ALICE]);
            await deliver(downstream, [SUBMISSION], created.stdout);
            const request = await waitFor(() => sink.messageFor(ALICE), 'the confirmation request');
            const nonce = await nonceOf(world.home, request.data);
            await deliver(downstream, [SUBMISSION], clearResponse('mallory@example.org', nonce));
            assert.deepEqual(await keyStatus(db, ALICE), ['pending'], 'the nonce is for alice only');
            await deliver(downstream, [SUBMISSION], clearResponse('bob@example.org', 'x'.repeat(43)));
            assert.deepEqual(await keyStatus(db, ALICE), ['pending']);
            await deliver(downstream, [SUBMISSION], clearResponse('Alice@Example.org', nonce));
            assert.deepEqual(await keyStatus(db, ALICE), ['confirmed']);
          }),
        ),
      );
    }
  });

  test('the request speaks web.default_language (Spanish here), and still gets its answer', () =>
    onOneBackend((db) =>
      withWks(db, { language: 'es' }, async ({ downstream }) => {
        const created = await wksClient(world.home, ['--create', world.alice.fingerprint, ALICE]);
        await deliver(downstream, [SUBMISSION], created.stdout);
        const request = await waitFor(() => sink.messageFor(ALICE), 'the confirmation request');
        const subject = /^Subject: (.*)\r$/m.exec(request.data.toString('latin1'))![1]!;
        assert.equal(libmime.decodeWords(subject), 'Confirme la publicación de su clave');
        assert.match(request.data.toString('latin1'), /^Content-Language: es\r$/m);
        const answered = await wksClient(world.home, ['--receive'], request.data);
        assert.equal(answered.code, 0, answered.stderr);
      }),
    ));
});
