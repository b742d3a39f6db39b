/**
 * Lacre between two real Postfix passes: inbound smtpd -> queue -> `lacre` transport -> `lacre serve` (or `lacre pipe`)
 * -> reinjection smtpd -> queue -> virtual(8) -> Maildir. Real gpg keys, real gpg decryption, the embedded database.
 *
 * What Postfix changes on the way, and why the comparisons below are exact anyway:
 * - Postfix stores each line with LF in the queue and in the Maildir file (SMTP's CRLF is the line delimiter, not
 *   data). A delivered copy is therefore the reinjected bytes with CRLF turned into LF, behind the headers Postfix
 *   prepends (Return-Path, X-Original-To, Delivered-To, one Received per smtpd pass).
 * - Inside an encrypted copy only the ASCII armor's line ends change, which does not change the packets it encodes.
 *   The plaintext gpg decrypts is the content entity exactly as Lacre received it over SMTP, CRLF included, so it is
 *   compared with the original's content entity byte for byte, with no normalisation at all.
 */
import assert from 'node:assert/strict';
import { chmod, cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import nodemailer from 'nodemailer';
import { armoredBlock, contentEntity, corpus, nonContentHeaderLines } from '../helpers/corpus.js';
import { databaseEnv, openTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { createGpgHome, decrypt, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { LACRE_BIN, LacreServer, runLacre, type LogLine } from '../helpers/lacre.js';
import { freePort } from '../helpers/ports.js';
import {
  postfixUnavailableReason,
  startPostfix,
  type PostfixInstance,
  type QueuedMessage,
} from '../helpers/postfix.js';

const SENDER = 'sender@example.org';
const DELIVERY_TIMEOUT_MS = 20_000;

interface Keys {
  home: GpgHome;
  alice: GpgKey;
  bob: GpgKey;
}

/** 8-bit text, dot-leading lines, a "From " line, trailing spaces: what a careless relay or filter changes. */
function textMessage(messageId: string, to: string): Buffer {
  const lines = [
    `From: Sender <${SENDER}>`,
    `To: ${to}`,
    'Subject: e2e through Postfix',
    'Date: Tue, 24 Nov 2026 05:00:00 +0000',
    `Message-ID: <${messageId}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Grüße aus Köln — 8-bit text that must arrive unchanged.',
    '.a line that starts with a dot',
    '..two dots',
    'From the start of a line',
    'trailing spaces   ',
    '',
  ];
  return Buffer.from(lines.join('\r\n'), 'utf8');
}

const lf = (data: Buffer): Buffer => Buffer.from(data.toString('latin1').replaceAll('\r\n', '\n'), 'latin1');

async function sendToPostfix(port: number, message: Buffer, to: string[]): Promise<void> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ envelope: { from: SENDER, to, use8BitMime: true } as { from: string; to: string[] }, raw: message });
  } finally {
    transport.close();
  }
}

/** A fresh embedded database holding Alice's and Bob's public keys (imported by the CLI, as an admin would). */
async function databaseWithKeys(keys: Keys): Promise<TestDatabase> {
  const database = await openTestDatabase({ name: 'embedded' });
  // PGlite allows one process at a time: the lacre children open it after this one let go.
  await database.db.close();
  const keyFile = join(dirname(database.config.data_dir), 'keys.asc');
  await writeFile(keyFile, keys.alice.publicArmored + keys.bob.publicArmored);
  const imported = await runLacre(['keys', 'import', keyFile], databaseEnv(database.config));
  assert.equal(imported.code, 0, imported.stderr);
  return database;
}

/** A copy of a closed embedded database (its files), owned by `owner`, in a folder `owner` can reach. */
async function copyDatabase(database: TestDatabase, owner: SystemUser): Promise<{ dataDir: string; remove(): Promise<void> }> {
  const parent = await mkdtemp(join(tmpdir(), 'lacre-e2e-db-'));
  await chmod(parent, 0o755);
  const dataDir = join(parent, 'data');
  await cp(database.config.data_dir, dataDir, { recursive: true });
  execFileSync('chown', ['-R', `${owner.uid}:${owner.gid}`, dataDir]);
  return { dataDir, remove: () => rm(parent, { recursive: true, force: true }) };
}

interface SystemUser {
  uid: number;
  gid: number;
}

function systemUser(name: string): SystemUser {
  const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

/** Splits a delivered file into what Postfix prepended (Return-Path, X-Original-To, Delivered-To, Received ×2) and the rest. */
function splitDelivered(stored: Buffer, recipient: string): { added: string; message: Buffer } {
  const text = stored.toString('latin1');
  const added = /^Return-Path: <[^>]*>\n(?:X-Original-To: [^\n]+\n)?Delivered-To: [^\n]+\n(?:Received: [^\n]*\n(?:[ \t][^\n]*\n)*){2}/.exec(text);
  assert.ok(added, `delivered file does not start with Postfix's added headers:\n${text}`);
  assert.match(added[0], new RegExp(`^Delivered-To: ${escapeRegExp(recipient)}$`, 'im'));
  return { added: added[0], message: stored.subarray(added[0].length) };
}

/**
 * An encrypted copy as delivered: the original's non-Content header lines byte for byte (LF-stored) right after
 * Postfix's headers, then RFC 3156 PGP/MIME whose armored block gpg decrypts to exactly the original content entity,
 * encrypted to this recipient's key alone, and no plaintext anywhere.
 */
async function assertEncryptedCopy(keys: Keys, path: string, original: Buffer, recipient: string, key: GpgKey): Promise<void> {
  const stored = await readFile(path);
  const { message } = splitDelivered(stored, recipient);
  const outer = lf(Buffer.concat(nonContentHeaderLines(original)));
  assert.ok(message.subarray(0, outer.length).equals(outer), `outer headers not kept byte for byte:\n${message.toString('utf8')}`);
  assert.match(
    message.subarray(outer.length).toString('latin1'),
    /^Content-Type: multipart\/encrypted; protocol="application\/pgp-encrypted";\n\tboundary="[^"]+"\n/,
  );
  const block = armoredBlock(stored);
  assert.deepEqual(await listPacketsKeyIds(keys.home, block), [key.encryptionKeyId], `${recipient}'s copy names only their key`);
  assert.deepEqual(await decrypt(keys.home, block), contentEntity(original), `${recipient}'s copy decrypts to the exact content entity`);
  const body = original.subarray(original.indexOf('\r\n\r\n') + 4);
  assert.equal(stored.includes(lf(body).subarray(0, 20)), false, 'no plaintext body in the encrypted copy');
}

/** A plain copy as delivered: exactly the original message (LF-stored) behind Postfix's headers. */
async function assertPlainCopy(path: string, original: Buffer, recipient: string): Promise<void> {
  const { message } = splitDelivered(await readFile(path), recipient);
  assert.deepEqual(message, lf(original), `${recipient} receives the original bytes`);
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not seen within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function waitForQueue(postfix: PostfixInstance, done: (entries: QueuedMessage[]) => boolean): Promise<QueuedMessage[]> {
  let entries: QueuedMessage[] = [];
  try {
    return await waitFor('the expected queue state', async () => {
      entries = await postfix.queue();
      return done(entries) ? entries : undefined;
    });
  } catch (error) {
    throw new Error(`${String(error)}\n--- queue ---\n${JSON.stringify(entries)}\n--- maillog ---\n${await postfix.log()}`);
  }
}

/**
 * The queue id under which Postfix handed the message `messageId` to the filter on `filterPort` and got a 250 for
 * `recipient` (cleanup logs the Message-ID, the lacre transport the delivery; both lines carry the queue id).
 */
function queueIdSentToFilter(maillog: string, messageId: string, recipient: string, filterPort: number): string | undefined {
  const queued = new RegExp(`: ([0-9A-F]+): message-id=<${escapeRegExp(messageId)}>$`, 'gm');
  const sent = (id: string) =>
    new RegExp(`: ${id}: to=<${escapeRegExp(recipient)}>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${filterPort}, .*status=sent`);
  return [...maillog.matchAll(queued)].map((match) => match[1]!).find((id) => sent(id).test(maillog));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function acceptedLines(lacre: LacreServer, messageId: string): LogLine[] {
  return lacre.logs.filter((line) => line.msg === 'message accepted' && line.messageId === `<${messageId}>`);
}

function running(server: LacreServer | undefined): LacreServer {
  assert.ok(server, 'lacre serve is running');
  return server;
}

function newFiles(after: string[], before: string[]): string[] {
  return after.filter((path) => !before.includes(path));
}

/** `lacre serve` as the filter on `filterPort`, reinjecting into `postfix`, logging at info. */
function serveEnv(database: TestDatabase, filterPort: number, postfix: PostfixInstance, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...databaseEnv(database.config),
    LACRE_SMTP_LISTEN: `127.0.0.1:${filterPort}`,
    LACRE_RELAY_PORT: String(postfix.reinjectPort),
    LACRE_LOG_LEVEL: 'info',
    ...extra,
  };
}

async function stopFilterAndPostfix(lacre: LacreServer | undefined, postfix: PostfixInstance | undefined): Promise<void> {
  const code = await lacre?.stop();
  await postfix?.stop();
  if (code !== undefined) assert.equal(code, 0, 'lacre serve exits cleanly on SIGTERM');
}

const unavailable = postfixUnavailableReason();

describe('Lacre behind a real Postfix', { skip: unavailable }, () => {
  const keys = {} as Keys;
  let pipeDatabase: Awaited<ReturnType<typeof copyDatabase>>;
  let database: TestDatabase;

  before(async () => {
    keys.home = await createGpgHome();
    keys.alice = await generateKey(keys.home, { email: 'alice@example.test' });
    keys.bob = await generateKey(keys.home, { email: 'bob@example.test', algo: 'rsa3072' });
    database = await databaseWithKeys(keys);
    // pipe(8) runs lacre as `nobody`: it gets its own copy of the keys database, taken while no process has it open.
    pipeDatabase = await copyDatabase(database, systemUser('nobody'));
  });

  after(async () => {
    await pipeDatabase?.remove();
    await database?.cleanup();
    await keys.home?.remove();
  });

  describe('content_filter over SMTP to lacre serve', () => {
    let postfix: PostfixInstance;
    /** Undefined while Lacre is down. */
    let lacre: LacreServer | undefined;
    let filterPort: number;
    let lacreEnv: NodeJS.ProcessEnv;

    before(async () => {
      filterPort = await freePort();
      postfix = await startPostfix({ filterPort });
      lacreEnv = serveEnv(database, filterPort, postfix);
      lacre = await LacreServer.start(lacreEnv);
    });

    after(() => stopFilterAndPostfix(lacre, postfix));

    it('encrypts Alice’s (cv25519) and Bob’s (RSA) copies separately and passes Carol’s untouched', async () => {
      const message = textMessage('e2e-three-recipients@example.org', 'alice@example.test, bob@example.test, carol@example.test');
      await sendToPostfix(postfix.smtpPort, message, ['alice@example.test', 'bob@example.test', 'carol@example.test']);

      const [aliceCopy] = await postfix.waitForDelivery('alice@example.test', 1, DELIVERY_TIMEOUT_MS);
      const [bobCopy] = await postfix.waitForDelivery('bob@example.test', 1, DELIVERY_TIMEOUT_MS);
      const [carolCopy] = await postfix.waitForDelivery('carol@example.test', 1, DELIVERY_TIMEOUT_MS);
      await assertEncryptedCopy(keys, aliceCopy!, message, 'alice@example.test', keys.alice);
      await assertEncryptedCopy(keys, bobCopy!, message, 'bob@example.test', keys.bob);
      await assertPlainCopy(carolCopy!, message, 'carol@example.test');
      assert.deepEqual(await waitForQueue(postfix, (entries) => entries.length === 0), []);
    });

    it('logs the Postfix queue id (XFORWARD IDENT) with the accepted message', async () => {
      const messageId = 'e2e-queue-id@example.org';
      await sendToPostfix(postfix.smtpPort, textMessage(messageId, 'carol@example.test'), ['carol@example.test', 'alice@example.test']);
      const server = running(lacre);
      const accepted = await server.waitForLog((line) => acceptedLines(server, messageId).includes(line), DELIVERY_TIMEOUT_MS);
      const queueId = await waitFor('the Postfix log line of the delivery to Lacre', async () =>
        queueIdSentToFilter(await postfix.log(), messageId, 'alice@example.test', filterPort),
      );
      assert.equal(accepted.queueId, queueId, `lacre log line: ${JSON.stringify(accepted)}`);
      // qmgr hands the recipients over sorted, not in the order they were sent.
      const recipients = [...(accepted.recipients as Array<{ to: string }>)].sort((a, b) => a.to.localeCompare(b.to));
      assert.deepEqual(recipients, [
        { to: 'alice@example.test', action: 'encrypted-mime' },
        { to: 'carol@example.test', action: 'plain-no-key' },
      ]);
    });

    it('logs the Postfix queue id of a locally submitted message (sendmail → pickup: no XFORWARD IDENT)', async () => {
      const messageId = 'e2e-local-queue-id@example.org';
      // Postfix keeps its connection to Lacre between messages: this one follows the SMTP-submitted ones above.
      await postfix.submitLocally(SENDER, ['carol@example.test'], lf(textMessage(messageId, 'carol@example.test')));
      const server = running(lacre);
      const accepted = await server.waitForLog((line) => acceptedLines(server, messageId).includes(line), DELIVERY_TIMEOUT_MS);
      const queueId = await waitFor('the Postfix log line of the delivery to Lacre', async () =>
        queueIdSentToFilter(await postfix.log(), messageId, 'carol@example.test', filterPort),
      );
      assert.equal(accepted.queueId, queueId, `lacre log line: ${JSON.stringify(accepted)}`);
    });

    it('decrypts a multipart message with 8-bit text and a base64 attachment to the exact content entity', async () => {
      const multipart = corpus.find((entry) => entry.name === 'multipart with base64 attachment');
      assert.ok(multipart);
      const before = await postfix.delivered('alice@example.test');
      await sendToPostfix(postfix.smtpPort, multipart.raw, ['alice@example.test']);
      const files = await postfix.waitForDelivery('alice@example.test', before.length + 1, DELIVERY_TIMEOUT_MS);
      const [copy] = newFiles(files, before);
      assert.ok(copy);
      const stored = await readFile(copy);
      // The message has no Date / Message-ID: Postfix's cleanup adds them (outer headers, not in the content entity).
      assert.deepEqual(await decrypt(keys.home, armoredBlock(stored)), contentEntity(multipart.raw));
      assert.deepEqual(await listPacketsKeyIds(keys.home, armoredBlock(stored)), [keys.alice.encryptionKeyId]);
      for (const header of nonContentHeaderLines(multipart.raw)) assert.ok(stored.includes(lf(header)), `kept: ${header.toString()}`);
    });

    it('delivers an encrypted copy of a message near the public size limit (the copy is a third larger)', { timeout: 60_000 }, async () => {
      // 9.5 MB, under the 10240000 bytes the public smtpd accepts; its armored copy is ~13 MB on reinjection.
      const line = 'All work and no play makes a big message for Lacre to encrypt.\r\n';
      const body = line.repeat(Math.ceil(9_500_000 / line.length));
      const message = Buffer.concat([textMessage('e2e-big@example.org', 'alice@example.test').subarray(0, -2), Buffer.from(body)]);
      const before = await postfix.delivered('alice@example.test');
      await sendToPostfix(postfix.smtpPort, message, ['alice@example.test']);
      const files = await postfix.waitForDelivery('alice@example.test', before.length + 1, 40_000);
      const [copy] = newFiles(files, before);
      assert.ok(copy);
      const stored = await readFile(copy);
      assert.ok(stored.length > 10_240_000, `the copy (${stored.length} bytes) is over the public limit`);
      assert.deepEqual(await decrypt(keys.home, armoredBlock(stored)), contentEntity(message));
    });

    it('leaves the message deferred in Postfix while Lacre is down and delivers it encrypted exactly once after a restart', async () => {
      const killed = running(lacre);
      lacre = undefined;
      killed.kill();
      await killed.stop();
      const messageId = 'e2e-while-down@example.org';
      const message = textMessage(messageId, 'bob@example.test');
      const before = await postfix.delivered('bob@example.test');

      await sendToPostfix(postfix.smtpPort, message, ['bob@example.test']);
      // Every entry deferred: while Postfix moves a message, postqueue can list it twice (active and deferred).
      const deferred = await waitForQueue(postfix, (entries) => entries.length > 0 && entries.every((entry) => entry.queue_name === 'deferred'));
      assert.equal(deferred.length, 1, JSON.stringify(deferred));
      assert.equal(deferred[0]!.recipients[0]!.address, 'bob@example.test');
      assert.match(deferred[0]!.recipients[0]!.delay_reason ?? '', /Connection refused/);
      assert.deepEqual(await postfix.delivered('bob@example.test'), before);

      lacre = await LacreServer.start(lacreEnv);
      await postfix.flush();
      await postfix.waitForDelivery('bob@example.test', before.length + 1, DELIVERY_TIMEOUT_MS);
      assert.deepEqual(await waitForQueue(postfix, (entries) => entries.length === 0), []);
      // Postfix retries every second here: give a duplicate the time to show up.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const delivered = newFiles(await postfix.delivered('bob@example.test'), before);
      assert.equal(delivered.length, 1, `exactly one copy delivered: ${delivered.join(', ')}`);
      await assertEncryptedCopy(keys, delivered[0]!, message, 'bob@example.test', keys.bob);
      assert.equal(acceptedLines(lacre, messageId).length, 1, 'lacre accepted the message once');
    });
  });

  describe('content_filter over LMTP to lacre serve (lmtp-master.cf.snippet)', () => {
    let postfix: PostfixInstance;
    let lacre: LacreServer;
    let filterPort: number;

    before(async () => {
      filterPort = await freePort();
      postfix = await startPostfix({ filterPort, lmtp: true });
      lacre = await LacreServer.start(serveEnv(database, filterPort, postfix, { LACRE_SMTP_LMTP: 'true' }));
    });

    after(() => stopFilterAndPostfix(lacre, postfix));

    it('encrypts a keyed recipient’s copy, passes the others untouched, over one kept connection, with the queue id logged', async () => {
      const first = textMessage('e2e-lmtp-1@example.org', 'alice@example.test, carol@example.test');
      const second = textMessage('e2e-lmtp-2@example.org', 'carol@example.test');
      await sendToPostfix(postfix.smtpPort, first, ['alice@example.test', 'carol@example.test']);
      const [aliceCopy] = await postfix.waitForDelivery('alice@example.test', 1, DELIVERY_TIMEOUT_MS);
      await postfix.waitForDelivery('carol@example.test', 1, DELIVERY_TIMEOUT_MS);
      await sendToPostfix(postfix.smtpPort, second, ['carol@example.test']);
      const carolCopies = await postfix.waitForDelivery('carol@example.test', 2, DELIVERY_TIMEOUT_MS);
      await assertEncryptedCopy(keys, aliceCopy!, first, 'alice@example.test', keys.alice);
      const byMessageId = async (id: string) => {
        for (const path of carolCopies) if ((await readFile(path)).includes(id)) return path;
        assert.fail(`no copy of ${id} for Carol`);
      };
      await assertPlainCopy(await byMessageId('e2e-lmtp-1@example.org'), first, 'carol@example.test');
      await assertPlainCopy(await byMessageId('e2e-lmtp-2@example.org'), second, 'carol@example.test');
      assert.deepEqual(await waitForQueue(postfix, (entries) => entries.length === 0), []);

      const maillog = await postfix.log();
      assert.match(maillog, /postfix\/lacre\/lmtp\[\d+\]: \w+: to=<alice@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent/);
      assert.match(maillog, /postfix\/lacre\/lmtp\[\d+\]: .*conn_use=2.*status=sent/, 'the second message went over the kept connection');
      const queueId = queueIdSentToFilter(maillog, 'e2e-lmtp-1@example.org', 'alice@example.test', filterPort);
      assert.ok(queueId, maillog);
      assert.equal(acceptedLines(lacre, 'e2e-lmtp-1@example.org')[0]?.queueId, queueId);
    });
  });

  for (const lmtp of [false, true]) describe(`a burst through a reinjection listener with maxproc 10 (FILTER_README), Lacre on its default relay settings (${lmtp ? 'LMTP' : 'SMTP'})`, () => {
    let postfix: PostfixInstance;
    let lacre: LacreServer;

    before(async () => {
      const filterPort = await freePort();
      postfix = await startPostfix({ filterPort, lmtp, reinjectMaxproc: 10 });
      lacre = await LacreServer.start(serveEnv(database, filterPort, postfix, lmtp ? { LACRE_SMTP_LMTP: 'true' } : {}));
    });

    after(() => stopFilterAndPostfix(lacre, postfix));

    it('delivers 60 messages sent at once to mixed recipients, every copy exactly once, with no deferral, and warns once', { timeout: 120_000 }, async () => {
      const masterCf = await readFile(join(postfix.configDir, 'master.cf'), 'utf8');
      assert.match(masterCf, new RegExp(`^127\\.0\\.0\\.1:${postfix.reinjectPort} inet\\s+n\\s+-\\s+n\\s+-\\s+10\\s+smtpd$`, 'm'));
      const mixes = [
        ['alice@example.test'],
        ['carol@example.test'],
        ['alice@example.test', 'bob@example.test', 'carol@example.test'],
        ['bob@example.test', 'carol@example.test'],
        ['alice@example.test', 'carol@example.test'],
        ['alice@example.test', 'bob@example.test'],
      ];
      const burst = Array.from({ length: 60 }, (_, i) => ({ messageId: `e2e-burst-${i}@example.org`, to: mixes[i % mixes.length]! }));
      await Promise.all(burst.map(({ messageId, to }) => sendToPostfix(postfix.smtpPort, textMessage(messageId, to.join(', ')), to)));

      const expected = new Map<string, string[]>();
      for (const { messageId, to } of burst) for (const rcpt of to) expected.set(rcpt, [...(expected.get(rcpt) ?? []), messageId]);
      for (const [rcpt, ids] of expected) await postfix.waitForDelivery(rcpt, ids.length, 60_000);
      assert.deepEqual(await waitForQueue(postfix, (entries) => entries.length === 0), []);

      const deferred = (await postfix.log()).split('\n').filter((line) => /postfix\/lacre\/(?:smtp|lmtp)\[\d+\]: .*status=deferred/.test(line));
      assert.deepEqual(deferred, [], 'no message was deferred by Lacre');
      assert.deepEqual(lacre.logs.filter((line) => line.msg === 'message not accepted'), []);
      for (const [rcpt, ids] of expected) {
        const received = await Promise.all((await postfix.delivered(rcpt)).map(async (path) => /^Message-ID: <([^>]+)>$/m.exec(await readFile(path, 'latin1'))?.[1]));
        assert.deepEqual(received.filter((id) => id?.startsWith('e2e-burst-')).sort(), [...ids].sort(), `${rcpt} got each of its copies exactly once`);
      }
      const warnings = lacre.logs.filter((line) => line.level === 'warn' && /maxproc/.test(line.msg) && /relay\.max_connections/.test(line.msg));
      // Postfix hands Lacre up to 10 messages at once, up to 3 copies each: the pool wants more than 10 connections.
      assert.equal(warnings.length, 1, JSON.stringify(lacre.logs.filter((line) => line.level === 'warn')));
      assert.equal(warnings[0]!.capacity, 10);
    });
  });

  describe('pipe(8) transport running lacre pipe', () => {
    let postfix: PostfixInstance;
    let configDir: string;

    before(async () => {
      // pipe(8) runs the command as an unprivileged user (`nobody` here) with a scrubbed environment: the settings
      // come from a config file it can read, not from LACRE_* variables.
      configDir = await mkdtemp(join(tmpdir(), 'lacre-pipe-config-'));
      await chmod(configDir, 0o755);
      const configFile = join(configDir, 'lacre.toml');
      assert.ok(!`${LACRE_BIN}${configFile}`.includes(' '), 'pipe(8) splits argv on spaces');
      postfix = await startPostfix({ pipeFilter: { command: `${process.execPath} ${LACRE_BIN}`, configFile, directory: configDir, user: 'nobody' } });
      const config = [
        `[database]\ndata_dir = "${pipeDatabase.dataDir}"\n`,
        `[relay]\nport = ${postfix.reinjectPort}\n`,
        '[log]\nlevel = "info"\n',
      ].join('\n');
      await writeFile(configFile, config, { mode: 0o644 });
    });

    after(async () => {
      await postfix?.stop();
      if (configDir) await rm(configDir, { recursive: true, force: true });
    });

    it('encrypts a keyed recipient’s copy and passes the others untouched', async () => {
      const message = textMessage('e2e-pipe@example.org', 'alice@example.test, carol@example.test');
      await sendToPostfix(postfix.smtpPort, message, ['alice@example.test', 'carol@example.test']);
      const [aliceCopy] = await postfix.waitForDelivery('alice@example.test', 1, DELIVERY_TIMEOUT_MS);
      const [carolCopy] = await postfix.waitForDelivery('carol@example.test', 1, DELIVERY_TIMEOUT_MS);
      await assertEncryptedCopy(keys, aliceCopy!, message, 'alice@example.test', keys.alice);
      await assertPlainCopy(carolCopy!, message, 'carol@example.test');
      assert.deepEqual(await waitForQueue(postfix, (entries) => entries.length === 0), []);
      assert.match(await postfix.log(), /to=<alice@example\.test>, relay=lacre, .*status=sent \(delivered via lacre service/);
    });
  });
});
