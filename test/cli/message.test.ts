import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGpgHome, decrypt, generateKey, listPacketsKeyIds, type GpgHome, type GpgKey } from '../helpers/gpg.js';
import { armoredBlock, contentEntity, corpus } from '../helpers/corpus.js';
import { SmtpSink } from '../helpers/smtp-sink.js';
import { runLacre } from '../helpers/lacre.js';
import { loadConfig } from '../../src/config/load.js';
import { openDatabase } from '../../src/db/open.js';
import type { Database } from '../../src/db/types.js';

describe('one-shot modes: lacre encrypt and lacre pipe', () => {
  let home: GpgHome;
  let alice: GpgKey;
  let bob: GpgKey;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const message = corpus[1]!.raw;

  before(async () => {
    home = await createGpgHome();
    alice = await generateKey(home, { email: 'alice@example.test' });
    bob = await generateKey(home, { email: 'bob@example.test' });
    dir = await mkdtemp(join(tmpdir(), 'lacre-cli-'));
    env = { LACRE_DATABASE_DATA_DIR: join(dir, 'db'), LACRE_LOG_LEVEL: 'warn' };
    await writeFile(join(dir, 'keys.asc'), alice.publicArmored + bob.publicArmored);
    const imported = await runLacre(['keys', 'import', '--create', join(dir, 'keys.asc')], env);
    assert.equal(imported.code, 0, imported.stderr);
  });

  after(async () => {
    await home?.remove();
    await rm(dir, { recursive: true, force: true });
  });

  it('encrypt writes the one recipient\'s copy to stdout', async () => {
    const result = await runLacre(['encrypt', '--from', 'sender@example.net', '--to', 'alice@example.test'], env, message);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout.toString('latin1'), /^Received: |^From: /);
    assert.deepEqual(await decrypt(home, armoredBlock(result.stdout)), contentEntity(message));
  });

  it('encrypt passes a message through untouched for a recipient without a key', async () => {
    const result = await runLacre(['encrypt', '--from', 'sender@example.net', '--to', 'nokey@example.test'], env, message);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout, message);
  });

  it('encrypt --output-dir writes one file per copy', async () => {
    const out = join(dir, 'out');
    const result = await runLacre(['encrypt', '--from', 's@example.net', '--to', 'alice@example.test', '--to', 'bob@example.test', '--to', 'carol@example.test', '--output-dir', out], env, message);
    assert.equal(result.code, 0, result.stderr);
    const files = (await readdir(out)).sort();
    assert.equal(files.length, 3);
    const byName = (part: string) => readFile(join(out, files.find((f) => f.includes(part))!));
    assert.deepEqual(await byName('carol'), message);
    const bobCopy = await byName('bob');
    assert.deepEqual(await listPacketsKeyIds(home, armoredBlock(bobCopy)), [bob.encryptionKeyId]);
    assert.deepEqual(await decrypt(home, armoredBlock(bobCopy)), contentEntity(message));
  });

  it('encrypt records nothing in the delivery ledger: a message Postfix still holds is delivered whole afterwards', async () => {
    // The bytes of a message in Postfix's queue (its Received field names the queue id), encrypted twice by hand.
    const queued = Buffer.concat([Buffer.from('Received: by mx.example.test (Postfix) with ESMTP id 4QLedgerQ1\r\n\tfor <alice@example.test>; Mon, 1 Jan 2024 10:00:00 +0000\r\n'), message]);
    const recipients = ['alice@example.test', 'bob@example.test', 'carol@example.test'];
    for (const run of [1, 2]) {
      const out = join(dir, `ledger-${run}`);
      const result = await runLacre(['encrypt', '--from', 's@example.net', ...recipients.flatMap((to) => ['--to', to]), '--output-dir', out], env, queued);
      assert.equal(result.code, 0, result.stderr);
      assert.equal((await readdir(out)).length, 3, `run ${run}: a file per recipient`);
    }
    const sink = await SmtpSink.start();
    try {
      const piped = await runLacre(['pipe', '-f', 's@example.net', '--', ...recipients], { ...env, LACRE_RELAY_PORT: String(sink.port) }, queued);
      assert.equal(piped.code, 0, piped.stderr);
      assert.deepEqual(sink.messages.flatMap((m) => m.to).sort(), recipients, 'Postfix\'s delivery is not skipped');
    } finally {
      await sink.stop();
    }
  });

  it('pipe forgets up to 200 expired copies of the delivery ledger after its message: no lacre serve purges a pipe-only site', async () => {
    const config = loadConfig({ env: { LACRE_DATABASE_DATA_DIR: join(dir, 'db') } }).database;
    const withDb = async (use: (db: Database) => Promise<void>) => {
      const db = await openDatabase(config);
      try {
        await use(db);
      } finally {
        await db.close();
      }
    };
    await withDb(async (db) => {
      await db.query(`insert into lacre_delivered_copies (queue_id, recipient, digest, delivered_at)
                select 'QEXPIRED' || n, 'r@example.test', repeat('a', 64), now() - interval '200 hours' from generate_series(1, 250) n`);
    });
    const sink = await SmtpSink.start();
    try {
      const piped = await runLacre(['pipe', '-f', 's@example.net', '--', 'carol@example.test'], { ...env, LACRE_RELAY_PORT: String(sink.port) }, message);
      assert.equal(piped.code, 0, piped.stderr);
    } finally {
      await sink.stop();
    }
    await withDb(async (db) => {
      const [row] = await db.query<{ n: number }>(`select count(*)::int as n from lacre_delivered_copies where queue_id like 'QEXPIRED%'`);
      assert.equal(row!.n, 50);
    });
  });

  it('pipe reinjects and exits 0, or exits 75 (EX_TEMPFAIL) when the relay is down', async () => {
    const sink = await SmtpSink.start();
    try {
      const ok = await runLacre(['pipe', '-f', '', '--', 'alice@example.test', 'carol@example.test'], { ...env, LACRE_RELAY_PORT: String(sink.port) }, message);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(sink.messageFor('alice@example.test')!.from, '', 'the null sender stays null');
      assert.deepEqual(await decrypt(home, armoredBlock(sink.messageFor('alice@example.test')!.data)), contentEntity(message));
      assert.deepEqual(sink.messageFor('carol@example.test')!.data, message);
    } finally {
      await sink.stop();
    }
    const logFile = join(dir, 'pipe.log');
    const down = await runLacre(['pipe', '-f', 'sender@example.net', '--', 'alice@example.test'], { ...env, LACRE_RELAY_PORT: String(sink.port), LACRE_LOG_FILE: logFile, LACRE_LOG_LEVEL: 'info' }, message);
    assert.equal(down.code, 75, down.stderr);
    // pipe(8) quotes this output to the sender: only the status, enhanced code first, no recipients.
    assert.match(down.stdout.toString(), /^4\.4\.1 [^\n]*\n$/);
    assert.equal(down.stderr, '');
    const logged = (await readFile(logFile, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { msg: string; outcome: number });
    assert.equal(logged.at(-1)!.msg, 'message not accepted');
    assert.equal(logged.at(-1)!.outcome, 451);
  });

  it('pipe defers (75), never bounces, when its configuration is wrong', async () => {
    const result = await runLacre(['pipe', '-f', 'sender@example.net', '--', 'alice@example.test'], { ...env, LACRE_RELAY_PORT: 'abc' }, message);
    assert.equal(result.code, 75, result.stderr);
    assert.match(result.stdout.toString(), /^4\.3\.5 [^\n]*\n$/);
  });

  it('refuses a bad configuration value naming the key', async () => {
    const result = await runLacre(['encrypt', '--from', 'a@b', '--to', 'c@d'], { ...env, LACRE_RELAY_PORT: 'abc' }, message);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /relay\.port/);
  });
});
