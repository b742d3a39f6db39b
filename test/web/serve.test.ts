/**
 * The end-to-end promise, through `lacre serve` itself: a key uploaded to the key service is confirmed
 * from the mail it gets (decrypted with gpg), and the very next message to that address is encrypted to it; a
 * second, pending upload changes nothing until it too is confirmed.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { readPrivateKey } from 'openpgp';
import { createGpgHome, decrypt, generateKey, gpgOk, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { databaseBackends, databaseEnv, openTestDatabase, type TestDatabase } from '../helpers/databases.js';
import { LacreServer, runLacre } from '../helpers/lacre.js';
import { LEAK_MARKERS, markSecret } from '../helpers/leak-markers.js';
import { freePort } from '../helpers/ports.js';
import { sendRaw } from '../helpers/smtp-client.js';
import { SmtpSink } from '../helpers/smtp-sink.js';

const ADDRESS = 'alice@example.org';
const MESSAGE = Buffer.from(`From: bob@example.net\r\nTo: alice@example.org\r\nSubject: ${LEAK_MARKERS.subject}\r\n\r\n${LEAK_MARKERS.body}\r\n`);

describe('the key service inside lacre serve', async () => {
  let home: GpgHome;
  let first: GpgKey;
  let second: GpgKey;

  before(async () => {
    home = await createGpgHome();
    first = await generateKey(home, { email: ADDRESS });
    second = await generateKey(home, { email: ADDRESS, algo: 'rsa3072' });
  });
  after(async () => home.remove());

  for (const backend of await databaseBackends()) {
    describe(backend.name, () => {
      let database: TestDatabase;
      let sink: SmtpSink;
      let server: LacreServer;
      let base: string;

      before(async () => {
        database = await openTestDatabase(backend);
        await database.db.close();
        sink = await SmtpSink.start();
        const webPort = await freePort();
        base = `http://127.0.0.1:${webPort}`;
        server = await LacreServer.start({
          ...databaseEnv(database.config),
          LACRE_RELAY_PORT: String(sink.port),
          LACRE_WEB_LISTEN: `127.0.0.1:${webPort}`,
          LACRE_WEB_PUBLIC_URL: base,
          LACRE_WEB_SENDER: 'keys@example.org',
          LACRE_KEYS_DOMAINS: 'example.org',
        });
      });
      after(async () => {
        assert.equal(await server?.stop(), 0);
        await sink?.stop();
        await database?.cleanup();
      });

      async function upload(key: GpgKey): Promise<string> {
        const mailsBefore = sink.messages.length;
        const response = await fetch(`${base}/api/keys`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: key.publicArmored }) });
        assert.equal(response.status, 202, await response.clone().text());
        assert.deepEqual(await response.json(), { status: 'pending', email: ADDRESS, fingerprint: key.fingerprint });
        assert.equal(sink.messages.length, mailsBefore + 1, 'one confirmation mail');
        const mail = sink.messages.at(-1)!;
        assert.deepEqual(mail.to, [ADDRESS]);
        assert.deepEqual(await listPacketsKeyIds(home, mail.data), [key.encryptionKeyId], 'encrypted to the uploaded key alone');
        const text = (await simpleParser(await decrypt(home, mail.data))).text ?? '';
        const link = /(http:\/\/127\.0\.0\.1:\d+\/confirm\/[A-Za-z0-9_-]+)/.exec(text)?.[1];
        assert.ok(link, 'the decrypted mail holds the confirmation link');
        markSecret(link.split('/').at(-1)!);
        return link;
      }

      async function confirm(link: string): Promise<void> {
        assert.equal((await fetch(link)).status, 200, 'the link shows a page');
        const response = await fetch(link, { method: 'POST' });
        assert.equal(response.status, 200);
      }

      async function sendAndReadKeyIds(): Promise<string[]> {
        const before = sink.messages.length;
        const reply = await sendRaw(server.port, { from: 'bob@example.net', to: [ADDRESS] }, MESSAGE);
        assert.match(reply.data[0]!, /^250 /);
        const copy = sink.messages.slice(before).find((m) => m.to.includes(ADDRESS));
        assert.ok(copy);
        if (!copy.data.includes('-----BEGIN PGP MESSAGE-----')) return [];
        return listPacketsKeyIds(home, copy.data);
      }

      it('upload, mail, confirm: the next message is encrypted to the new key; a pending second upload changes nothing until confirmed', async () => {
        const firstLink = await upload(first);
        assert.deepEqual(await sendAndReadKeyIds(), [], 'a pending key is never used');
        await confirm(firstLink);
        assert.deepEqual(await sendAndReadKeyIds(), [first.encryptionKeyId]);

        const secondLink = await upload(second);
        assert.deepEqual(await sendAndReadKeyIds(), [first.encryptionKeyId], 'the pending second key changes nothing');
        const status = await (await fetch(`${base}/api/keys/${ADDRESS}`)).json();
        assert.equal((status as { fingerprint: string }).fingerprint, first.fingerprint);

        await confirm(secondLink);
        assert.deepEqual(await sendAndReadKeyIds(), [second.encryptionKeyId], 'confirmed: the next message uses it, without a restart');
      });
    });
  }
});

describe('WKS inside lacre serve, with GnuPG\u2019s own client', () => {
  const SUBMISSION = 'key-submission@example.org';
  const WKS_CLIENT = '/usr/lib/gnupg/gpg-wks-client';

  it('a submission mailed through the SMTP listener is answered, and the answer makes the next message encrypted', async () => {
    const home = await createGpgHome();
    const database = await openTestDatabase((await databaseBackends())[0]!);
    await database.db.close();
    const keyDir = await mkdtemp(join(tmpdir(), 'lacre-wks-serve-'));
    const sink = await SmtpSink.start();
    let server: LacreServer | undefined;
    try {
      const alice = await generateKey(home, { email: ADDRESS });
      const env = {
        ...databaseEnv(database.config),
        LACRE_RELAY_PORT: String(sink.port),
        LACRE_WEB_SENDER: 'keys@example.org',
        LACRE_WEB_WKS_SUBMISSION_ADDRESS: SUBMISSION,
        LACRE_WEB_WKS_KEY_PATH: join(keyDir, 'wks.asc'),
        LACRE_KEYS_DOMAINS: 'example.org',
      };
      const init = await runLacre(['wks', 'init'], env);
      assert.equal(init.code, 0, init.stderr);
      const submissionKey = (await readPrivateKey({ armoredKey: await readFile(join(keyDir, 'wks.asc'), 'utf8') })).toPublic().armor();
      await gpgOk(home, ['--batch', '--import'], submissionKey);
      server = await LacreServer.start(env);
      const client = (args: string[], input?: Buffer) => runTool(WKS_CLIENT, ['--fake-submission-addr', SUBMISSION, ...args], home.dir, input);

      const submission = await client(['--create', alice.fingerprint, ADDRESS]);
      assert.match((await sendRaw(server.port, { from: ADDRESS, to: [SUBMISSION] }, submission)).data[0]!, /^250 /);
      const request = sink.messages.find((m) => m.to.includes(ADDRESS));
      assert.ok(request, 'Lacre mailed a confirmation request');
      assert.ok(!sink.messages.some((m) => m.to.includes(SUBMISSION)), 'the submission itself was not relayed');
      const response = await client(['--receive'], request.data);
      assert.match((await sendRaw(server.port, { from: ADDRESS, to: [SUBMISSION] }, response)).data[0]!, /^250 /);

      const before = sink.messages.length;
      await sendRaw(server.port, { from: 'bob@example.net', to: [ADDRESS] }, MESSAGE);
      assert.deepEqual(await listPacketsKeyIds(home, sink.messages[before]!.data), [alice.encryptionKeyId]);
    } finally {
      assert.equal(await server?.stop(), 0);
      await sink.stop();
      await database.cleanup();
      await rm(keyDir, { recursive: true, force: true });
      await home.remove();
    }
  });
});

/** Runs a tool with GNUPGHOME set; resolves with its stdout, rejects on a non-zero exit. */
function runTool(command: string, args: string[], gnupgHome: string, input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, GNUPGHOME: gnupgHome } });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(stdout)) : reject(new Error(`${command} exited ${code}: ${stderr}`))));
    child.stdin.end(input ?? Buffer.alloc(0));
  });
}
