import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createGpgHome, decrypt, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { armoredBlock, contentEntity, corpus } from '../helpers/corpus.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { databaseBackends } from '../helpers/databases.js';
import { LEAK_MARKERS, leakedMarkers } from '../helpers/leak-markers.js';
import { freePort } from '../helpers/ports.js';

const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A fresh database on the real server, reached through a proxy the test can cut. */
async function freshPostgres(): Promise<{ url: string; proxy: TcpProxy; drop(): Promise<void> }> {
  const name = `lacre_serve_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const target = new URL(PG_URL);
  const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
  await proxy.start();
  const url = new URL(PG_URL);
  url.port = String(proxy.port);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    proxy,
    async drop() {
      await proxy.stop();
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}

const backends = (await databaseBackends()).some((backend) => backend.name === 'postgres') ? [true, false] : [false];
for (const usePostgres of backends) describe(`lacre serve on ${usePostgres ? 'PostgreSQL' : 'the embedded database'} (SMTP, real relay sink, real gpg)`, () => {
  let home: GpgHome;
  let alice: GpgKey;
  let bob: GpgKey;
  let erin: GpgKey;
  let sink: SmtpSink;
  let server: LacreServer;
  let database: Awaited<ReturnType<typeof freshPostgres>> | undefined;
  let dataDir: string | undefined;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    bob = await generateKey(home, { email: 'Bob@Example.TEST', algo: 'rsa3072' });
    erin = await generateKey(home, { email: 'erin@example.test' });
    sink = await SmtpSink.start();
    if (usePostgres) {
      database = await freshPostgres();
      env = { LACRE_DATABASE_URL: database.url };
      const migrated = await runLacre(['migrate'], env);
      assert.equal(migrated.code, 0, migrated.stderr);
    } else {
      dataDir = await mkdtemp(join(tmpdir(), 'lacre-serve-'));
      env = { LACRE_DATABASE_DATA_DIR: dataDir };
    }
    const keyFile = join(await mkdtemp(join(tmpdir(), 'lacre-keys-')), 'keys.asc');
    await writeFile(keyFile, alice.publicArmored + bob.publicArmored + erin.publicArmored);
    const imported = await runLacre(['keys', 'import', '--create', keyFile], env);
    assert.equal(imported.code, 0, imported.stderr);
    env = { ...env, LACRE_RELAY_PORT: String(sink.port), LACRE_SMTP_MAX_SIZE: '1MB', LACRE_SMTP_MAX_HEADER_SIZE: '64KiB', LACRE_LOG_LEVEL: 'info' };
    server = await LacreServer.start(env);
  });

  after(async () => {
    const code = await server?.stop();
    assert.equal(code, 0, 'lacre serve exits cleanly on SIGTERM');
    await sink?.stop();
    await database?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    await home?.remove();
  });

  for (const message of corpus.filter((m) => m.smtpSafe)) {
    it(`"${message.name}": keyed recipient decrypts to the exact content entity, plain recipient gets the exact bytes`, async () => {
      sink.messages.length = 0;
      const reply = await sendRaw(server.port, { from: 'sender@example.net', to: ['alice@example.test', 'carol@example.test'] }, message.raw);
      assert.match(reply.data[0]!, /^250 /);
      assert.equal(sink.messages.length, 2);
      const encrypted = sink.messageFor('alice@example.test')!;
      assert.equal(encrypted.from, 'sender@example.net');
      assert.deepEqual(await decrypt(home, armoredBlock(encrypted.data)), contentEntity(message.raw));
      assert.deepEqual(sink.messageFor('carol@example.test')!.data, message.raw);
    });
  }

  it('looks keys up case-insensitively and keeps Bcc recipients apart', async () => {
    sink.messages.length = 0;
    const reply = await sendRaw(server.port, { from: 'sender@example.net', to: ['ALICE@example.test', 'bob@example.test'] }, corpus[0]!.raw);
    assert.match(reply.data[0]!, /^250 /);
    assert.equal(sink.messages.length, 2);
    const aliceIds = await listPacketsKeyIds(home, armoredBlock(sink.messageFor('ALICE@example.test')!.data));
    const bobIds = await listPacketsKeyIds(home, armoredBlock(sink.messageFor('bob@example.test')!.data));
    assert.deepEqual(aliceIds, [alice.encryptionKeyId]);
    assert.deepEqual(bobIds, [bob.encryptionKeyId]);
  });

  it('reinjects a bounce (null sender) with the null sender', async () => {
    sink.messages.length = 0;
    const reply = await sendRaw(server.port, { from: '', to: ['alice@example.test'] }, corpus[0]!.raw);
    assert.match(reply.data[0]!, /^250 /);
    assert.equal(sink.messages[0]!.from, '');
  });

  it('answers 451 while the relay is down, and delivers when Postfix retries', async () => {
    sink.messages.length = 0;
    const port = sink.port;
    await sink.stop();
    const down = await sendRaw(server.port, { from: 'sender@example.net', to: ['alice@example.test', 'carol@example.test'] }, corpus[1]!.raw);
    assert.match(down.data[0]!, /^451 4\.4\.1 /);
    await sink.listen({ port });
    const retry = await sendRaw(server.port, { from: 'sender@example.net', to: ['alice@example.test', 'carol@example.test'] }, corpus[1]!.raw);
    assert.match(retry.data[0]!, /^250 /);
    assert.deepEqual(await decrypt(home, armoredBlock(sink.messageFor('alice@example.test')!.data)), contentEntity(corpus[1]!.raw));
    assert.deepEqual(sink.messageFor('carol@example.test')!.data, corpus[1]!.raw);
  });

  it('answers 4xx while the database is down (never plaintext), and delivers on retry', { skip: !usePostgres && 'needs a PostgreSQL server' }, async () => {
    sink.messages.length = 0;
    // Erin has a key but the cache has never seen her: the store must be asked, and cannot answer.
    await database!.proxy.stop();
    const down = await sendRaw(server.port, { from: 'sender@example.net', to: ['erin@example.test'] }, corpus[0]!.raw);
    assert.match(down.rcpt[0]!, /^451 4\.3\.0 /);
    assert.equal(sink.messages.length, 0, 'nothing reached the relay');
    await database!.proxy.start();
    const retry = await sendRaw(server.port, { from: 'sender@example.net', to: ['erin@example.test'] }, corpus[0]!.raw);
    assert.match(retry.data[0]!, /^250 /);
    assert.deepEqual(await decrypt(home, armoredBlock(sink.messageFor('erin@example.test')!.data)), contentEntity(corpus[0]!.raw));
  });

  it('refuses a message over smtp.max_size with 552 and delivers nothing', async () => {
    sink.messages.length = 0;
    const big = Buffer.concat([Buffer.from('From: s@example.net\r\n\r\n'), Buffer.alloc(1_200_000, 'x\r\n')]);
    const reply = await sendRaw(server.port, { from: 'sender@example.net', to: ['alice@example.test', 'carol@example.test'] }, big);
    assert.match(reply.data[0]!, /^552 /);
    assert.equal(sink.messages.length, 0);
  });

  it('refuses a header block over smtp.max_header_size with 554 5.3.4, small or large, and delivers nothing', async () => {
    sink.messages.length = 0;
    for (const size of [70 * 1024, 300 * 1024]) {
      const raw = Buffer.from(`From: s@example.net\r\nX-Big: ${'x'.repeat(size)}\r\n\r\nbody\r\n`);
      const reply = await sendRaw(server.port, { from: 'sender@example.net', to: ['alice@example.test', 'carol@example.test'] }, raw);
      assert.match(reply.data[0]!, /^554 5\.3\.4 /);
    }
    assert.equal(sink.messages.length, 0);
  });

  it('logs one line per message with the Postfix queue id from XFORWARD, never the subject or body', async () => {
    const raw = Buffer.from(`From: s@example.net\r\nSubject: ${LEAK_MARKERS.subject}\r\nMessage-ID: <log-test@example.net>\r\n\r\n${LEAK_MARKERS.body}\r\n`);
    await sendRaw(server.port, { from: 'sender@example.net', to: ['alice@example.test', 'carol@example.test'], xforward: 'NAME=client.example ADDR=192.0.2.7 IDENT=4BmKQz1abc' }, raw);
    const line = await server.waitForLog((l) => l.messageId === '<log-test@example.net>');
    assert.equal(line.msg, 'message accepted');
    assert.equal(line.queueId, '4BmKQz1abc');
    assert.equal(line.client, '192.0.2.7');
    assert.equal(line.from, 'sender@example.net');
    assert.equal(line.recipientCount, 2);
    assert.equal(line.size, raw.length);
    assert.deepEqual(line.recipients, [
      { to: 'alice@example.test', action: 'encrypted-mime' },
      { to: 'carol@example.test', action: 'plain-no-key' },
    ]);
    assert.equal(typeof line.durationMs, 'number');
    assert.deepEqual(leakedMarkers(JSON.stringify(server.logs)), []);
  });
});

describe('lacre serve started while its relay is down', () => {
  let dataDir: string;
  let server: LacreServer | undefined;
  let sink: SmtpSink | undefined;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lacre-serve-relay-down-'));
  });

  after(async () => {
    if (server) assert.equal(await server.stop(), 0, 'lacre serve exits cleanly on SIGTERM');
    await sink?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('warns at start naming the unreachable relay, and keeps serving: 451 while it is down, delivered once it answers', async () => {
    const relayPort = await freePort();
    const relay = `127.0.0.1:${relayPort}`;
    server = await LacreServer.start({ LACRE_DATABASE_DATA_DIR: dataDir, LACRE_RELAY_PORT: String(relayPort), LACRE_LOG_LEVEL: 'info' });
    const warning = server.logs.find((line) => line.level === 'warn' && line.relay === relay);
    assert.ok(warning, `a warning before "lacre is ready": ${JSON.stringify(server.logs)}`);
    assert.match(warning.msg, new RegExp(`relay ${relay.replaceAll('.', '\\.')} is unreachable`));

    const envelope = { from: 'sender@example.net', to: ['carol@example.test'] };
    const down = await sendRaw(server.port, envelope, corpus[0]!.raw);
    assert.match(down.data[0]!, /^451 4\.4\.1 /);
    sink = await SmtpSink.start({ port: relayPort });
    const up = await sendRaw(server.port, envelope, corpus[0]!.raw);
    assert.match(up.data[0]!, /^250 /);
    assert.deepEqual(sink.messageFor('carol@example.test')?.data, corpus[0]!.raw);
  });
});
