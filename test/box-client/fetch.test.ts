/**
 * `lacre inbox fetch`: real gpg-made keys, messages encrypted the way Lacre encrypts them (its own mime/ and
 * crypto/ code), put in a box over HTTP, fetched, decrypted and written into a Maildir.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, beforeEach, describe, test } from 'node:test';
import { Command } from 'commander';
import * as openpgp from 'openpgp';
import { armorMessage, encryptContent, newSessionKey, sessionKeyPackets } from '../../src/crypto/encrypt.js';
import { contentEntityHead, inlineEnvelope, pgpMimeEnvelope } from '../../src/mime/assemble.js';
import { splitMessage } from '../../src/mime/split.js';
import { IncomingBoxClient } from '../../src/box-client/client.js';
import { clientVersion } from '../../src/box-client/consumer.js';
import { registerInboxFetchCommand, runInboxFetch, type InboxFetchOptions } from '../../src/cli/inbox-fetch.js';
import type { CliContext } from '../../src/cli/context.js';
import { loadDecryptionKeys, NoMatchingKeyError, openBlob, UnknownSchemeError } from '../../src/box-client/decrypt.js';
import { createGpgHome, generateKey, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { databaseBackends } from '../helpers/databases.js';
import { startRealBox, type BoxUser, type RealBox } from './real-box.js';
import { freePort } from '../helpers/ports.js';

const WITH_MIME = Buffer.from(
  'Received: from mx.example.net by gw.example.org; Mon, 1 Jan 2024 00:00:00 +0000\r\n' +
    'From: Bob <bob@example.net>\r\n' +
    'To: alice@example.org\r\n' +
    'Subject: =?UTF-8?Q?caf=C3=A9?=\r\n' +
    'Message-ID: <1@example.net>\r\n' +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: multipart/mixed;\r\n boundary="b1"\r\n' +
    '\r\n' +
    '--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 \x00 trailing  \r\n' +
    '--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQF\r\n--b1--\r\n',
  'latin1',
);
const NO_MIME = Buffer.from('From: bob@example.net\nTo: alice@example.org\nSubject: plain\n\nbare LF lines\nno final newline', 'latin1');
const PLAIN_7BIT = Buffer.from('From: bob@example.net\r\nTo: alice@example.org\r\nSubject: inline\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello inline\r\n', 'latin1');

let home: GpgHome;
let alice: GpgKey;
let bob: GpgKey;
let work: string;
let keyFile: string;

before(async () => {
  home = await createGpgHome();
  [alice, bob] = await Promise.all([generateKey(home, { email: 'alice@example.org' }), generateKey(home, { email: 'bob@example.net', algo: 'rsa3072' })]);
  work = await mkdtemp(join(tmpdir(), 'lacre-fetch-'));
  keyFile = join(work, 'alice-secret.asc');
  await writeFile(keyFile, alice.secretArmored);
});
after(async () => {
  await home.remove();
  await rm(work, { recursive: true, force: true });
});

for (const backend of await databaseBackends()) describe(`lacre inbox fetch from the real box (${backend.name})`, () => {
  let box: RealBox;
  let user: BoxUser;

  before(async () => {
    box = await startRealBox(backend);
  });
  after(() => box.close());
  beforeEach(async () => {
    user = await box.createUser();
  });

  const client = () => new IncomingBoxClient({ url: box.url, user: user.user, token: user.token });
  const options = (extra: Partial<InboxFetchOptions> = {}): InboxFetchOptions => ({
    url: box.url,
    user: user.user,
    token: user.token,
    key: keyFile,
    maildir: join(work, user.user),
    namespace: 'MX',
    concurrency: 3,
    ...extra,
  });

  test('every scheme decrypts into the Maildir byte for byte; the blobs become PROCESSED', async () => {
    const publicKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const blobs: Array<[string, Buffer, string]> = [
      ['whole-armored', await encryptWhole(WITH_MIME, publicKey, 'armored'), 'openpgp'],
      ['whole-binary', await encryptWhole(NO_MIME, publicKey, 'binary'), 'openpgp'],
      ['pgp-mime', await encryptLikeLacre(WITH_MIME, publicKey, 'mime'), 'openpgp-mime'],
      ['pgp-mime-no-mime-headers', await encryptLikeLacre(NO_MIME, publicKey, 'mime'), 'openpgp-mime'],
      ['inline', await encryptLikeLacre(PLAIN_7BIT, publicKey, 'inline'), 'openpgp-inline'],
      ['raw', PLAIN_7BIT, 'raw'],
    ];
    for (const [id, body, scheme] of blobs) assert.equal(await box.deliver(user.user, id, body, scheme), 200);
    // The copies really are encrypted: no body text is in the clear.
    for (const [id, body, scheme] of blobs) {
      if (scheme === 'raw') continue;
      for (const secret of ['Hello inline', 'AAECAwQF', 'bare LF lines']) assert.ok(!body.includes(secret), `${id} shows "${secret}"`);
    }

    const io = capture();
    const code = await runInboxFetch(options(), io);
    assert.equal(code, 0, io.errText());
    assert.match(io.outText(), /processed 6, failed 0/);
    const delivered = await maildirMessages(join(work, user.user));
    assert.deepEqual(sorted(delivered), sorted([WITH_MIME, NO_MIME, WITH_MIME, NO_MIME, PLAIN_7BIT, PLAIN_7BIT]));
    for (const [id] of blobs) assert.deepEqual(await client().flags(id), ['PROCESSED']);
  });

  test('a message for another key is FAILED PERMANENT, garbage FAILED temporary; the rest is delivered; exit 1', async () => {
    const bobKey = await openpgp.readKey({ armoredKey: bob.publicArmored });
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    await box.deliver(user.user, 'for-bob', await encryptWhole(WITH_MIME, bobKey, 'armored'), 'openpgp');
    await box.deliver(user.user, 'garbage', '-----BEGIN PGP MESSAGE-----\n\nnot base64 at all!\n-----END PGP MESSAGE-----\n', 'openpgp');
    await box.deliver(user.user, 'good', await encryptWhole(NO_MIME, aliceKey, 'armored'), 'openpgp');

    const io = capture();
    assert.equal(await runInboxFetch(options(), io), 1);
    assert.deepEqual(await client().flags('for-bob'), ['FAILED', 'PERMANENT']);
    assert.deepEqual(await client().flags('garbage'), ['FAILED']);
    assert.deepEqual(await client().flags('good'), ['PROCESSED']);
    assert.equal(await box.clientVersionOf(user.user, 'for-bob'), clientVersion());
    assert.match(io.errText(), /blob for-bob: marked FAILED permanently: no matching key/);
    assert.match(io.outText(), /processed 1, failed 2/);
    assert.deepEqual(await maildirMessages(join(work, user.user)), [NO_MIME]);
    assert.deepEqual(await readdir(join(work, user.user, 'tmp')), [], 'no partial plaintext left in tmp/');
  });

  test('a Maildir that cannot take the message (trouble here, not in the blob) releases the blob: exit 75, then delivered', async () => {
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    await box.deliver(user.user, 'm', await encryptWhole(NO_MIME, aliceKey, 'armored'), 'openpgp');
    const maildir = join(work, user.user);
    await mkdir(maildir, { recursive: true });
    await writeFile(join(maildir, 'new'), 'a file where new/ belongs');

    const io = capture();
    assert.equal(await runInboxFetch(options(), io), 75);
    assert.match(io.errText(), /blob m: left for a later run: cannot create the Maildir/);
    assert.match(io.outText(), /processed 0, failed 0, .* left for later 1/);
    assert.deepEqual(await client().flags('m'), ['PENDING']);

    await rm(join(maildir, 'new'));
    const again = capture();
    assert.equal(await runInboxFetch(options(), again), 0, again.errText());
    assert.deepEqual(await maildirMessages(maildir), [NO_MIME]);
  });

  test('a scheme this client does not know is a temporary failure (the box refuses unknown schemes at delivery)', async () => {
    const keys = await loadDecryptionKeys(alice.secretArmored);
    await assert.rejects(openBlob(Readable.from([Buffer.from('x')]), 'rot13', keys), (e) => e instanceof UnknownSchemeError && !(e instanceof NoMatchingKeyError));
  });

  test('a copy whose integrity check fails is FAILED and leaves no plaintext behind', async () => {
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    const binary = await encryptWhole(WITH_MIME, aliceKey, 'binary');
    binary[binary.length - 30]! ^= 0x01; // inside the MDC / last encrypted bytes
    await box.deliver(user.user, 'tampered', binary, 'openpgp');
    const io = capture();
    assert.equal(await runInboxFetch(options(), io), 1);
    assert.deepEqual(await client().flags('tampered'), ['FAILED']);
    assert.deepEqual(await readdir(join(work, user.user, 'new')), []);
    assert.deepEqual(await readdir(join(work, user.user, 'tmp')), []);
  });

  test('a passphrase-protected key is unlocked with --passphrase-file; without it, exit 1 before touching the box', async () => {
    const locked = await openpgp.encryptKey({ privateKey: await openpgp.readPrivateKey({ armoredKey: alice.secretArmored }), passphrase: 'correct horse' });
    const lockedFile = join(work, 'locked.asc');
    const passphraseFile = join(work, 'passphrase');
    await writeFile(lockedFile, locked.armor());
    await writeFile(passphraseFile, 'correct horse\n');
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    await box.deliver(user.user, 'm', await encryptWhole(WITH_MIME, aliceKey, 'armored'), 'openpgp');

    // Checked before the box is contacted: an unreachable box would otherwise make it 75.
    const refused = capture();
    assert.equal(await runInboxFetch(options({ key: lockedFile, url: `http://127.0.0.1:${await freePort()}` }), refused), 1);
    assert.match(refused.errText(), /is protected: give its passphrase/);
    const wrong = capture();
    await writeFile(join(work, 'wrong'), 'battery staple\n');
    assert.equal(await runInboxFetch(options({ key: lockedFile, passphraseFile: join(work, 'wrong') }), wrong), 1);
    assert.match(wrong.errText(), /cannot unlock secret key/);
    assert.deepEqual(await client().flags('m'), ['PENDING']);

    const io = capture();
    assert.equal(await runInboxFetch(options({ key: lockedFile, passphraseFile }), io), 0, io.errText());
    assert.deepEqual(await maildirMessages(join(work, user.user)), [WITH_MIME]);
  });

  test('the token can come from LACRE_INBOX_TOKEN; none at all is exit 1', async () => {
    const io = capture({ LACRE_INBOX_TOKEN: user.token });
    assert.equal(await runInboxFetch(options({ token: undefined }), io), 0, io.errText());
    assert.match(io.outText(), /processed 0/);
    const none = capture();
    assert.equal(await runInboxFetch(options({ token: undefined }), none), 1);
    assert.match(none.errText(), /no token/);
  });

  test('exit 75 when the box is unreachable, 1 when it refuses the credential', async () => {
    const down = capture();
    assert.equal(await runInboxFetch(options({ url: `http://127.0.0.1:${await freePort()}`, timeoutSeconds: 5 }), down), 75);
    assert.match(down.errText(), /ECONNREFUSED/);
    const refused = capture();
    assert.equal(await runInboxFetch(options({ token: 'wrong' }), refused), 1);
    assert.match(refused.errText(), /HTTP 401/);
  });

  test('through commander: `inbox fetch` parses its options and sets the exit code', async () => {
    const aliceKey = await openpgp.readKey({ armoredKey: alice.publicArmored });
    await box.deliver(user.user, 'm', await encryptLikeLacre(WITH_MIME, aliceKey, 'mime'), 'openpgp-mime');
    const program = new Command('lacre').exitOverride();
    // `inbox fetch` reads no configuration: its context is never used.
    registerInboxFetchCommand(program.command('inbox'), {} as CliContext);
    const previous = process.exitCode;
    const stdoutWrite = process.stdout.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    try {
      await program.parseAsync(
        ['inbox', 'fetch', '--url', box.url, '--user', user.user, '--token', user.token, '--key', keyFile, '--maildir', join(work, user.user), '--concurrency', '2'],
        { from: 'user' },
      );
      assert.equal(process.exitCode, 0);
    } finally {
      process.stdout.write = stdoutWrite;
      process.exitCode = previous;
    }
    assert.deepEqual(await maildirMessages(join(work, user.user)), [WITH_MIME]);
  });
});

/** The whole message as one OpenPGP message, as openpgp.js (and GnuPG) make it. */
async function encryptWhole(message: Buffer, key: openpgp.PublicKey, format: 'armored' | 'binary'): Promise<Buffer> {
  const plaintext = await openpgp.createMessage({ binary: message, format: 'binary' });
  if (format === 'armored') return Buffer.from(await openpgp.encrypt({ message: plaintext, encryptionKeys: key, format: 'armored' }));
  return Buffer.from(await openpgp.encrypt({ message: plaintext, encryptionKeys: key, format: 'binary' }));
}

/** What Lacre's pipeline produces for a PGP/MIME or inline copy, built from the same functions. */
async function encryptLikeLacre(message: Buffer, key: openpgp.PublicKey, kind: 'mime' | 'inline'): Promise<Buffer> {
  const split = await splitMessage(Readable.from([message])[Symbol.asyncIterator](), 1024 * 1024);
  // Inline encrypts the body only (7-bit here, so decoding it changes nothing); PGP/MIME the content entity.
  const plaintext = kind === 'mime' ? Buffer.concat([contentEntityHead(split), split.bodyStart]) : split.bodyStart;
  const sessionKey = await newSessionKey([key]);
  const content = await encryptContent(Readable.from([plaintext]), sessionKey);
  const binary = Readable.from(concat([await sessionKeyPackets(sessionKey, [key])], content));
  const armored = await collect(armorMessage(binary, split.eol));
  const envelope = kind === 'mime' ? pgpMimeEnvelope(split) : inlineEnvelope(split);
  return Buffer.concat([envelope.prefix, armored, envelope.suffix]);
}

async function* concat(...parts: Array<AsyncIterable<Buffer> | Iterable<Buffer>>): AsyncGenerator<Buffer> {
  for (const part of parts) yield* part;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function maildirMessages(dir: string): Promise<Buffer[]> {
  const names = await readdir(join(dir, 'new'));
  return Promise.all(names.map((name) => readFile(join(dir, 'new', name))));
}


function sorted(buffers: Buffer[]): Buffer[] {
  return [...buffers].sort(Buffer.compare);
}

function capture(env: NodeJS.ProcessEnv = {}) {
  const out = new PassThrough();
  const err = new PassThrough();
  const outChunks: Buffer[] = [];
  const errChunks: Buffer[] = [];
  out.on('data', (c: Buffer) => outChunks.push(c));
  err.on('data', (c: Buffer) => errChunks.push(c));
  return {
    env,
    stdout: out,
    stderr: err,
    outText: () => Buffer.concat(outChunks).toString('utf8'),
    errText: () => Buffer.concat(errChunks).toString('utf8'),
  };
}
